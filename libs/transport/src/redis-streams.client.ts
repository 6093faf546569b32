import { randomUUID } from 'node:crypto';
import { ClientProxy, type ReadPacket, type WritePacket } from '@nestjs/microservices';
import { Redis } from 'ioredis';
import { quitRedis } from '#libs/storage';
import { ALIVE_WITHIN_MS, HEARTBEAT_MS, rpcKeys, serviceOf } from './rpc-keys.js';

export interface RedisStreamsClientOptions {
  url: string;
  prefix: string;
  maxLen?: number;
  /** Per service, roughly how many entries its stream keeps, where `maxLen` would hold too much (file chunks are tens of KiB each). */
  maxLenOf?: Record<string, number>;
  /**
   * How long the caller waits for an answer (PARLEY_RPC_TIMEOUT_MS). A call carries the time it expires, and a service
   * that takes it later does nothing with it: a caller told `unavailable` must not find it done later. Unset: no expiry.
   */
  expireAfterMs?: number;
  /** Patterns whose calls never expire: reports of what happened, which must land however late (presence changes). */
  lasting?: ReadonlySet<string>;
  /**
   * Services whose calls (those that expire) wait at most DOWN_WAIT_MS, then are answered `unavailable`, while none of
   * the service's processes is alive (no heartbeat within ALIVE_WITHIN_MS, read every HEARTBEAT_MS), instead of waiting
   * in the stream for their caller's whole wait. A gateway answers a connection's requests in order, so each request to
   * a service that is down held up every later one of its connection by PARLEY_RPC_TIMEOUT_MS: a direct message typed
   * behind a few group posts waited 15 s. A call made in the seconds between a crash and its last heartbeat growing old
   * still waits.
   */
  failFastFor?: readonly string[];
}

/** How long a call to a service found down waits (see `failFastFor`), and expires: a second, the time a look takes. */
const DOWN_WAIT_MS = 1000;

/**
 * The calling side of the Redis Streams transport: a call is an entry added
 * to the service's stream (so it waits there while no replica runs), and its
 * reply comes on this process's own pub/sub channel, matched by packet id.
 */
export class RedisStreamsClient extends ClientProxy {
  private pub: Redis | undefined;
  private sub: Redis | undefined;
  private connecting: Promise<void> | undefined;
  private readonly replyChannel: string;
  /** Of `failFastFor`, the services none of whose processes was alive at the last look. */
  private readonly down = new Set<string>();
  /** The timers ending the short waits of calls made to services found down, by packet id. */
  private readonly downWaits = new Map<string, NodeJS.Timeout>();
  private watcher: NodeJS.Timeout | undefined;

  constructor(private readonly opts: RedisStreamsClientOptions) {
    super();
    this.replyChannel = rpcKeys.replies(opts.prefix, randomUUID());
  }

  connect(): Promise<void> {
    this.connecting ??= (async () => {
      const make = () => {
        const r = new Redis(this.opts.url, { maxRetriesPerRequest: 2, retryStrategy: (n) => Math.min(n * 100, 1000) });
        r.on('error', () => undefined);
        return r;
      };
      const pub = (this.pub = make());
      const sub = (this.sub = make());
      if (this.opts.failFastFor?.length && !this.watcher) {
        this.watcher = setInterval(() => void this.lookForDown(), HEARTBEAT_MS);
        this.watcher.unref();
        void this.lookForDown();
      }
      sub.on('message', (_channel, message) => this.onReply(message));
      try {
        // ioredis subscribes again by itself after a reconnect, once subscribed.
        await sub.subscribe(this.replyChannel);
      } catch (e) {
        // Redis away at the first call (a gateway started before it): the next call tries again from the start. Kept,
        // the failed attempt answered every call `unavailable` for as long as the process ran, Redis back or not.
        pub.disconnect();
        sub.disconnect();
        if (this.pub === pub) [this.pub, this.sub, this.connecting] = [undefined, undefined, undefined];
        throw e;
      }
    })();
    return this.connecting;
  }

  /** Whether the service was down at the last look (only services in `failFastFor` are looked at). */
  knownDown(service: string): boolean {
    return this.down.has(service);
  }

  /** Reads which of `failFastFor` have no live process. Unknown (Redis not answering): none is taken for down. */
  private async lookForDown(): Promise<void> {
    const pub = this.pub;
    const services = this.opts.failFastFor ?? [];
    if (!pub) return;
    try {
      const since = Date.now() - ALIVE_WITHIN_MS;
      const batch = pub.pipeline();
      for (const service of services) batch.zcount(rpcKeys.alive(this.opts.prefix, service), since, '+inf');
      const counts = (await batch.exec()) ?? [];
      services.forEach((service, i) => {
        const [err, count] = counts[i] ?? [null, 1];
        if (!err && count === 0) this.down.add(service);
        else this.down.delete(service);
      });
    } catch {
      this.down.clear();
    }
  }

  async close(): Promise<void> {
    clearInterval(this.watcher);
    this.watcher = undefined;
    for (const timer of this.downWaits.values()) clearTimeout(timer);
    this.downWaits.clear();
    await Promise.all([this.pub, this.sub].filter((c) => c !== undefined).map((c) => quitRedis(c)));
    this.connecting = undefined;
  }

  unwrap<T>(): T {
    return this.pub as T;
  }

  protected publish(packet: ReadPacket, callback: (packet: WritePacket) => void): () => void {
    const request = this.assignPacketId(packet);
    this.routingMap.set(request.id, callback);
    const pattern = this.normalizePattern(request.pattern as string);
    const service = serviceOf(pattern);
    const expiring = this.opts.expireAfterMs !== undefined && !this.opts.lasting?.has(pattern);
    // A service found down gets a short wait: long enough for one that is starting to take the call (it reads what
    // waits in its stream as it starts), short enough not to hold up what its caller has queued behind it.
    const shortWait = expiring && this.down.has(service) ? Math.min(DOWN_WAIT_MS, this.opts.expireAfterMs!) : undefined;
    const expires = expiring ? ['expires', String(Date.now() + (shortWait ?? this.opts.expireAfterMs!))] : [];
    if (shortWait !== undefined) {
      const timer = setTimeout(() => {
        this.downWaits.delete(request.id);
        if (!this.routingMap.delete(request.id)) return;
        const message = `the ${service} service is down (none of its processes has been heard from for ${ALIVE_WITHIN_MS / 1000} s); try again later`;
        callback({ err: { code: 'unavailable', message }, isDisposed: true });
      }, shortWait);
      this.downWaits.set(request.id, timer);
    }
    this.connect()
      .then(() => this.add(pattern, ['id', request.id, 'replyTo', this.replyChannel, ...expires, 'data', JSON.stringify(request.data ?? null)]))
      .catch((err: unknown) => {
        this.routingMap.delete(request.id);
        this.endDownWait(request.id);
        callback({ err: { code: 'unavailable', message: `could not reach the ${service} service: ${String(err)}` }, isDisposed: true });
      });
    return () => {
      this.routingMap.delete(request.id);
      this.endDownWait(request.id);
    };
  }

  private endDownWait(id: string): void {
    clearTimeout(this.downWaits.get(id));
    this.downWaits.delete(id);
  }

  protected async dispatchEvent<T = unknown>(packet: ReadPacket): Promise<T> {
    await this.connect();
    const pattern = this.normalizePattern(packet.pattern as string);
    await this.add(pattern, ['data', JSON.stringify(packet.data ?? null)]);
    return undefined as T;
  }

  private add(pattern: string, fields: string[]): Promise<unknown> {
    const service = serviceOf(pattern);
    const maxLen = this.opts.maxLenOf?.[service] ?? this.opts.maxLen ?? 100_000;
    return this.pub!.xadd(rpcKeys.stream(this.opts.prefix, service), 'MAXLEN', '~', maxLen, '*', 'pattern', pattern, ...fields);
  }

  private onReply(message: string): void {
    let reply: { id?: string; response?: unknown; err?: unknown };
    try {
      reply = JSON.parse(message) as typeof reply;
    } catch {
      return;
    }
    const callback = reply.id ? (this.routingMap.get(reply.id) as ((p: WritePacket) => void) | undefined) : undefined;
    if (!callback) return;
    this.routingMap.delete(reply.id!);
    this.endDownWait(reply.id!);
    callback(reply.err !== undefined ? { err: reply.err, isDisposed: true } : { response: reply.response, isDisposed: true });
  }
}
