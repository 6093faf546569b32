import type { RedisConnection } from '#libs/storage';
import type { Account, AccountStore } from '../account.store.js';

/** Keys: `{prefix}account:{user}` → JSON of the account. */
export class RedisAccountStore implements AccountStore {
  constructor(private readonly redis: RedisConnection) {}

  private accountKey(user: string): string {
    return this.redis.key('account', user);
  }

  async create(account: Account): Promise<boolean> {
    const ok = await this.redis.client.set(this.accountKey(account.user), JSON.stringify(account), 'NX');
    return ok === 'OK';
  }

  async get(user: string): Promise<Account | undefined> {
    const raw = await this.redis.client.get(this.accountKey(user));
    return raw === null ? undefined : (JSON.parse(raw) as Account);
  }

  generation(): number {
    return this.redis.generation;
  }
}
