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

/** Calls of a batched script: one script call per event-loop turn, each call still answered, or refused, on its own. */
describe('RedisConnection batchedScript', () => {
  let redis: RedisServer;
  let admin: Redis;
  let connection: RedisConnection;
  /** Pushes its argument onto its key's list and answers the list's new length; a second argument `fail` raises an error. */
  let push: (keys: string[], args: (string | number)[]) => Promise<unknown>;
  beforeAll(async () => {
    redis = await startRedis();
    admin = new Redis(redis.url);
    connection = new RedisConnection(redis.url, `batch${Date.now()}:`);
    push = connection.batchedScript(
      'parleyTestPush',
      1,
      `if ARGV[2] == 'fail' then return redis.call('INCR', KEYS[1]) end
return redis.call('RPUSH', KEYS[1], ARGV[1])`,
    );
    await admin.ping();
  });
  afterAll(async () => {
    await connection?.close();
    admin?.disconnect();
    await redis?.stop();
  });

  /** The script calls Redis ran, by SLOWLOG (which records every command with a threshold of 0), that named `key`. */
  async function scriptCallsNaming(key: string): Promise<string[][]> {
    const entries = (await admin.slowlog('GET', 10_000)) as [number, number, number, string[]][];
    return entries.map((e) => e[3]).filter((args) => /^eval/i.test(args[0] ?? '') && args.includes(key));
  }

  it('sends the calls of one turn as one script call, runs them in the order they were made, and answers each its own result', async () => {
    await admin.config('SET', 'slowlog-log-slower-than', '0');
    await admin.config('SET', 'slowlog-max-len', '10000');
    await admin.slowlog('RESET');
    const key = connection.key('list', 'one-turn');
    const replies = await Promise.all(Array.from({ length: 20 }, (_, i) => push([key], [`m${i}`])));
    expect(replies).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    expect(await admin.lrange(key, 0, -1)).toEqual(Array.from({ length: 20 }, (_, i) => `m${i}`));
    expect(await scriptCallsNaming(key)).toHaveLength(1);
    // Calls of a later turn go in a call of their own.
    await push([key], ['later']);
    expect(await scriptCallsNaming(key)).toHaveLength(2);
    await admin.config('SET', 'slowlog-log-slower-than', '10000');
  });

  it('refuses only the call whose commands raised an error, with Redis’s words, and runs the calls after it', async () => {
    const key = connection.key('list', 'one-fails');
    const calls = [push([key], ['a']), push([key], ['b', 'fail']), push([key], ['c'])];
    const settled = await Promise.allSettled(calls);
    expect(settled[0]).toEqual({ status: 'fulfilled', value: 1 });
    expect(settled[1]).toMatchObject({ status: 'rejected', reason: { message: expect.stringContaining('WRONGTYPE') } });
    expect(settled[2]).toEqual({ status: 'fulfilled', value: 2 });
    expect(await admin.lrange(key, 0, -1)).toEqual(['a', 'c']);
  });

  it('splits a turn of more calls than one script call takes, keeping their order', async () => {
    const key = connection.key('list', 'many');
    const replies = await Promise.all(Array.from({ length: 300 }, (_, i) => push([key], [i])));
    expect(replies).toEqual(Array.from({ length: 300 }, (_, i) => i + 1));
    expect(await admin.lrange(key, 0, -1)).toEqual(Array.from({ length: 300 }, (_, i) => String(i)));
  });

  it('refuses each call of a batch, with Redis’s words, when Redis takes no writes, and works again once it does', async () => {
    const key = connection.key('list', 'full');
    await admin.config('SET', 'maxmemory', '1');
    try {
      const settled = await Promise.allSettled([push([key], ['a']), push([key], ['b'])]);
      for (const s of settled) expect(s).toMatchObject({ status: 'rejected', reason: { message: expect.stringContaining('OOM') } });
    } finally {
      await admin.config('SET', 'maxmemory', '0');
    }
    expect(await admin.exists(key)).toBe(0);
    expect(await push([key], ['c'])).toBe(1);
  });

  it('keeps the calls of successive turns in order, with their batches in flight together, after Redis forgot its scripts', async () => {
    const key = connection.key('list', 'flushed');
    expect(await push([key], ['a'])).toBe(1);
    // Scripts gone behind a kept connection (SCRIPT FLUSH, a failover behind a proxy): a batch sent by its digest would
    // be refused, and sent again after the batches of later turns had run.
    await admin.script('FLUSH');
    const calls: Promise<unknown>[] = [];
    for (let turn = 0; turn < 6; turn++) {
      for (let i = 0; i < 5; i++) calls.push(push([key], [`t${turn}.${i}`]));
      await new Promise((resolve) => setImmediate(resolve));
    }
    expect(await Promise.all(calls)).toEqual(Array.from({ length: 30 }, (_, i) => i + 2));
    const expected = ['a', ...Array.from({ length: 6 }, (_, t) => Array.from({ length: 5 }, (_, i) => `t${t}.${i}`)).flat()];
    expect(await admin.lrange(key, 0, -1)).toEqual(expected);
  });

  it('answers a call whose body returns nothing with null, as a script call would', async () => {
    const nothing = connection.batchedScript('parleyTestNothing', 1, `redis.call('SET', KEYS[1], ARGV[1])`);
    expect(await nothing([connection.key('nothing')], ['x'])).toBeNull();
    expect(await admin.get(connection.key('nothing'))).toBe('x');
  });

  it('refuses a call with the wrong number of keys at once, sending nothing', () => {
    expect(() => push(['a', 'b'], ['x'])).toThrow(/takes 1 keys, not 2/);
  });
});
