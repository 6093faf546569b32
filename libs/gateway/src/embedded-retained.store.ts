import type { Database } from 'lmdb';
import type { EmbeddedDatabase } from '#libs/storage';
import type { Packet, RetainedStore } from './broker-backplane.js';

interface Kept {
  qos: number;
  payload: Uint8Array;
}

/** Sub-database `broker-retained`, keyed by topic: the standalone broker's retained messages (presence), across restarts. */
export class EmbeddedRetainedStore implements RetainedStore {
  private readonly retained: Database<Kept, string>;

  constructor(db: EmbeddedDatabase) {
    this.retained = db.open('broker-retained');
  }

  *all(): Iterable<Packet> {
    for (const { key, value } of this.retained.getRange()) {
      yield { cmd: 'publish', topic: key, payload: Buffer.from(value.payload), qos: value.qos, retain: true, dup: false };
    }
  }

  async put(packet: Packet): Promise<void> {
    await this.retained.put(packet.topic, { qos: typeof packet.qos === 'number' ? packet.qos : 0, payload: Buffer.from(packet.payload ?? '') });
  }

  async remove(topic: string): Promise<void> {
    await this.retained.remove(topic);
  }
}
