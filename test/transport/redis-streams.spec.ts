import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { DomainError } from '#libs/protocol';
import { exposeService, RedisStreamsClient, RedisStreamsServer, rpcProxy } from '#libs/transport';
import { startRedis, type RedisServer } from '../support/redis-server.js';

/** The RPC transport against a real redis-server: once per call, nothing lost while a service is down, clear errors. */
interface Counter {
  add(n: number): Promise<number>;
  fail(code: string): Promise<never>;
  hang(): Promise<never>;
  /** Fails as a store does (an error that is no DomainError: Redis out of memory, a full disk). */
  crash(): Promise<never>;
}

describe('RPC over Redis Streams', () => {
  let redis: RedisServer;
  let prefix: string;
  const closers: (() => Promise<unknown>)[] = [];

  beforeAll(async () => {
    redis = await startRedis();
  });
  afterEach(async () => {
    await Promise.allSettled(closers.splice(0).map((c) => c()));
  });
  afterAll(() => redis?.stop());

  const serve = async (calls: number[], opts: { claimIdleMs?: number } = {}) => {
    const server = new RedisStreamsServer({ url: redis.url, prefix, blockMs: 200, claimIdleMs: opts.claimIdleMs ?? 60_000 });
    const impl: Counter = {
      add: (n: number) => {
        calls.push(n);
        return Promise.resolve(n + 1);
      },
      fail: (code: string) => Promise.reject(new DomainError(code as 'not_member', `refused with ${code}`)),
      hang: () => new Promise<never>(() => undefined),
      crash: () => Promise.reject(new Error("OOM command not allowed when used memory > 'maxmemory'.")),
    };
    exposeService(server, 'counter', impl, ['add', 'fail', 'hang', 'crash']);
    await new Promise<void>(
      (resolve, reject) => void server.listen((err) => (err ? reject(err instanceof Error ? err : new Error('listen failed')) : resolve())),
    );
    closers.push(() => server.close());
    return server;
  };
  const connect = (timeoutMs = 3000) => {
    const client = new RedisStreamsClient({ url: redis.url, prefix });
    closers.push(() => client.close());
    return rpcProxy<Counter>(client, 'counter', ['add', 'fail', 'hang', 'crash'], timeoutMs);
  };

  it('calls and answers, and brings a DomainError back with its code', async () => {
    prefix = `r${randomBytes(3).toString('hex')}:`;
    const calls: number[] = [];
    await serve(calls);
    const counter = connect();
    expect(await counter.add(41)).toBe(42);
    await expect(counter.fail('not_member')).rejects.toMatchObject({ name: 'DomainError', code: 'not_member', message: 'refused with not_member' });
    expect(calls).toEqual([41]);
    // Answered calls leave nothing in Redis (they filled it up to each stream's cap).
    const admin = new Redis(redis.url);
    try {
      await vi.waitFor(async () => expect(await admin.xlen(`${prefix}rpc:counter`)).toBe(0), { timeout: 5000 });
    } finally {
      admin.disconnect();
    }
  });

  it('answers a failure that is no DomainError as unavailable (to be retried), without what the store said', async () => {
    prefix = `r${randomBytes(3).toString('hex')}:`;
    await serve([]);
    const counter = connect();
    const failed = await counter.crash().catch((e: unknown) => e);
    expect(failed).toMatchObject({ name: 'DomainError', code: 'unavailable' });
    expect((failed as Error).message).not.toContain('OOM');
  });

  it('ends in unavailable, not a hang, when no service answers', async () => {
    prefix = `r${randomBytes(3).toString('hex')}:`;
    const counter = connect(500);
    const started = Date.now();
    await expect(counter.add(1)).rejects.toMatchObject({ code: 'unavailable' });
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it('keeps a call made while the service is down, and runs it once the service starts', async () => {
    prefix = `r${randomBytes(3).toString('hex')}:`;
    const calls: number[] = [];
    // The group must exist before the call for "$" to include it: a service that ran before created it.
    const first = await serve([]);
    await first.close();
    const counter = connect(10_000);
    const pending = counter.add(7);
    await serve(calls);
    expect(await pending).toBe(8);
    expect(calls).toEqual([7]);
  });

  it('answers a call within a second, for a service it watches, while none of its processes is alive, and waits again once one is', async () => {
    prefix = `r${randomBytes(3).toString('hex')}:`;
    const client = new RedisStreamsClient({ url: redis.url, prefix, expireAfterMs: 60_000, failFastFor: ['counter'] });
    closers.push(() => client.close());
    // A caller that would wait a minute: the answer comes after the client's short wait for a service found down.
    const counter = rpcProxy<Counter>(client, 'counter', ['add'], 60_000);
    const calls: number[] = [];
    const first = await serve(calls);
    expect(await counter.add(1)).toBe(2);
    // Stopped, its process says so (its heartbeat goes): the next look finds the service down.
    await first.close();
    await vi.waitFor(() => expect(client.knownDown('counter')).toBe(true), { timeout: 5000 });
    await expect(counter.add(2)).rejects.toMatchObject({
      code: 'unavailable',
      message: 'the counter service is down (none of its processes has been heard from for 5 s); try again later',
    });
    // Not carried out later: it never went into the stream.
    await serve(calls);
    await vi.waitFor(() => expect(client.knownDown('counter')).toBe(false), { timeout: 5000 });
    expect(await counter.add(3)).toBe(4);
    expect(calls).toEqual([1, 3]);
  });

  it('reaches the service once Redis is back, when its first call was made while Redis was down', async () => {
    prefix = `r${randomBytes(3).toString('hex')}:`;
    const calls: number[] = [];
    await serve(calls);
    await redis.shutdown();
    const counter = connect(2000);
    // As a gateway started before Redis: the first call cannot reach it.
    await expect(counter.add(1)).rejects.toMatchObject({ code: 'unavailable' });
    await redis.restart();
    // Once back, calls go through (the service reconnects on its own, and picks them up from its stream).
    await vi.waitFor(async () => expect(await counter.add(2)).toBe(3), { timeout: 15_000, interval: 200 });
    expect(calls).toContain(2);
  });

  it('runs calls side by side: one that never finishes holds up no other', async () => {
    prefix = `r${randomBytes(3).toString('hex')}:`;
    const calls: number[] = [];
    await serve(calls);
    const counter = connect(2000);
    const stuck = counter.hang();
    stuck.catch(() => undefined);
    expect(await Promise.all([counter.add(1), counter.add(2)])).toEqual([2, 3]);
    await expect(stuck).rejects.toMatchObject({ code: 'unavailable' });
  });

  it('runs each call once across replicas', async () => {
    prefix = `r${randomBytes(3).toString('hex')}:`;
    const a: number[] = [];
    const b: number[] = [];
    await serve(a);
    await serve(b);
    const counter = connect();
    const results = await Promise.all(Array.from({ length: 60 }, (_, i) => counter.add(i)));
    expect(results).toEqual(Array.from({ length: 60 }, (_, i) => i + 1));
    expect([...a, ...b].sort((x, y) => x - y)).toEqual(Array.from({ length: 60 }, (_, i) => i));
  });

  it('hands a call held by a replica that died to another replica', async () => {
    prefix = `r${randomBytes(3).toString('hex')}:`;
    const calls: number[] = [];
    // Replica A takes the call and never finishes it (as if killed); it stops without acknowledging.
    const hanging = new RedisStreamsServer({ url: redis.url, prefix, blockMs: 200, claimIdleMs: 60_000 });
    let taken: () => void = () => undefined;
    const tookIt = new Promise<void>((resolve) => (taken = resolve));
    exposeService(hanging, 'counter', { add: () => (taken(), new Promise<never>(() => undefined)) }, ['add']);
    await new Promise<void>((resolve) => void hanging.listen(() => resolve()));
    const counter = connect(20_000);
    const pending = counter.add(5);
    await tookIt;
    void hanging.close();
    // Replica B claims calls idle for 300 ms.
    await serve(calls, { claimIdleMs: 300 });
    expect(await pending).toBe(6);
    expect(calls).toEqual([5]);
  });
});
