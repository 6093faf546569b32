import type { RedisConnection } from '#libs/storage';
import type { ConversationIndexStore } from '../conversation-index.store.js';

/** Key `{prefix}convs:{user}`: a set of conversation ids. */
export class RedisConversationIndexStore implements ConversationIndexStore {
  constructor(private readonly redis: RedisConnection) {}

  async add(user: string, conv: string): Promise<void> {
    await this.redis.client.sadd(this.redis.key('convs', user), conv);
  }

  list(user: string): Promise<string[]> {
    return this.redis.client.smembers(this.redis.key('convs', user));
  }

  generation(): number {
    return this.redis.generation;
  }
}
