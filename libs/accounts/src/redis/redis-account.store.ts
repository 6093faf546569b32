import type { RedisConnection } from '#libs/storage';
import type { Account, AccountStore } from '../account.store.js';

/** Swaps ARGV[1] for ARGV[2] in the account's JSON (KEYS[1]) when it holds ARGV[1]; 1 when it did, 0 otherwise. */
const REPLACE_HASH = `
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local at, to = string.find(raw, ARGV[1], 1, true)
if not at then return 0 end
redis.call('SET', KEYS[1], string.sub(raw, 1, at - 1) .. ARGV[2] .. string.sub(raw, to + 1))
return 1
`;

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

  async replaceHash(user: string, from: string, to: string): Promise<boolean> {
    // The account's JSON is changed as text, field for field as it was written: only the hash's own member is swapped.
    const member = (hash: string) => `"passwordHash":${JSON.stringify(hash)}`;
    const replaced = await this.redis.client.eval(REPLACE_HASH, 1, this.accountKey(user), member(from), member(to));
    return replaced === 1;
  }

  async get(user: string): Promise<Account | undefined> {
    const raw = await this.redis.client.get(this.accountKey(user));
    return raw === null ? undefined : (JSON.parse(raw) as Account);
  }

  generation(): number {
    return this.redis.generation;
  }
}
