import { Inject, Module, type DynamicModule, type OnApplicationShutdown, type Provider } from '@nestjs/common';
import { Redis } from 'ioredis';
import { PARLEY_CONFIG, type ParleyConfig } from '#libs/config';
import { GROUP_API, GROUP_API_METHODS, type GroupApi } from '#libs/group';
import { FILE_OFFER_API, FILE_OFFER_API_METHODS, type FileOfferApi } from '#libs/file-offer';
import { Metrics, Readiness } from '#libs/health';
import { PRESENCE_API, PRESENCE_API_METHODS, sharingReads, type PresenceApi } from '#libs/presence';
import { RECEIPTS_API, RECEIPTS_API_METHODS, type ReceiptsApi } from '#libs/receipts';
import { RedisStreamsClient } from './redis-streams.client.js';
import { ALIVE_WITHIN_MS, rpcKeys } from './rpc-keys.js';
import { observeInto, rpcQueueDepths } from './rpc-metrics.js';
import { rpcProxy } from './rpc-proxy.js';

export type RemoteService = 'presence' | 'receipts' | 'group' | 'file-offer';

const TOKENS = { presence: PRESENCE_API, receipts: RECEIPTS_API, group: GROUP_API, 'file-offer': FILE_OFFER_API } as const;

const REMOTE_SERVICES = Symbol('REMOTE_SERVICES');
const FILE_CHUNK_STREAM_LEN = 2000;
/**
 * Calls that never expire: the sweep of a gateway found dead, which records what happened. Everything else expires with
 * its caller's wait (see RedisStreamsClient): a gateway's report of a connection made or ended that fails is made good by
 * realigning its records (PresenceTracker), and a late report could undo that realignment.
 */
const LASTING_CALLS: ReadonlySet<string> = new Set(['presence.gatewayGone']);

/**
 * The distributed wiring: PRESENCE_API, RECEIPTS_API, GROUP_API and
 * FILE_OFFER_API (those named) as RPC proxies over Redis Streams to the service
 * apps, with a readiness check per service, call latencies and the depth of each service's queue.
 */
@Module({})
export class RemoteServicesModule implements OnApplicationShutdown {
  static register(services: RemoteService[]): DynamicModule {
    const proxies: Provider[] = services.map((service) => ({
      provide: TOKENS[service],
      useFactory: (client: RedisStreamsClient, config: ParleyConfig, metrics: Metrics) => {
        const timeoutMs = config.PARLEY_RPC_TIMEOUT_MS;
        const observe = observeInto(metrics.rpcCallSeconds);
        switch (service) {
          case 'presence':
            // Every 1:1 send reads its recipient's presence: a burst to one user shares one call.
            return sharingReads(rpcProxy<PresenceApi>(client, service, PRESENCE_API_METHODS, timeoutMs, observe));
          case 'receipts':
            return rpcProxy<ReceiptsApi>(client, service, RECEIPTS_API_METHODS, timeoutMs, observe);
          case 'group':
            return rpcProxy<GroupApi>(client, service, GROUP_API_METHODS, timeoutMs, observe);
          case 'file-offer':
            return rpcProxy<FileOfferApi>(client, service, FILE_OFFER_API_METHODS, timeoutMs, observe);
        }
      },
      inject: [RedisStreamsClient, PARLEY_CONFIG, Metrics],
    }));
    return {
      module: RemoteServicesModule,
      providers: [
        {
          provide: RedisStreamsClient,
          useFactory: (config: ParleyConfig) =>
            // File chunks are large: their stream keeps few entries (calls wait for their answers, so few are ever outstanding).
            new RedisStreamsClient({
              url: config.REDIS_URL!,
              prefix: config.PARLEY_REDIS_PREFIX,
              maxLenOf: { 'file-offer': FILE_CHUNK_STREAM_LEN },
              expireAfterMs: config.PARLEY_RPC_TIMEOUT_MS,
              lasting: LASTING_CALLS,
              // Presence is left to wait: a report of a connection that fails costs a realignment, which backs off (up
              // to 10 s) while presence is away, and a send's read of presence waits a second at most anyway.
              failFastFor: services.filter((s) => s !== 'presence'),
            }),
          inject: [PARLEY_CONFIG],
        },
        { provide: REMOTE_SERVICES, useValue: services },
        ...proxies,
      ],
      exports: services.map((s) => TOKENS[s]),
    };
  }

  private readonly probe: Redis;

  constructor(
    @Inject(RedisStreamsClient) private readonly client: RedisStreamsClient,
    @Inject(PARLEY_CONFIG) config: ParleyConfig,
    @Inject(Readiness) readiness: Readiness,
    @Inject(Metrics) metrics: Metrics,
    @Inject(REMOTE_SERVICES) services: RemoteService[],
  ) {
    this.probe = new Redis(config.REDIS_URL!, { maxRetriesPerRequest: 1, retryStrategy: (n) => Math.min(n * 100, 1000) });
    this.probe.on('error', () => undefined);
    // Every gateway shares these services: one down makes each gateway do less (no presence, no catch-up, no groups or
    // files), not one gateway worse than another, so it does not take the gateways out of their load balancer.
    for (const service of services)
      readiness.register(`service:${service}`, () => this.alive(rpcKeys.alive(config.PARLEY_REDIS_PREFIX, service)), { required: false });
    // Calls this gateway made that no replica has taken yet (a service down or too slow) show here.
    metrics.watchQueues(() => rpcQueueDepths(this.probe, config.PARLEY_REDIS_PREFIX, services));
  }

  /** True when some process of the service sent a heartbeat recently. */
  private async alive(key: string): Promise<boolean> {
    try {
      return (await this.probe.zcount(key, Date.now() - ALIVE_WITHIN_MS, '+inf')) > 0;
    } catch {
      return false;
    }
  }

  async onApplicationShutdown(): Promise<void> {
    await this.client.close();
    this.probe.disconnect();
  }
}
