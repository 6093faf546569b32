import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { Server, type CustomTransportStrategy } from '@nestjs/microservices';
import { Redis } from 'ioredis';
import { lastValueFrom } from 'rxjs';
import { DomainError, serverFailure } from '#libs/protocol';
import { LogThrottle } from '#libs/runtime';
import { quitRedis } from '#libs/storage';
import { withDeadline, type QueueDepth } from '#libs/health';
import { ALIVE_WITHIN_MS, fieldsOf, HEARTBEAT_MS, methodOf, rpcKeys, serviceOf, type RpcError } from './rpc-keys.js';
import { rpcQueueDepths, type RpcObserver } from './rpc-metrics.js';

export interface RedisStreamsServerOptions {
  url: string;
  prefix: string;
  /** How long one XREADGROUP blocks; also bounds how fast close() returns. */
  blockMs?: number;
  /** A call a consumer has held this long without acknowledging is taken over by another (its consumer died). */
  claimIdleMs?: number;
  /** Roughly how many entries each stream keeps. */
  maxLen?: number;
  /** Told of every call handled (for latency metrics). */
  observe?: RpcObserver;
}

type Entry = [id: string, fields: string[]];

/**
 * Calls of one service that one process runs at once, at most; the rest wait in the stream for a free place (or for
 * another replica). Calls run concurrently here just as they do across replicas: callers that need an order keep it
 * themselves (a connection's requests are answered one after the other; presence reports a connection's end only after
 * its start). One slow or stuck call therefore holds up only itself.
 */
const MAX_IN_FLIGHT = 64;

/**
 * A Nest transport on Redis Streams, for calls that must not be lost and must
 * run once however many replicas a service has: each service's calls are one
 * stream, consumed by a consumer group named after the service, so each call
 * goes to one replica; a call is acknowledged (XACK) only after its reply is
 * published; calls left pending by a replica that died are claimed by another
 * after `claimIdleMs`; calls made while no replica runs wait in the stream.
 *
 * Delivery is at least once: a handler must be idempotent (every exposed
 * domain method is: presence by connection id, cursors forward-only, groups
 * and messages by request id).
 */
export class RedisStreamsServer extends Server implements CustomTransportStrategy {
  private readers: Redis[] = [];
  private writer: Redis | undefined;
  private running = false;
  private readonly consumer = `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`;
  private loops: Promise<void>[] = [];
  /** The calls running now, per service. */
  private readonly inFlight = new Map<string, Set<Promise<void>>>();
  /** Failures alike (a full Redis refuses every call) are logged once a window, with a count of the rest. */
  private readonly failureLog = new LogThrottle();
  private readonly opts: Required<Omit<RedisStreamsServerOptions, 'observe'>> & Pick<RedisStreamsServerOptions, 'observe'>;

  constructor(opts: RedisStreamsServerOptions) {
    super();
    this.opts = { blockMs: 1000, claimIdleMs: 5000, maxLen: 100_000, ...opts };
  }

  async listen(callback: (err?: unknown) => void): Promise<void> {
    try {
      this.writer = this.connection();
      const services = this.services();
      for (const service of services) await this.ensureGroup(service);
      this.running = true;
      // One blocking reader per service: XREADGROUP reads all its streams under one group, and each service has its own.
      this.readers = services.map(() => this.connection());
      await this.beat(services);
      this.loops = [...services.map((s, i) => this.readLoop(s, this.readers[i]!)), this.claimLoop(services), this.heartbeatLoop(services)];
      callback();
    } catch (e) {
      callback(e);
    }
  }

  /** Timers of the loops' pauses, cut short by close(). */
  private readonly pauses = new Set<() => void>();

  private pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.pauses.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.pauses.add(done);
    });
  }

  async close(): Promise<void> {
    this.running = false;
    for (const wake of [...this.pauses]) wake();
    // Each blocking read returns within blockMs; then the connections go. A command waiting for a Redis that
    // is away would wait forever (reads retry without limit), so the wait is bounded too.
    await withDeadline(Promise.allSettled(this.loops), this.opts.blockMs + 1000).catch(() => undefined);
    // Calls under way finish and are acknowledged if they can; one still running after that is claimed by another replica.
    const running = [...this.inFlight.values()].flatMap((calls) => [...calls]);
    await withDeadline(Promise.allSettled(running), this.opts.blockMs + 1000).catch(() => undefined);
    // Leaving the consumer groups is a courtesy (a dead consumer's calls are claimed anyway): it must not hold the stop while Redis is away.
    if (this.writer?.status === 'ready') await this.leaveGroups();
    await Promise.all([...this.readers, ...(this.writer ? [this.writer] : [])].map((r) => quitRedis(r)));
  }

  /** Records this consumer as alive for each service (what gateways' readiness checks read), and forgets long-dead ones. */
  private async beat(services: string[]): Promise<void> {
    const now = Date.now();
    for (const service of services) {
      const key = rpcKeys.alive(this.opts.prefix, service);
      await this.writer!.multi()
        .zadd(key, now, this.consumer)
        .zremrangebyscore(key, '-inf', now - 10 * ALIVE_WITHIN_MS)
        .exec();
    }
  }

  private async heartbeatLoop(services: string[]): Promise<void> {
    while (this.running) {
      await this.pause(HEARTBEAT_MS);
      if (this.running) await this.beat(services).catch(() => undefined);
    }
  }

  /** A clean stop removes this consumer from its groups (when it holds no call), so readiness checks see it gone at once. */
  private async leaveGroups(): Promise<void> {
    const services = this.services();
    for (const service of services) {
      try {
        await this.writer!.zrem(rpcKeys.alive(this.opts.prefix, service), this.consumer);
        const stream = rpcKeys.stream(this.opts.prefix, service);
        const [count] = await this.writer!.xpending(stream, service, '-', '+', 1, this.consumer);
        if (count === undefined) await this.writer!.xgroup('DELCONSUMER', stream, service, this.consumer);
      } catch {
        // Redis away: the consumer just ages out.
      }
    }
  }

  on(): void {
    // No transport events to subscribe to.
  }

  unwrap<T>(): T {
    return this.writer as T;
  }

  /** True while this process consumes its streams and Redis answers. */
  async healthy(): Promise<boolean> {
    if (!this.running || !this.writer) return false;
    try {
      return (await this.writer.ping()) === 'PONG';
    } catch {
      return false;
    }
  }

  /** How many calls wait in this process's services' streams (for the queue depth gauge). */
  queueDepths(): Promise<QueueDepth[]> {
    if (!this.writer) return Promise.resolve([]);
    return rpcQueueDepths(this.writer, this.opts.prefix, this.services());
  }

  /** The services this process serves: the first segment of its handlers' patterns. */
  private services(): string[] {
    return [...new Set([...this.messageHandlers.keys()].map(serviceOf))];
  }

  private async ensureGroup(service: string): Promise<void> {
    try {
      await this.writer!.xgroup('CREATE', rpcKeys.stream(this.opts.prefix, service), service, '$', 'MKSTREAM');
    } catch (e) {
      if (!String(e).includes('BUSYGROUP')) throw e;
    }
  }

  private connection(): Redis {
    // Commands wait through a Redis restart rather than fail: a service keeps consuming once Redis is back.
    const r = new Redis(this.opts.url, { maxRetriesPerRequest: null, retryStrategy: (n) => Math.min(n * 100, 1000) });
    r.on('error', () => undefined);
    return r;
  }

  /** The calls of a service running now. */
  private callsOf(service: string): Set<Promise<void>> {
    let calls = this.inFlight.get(service);
    if (!calls) this.inFlight.set(service, (calls = new Set()));
    return calls;
  }

  /** Starts a call without waiting for it; it leaves `calls` when done. */
  private start(calls: Set<Promise<void>>, stream: string, service: string, entry: Entry): void {
    const call = this.handle(stream, service, entry).catch((e: unknown) => {
      // The reply or its acknowledgement could not be written (Redis away): the call is claimed again later.
      const error = e instanceof Error ? e.message : String(e);
      const fields = this.failureLog.logFields(`${service}\0answer\0${error}`);
      if (fields) this.logger.error({ event: 'rpc_answer_failed', service, error, ...fields });
    });
    calls.add(call);
    void call.finally(() => calls.delete(call));
  }

  private async readLoop(service: string, reader: Redis): Promise<void> {
    const stream = rpcKeys.stream(this.opts.prefix, service);
    const calls = this.callsOf(service);
    while (this.running) {
      try {
        while (calls.size >= MAX_IN_FLIGHT) await Promise.race(calls);
        if (!this.running) return;
        const room = MAX_IN_FLIGHT - calls.size;
        const res = (await reader.xreadgroup('GROUP', service, this.consumer, 'COUNT', room, 'BLOCK', this.opts.blockMs, 'STREAMS', stream, '>')) as
          [string, Entry[]][] | null;
        for (const [, entries] of res ?? []) for (const entry of entries) this.start(calls, stream, service, entry);
      } catch (e) {
        if (!this.running) return;
        // The group is gone after a Redis restart without persistence: make it again.
        if (String(e).includes('NOGROUP')) await this.ensureGroup(service).catch(() => undefined);
        await this.pause(200);
      }
    }
  }

  private async claimLoop(services: string[]): Promise<void> {
    while (this.running) {
      await this.pause(Math.max(200, this.opts.claimIdleMs / 2));
      for (const service of services) {
        if (!this.running) return;
        const calls = this.callsOf(service);
        const room = MAX_IN_FLIGHT - calls.size;
        if (room <= 0) continue;
        try {
          const stream = rpcKeys.stream(this.opts.prefix, service);
          const [, entries] = (await this.writer!.xautoclaim(stream, service, this.consumer, this.opts.claimIdleMs, '0-0', 'COUNT', room)) as [string, Entry[]];
          for (const entry of entries) this.start(calls, stream, service, entry);
        } catch {
          // Redis away: try again next round.
        }
      }
    }
  }

  /** Runs one call, publishes its reply (if the caller waits for one), then acknowledges it. */
  private async handle(stream: string, group: string, [entryId, fields]: Entry): Promise<void> {
    const started = process.hrtime.bigint();
    const f = fieldsOf(fields);
    const handler = f.pattern ? this.getHandlerByPattern(f.pattern) : null;
    let reply: { id: string; response?: unknown; err?: RpcError };
    try {
      if (!handler) throw new DomainError('unavailable', `no handler for ${f.pattern ?? '(none)'}`);
      // Its caller has stopped waiting and answered `unavailable`: carried out now, it would be done behind their back.
      if (f.expires !== undefined && Date.now() > Number(f.expires))
        throw new DomainError('unavailable', `${f.pattern ?? 'the call'} came after its caller stopped waiting: nothing was done`);
      const data: unknown = f.data === undefined ? undefined : JSON.parse(f.data);
      const result: unknown = await lastValueFrom(this.transformToObservable<unknown>(await handler(data)), { defaultValue: undefined });
      reply = { id: f.id ?? '', response: result };
    } catch (e) {
      // A failure of the service's own (its store refused a write, say) is logged here and answered as any such failure
      // at the gateway is: unavailable, to be retried.
      if (!(e instanceof DomainError)) {
        const error = e instanceof Error ? e.message : String(e);
        const fields = this.failureLog.logFields(`${f.pattern}\0${error}`);
        if (fields) this.logger.error({ event: 'rpc_failed', pattern: f.pattern, error, ...fields });
      }
      const answer = e instanceof DomainError ? e : serverFailure();
      reply = { id: f.id ?? '', err: { code: answer.code, message: answer.message } };
    }
    if (f.replyTo) await this.writer!.publish(f.replyTo, JSON.stringify(reply));
    // Answered calls are of no more use: deleted with their acknowledgement (one round trip), instead of filling Redis up
    // to each stream's cap (some 150 MB of old calls and file chunks). Should the delete be lost, the cap trims it.
    await Promise.all([this.writer!.xack(stream, group, entryId), this.writer!.xdel(stream, entryId)]);
    this.opts.observe?.(group, methodOf(f.pattern ?? ''), reply.err?.code ?? 'ok', Number(process.hrtime.bigint() - started) / 1e9);
  }
}
