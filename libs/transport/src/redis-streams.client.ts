import { randomUUID } from 'node:crypto';
import { ClientProxy, type ReadPacket, type WritePacket } from '@nestjs/microservices';
import { Redis } from 'ioredis';
import { quitRedis } from '#libs/storage';
import { rpcKeys, serviceOf } from './rpc-keys.js';

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
}

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

  async close(): Promise<void> {
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
    const expires = this.opts.expireAfterMs !== undefined && !this.opts.lasting?.has(pattern) ? ['expires', String(Date.now() + this.opts.expireAfterMs)] : [];
    this.connect()
      .then(() => this.add(pattern, ['id', request.id, 'replyTo', this.replyChannel, ...expires, 'data', JSON.stringify(request.data ?? null)]))
      .catch((err: unknown) => {
        this.routingMap.delete(request.id);
        callback({ err: { code: 'unavailable', message: `could not reach the ${serviceOf(pattern)} service: ${String(err)}` }, isDisposed: true });
      });
    return () => this.routingMap.delete(request.id);
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
    callback(reply.err !== undefined ? { err: reply.err, isDisposed: true } : { response: reply.response, isDisposed: true });
  }
}
