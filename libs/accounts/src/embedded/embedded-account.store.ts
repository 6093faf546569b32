import type { Database } from 'lmdb';
import type { EmbeddedDatabase } from '#libs/storage';
import type { Account, AccountStore } from '../account.store.js';

export class EmbeddedAccountStore implements AccountStore {
  private readonly accounts: Database<Account, string>;

  constructor(db: EmbeddedDatabase) {
    this.accounts = db.open<Account, string>('accounts');
  }

  create(account: Account): Promise<boolean> {
    // Check and write inside one write transaction: LMDB serialises writers.
    return this.accounts.transaction(() => {
      if (this.accounts.get(account.user) !== undefined) return false;
      void this.accounts.put(account.user, account);
      return true;
    });
  }

  replaceHash(user: string, from: string, to: string): Promise<boolean> {
    return this.accounts.transaction(() => {
      const account = this.accounts.get(user);
      if (account?.passwordHash !== from) return false;
      void this.accounts.put(user, { ...account, passwordHash: to });
      return true;
    });
  }

  get(user: string): Promise<Account | undefined> {
    return Promise.resolve(this.accounts.get(user));
  }

  /** The embedded store loses nothing it acknowledged while the process lives. */
  generation(): number {
    return 0;
  }
}
