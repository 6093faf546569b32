import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { DomainError, USERNAME_PATTERN } from '#libs/protocol';
import type { AccountStore } from './account.store.js';
import type { PasswordHasher } from './password-hasher.js';

export interface AccountsOptions {
  minPasswordLength: number;
  /** How long a successful login or registration is remembered, so logging in again with that password skips the KDF. */
  verifiedCacheMs?: number;
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

  constructor(
    private readonly store: AccountStore,
    private readonly hasher: PasswordHasher,
    private readonly opts: AccountsOptions,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * Creates an account. Throws invalid_username, weak_password or user_exists; nothing is written then. A retry of the
   * request that created the account (the same `requestId`: its answer was lost, say) is answered as the first time.
   */
  async register(user: string, password: string, requestId?: string): Promise<{ user: string }> {
    if (!USERNAME_PATTERN.test(user)) {
      throw new DomainError('invalid_username', 'a user name is 2–32 characters: a lowercase letter, then lowercase letters, digits, _ or -');
    }
    const weakness = weaknessOf(user, password, this.opts.minPasswordLength);
    if (weakness) throw new DomainError('weak_password', weakness);
    const passwordHash = await this.hasher.hash(password);
    const generation = this.store.generation();
    const created = await this.store.create({ user, passwordHash, createdAt: this.now(), ...(requestId ? { request: requestId } : {}) });
    if (!created) {
      // A retry is the same request: the same id and the same password (two people may pick one id, say "reg-1").
      const account = requestId ? await this.store.get(user) : undefined;
      if (account && account.request === requestId && (await this.hasher.verify(password, account.passwordHash))) return { user };
      throw new DomainError('user_exists', `the name "${user}" is taken`);
    }
    this.known.set(user, generation);
    // The KDF has just run on this password: the login that usually follows a registration need not run it again.
    this.remember(user, password, generation);
    return { user };
  }

  /** True when the user exists and the password is its password. */
  async authenticate(user: string, password: string): Promise<boolean> {
    const generation = this.store.generation();
    const cached = this.verified.get(user);
    if (cached && this.fresh(cached, this.now()) && cached.generation === generation && timingSafeEqual(cached.digest, this.digestOf(user, password)))
      return true;

    const account = await this.store.get(user);
    if (!account) {
      this.decoyHash ??= this.hasher.hash('decoy password');
      await this.hasher.verify(password, await this.decoyHash);
      return false;
    }
    this.known.set(user, generation);
    const ok = await this.hasher.verify(password, account.passwordHash);
    if (ok) this.remember(user, password, generation);
    return ok;
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
