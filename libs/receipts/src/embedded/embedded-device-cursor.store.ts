import type { Database } from 'lmdb';
import type { EmbeddedDatabase } from '#libs/storage';
import type { DeviceCursors, DeviceCursorStore } from '../device-cursor.store.js';

/** The key, among a device's positions, that marks it complete (no conversation id is empty). */
const COMPLETE = '';

/**
 * Sub-databases: `device-cursors` keyed [user, device, conv] → seq (and [user, device, ''] once complete); `devices`
 * keyed [user, device] → last used. A device is known while its `devices` entry is there.
 */
export class EmbeddedDeviceCursorStore implements DeviceCursorStore {
  private readonly cursors: Database<number, [string, string, string]>;
  private readonly devices: Database<number, [string, string]>;

  constructor(db: EmbeddedDatabase) {
    this.cursors = db.open('device-cursors');
    this.devices = db.open('devices');
  }

  get(user: string, device: string): Promise<DeviceCursors | null> {
    const usedAt = this.devices.get([user, device]);
    if (usedAt === undefined) return Promise.resolve(null);
    const cursors: Record<string, number> = {};
    let complete = false;
    for (const { key, value } of this.cursors.getRange({ start: [user, device, ''], end: [user, device, '\uffff'] })) {
      if (key[2] === COMPLETE) complete = true;
      else cursors[key[2]] = value;
    }
    return Promise.resolve({ cursors, usedAt, complete });
  }

  start(user: string, device: string, at: number, keep: number, fresh: boolean): Promise<string[]> {
    return this.devices.transaction(() => {
      if (fresh) this.drop(user, device);
      else void this.cursors.remove([user, device, COMPLETE]);
      void this.devices.put([user, device], at);
      const others = [...this.devices.getRange({ start: [user, ''], end: [user, '\uffff'] })]
        .filter(({ key }) => key[1] !== device)
        .sort((a, b) => a.value - b.value);
      const forgotten = others.slice(0, Math.max(0, others.length + 1 - keep)).map(({ key }) => key[1]);
      for (const old of forgotten) this.drop(user, old);
      return forgotten;
    });
  }

  fill(user: string, device: string, positions: Record<string, number>): Promise<Record<string, number> | null> {
    return this.devices.transaction(() => {
      if (this.devices.get([user, device]) === undefined) return null;
      const now: Record<string, number> = {};
      for (const [conv, seq] of Object.entries(positions)) {
        const had = this.cursors.get([user, device, conv]) ?? 0;
        if (seq > had) void this.cursors.put([user, device, conv], seq);
        now[conv] = Math.max(had, seq);
      }
      void this.cursors.put([user, device, COMPLETE], 1);
      return now;
    });
  }

  /** Inside a write transaction: forgets a device and its positions. */
  private drop(user: string, device: string): void {
    void this.devices.remove([user, device]);
    for (const key of this.cursors.getKeys({ start: [user, device, ''], end: [user, device, '\uffff'] })) void this.cursors.remove(key);
  }

  advance(user: string, device: string, conv: string, seq: number, at: number): Promise<{ moved: boolean }> {
    return this.devices.transaction(() => {
      if (this.devices.get([user, device]) === undefined) return { moved: false };
      void this.devices.put([user, device], at);
      if ((this.cursors.get([user, device, conv]) ?? 0) >= seq) return { moved: false };
      void this.cursors.put([user, device, conv], seq);
      return { moved: true };
    });
  }

  touch(user: string, device: string, at: number): Promise<void> {
    return this.devices.transaction(() => {
      if (this.devices.get([user, device]) !== undefined) void this.devices.put([user, device], at);
    });
  }
}
