/**
 * Storage port: mutual exclusion per group, so that a change is validated
 * against the state every earlier change left — across every process that
 * changes groups (group service replicas, or complete nodes on one Redis).
 */
export interface GroupLocks {
  /**
   * Runs `work` while holding the lock of group `id`, and releases it when
   * `work` settles (resolving or rejecting as `work` did). Calls for one group
   * run one at a time; calls for different groups do not wait for each other.
   * A lock whose holder died is free again after a bounded time. Throws
   * `DomainError('unavailable')` when the lock cannot be had within a bound.
   */
  withLock<T>(id: string, work: () => Promise<T>): Promise<T>;
}

/** Runs the calls for one key one after another, in call order, within this process. */
export class KeyedQueue {
  private readonly tails = new Map<string, Promise<unknown>>();

  run<T>(key: string, work: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(key) ?? Promise.resolve();
    const run = prev.then(work, work);
    const tail = run.catch(() => undefined);
    this.tails.set(key, tail);
    void tail.then(() => {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    });
    return run;
  }
}
