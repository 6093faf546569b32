import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Logger } from '@nestjs/common';
import type { Client, ConnectPacket } from 'aedes';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { AccountsService, EmbeddedAccountStore, PasswordHasher } from '#libs/accounts';
import { Metrics } from '#libs/health';
import { EmbeddedDatabase } from '#libs/storage';
import { AccessPolicy } from './access-policy.js';
import { LoginThrottle, MemoryFailureLedger, type FailureCharge } from './login-throttle.js';

const dir = mkdtempSync(join(tmpdir(), 'parley-policy-'));
const db = new EmbeddedDatabase(dir);
const accounts = new AccountsService(new EmbeddedAccountStore(db), new PasswordHasher({ N: 1024, r: 8, p: 1 }), { minPasswordLength: 8 });
const policy = new AccessPolicy(accounts, new Metrics());

/** What the broker hands `authenticate`: a client not yet logged in, on a connection that is open. */
const clientOf = (id: string) => ({ id, closed: false, conn: { destroyed: false } }) as unknown as Client;

function authenticate(client: Client, username: string, password: Buffer): Promise<boolean> {
  return new Promise((resolve) => policy.authenticate(client, username, password, (error, ok) => resolve(error === null && ok === true)));
}

beforeAll(async () => {
  await accounts.register('alice', 'correct horse');
});
afterAll(async () => {
  await db.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('AccessPolicy.authenticate', () => {
  // The broker keeps the CONNECT packet as long as the connection lasts: a heap dump would show every connected user's
  // password if the buffer were left as it came.
  it('wipes the password buffer it is handed, once read, on a login that succeeds, one that fails and one refused early', async () => {
    const right = Buffer.from('correct horse');
    expect(await authenticate(clientOf('alice/phone'), 'alice', right)).toBe(true);
    expect(right.every((b) => b === 0)).toBe(true);

    const wrong = Buffer.from('wrong horse!');
    expect(await authenticate(clientOf('alice/laptop'), 'alice', wrong)).toBe(false);
    expect(wrong.every((b) => b === 0)).toBe(true);

    // Refused before any password check: a client id that is someone else's, a malformed user name, no user name.
    for (const [id, user] of [
      ['bob/phone', 'alice'],
      ['alice/pc', 'al ice'],
      ['anon-1', ''],
    ] as const) {
      const early = Buffer.from('correct horse');
      expect(await authenticate(clientOf(id), user, early)).toBe(false);
      expect(early.every((b) => b === 0)).toBe(true);
    }
  });

  it('counts every CONNECT it refuses in parley_logins_failed_total: an anonymous one that gives a password too', async () => {
    const metrics = new Metrics();
    const counting = new AccessPolicy(accounts, metrics);
    const error = await new Promise((resolve) => counting.authenticate(clientOf('anon.abcdefgh'), undefined, Buffer.from('a secret'), resolve));
    expect(error).toMatchObject({ returnCode: 4, message: 'a password needs a user name' });
    expect((await metrics.loginsFailed.get()).values).toEqual([expect.objectContaining({ labels: { reason: 'password' }, value: 1 })]);
  });

  it('answers logins it cannot check (the account store away) with CONNACK 3, and logs that once, not once per login', async () => {
    const away = { authenticate: () => Promise.reject(new Error('Redis is restarting')) } as unknown as AccountsService;
    const cut = new AccessPolicy(away, new Metrics());
    const logged = vi.spyOn(Logger.prototype, 'error').mockImplementation(() => undefined);
    try {
      // Every client of a gateway logging in again at once while Redis restarts, and trying again and again.
      const codes = await Promise.all(
        Array.from(
          { length: 5 },
          (_, i) =>
            new Promise((resolve) =>
              cut.authenticate(clientOf(`alice/d${i}`), 'alice', Buffer.from('correct horse'), (e) =>
                resolve((e as { returnCode?: number } | null)?.returnCode),
              ),
            ),
        ),
      );
      expect(codes).toEqual([3, 3, 3, 3, 3]);
      expect(logged.mock.calls.filter(([m]) => (m as { event?: string }).event === 'login_failed')).toHaveLength(1);
    } finally {
      logged.mockRestore();
    }
  });

  it('logs the connection in as the user the password belongs to', async () => {
    const client = clientOf('alice/tablet');
    expect(await authenticate(client, 'alice', Buffer.from('correct horse'))).toBe(true);
    expect(policy.principalOf(client)).toMatchObject({ kind: 'user', user: 'alice' });
  });

  // The broker keeps the CONNECT packet (its parser holds on to it), and the password in it is a view of the bytes the
  // client sent: left there, it would keep them for as long as the connection lasts.
  it("takes the password out of the CONNECT packet and hands it to that connection's login once", async () => {
    const client = clientOf('alice/watch');
    const packet = { cmd: 'connect', clientId: 'alice/watch', username: 'alice', password: Buffer.from('correct horse') } as ConnectPacket;
    policy.holdPassword(client, packet);
    expect(packet.password).toBeUndefined();
    expect(policy.heldPassword(clientOf('alice/other'))).toBeUndefined();
    const held = policy.heldPassword(client);
    expect(held?.toString()).toBe('correct horse');
    expect(policy.heldPassword(client)).toBeUndefined();
    expect(await authenticate(client, 'alice', held!)).toBe(true);
  });
});

/** A ledger that counts the failures recorded against it. */
class CountingLedger extends MemoryFailureLedger {
  failures = 0;
  override fail(charges: FailureCharge[], now: number, windowMs: number, lockoutMs: number): Promise<void> {
    this.failures++;
    return super.fail(charges, now, windowMs, lockoutMs);
  }
}

describe('AccessPolicy.authenticate, passwords in either Unicode form', () => {
  // The CONNECT password arrives as UTF-8 bytes: é precomposed (U+00E9) on most systems, e + U+0301 on macOS often.
  const composed = Buffer.from('caf\u00e9 cr\u00e8me', 'utf8');
  const decomposed = () => Buffer.from('cafe\u0301 cre\u0300me', 'utf8');

  it('logs in with the other form of the password registered, and counts a wrong one as one failed login', async () => {
    await accounts.register('claire', composed.toString('utf8'));
    const ledger = new CountingLedger();
    const throttle = new LoginThrottle({ maxFailuresPerAddress: 1000, maxFailuresPerUser: 1000, windowMs: 60_000, lockoutMs: 60_000 }, ledger);
    const guarded = new AccessPolicy(accounts, new Metrics(), { throttle, maxConnectionsPerUser: 10 });
    const login = (client: Client, password: Buffer) =>
      new Promise<boolean>((resolve) => guarded.authenticate(client, 'claire', password, (error, ok) => resolve(error === null && ok === true)));

    expect(await login(clientOf('claire/mac'), decomposed())).toBe(true);
    // Two forms tried (NFC, then as sent), one attempt: one failure recorded.
    expect(await login(clientOf('claire/mac2'), Buffer.from('wrong cre\u0300me', 'utf8'))).toBe(false);
    expect(ledger.failures).toBe(1);
  });
});

describe('AccessPolicy.authenticate, attempts sent all at once', () => {
  it('checks no more passwords than the failed-login limit lets one address try: the rest wait, and meet the lockout', async () => {
    const throttle = new LoginThrottle({ maxFailuresPerAddress: 3, maxFailuresPerUser: 1000, windowMs: 60_000, lockoutMs: 60_000 });
    const guarded = new AccessPolicy(accounts, new Metrics(), { throttle, maxConnectionsPerUser: 100 });
    const checked = vi.spyOn(accounts, 'authenticate');
    try {
      // Thirty at once, from one address (these clients have none: all are 'unknown'), each a wrong guess.
      const codes = await Promise.all(
        Array.from(
          { length: 30 },
          (_, i) =>
            new Promise<number | undefined>((resolve) =>
              guarded.authenticate(clientOf(`alice/guess${i}`), 'alice', Buffer.from(`guess number ${i}`), (error) => resolve(error?.returnCode)),
            ),
        ),
      );
      // Three under way at once; those that start as the first end may run before the third's failure locks the address.
      expect(checked.mock.calls.length).toBeLessThanOrEqual(5);
      expect(codes.filter((c) => c === 4).length).toBe(checked.mock.calls.length);
      expect(codes.filter((c) => c === 5).length).toBe(30 - checked.mock.calls.length);
    } finally {
      checked.mockRestore();
    }
  });

  it('checks no password for a connection that ended while its attempt waited', async () => {
    const throttle = new LoginThrottle({ maxFailuresPerAddress: 1, maxFailuresPerUser: 1000, windowMs: 60_000, lockoutMs: 60_000 });
    const guarded = new AccessPolicy(accounts, new Metrics(), { throttle, maxConnectionsPerUser: 100 });
    const checked = vi.spyOn(accounts, 'authenticate');
    try {
      const first = new Promise((resolve) => guarded.authenticate(clientOf('alice/first'), 'alice', Buffer.from('correct horse'), resolve));
      const gone = clientOf('alice/gone');
      const second = new Promise((resolve) => guarded.authenticate(gone, 'alice', Buffer.from('correct horse'), resolve));
      (gone as { closed: boolean }).closed = true;
      await Promise.all([first, second]);
      expect(checked).toHaveBeenCalledTimes(1);
    } finally {
      checked.mockRestore();
    }
  });
});

describe('AccessPolicy.authenticate, logins per minute', () => {
  it('lets a user log in PARLEY_LOGINS_PER_MINUTE times at once, then one more per 60/N s, answering the rest "try again" (CONNACK 3) with the wait', async () => {
    let now = 0;
    const throttle = new LoginThrottle({ maxFailuresPerAddress: 1000, maxFailuresPerUser: 1000, windowMs: 60_000, lockoutMs: 60_000 });
    const guarded = new AccessPolicy(accounts, new Metrics(), { throttle, maxConnectionsPerUser: 100, loginsPerMinute: 3 }, () => now);
    const login = (device: string, password = 'correct horse') =>
      new Promise<{ code: number | undefined; message: string | undefined }>((resolve) =>
        guarded.authenticate(clientOf(`alice/${device}`), 'alice', Buffer.from(password), (error) =>
          resolve({ code: error?.returnCode, message: error?.message }),
        ),
      );
    // A wrong password takes no login: failed logins are the throttle's to count.
    expect((await login('typo', 'wrong horse!')).code).toBe(4);
    for (const device of ['a', 'b', 'c']) expect((await login(device)).code).toBeUndefined();
    expect(await login('d')).toEqual({ code: 3, message: 'at most 3 logins a minute per user; try again in 20 s' });
    // Another user has logins of its own.
    await accounts.register('bruno', 'correct horse');
    const bruno = await new Promise((resolve) => guarded.authenticate(clientOf('bruno'), 'bruno', Buffer.from('correct horse'), resolve));
    expect(bruno).toBeNull();
    now += 19_000;
    expect((await login('d')).message).toBe('at most 3 logins a minute per user; try again in 1 s');
    now += 1_000;
    expect((await login('d')).code).toBeUndefined();
    expect((await login('e')).code).toBe(3);
  });
});
