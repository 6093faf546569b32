/** A device's delivered positions, by conversation, and when the device was last used. */
export interface DeviceCursors {
  cursors: Record<string, number>;
  usedAt: number;
}

/**
 * Storage port for the delivered positions of a user's devices that keep a session (MQTT clean session off): per
 * conversation, how far the device itself has acknowledged, so that a device that was away is brought up to date from
 * where it stood, even when another device of the same user acknowledged the messages meanwhile. A device is known from
 * its first catch-up (`start`) until it is replaced or forgotten.
 */
export interface DeviceCursorStore {
  /** The device's positions, or null when it is not known. */
  get(user: string, device: string): Promise<DeviceCursors | null>;

  /**
   * Makes the device known with these positions (replacing any it had), used at `at`. When the user then has more than
   * `keep` devices, the least recently used others are forgotten. Resolves, once durable, with the devices forgotten.
   */
  start(user: string, device: string, cursors: Record<string, number>, at: number, keep: number): Promise<string[]>;

  /**
   * Moves a known device's position in a conversation forward to `seq` (never back) and marks the device used at `at`.
   * Does nothing for a device that is not known. Resolves, once durable, with whether the position moved.
   */
  advance(user: string, device: string, conv: string, seq: number, at: number): Promise<{ moved: boolean }>;

  /** Marks a known device used at `at` (a catch-up); nothing for one that is not known. */
  touch(user: string, device: string, at: number): Promise<void>;
}
