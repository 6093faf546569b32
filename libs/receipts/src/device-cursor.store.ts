/** A device's delivered positions, by conversation, when it was last used, and whether its positions were filled in. */
export interface DeviceCursors {
  cursors: Record<string, number>;
  usedAt: number;
  /** False from `start` until `fill`: a catch-up that made the device known ended before it set every position. */
  complete: boolean;
}

/**
 * Storage port for the delivered positions of a user's devices that keep a session (MQTT clean session off): per
 * conversation, how far the device itself has acknowledged, so that a device that was away is brought up to date from
 * where it stood, even when another device of the same user acknowledged the messages meanwhile. A device is known from
 * its first catch-up (`start`, then `fill`) until it is pushed out by the user's newer devices.
 */
export interface DeviceCursorStore {
  /** The device's positions, or null when it is not known. */
  get(user: string, device: string): Promise<DeviceCursors | null>;

  /**
   * Makes the device known, not complete, used at `at`, keeping the positions it has (none for a new device) unless
   * `fresh`, which drops them. When the user then has more than `keep` devices, the least recently used others are
   * forgotten. Resolves, once durable, with the devices forgotten.
   */
  start(user: string, device: string, at: number, keep: number, fresh: boolean): Promise<string[]>;

  /**
   * Sets a known device's position in each conversation given to the larger of the one it has and the one given, and
   * marks the device complete. Resolves, once durable, with its positions in those conversations; with null when the
   * device is not known (forgotten meanwhile), changing nothing.
   */
  fill(user: string, device: string, positions: Record<string, number>): Promise<Record<string, number> | null>;

  /**
   * Moves a known device's position in a conversation forward to `seq` (never back) and marks the device used at `at`.
   * Does nothing for a device that is not known. Resolves, once durable, with whether the position moved.
   */
  advance(user: string, device: string, conv: string, seq: number, at: number): Promise<{ moved: boolean }>;

  /** Marks a known device used at `at` (a catch-up); nothing for one that is not known. */
  touch(user: string, device: string, at: number): Promise<void>;
}
