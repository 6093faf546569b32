import { Logger } from '@nestjs/common';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it, vi, type MockInstance } from 'vitest';
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

  it('logs that Redis cannot be reached (once, not at every reconnect attempt), and that it can again', async () => {
    const warn = vi.spyOn(Logger.prototype, 'warn').mockImplementation(() => undefined);
    const log = vi.spyOn(Logger.prototype, 'log').mockImplementation(() => undefined);
    const logged = (spy: MockInstance, event: string) => spy.mock.calls.filter(([m]) => (m as { event?: string }).event === event).length;
    const connection = new RedisConnection(redis.url, `log${Date.now()}:`);
    try {
      await expect.poll(() => connection.ping(), { timeout: 5000 }).toBe(true);
      expect(logged(warn, 'redis_unreachable')).toBe(0);
      await redis.shutdown();
      await expect.poll(() => logged(warn, 'redis_unreachable'), { timeout: 5000 }).toBe(1);
      await redis.restart();
      await expect.poll(() => logged(log, 'redis_reachable'), { timeout: 10_000 }).toBe(1);
      // Reconnect attempts, at most a second apart, failed all the while: one line said so.
      expect(logged(warn, 'redis_unreachable')).toBe(1);
      // A second outage soon after (within the first one's ten seconds) is said at once too.
      await redis.shutdown();
      await expect.poll(() => logged(warn, 'redis_unreachable'), { timeout: 5000 }).toBe(2);
      await redis.restart();
      await expect.poll(() => logged(log, 'redis_reachable'), { timeout: 10_000 }).toBe(2);
    } finally {
      warn.mockRestore();
      log.mockRestore();
      await connection.close();
    }
  });
});
