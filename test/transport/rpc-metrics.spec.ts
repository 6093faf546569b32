import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Metrics } from '#libs/health';
import { DomainError } from '#libs/protocol';
import { exposeService, observeInto, RedisStreamsClient, RedisStreamsServer, rpcProxy, rpcQueueDepths } from '#libs/transport';
import { sample } from '../support/prometheus.js';
import { startRedis, type RedisServer } from '../support/redis-server.js';

/** What the transport tells /metrics, against a real redis-server: queue depths by state, and call latencies on both sides by outcome. */
describe('RPC metrics', () => {
  let redis: RedisServer;
  let admin: Redis;

  beforeAll(async () => {
    redis = await startRedis();
    admin = new Redis(redis.url);
  });
  afterAll(async () => {
    admin?.disconnect();
    await redis?.stop();
  });

  it('reads a queue as waiting (no replica took it) and pending (taken, not answered); a stream never written holds nothing', async () => {
    const prefix = `q${randomBytes(4).toString('hex')}:`;
    const stream = `${prefix}rpc:echo`;
    expect(await rpcQueueDepths(admin, prefix, ['echo'])).toEqual([{ service: 'echo', waiting: 0, pending: 0 }]);
    // Calls made before any replica made the group all wait.
    await admin.xadd(stream, '*', 'pattern', 'echo.say');
    await admin.xadd(stream, '*', 'pattern', 'echo.say');
    expect(await rpcQueueDepths(admin, prefix, ['echo'])).toEqual([{ service: 'echo', waiting: 2, pending: 0 }]);
    await admin.xgroup('CREATE', stream, 'echo', '0');
    await admin.xadd(stream, '*', 'pattern', 'echo.say');
    expect(await rpcQueueDepths(admin, prefix, ['echo'])).toEqual([{ service: 'echo', waiting: 3, pending: 0 }]);
    // A replica takes one and has not answered yet.
    const taken = (await admin.xreadgroup('GROUP', 'echo', 'replica-1', 'COUNT', 2, 'STREAMS', stream, '>')) as [string, [string, string[]][]][];
    expect(await rpcQueueDepths(admin, prefix, ['echo'])).toEqual([{ service: 'echo', waiting: 1, pending: 2 }]);
    // One answered: acknowledged and deleted, as the server does. Redis no longer knows the lag then; the depths hold.
    const [first] = taken[0]![1];
    await admin.xack(stream, 'echo', first![0]);
    await admin.xdel(stream, first![0]);
    expect(await rpcQueueDepths(admin, prefix, ['echo'])).toEqual([{ service: 'echo', waiting: 1, pending: 1 }]);
  });

  it('times each call at the caller and at the service, labelled by service, method and outcome', async () => {
    const prefix = `m${randomBytes(4).toString('hex')}:`;
    const caller = new Metrics();
    const callee = new Metrics();
    const server = new RedisStreamsServer({ url: redis.url, prefix, blockMs: 200, observe: observeInto(callee.rpcHandleSeconds) });
    const impl = {
      say: (text: string) => Promise.resolve(text),
      refuse: () => Promise.reject(new DomainError('not_allowed', 'no')),
    };
    exposeService(server, 'echo', impl, ['say', 'refuse']);
    await new Promise<void>(
      (resolve, reject) => void server.listen((err) => (err ? reject(err instanceof Error ? err : new Error('listen failed')) : resolve())),
    );
    const client = new RedisStreamsClient({ url: redis.url, prefix });
    try {
      const echo = rpcProxy<typeof impl>(client, 'echo', ['say', 'refuse'], 5000, observeInto(caller.rpcCallSeconds));
      expect(await echo.say('hi')).toBe('hi');
      await expect(echo.refuse()).rejects.toMatchObject({ code: 'not_allowed' });

      const calls = await caller.registry.metrics();
      expect(sample(calls, 'parley_rpc_call_duration_seconds_count', { service: 'echo', method: 'say', outcome: 'ok' })).toBe(1);
      expect(sample(calls, 'parley_rpc_call_duration_seconds_count', { service: 'echo', method: 'refuse', outcome: 'not_allowed' })).toBe(1);
      // The service acknowledges a call just after its reply is out: wait for that, bounded.
      await expect
        .poll(async () =>
          sample(await callee.registry.metrics(), 'parley_rpc_handle_duration_seconds_count', { service: 'echo', method: 'refuse', outcome: 'not_allowed' }),
        )
        .toBe(1);
      expect(sample(await callee.registry.metrics(), 'parley_rpc_handle_duration_seconds_count', { service: 'echo', method: 'say', outcome: 'ok' })).toBe(1);

      callee.watchQueues(() => server.queueDepths());
      const depths = await callee.registry.metrics();
      expect(sample(depths, 'parley_rpc_queue_depth', { service: 'echo', state: 'waiting' })).toBe(0);
      expect(sample(depths, 'parley_rpc_queue_depth', { service: 'echo', state: 'pending' })).toBe(0);
    } finally {
      await client.close();
      await server.close();
    }
  });
});
