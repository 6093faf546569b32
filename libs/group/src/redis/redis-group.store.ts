import type { RedisConnection } from '#libs/storage';
import type { GroupState } from '../group-state.js';
import type { GroupStore } from '../group.store.js';

/** Key `{prefix}group:{id}`: the state as JSON. */
export class RedisGroupStore implements GroupStore {
  constructor(private readonly redis: RedisConnection) {}

  async get(id: string): Promise<GroupState | undefined> {
    const raw = await this.redis.client.get(this.redis.key('group', id));
    return raw === null ? undefined : (JSON.parse(raw) as GroupState);
  }

  async save(state: GroupState): Promise<void> {
    await this.redis.client.set(this.redis.key('group', state.id), JSON.stringify(state));
  }
}
