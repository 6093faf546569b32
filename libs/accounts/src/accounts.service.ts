import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { DomainError, USERNAME_PATTERN, USERNAME_RULE } from '#libs/protocol';
import type { AccountStore } from './account.store.js';
import type { PasswordHasher } from './password-hasher.js';

export interface AccountsOptions {
  minPasswordLength: number;
  /** How long a successful login or registration is remembered, so logging in again with that password skips the KDF. */
  verifiedCacheMs?: number;
}

/** The failed-login limits, as a registration's retry meets them (see `AccountsService.register`). */
export interface PasswordGuesses {
  /** False while the user name or the address is locked out: the password is not checked then. */
  mayTry(): Promise<boolean>;
  /** The password checked was wrong: one failed login. */
  failed(): Promise<void>;
}

/** Registration and login. */
export class AccountsService {
  /** A hash the KDF runs against for unknown users, so a login's timing does not reveal whether the name exists. */
  private decoyHash: Promise<string> | undefined;
  /**
   * Users known to exist, with the store's generation they were seen in: accounts are never deleted, so a positive
   * answer stays true for as long as the store keeps what it held (see `AccountStore.generation`).
   */
  private readonly known = new Map<string, number>();
  /**
   * user → keyed digest of the password of the last successful login (or the registration), with its expiry. Every
   * entry lives equally long and is re-inserted when renewed, so the map's order is expiry order: expired entries are
   * dropped from its front as new ones come, and it holds only the users who logged in within the cache time. (Should
   * the clock be set back, an entry made before is no longer trusted, as it is further from expiry than the cache
   * time; one behind a fresher head waits until the head goes: a delay of at most the step back.)
   */
  private readonly verified = new Map<string, { digest: Buffer; expires: number; generation: number }>();
  private readonly cacheKey = randomBytes(32);
  /** Users whose password is being hashed again (see `rehash`). */
  private readonly rehashing = new Map<string, Promise<void>>();
  private closing = false;

  constructor(
    private readonly store: AccountStore,
    private readonly hasher: PasswordHasher,
    private readonly opts: AccountsOptions,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * Creates an account. Throws invalid_username, weak_password or user_exists; nothing is written then. A retry of the
   * request that created the account (the same `requestId`: its answer was lost, say) is answered as the first time.
   * The password is kept in its NFC form (see `formsOf`), and judged in that form: the same password typed on any
   * keyboard gets the same verdict.
   */
  async register(user: string, password: string, requestId?: string, guesses?: PasswordGuesses): Promise<{ user: string }> {
    if (!USERNAME_PATTERN.test(user)) {
      throw new DomainError('invalid_username', USERNAME_RULE);
    }
    const normalised = password.normalize('NFC');
    const weakness = weaknessOf(user, normalised, this.opts.minPasswordLength);
    if (weakness) throw new DomainError('weak_password', weakness);
    const passwordHash = await this.hasher.hash(normalised);
    const generation = this.store.generation();
    const created = await this.store.create({ user, passwordHash, createdAt: this.now(), ...(requestId ? { request: requestId } : {}) });
    if (!created) {
      // A retry is the same request: the same id and the same password (two people may pick one id, say "reg-1"). Its
      // password check is a login attempt to `guesses`: an id anyone might pick made it a way to try passwords that no
      // failed-login limit counted.
      const account = requestId ? await this.store.get(user) : undefined;
      if (account && account.request === requestId && (!guesses || (await guesses.mayTry()))) {
        if ((await this.matchingForm(password, account.passwordHash)) !== undefined) return { user };
        await guesses?.failed();
      }
      throw new DomainError('user_exists', `the name "${user}" is taken`);
    }
    this.known.set(user, generation);
    // The KDF has just run on this password: the login that usually follows a registration need not run it again.
    this.remember(user, normalised, generation);
    return { user };
  }

  /**
   * True when the user exists and the password is its password, in either of its forms (see `formsOf`). One call is
   * one login attempt, however many forms it tries: whoever counts failed logins counts it once.
   */
  async authenticate(user: string, password: string): Promise<boolean> {
    const forms = formsOf(password);
    const generation = this.store.generation();
    const cached = this.verified.get(user);
    if (
      cached &&
      this.fresh(cached, this.now()) &&
      cached.generation === generation &&
      forms.some((form) => timingSafeEqual(cached.digest, this.digestOf(user, form)))
    )
      return true;

    const account = await this.store.get(user);
    if (!account) {
      // As many KDF runs as a known user's wrong password costs, form for form, so timing tells no names.
      this.decoyHash ??= this.hasher.hash('decoy password');
      await this.matchingForm(password, await this.decoyHash);
      return false;
    }
    this.known.set(user, generation);
    const matched = await this.matchingForm(password, account.passwordHash);
    // Remembered in the form that matched, so the cache answers exactly as the KDF would: a legacy account's raw form
    // does not make its NFC form good.
    if (matched === undefined) return false;
    this.remember(user, matched, generation);
    const normalised = password.normalize('NFC');
    if (matched !== normalised || this.hasher.isWeaker(account.passwordHash)) this.rehash(user, normalised, account.passwordHash);
    return true;
  }

  /**
   * Hashes a password just checked again, in its NFC form and at the hasher's cost, and keeps it in place of the hash it
   * matched: an account made before passwords were normalised, or hashed at a lower cost, is brought up to date by its
   * next login. Runs after the login is answered; should it fail (or another login replace the hash first), the old hash
   * stays good and the next login tries again.
   */
  private rehash(user: string, password: string, from: string): void {
    if (this.closing || this.rehashing.has(user)) return;
    const done = this.hasher
      .hash(password)
      .then((to) => this.store.replaceHash(user, from, to))
      .then(
        () => undefined,
        () => undefined,
      )
      .finally(() => this.rehashing.delete(user));
    this.rehashing.set(user, done);
  }

  /** Resolves once the passwords being hashed again now (see `rehash`) are kept, or given up. */
  async rehashed(): Promise<void> {
    await Promise.all(this.rehashing.values());
  }

  /** The server is stopping: no password is hashed again from now on; resolves once those under way are kept. */
  async stopRehashing(): Promise<void> {
    this.closing = true;
    await this.rehashed();
  }

  /** The first of the password's forms that the stored hash is of, or undefined. Runs the KDF once per form tried. */
  private async matchingForm(password: string, passwordHash: string): Promise<string | undefined> {
    for (const form of formsOf(password)) if (await this.hasher.verify(form, passwordHash)) return form;
    return undefined;
  }

  /**
   * Remembers a password checked by the KDF, for the cache time, and while the store keeps the account it was checked
   * against (the store's generation then).
   */
  private remember(user: string, password: string, generation: number): void {
    const now = this.now();
    for (const [name, entry] of this.verified) {
      if (this.fresh(entry, now)) break;
      this.verified.delete(name);
    }
    this.verified.delete(user);
    this.verified.set(user, { digest: this.digestOf(user, password), expires: now + this.cacheMs, generation });
  }

  private get cacheMs(): number {
    return this.opts.verifiedCacheMs ?? 10 * 60_000;
  }

  /** Not expired, and not further from expiry than the cache time (the clock may have been set back since). */
  private fresh(entry: { expires: number }, now: number): boolean {
    return entry.expires > now && entry.expires - now <= this.cacheMs;
  }

  /** How many logins are remembered now (expired ones may linger until the next is remembered). */
  get rememberedLogins(): number {
    return this.verified.size;
  }

  private digestOf(user: string, password: string): Buffer {
    return createHmac('sha256', this.cacheKey).update(user).update('\0').update(password).digest();
  }

  /** True when an account of that name exists. */
  async exists(user: string): Promise<boolean> {
    const generation = this.store.generation();
    if (this.known.get(user) === generation) return true;
    if (!USERNAME_PATTERN.test(user)) return false;
    const found = (await this.store.get(user)) !== undefined;
    if (found) this.known.set(user, generation);
    return found;
  }
}

/**
 * The forms in which a typed password may have been stored, in the order to try them. A password is stored in Unicode
 * NFC, so that "café" typed with a precomposed é (most systems) and with e + U+0301 (macOS often) are one password: its
 * NFC form comes first. Accounts registered before passwords were normalised hold the hash of the password exactly as
 * it was sent; when that differs from its NFC form, it is tried second. A password in NFC already (any ASCII one) has
 * one form, and costs one KDF run.
 */
function formsOf(password: string): string[] {
  const normalised = password.normalize('NFC');
  return normalised === password ? [password] : [normalised, password];
}

/**
 * Why a password is too easy to guess, or null. Beyond the length, the checks are the cheap, certain ones (as NIST SP
 * 800-63B asks of a verifier): nothing but spaces, one character over and over, or the user's own name.
 */
function weaknessOf(user: string, password: string, minLength: number): string | null {
  const chars = [...password];
  if (chars.length < minLength) return `a password needs at least ${minLength} characters`;
  if (password.trim() === '') return 'a password cannot be only spaces';
  if (chars.every((c) => c === chars[0])) return 'a password cannot be one character repeated';
  if (password.trim().toLowerCase() === user) return 'a password cannot be your user name';
  return null;
}
