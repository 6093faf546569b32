import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisConnection } from '#libs/storage';
import { startRedis, type RedisServer } from '../support/redis-server.js';

/** The wipe marker of a real Redis: what a process remembers of Redis's data holds within one generation only. */
describe('RedisConnection generation', () => {
  let redis: RedisServer;
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(() => redis?.stop());

  it('starts a new generation when the data is wiped behind a kept connection, also before its first marker read succeeded', async () => {
    const admin = new Redis(redis.url);
    // Full at start: the marker cannot be written, so this process has nothing to compare with for a while.
    await admin.config('SET', 'maxmemory', '1');
    const connection = new RedisConnection(redis.url, `gen${Date.now()}:`);
    try {
      await expect.poll(() => connection.ping(), { timeout: 5000 }).toBe(true);
      const before = connection.generation;
      // What it learns now (an account, say) belongs to this generation; then the data goes, before any marker was read.
      await admin.config('SET', 'maxmemory', '0');
      await admin.flushall();
      await expect.poll(() => connection.generation, { timeout: 5000 }).toBeGreaterThan(before);
      // Once it has a marker, a wipe behind the kept connection is noticed too.
      const settled = connection.generation;
      await admin.flushall();
      await expect.poll(() => connection.generation, { timeout: 5000 }).toBeGreaterThan(settled);
    } finally {
      await connection.close();
      admin.disconnect();
    }
  });
});
