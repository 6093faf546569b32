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
