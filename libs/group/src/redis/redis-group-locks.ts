import { randomUUID } from 'node:crypto';
import { DomainError } from '#libs/protocol';
import type { RedisConnection } from '#libs/storage';
import { KeyedQueue } from '#libs/locks';
import type { GroupLocks } from '../group-locks.js';

export interface RedisLockOptions {
  /** A lock whose holder died is free again after this long. */
  leaseMs: number;
  /** How long a call waits for the lock before it gives up with `unavailable`. */
  waitMs: number;
}

/**
 * Key `{prefix}group-lock:{id}`: a lease taken with SET NX PX and a random
 * token, released only by its holder (compare and delete in one script).
 * Calls of this process queue up in memory first, so they never contend in Redis.
 */
export class RedisGroupLocks implements GroupLocks {
  private readonly queue = new KeyedQueue();
  private readonly release: (keys: string[], args: string[]) => Promise<unknown>;

  constructor(
    private readonly redis: RedisConnection,
    private readonly opts: RedisLockOptions = { leaseMs: 10_000, waitMs: 5_000 },
  ) {
    this.release = redis.script('parleyGroupUnlock', 1, `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`);
  }

  withLock<T>(id: string, work: () => Promise<T>): Promise<T> {
    return this.queue.run(id, async () => {
      const key = this.redis.key('group-lock', id);
      const token = randomUUID();
      const deadline = Date.now() + this.opts.waitMs;
      for (let delay = 5; ; delay = Math.min(delay * 2, 100)) {
        if ((await this.redis.client.set(key, token, 'PX', this.opts.leaseMs, 'NX')) === 'OK') break;
        if (Date.now() + delay > deadline) throw new DomainError('unavailable', 'the group is busy; try again');
        await new Promise((resolve) => setTimeout(resolve, delay));
      }
      try {
        return await work();
      } finally {
        await this.release([key], [token]).catch(() => undefined);
      }
    });
  }
}
