import { Redis } from 'ioredis';
import { Packr } from 'msgpackr';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { startRedis, type RedisServer } from '../../../test/support/redis-server.js';
import { inMemoryBackplane, redisBackplane, relayRecord } from './broker-backplane.js';

describe('relayRecord', () => {
  it('is byte for byte what msgpackr writes for {topic, payload}, at every length boundary of both', () => {
    const packr = new Packr({ useRecords: false });
    const topics = ['parley/v1/x', 'parley/v1/users/a-thirty-two-character-username/inbox', `parley/v1/anon/${'n'.repeat(250)}/inbox`];
    for (const topic of [...topics, 't'.repeat(31), 't'.repeat(32), 't'.repeat(255), 't'.repeat(256), 'zoë/☃'])
      for (const size of [0, 1, 255, 256, 65_535, 65_536, 70_000]) {
        const payload = Buffer.alloc(size, 0x61);
        const record = relayRecord(topic, payload);
        expect(record.equals(packr.pack({ topic, payload })), `${topic.length} ${size}`).toBe(true);
        expect(packr.unpack(record)).toEqual({ topic, payload });
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

describe('redisBackplane', () => {
  let redis: RedisServer;
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(() => redis?.stop());

  const packet = (topic: string) => ({ cmd: 'publish', topic, payload: Buffer.from(topic), qos: 0, retain: false, dup: false });
  const turn = () => new Promise((resolve) => setImmediate(resolve));

  it('sends its last batch to the other gateways when it closes, also while an earlier batch still awaits Redis', async () => {
    const closing = redisBackplane(redis.url, 'close-test:');
    const other = redisBackplane(redis.url, 'close-test:');
    const seen: string[] = [];
    other.mq.on('t/#', (p: { topic: string }, done: () => void) => (seen.push(p.topic), done()));
    // The other gateway is subscribed once a probe reaches it.
    await vi.waitFor(
      async () => {
        closing.mq.emit(packet('t/probe'));
        await new Promise((resolve) => setTimeout(resolve, 20));
        expect(seen).toContain('t/probe');
      },
      { timeout: 5000 },
    );
    const admin = new Redis(redis.url);
    try {
      // Redis holds every command for a while: the first batch is sent and unanswered when the gateway closes.
      await admin.call('CLIENT', 'PAUSE', '300', 'ALL');
      closing.mq.emit(packet('t/first'));
      // The batch goes out at the end of this turn, and its auto-pipeline is written in the next.
      await turn();
      await turn();
      closing.mq.emit(packet('t/last'));
      await new Promise<void>((resolve) => closing.mq.close(resolve));
      await vi.waitFor(() => expect(seen).toEqual(expect.arrayContaining(['t/first', 't/last'])), { timeout: 3000 });
    } finally {
      admin.disconnect();
      await new Promise<void>((resolve) => other.mq.close(resolve));
    }
  });
});
