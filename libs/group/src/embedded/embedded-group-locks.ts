import { KeyedQueue } from '#libs/locks';
import type { GroupLocks } from '../group-locks.js';

/** One process owns the data directory, so an in-process queue per group is the whole lock. */
export class EmbeddedGroupLocks implements GroupLocks {
  private readonly queue = new KeyedQueue();

  withLock<T>(id: string, work: () => Promise<T>): Promise<T> {
    return this.queue.run(id, work);
  }
}
