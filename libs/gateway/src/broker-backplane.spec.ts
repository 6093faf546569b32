import { Packr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import { inMemoryBackplane, relayRecord } from './broker-backplane.js';

describe('relayRecord', () => {
  it('is byte for byte what msgpackr writes for {topic, payload}, at every length boundary of both', () => {
    const packr = new Packr({ useRecords: false });
    const topics = ['parley/v1/x', 'parley/v1/users/a-thirty-two-character-username/inbox', `parley/v1/anon/${'n'.repeat(250)}/inbox`];
    for (const topic of [...topics, 't'.repeat(31), 't'.repeat(32), 't'.repeat(255), 't'.repeat(256), 'zoë/☃'])
      for (const size of [0, 1, 255, 256, 65_535, 65_536, 70_000]) {
        const payload = Buffer.alloc(size, 0x61);
        const record = relayRecord([topic], payload);
        expect(record.equals(packr.pack({ topic, payload })), `${topic.length} ${size}`).toBe(true);
        expect(packr.unpack(record)).toEqual({ topic, payload });
      }
  });

  it('carries the payload once for several inboxes, the first as topic and the rest as also, as msgpackr writes it', () => {
    const packr = new Packr({ useRecords: false });
    const inbox = (i: number) => `parley/v1/users/member-${i}/inbox`;
    for (const count of [2, 16, 17, 300, 65_537])
      for (const size of [0, 300]) {
        const topics = Array.from({ length: count }, (_, i) => (i === 1 ? `parley/v1/users/${'z'.repeat(240)}/inbox` : inbox(i)));
        const payload = Buffer.alloc(size, 0x62);
        const record = relayRecord(topics, payload);
        const expected = { topic: topics[0], payload, also: topics.slice(1) };
        expect(record.equals(packr.pack(expected)), `${count} ${size}`).toBe(true);
        expect(packr.unpack(record)).toEqual(expected);
      }
  });
});

interface RetainedPersistence {
  storeRetained(packet: Record<string, unknown>): Promise<void>;
  createRetainedStream(pattern: string): AsyncIterable<{ payload: Buffer }>;
}

describe('inMemoryBackplane', () => {
  // A retained message (a user's presence) lives as long as the user does: a view of Node's shared 8 KiB slab would keep
  // the whole slab alive with it, long after everything else cut from it is gone.
  it('keeps a retained payload in memory of its own, not as a view of a shared slab', async () => {
    const persistence = inMemoryBackplane().persistence as RetainedPersistence;
    const pooled = Buffer.from('{"type":"presence","user":"alice","state":"online","lastSeen":1}');
    expect(pooled.buffer.byteLength).toBeGreaterThan(pooled.length);
    await persistence.storeRetained({ cmd: 'publish', topic: 'parley/v1/presence/alice', payload: pooled, qos: 1, retain: true, dup: false });
    const kept: Buffer[] = [];
    for await (const packet of persistence.createRetainedStream('parley/v1/presence/alice')) kept.push(packet.payload);
    expect(kept).toHaveLength(1);
    expect(kept[0]!.equals(pooled)).toBe(true);
    expect(kept[0]!.buffer.byteLength).toBe(pooled.length);
  });
});
