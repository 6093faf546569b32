/** A registered user. The password is kept only as a KDF hash. */
export interface Account {
  user: string;
  passwordHash: string;
  createdAt: number;
  /** The id of the register request that made it, so that a retry of that request is answered as the first time. */
  request?: string;
}

/** Storage port for accounts. */
export interface AccountStore {
  /**
   * Creates the account if its name is free and resolves true once it is
   * durable. Resolves false, writing nothing, when the name is taken. Atomic:
   * of concurrent creates of one name, exactly one resolves true.
   */
  create(account: Account): Promise<boolean>;

  /**
   * Replaces the account's password hash with `to` when it is still `from`, and resolves true once that is durable.
   * Resolves false, writing nothing, when the account is gone or its hash is no longer `from` (another login replaced
   * it first). Nothing else of the account changes.
   */
  replaceHash(user: string, from: string, to: string): Promise<boolean>;

  /** The account of that name, or undefined when there is none. */
  get(user: string): Promise<Account | undefined>;

  /**
   * Changes whenever the store may have lost accounts it had acknowledged (Redis reconnected, see
   * `RedisConnection.generation`); what is known of an account holds only within one generation.
   */
  generation(): number;
}
