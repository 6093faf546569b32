import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Client, ConnectPacket } from 'aedes';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AccountsService, EmbeddedAccountStore, PasswordHasher } from '#libs/accounts';
import { Metrics } from '#libs/health';
import { EmbeddedDatabase } from '#libs/storage';
import { AccessPolicy } from './access-policy.js';

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
