/** A registered user. The password is kept only as a KDF hash. */
export interface Account {
  user: string;
  passwordHash: string;
  createdAt: number;
}

/** Storage port for accounts. */
export interface AccountStore {
  /**
   * Creates the account if its name is free and resolves true once it is
   * durable. Resolves false, writing nothing, when the name is taken. Atomic:
   * of concurrent creates of one name, exactly one resolves true.
   */
  create(account: Account): Promise<boolean>;

  /** The account of that name, or undefined when there is none. */
  get(user: string): Promise<Account | undefined>;
}
