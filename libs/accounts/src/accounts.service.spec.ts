import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { EmbeddedDatabase } from '#libs/storage';
import { AccountsService } from './accounts.service.js';
import { EmbeddedAccountStore } from './embedded/embedded-account.store.js';
import { PasswordHasher, scryptCostOf } from './password-hasher.js';

const dir = mkdtempSync(join(tmpdir(), 'parley-accounts-'));
const db = new EmbeddedDatabase(dir);
const store = new EmbeddedAccountStore(db);
const cheap = new PasswordHasher({ N: 1024, r: 8, p: 1 });
const accounts = new AccountsService(store, cheap, { minPasswordLength: 8 });
afterAll(async () => {
  await db.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('AccountsService', () => {
  it('registers, then logs in with the right password only', async () => {
    await accounts.register('dora', 'long enough');
    expect(await accounts.authenticate('dora', 'long enough')).toBe(true);
    expect(await accounts.authenticate('dora', 'long enougH')).toBe(false);
    expect(await accounts.authenticate('nobody', 'long enough')).toBe(false);
    expect((await store.get('dora'))?.passwordHash).not.toContain('long enough');
  });

  it('refuses bad names, short passwords and taken names, writing nothing', async () => {
    await expect(accounts.register('Bad+Name', 'long enough')).rejects.toMatchObject({ code: 'invalid_username' });
    await expect(accounts.register('shorty', 'short')).rejects.toMatchObject({ code: 'weak_password' });
    expect(await store.get('shorty')).toBeUndefined();
    for (const [password, why] of [
      [' '.repeat(12), 'only spaces'],
      ['\t \t \t \t ', 'only spaces'],
      ['a'.repeat(12), 'one character repeated'],
      ['spacious', 'your user name'],
      [' SPACIOUS ', 'your user name'],
    ]) {
      await expect(accounts.register('spacious', password!)).rejects.toMatchObject({ code: 'weak_password', message: expect.stringContaining(why!) });
    }
    expect(await store.get('spacious')).toBeUndefined();
    await accounts.register('spacious', 'spacious and more');
    await accounts.register('taken', 'long enough');
    await expect(accounts.register('taken', 'another one')).rejects.toMatchObject({ code: 'user_exists' });
    expect(await accounts.authenticate('taken', 'long enough')).toBe(true);
  });

  it('answers a retried registration (the same request id) as the first time, and any other registration of the name user_exists', async () => {
    expect(await accounts.register('retry', 'long enough', 'reg-1')).toEqual({ user: 'retry' });
    expect(await accounts.register('retry', 'long enough', 'reg-1')).toEqual({ user: 'retry' });
    await expect(accounts.register('retry', 'long enough', 'reg-2')).rejects.toMatchObject({ code: 'user_exists' });
    // Someone else who picked the same id, with another password, is told the name is taken.
    await expect(accounts.register('retry', 'another password', 'reg-1')).rejects.toMatchObject({ code: 'user_exists' });
    await expect(accounts.register('retry', 'long enough')).rejects.toMatchObject({ code: 'user_exists' });
    // The account is the first one, once.
    expect(await accounts.authenticate('retry', 'long enough')).toBe(true);
  });

  it('counts the password a retried registration checks as a login attempt: a wrong one fails, and none is checked while locked out', async () => {
    expect(await accounts.register('guessed', 'long enough', 'reg-1')).toEqual({ user: 'guessed' });
    let failures = 0;
    let locked = false;
    const guesses = { mayTry: () => Promise.resolve(!locked), failed: () => Promise.resolve(void failures++) };
    await expect(accounts.register('guessed', 'a guess at it', 'reg-1', guesses)).rejects.toMatchObject({ code: 'user_exists' });
    expect(failures).toBe(1);
    // Another id checks no password, and counts nothing.
    await expect(accounts.register('guessed', 'a guess at it', 'reg-2', guesses)).rejects.toMatchObject({ code: 'user_exists' });
    expect(failures).toBe(1);
    expect(await accounts.register('guessed', 'long enough', 'reg-1', guesses)).toEqual({ user: 'guessed' });
    // Locked out, even the right password is not checked: the answer tells nothing.
    locked = true;
    await expect(accounts.register('guessed', 'long enough', 'reg-1', guesses)).rejects.toMatchObject({ code: 'user_exists' });
    expect(failures).toBe(1);
  });
});

describe('AccountsService password forms (Unicode normalisation)', () => {
  // One password, typed on two keyboards: é as one code point (NFC, most systems) or as e + U+0301 (NFD, macOS often).
  const composed = 'caf\u00e9 au lait';
  const decomposed = 'cafe\u0301 au lait';

  it('lets a password registered in one form log in with the other', async () => {
    await accounts.register('nfc-reg', composed);
    expect(await accounts.authenticate('nfc-reg', decomposed)).toBe(true);
    expect(await accounts.authenticate('nfc-reg', composed)).toBe(true);
    await accounts.register('nfd-reg', decomposed);
    expect(await accounts.authenticate('nfd-reg', composed)).toBe(true);
    expect(await accounts.authenticate('nfd-reg', decomposed)).toBe(true);
    expect(await accounts.authenticate('nfd-reg', 'cafe au lait')).toBe(false);
  });

  it('logs in an account stored before normalisation with exactly what was typed then, and that login keeps the password in NFC', async () => {
    // What a server before this change stored for a password sent decomposed: the hash of those very code points.
    const legacy = await cheap.hash(decomposed);
    await store.create({ user: 'legacy', passwordHash: legacy, createdAt: 0 });
    expect(await accounts.authenticate('legacy', composed)).toBe(false);
    expect((await store.get('legacy'))?.passwordHash).toBe(legacy);
    expect(await accounts.authenticate('legacy', decomposed)).toBe(true);
    await accounts.rehashed();
    // Hashed again in NFC: the account now logs in as one registered today, from either keyboard.
    const now = (await store.get('legacy'))?.passwordHash;
    expect(now).not.toBe(legacy);
    expect(await cheap.verify(composed, now!)).toBe(true);
    const fresh = new AccountsService(store, cheap, { minPasswordLength: 8 });
    expect(await fresh.authenticate('legacy', composed)).toBe(true);
    expect(await fresh.authenticate('legacy', decomposed)).toBe(true);
  });

  it('judges the minimum length on the normalised form, whichever form was sent', async () => {
    // 8 code points decomposed, 7 composed: the same password, refused both ways.
    const nearly = 'e\u0301e\u0301abcd';
    expect([...nearly].length).toBe(8);
    await expect(accounts.register('shortnfd', nearly)).rejects.toMatchObject({ code: 'weak_password' });
    await expect(accounts.register('shortnfd', nearly.normalize('NFC'))).rejects.toMatchObject({ code: 'weak_password' });
    expect(await store.get('shortnfd')).toBeUndefined();
  });

  it('answers a retried registration sent in the other form as the first time', async () => {
    expect(await accounts.register('retryform', composed, 'reg-f')).toEqual({ user: 'retryform' });
    expect(await accounts.register('retryform', decomposed, 'reg-f')).toEqual({ user: 'retryform' });
  });

  it('costs one KDF run for a password already in NFC, two at most otherwise, and never answers the other form from the cache wrongly', async () => {
    const { hasher, remembering } = caching(Date.now());
    await remembering.register('runs', composed);
    // Remembered in its normalised form: the other keyboard's login is answered from the cache too.
    expect(await remembering.authenticate('runs', decomposed)).toBe(true);
    expect(hasher.runs).toBe(0);
    expect(await remembering.authenticate('runs', 'wrong but nfc')).toBe(false);
    expect(hasher.runs).toBe(1);
    expect(await remembering.authenticate('runs', 'wrong, cafe\u0301')).toBe(false);
    expect(hasher.runs).toBe(3);
    // An unknown user costs the same as a known one, form for form, so timing tells no names.
    hasher.runs = 0;
    expect(await remembering.authenticate('nobody-here', 'plain')).toBe(false);
    expect(hasher.runs).toBe(1);
    expect(await remembering.authenticate('nobody-here', decomposed)).toBe(false);
    expect(hasher.runs).toBe(3);
    // A legacy account, logged in with its raw form, is remembered in that form only: its NFC form stays refused until
    // the login's hashing again in NFC (held back here) is kept.
    await store.create({ user: 'legacy2', passwordHash: await hasher.hash(decomposed), createdAt: 0 });
    hasher.runs = 0;
    const release = hasher.holdHashes();
    expect(await remembering.authenticate('legacy2', decomposed)).toBe(true);
    expect(hasher.runs).toBe(2);
    expect(await remembering.authenticate('legacy2', decomposed)).toBe(true);
    expect(hasher.runs).toBe(2);
    expect(await remembering.authenticate('legacy2', composed)).toBe(false);
    release();
    await remembering.rehashed();
    expect(await remembering.authenticate('legacy2', composed)).toBe(true);
  });

  it('hashes a password again at the current cost when its login matches a hash of another cost, and never for a wrong password', async () => {
    const older = new PasswordHasher({ N: 512, r: 8, p: 1 });
    const before = await older.hash('long enough');
    await store.create({ user: 'oldcost', passwordHash: before, createdAt: 7, request: 'reg-old' });
    expect(costOf(before)).toBe('512$8$1');
    expect(await accounts.authenticate('oldcost', 'long enougH')).toBe(false);
    await accounts.rehashed();
    expect((await store.get('oldcost'))?.passwordHash).toBe(before);
    expect(await accounts.authenticate('oldcost', 'long enough')).toBe(true);
    await accounts.rehashed();
    const after = await store.get('oldcost');
    // Only the hash changed: the account's other fields (a retried registration is known by its request) are kept.
    expect(after).toMatchObject({ user: 'oldcost', createdAt: 7, request: 'reg-old' });
    expect(costOf(after!.passwordHash)).toBe('1024$8$1');
    const fresh = new AccountsService(store, cheap, { minPasswordLength: 8 });
    expect(await fresh.authenticate('oldcost', 'long enough')).toBe(true);
    expect(await fresh.authenticate('oldcost', 'long enougH')).toBe(false);
    // At the current cost already: a login leaves the hash alone.
    expect(await fresh.authenticate('oldcost', 'long enough')).toBe(true);
    await fresh.rehashed();
    expect((await store.get('oldcost'))?.passwordHash).toBe(after!.passwordHash);
    // So does one at a lower cost than the hash's: a gateway set lower never hashes it down.
    const lower = new AccountsService(store, older, { minPasswordLength: 8 });
    expect(await lower.authenticate('oldcost', 'long enough')).toBe(true);
    await lower.rehashed();
    expect((await store.get('oldcost'))?.passwordHash).toBe(after!.passwordHash);
  });

  it('hashes nothing again once the server is stopping', async () => {
    const older = new PasswordHasher({ N: 512, r: 8, p: 1 });
    const before = await older.hash('long enough');
    await store.create({ user: 'stopping', passwordHash: before, createdAt: 0 });
    const stopping = new AccountsService(store, cheap, { minPasswordLength: 8 });
    await stopping.stopRehashing();
    expect(await stopping.authenticate('stopping', 'long enough')).toBe(true);
    await stopping.rehashed();
    expect((await store.get('stopping'))?.passwordHash).toBe(before);
  });
});

describe('PasswordHasher', () => {
  it('salts each hash and never matches a malformed stored hash', async () => {
    const [a, b] = [await cheap.hash('same'), await cheap.hash('same')];
    expect(a).not.toBe(b);
    expect(await cheap.verify('same', a)).toBe(true);
    for (const bad of ['', 'plain', 'scrypt$1$2$3', 'bcrypt$x$y$z$salt$hash']) expect(await cheap.verify('same', bad)).toBe(false);
  });

  it('knows a hash cheaper to guess than its own from one that costs as much or more', async () => {
    const weak = await new PasswordHasher({ N: 512, r: 8, p: 1 }).hash('x');
    const strong = await new PasswordHasher(scryptCostOf(11)).hash('x');
    expect(cheap.isWeaker(weak)).toBe(true);
    expect(cheap.isWeaker(await cheap.hash('x'))).toBe(false);
    expect(cheap.isWeaker(strong)).toBe(false);
    for (const bad of ['', 'plain', 'scrypt$abc$8$1$s$h', 'bcrypt$1024$8$1$salt$hash']) expect(cheap.isWeaker(bad)).toBe(true);
  });

  it('hashes at the cost it is given: PARLEY_PASSWORD_COST names N as a power of two, with r = 8 and p = 1', async () => {
    expect(costOf(await cheap.hash('same'))).toBe('1024$8$1');
    expect(costOf(await new PasswordHasher(scryptCostOf(11)).hash('same'))).toBe('2048$8$1');
    expect(costOf(await new PasswordHasher(scryptCostOf(10)).hash('same'))).toBe('1024$8$1');
    expect(costOf(await new PasswordHasher().hash('x'))).toBe(costOf(await new PasswordHasher(scryptCostOf(15)).hash('x')));
  });
});

/** The scrypt parameters a stored hash was made with: `N$r$p`. */
const costOf = (stored: string) => stored.split('$').slice(1, 4).join('$');

/** The real hasher, counting the KDF runs of logins, whose new hashes a test may hold back. */
class CountingHasher extends PasswordHasher {
  runs = 0;
  private held: Promise<void> | undefined;
  override verify(password: string, stored: string): Promise<boolean> {
    this.runs++;
    return super.verify(password, stored);
  }
  override async hash(password: string): Promise<string> {
    await this.held;
    return super.hash(password);
  }
  /** Holds back every hash made from now on until the returned function is called. */
  holdHashes(): () => void {
    let release = () => {};
    this.held = new Promise<void>((resolve) => (release = resolve));
    return () => {
      this.held = undefined;
      release();
    };
  }
}

/** A service remembering logins for a minute, on a clock the test moves, with a hasher that counts its runs. */
function caching(start: number) {
  const hasher = new CountingHasher({ N: 1024, r: 8, p: 1 });
  const clock = { now: start };
  const remembering = new AccountsService(store, hasher, { minPasswordLength: 8, verifiedCacheMs: 60_000 }, () => clock.now);
  return { hasher, remembering, clock };
}

describe('AccountsService login cache', () => {
  it('remembers a registration and a login for the cache time: a login within it skips the KDF, one after it runs the KDF again', async () => {
    const { hasher, remembering, clock } = caching(1_000_000);
    await remembering.register('ezra', 'long enough');
    // The registration ran the KDF on this password: the first login does not run it again.
    expect(await remembering.authenticate('ezra', 'long enough')).toBe(true);
    expect(hasher.runs).toBe(0);
    // A different password is never answered from the cache.
    expect(await remembering.authenticate('ezra', 'long enougH')).toBe(false);
    expect(hasher.runs).toBe(1);
    clock.now += 61_000;
    expect(await remembering.authenticate('ezra', 'long enough')).toBe(true);
    expect(hasher.runs).toBe(2);
    clock.now += 59_000;
    expect(await remembering.authenticate('ezra', 'long enough')).toBe(true);
    expect(hasher.runs).toBe(2);
    clock.now += 2_000;
    expect(await remembering.authenticate('ezra', 'long enough')).toBe(true);
    expect(hasher.runs).toBe(3);
  });

  it('remembers nothing from a registration that was refused', async () => {
    const { hasher, remembering } = caching(Date.now());
    await remembering.register('fern', 'first password');
    // Taken: the second registration's password is not the account's, and a login with it is checked and refused.
    await expect(remembering.register('fern', 'second password')).rejects.toMatchObject({ code: 'user_exists' });
    expect(await remembering.authenticate('fern', 'second password')).toBe(false);
    expect(hasher.runs).toBe(1);
    expect(await remembering.authenticate('fern', 'first password')).toBe(true);
  });

  it('remembers only the winner of two registrations of one name at once', async () => {
    const { remembering } = caching(Date.now());
    const passwords = ['password one', 'password two'];
    const outcomes = await Promise.allSettled(passwords.map((p) => remembering.register('gale', p)));
    expect(outcomes.map((o) => o.status).sort()).toEqual(['fulfilled', 'rejected']);
    const winner = passwords[outcomes.findIndex((o) => o.status === 'fulfilled')]!;
    const loser = passwords.find((p) => p !== winner)!;
    expect(await remembering.authenticate('gale', loser)).toBe(false);
    expect(await remembering.authenticate('gale', winner)).toBe(true);
  });

  it('forgets expired logins as new ones come, so it holds only the users of the last cache time', async () => {
    const { hasher, remembering, clock } = caching(5_000_000);
    await remembering.register('hana', 'hana password');
    await remembering.register('ivo', 'ivo password');
    clock.now += 30_000;
    await remembering.register('jade', 'jade password');
    expect(remembering.rememberedLogins).toBe(3);
    clock.now += 31_000;
    // Hana's and Ivo's entries expired; Jade's has half its time left.
    expect(await remembering.authenticate('hana', 'hana password')).toBe(true);
    expect(remembering.rememberedLogins).toBe(2);
    expect(hasher.runs).toBe(1);
    expect(await remembering.authenticate('jade', 'jade password')).toBe(true);
    expect(hasher.runs).toBe(1);
    clock.now += 60_000;
    expect(await remembering.authenticate('ivo', 'ivo password')).toBe(true);
    expect(remembering.rememberedLogins).toBe(1);
  });

  it('does not trust an entry further from expiry than the cache time: the clock was set back', async () => {
    const { hasher, remembering, clock } = caching(9_000_000);
    await remembering.register('kit', 'kit password');
    clock.now -= 3_600_000;
    expect(await remembering.authenticate('kit', 'kit password')).toBe(true);
    expect(hasher.runs).toBe(1);
  });

  it('still drops expired entries after the clock was set back', async () => {
    const { remembering, clock } = caching(20_000_000);
    await remembering.register('lou', 'lou password');
    clock.now += 50_000;
    await remembering.register('max', 'max password');
    // Back 30 s: Lou's entry is still fresh and heads the map; Max's (too far from expiry now) waits behind it.
    clock.now -= 30_000;
    await remembering.register('ned', 'ned password');
    expect(remembering.rememberedLogins).toBe(3);
    clock.now += 200_000;
    await remembering.register('ona', 'ona password');
    expect(remembering.rememberedLogins).toBe(1);
  });
});
