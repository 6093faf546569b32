import { Inject, Module, type DynamicModule, type ModuleMetadata, type OnApplicationBootstrap, type OnApplicationShutdown } from '@nestjs/common';
import { AccountsModule, AccountsService } from '#libs/accounts';
import { AddressRanges, PARLEY_CONFIG, type ParleyConfig } from '#libs/config';
import { FILE_OFFER_API, type FileOfferApi } from '#libs/file-offer';
import { Metrics, Readiness } from '#libs/health';
import { Conversations, GROUP_API, GroupModule, type GroupApi } from '#libs/group';
import { MessagingModule, MessagingService } from '#libs/messaging';
import { PRESENCE_API, type PresenceApi } from '#libs/presence';
import { RECEIPTS_API, type ReceiptsApi } from '#libs/receipts';
import { adapterFor, storageIsReady, storageWritesCheck, STORAGE_BACKEND, type StorageBackend } from '#libs/storage';
import { AccessPolicy } from './access-policy.js';
import { inMemoryBackplane, redisBackplane } from './broker-backplane.js';
import { EmbeddedRetainedStore } from './embedded-retained.store.js';
import { FileRequests } from './file-requests.js';
import { InboxPublisher } from './inbox-publisher.js';
import { GatewayLiveness } from './gateway-liveness.js';
import { InboxSync } from './inbox-sync.js';
import { MqttBroker } from './mqtt-broker.js';
import { PresenceTracker } from './presence-tracker.js';
import { RequestDispatcher } from './request-dispatcher.js';
import type { GuardLimits } from './connection-guard.js';
import { LoginThrottle, MemoryFailureLedger, RedisFailureLedger, type FailureLedger } from './login-throttle.js';
import { RequestLimiter } from './request-limiter.js';

function guardLimitsOf(config: ParleyConfig): GuardLimits {
  return {
    connectTimeoutMs: config.PARLEY_CONNECT_TIMEOUT_MS,
    maxConnectBytes: config.PARLEY_MAX_CONNECT_BYTES,
    maxPacketBytes: config.PARLEY_MAX_PACKET_BYTES,
    maxKeepAliveS: config.PARLEY_MAX_KEEPALIVE_S,
    maxOutboundBytes: config.PARLEY_MAX_OUTBOUND_BYTES,
    writeStallMs: config.PARLEY_WRITE_STALL_MS,
  };
}

/** Longest a file chunk is held back to keep its user within PARLEY_TRANSFER_RATE; one that would wait longer is refused. */
const TRANSFER_MAX_WAIT_MS = 2000;

/** How long a shutdown waits for the presence reports of the connections it ended. */
const SHUTDOWN_REPORTS_MS = 3000;

/**
 * The MQTT edge: broker, login and ACLs, request dispatch, presence tracking
 * and inbox sync. `services` provide PRESENCE_API, RECEIPTS_API, GROUP_API and FILE_OFFER_API: the
 * domain modules themselves (standalone) or RPC clients to their apps
 * (distributed). Nothing here knows which.
 */
@Module({})
export class GatewayModule implements OnApplicationBootstrap, OnApplicationShutdown {
  static register(services: NonNullable<ModuleMetadata['imports']>): DynamicModule {
    return {
      module: GatewayModule,
      // GroupModule is imported for reads (who may see what of a group, for sync); changes go through GROUP_API.
      imports: [AccountsModule, MessagingModule, GroupModule, ...services],
      providers: [
        {
          // Failed logins, counted by logins and by registrations' retries (each checks a password).
          provide: LoginThrottle,
          useFactory: (config: ParleyConfig, backend: StorageBackend) =>
            new LoginThrottle(
              {
                maxFailuresPerAddress: config.PARLEY_LOGIN_MAX_FAILURES,
                maxFailuresPerUser: config.PARLEY_LOGIN_MAX_USER_FAILURES,
                windowMs: config.PARLEY_LOGIN_WINDOW_MS,
                lockoutMs: config.PARLEY_LOGIN_LOCKOUT_MS,
              },
              // On Redis, failed logins count across every gateway: an attack spread over them is seen as one.
              adapterFor<FailureLedger>(backend, { embedded: () => new MemoryFailureLedger(), redis: (redis) => new RedisFailureLedger(redis) }),
            ),
          inject: [PARLEY_CONFIG, STORAGE_BACKEND],
        },
        {
          provide: AccessPolicy,
          useFactory: (accounts: AccountsService, metrics: Metrics, config: ParleyConfig, throttle: LoginThrottle) =>
            new AccessPolicy(accounts, metrics, {
              throttle,
              maxConnectionsPerUser: config.PARLEY_MAX_CONNECTIONS_PER_USER,
              loginsPerMinute: config.PARLEY_LOGINS_PER_MINUTE,
              maxAnonymousPerAddress: config.PARLEY_MAX_ANONYMOUS_PER_ADDRESS,
              anonymousTimeoutMs: config.PARLEY_ANONYMOUS_TIMEOUT_MS,
              maxSubscriptions: config.PARLEY_MAX_SUBSCRIPTIONS,
            }),
          inject: [AccountsService, Metrics, PARLEY_CONFIG, LoginThrottle],
        },
        {
          provide: MqttBroker,
          useFactory: (policy: AccessPolicy, metrics: Metrics, config: ParleyConfig, backend: StorageBackend) =>
            new MqttBroker(policy, metrics, {
              maxClientIdLength: 97,
              id: config.PARLEY_GATEWAY_ID,
              // Retained presence outlives a restart: in Redis (shared by the gateways), or standalone in the data directory.
              backplane: config.REDIS_URL
                ? redisBackplane(config.REDIS_URL, config.PARLEY_REDIS_PREFIX)
                : inMemoryBackplane(backend.kind === 'embedded' ? new EmbeddedRetainedStore(backend.db) : undefined),
              guard: guardLimitsOf(config),
              sessions: {
                maxPerUser: config.PARLEY_MAX_SESSIONS_PER_USER,
                // One connection's allowance, and the inbox and replies topic it holds besides.
                maxIdleFiltersPerUser: config.PARLEY_MAX_SUBSCRIPTIONS + 2,
                expiryMs: config.PARLEY_SESSION_EXPIRY_MS,
              },
              proxyFrom: AddressRanges.parse(config.PARLEY_PROXY_FROM),
              maxConnectingPerAddress: config.PARLEY_MAX_CONNECTING_PER_ADDRESS,
            }),
          inject: [AccessPolicy, Metrics, PARLEY_CONFIG, STORAGE_BACKEND],
        },
        { provide: InboxPublisher, useFactory: (broker: MqttBroker) => new InboxPublisher(broker), inject: [MqttBroker] },
        {
          provide: FileRequests,
          useFactory: (files: FileOfferApi, groups: GroupApi, inbox: InboxPublisher) => new FileRequests(files, groups, inbox),
          inject: [FILE_OFFER_API, GROUP_API, InboxPublisher],
        },
        {
          provide: RequestDispatcher,
          useFactory: (
            accounts: AccountsService,
            messaging: MessagingService,
            presence: PresenceApi,
            receipts: ReceiptsApi,
            groups: GroupApi,
            inbox: InboxPublisher,
            metrics: Metrics,
            config: ParleyConfig,
            broker: MqttBroker,
            files: FileRequests,
            logins: LoginThrottle,
          ) => {
            const dispatcher = new RequestDispatcher(
              accounts,
              messaging,
              presence,
              receipts,
              groups,
              inbox,
              metrics,
              {
                maxRequestBytes: config.PARLEY_MAX_REQUEST_BYTES,
                logins,
                rate: new RequestLimiter({
                  perConnection: { perSecond: config.PARLEY_CONNECTION_RATE, burst: config.PARLEY_CONNECTION_BURST },
                  perUser: { perSecond: config.PARLEY_USER_RATE, burst: config.PARLEY_USER_BURST },
                  perAnonymousAddress: { perSecond: config.PARLEY_REGISTRATIONS_PER_MINUTE / 60, burst: config.PARLEY_REGISTRATIONS_PER_MINUTE },
                  transfer: {
                    perSecond: config.PARLEY_TRANSFER_RATE,
                    burst: config.PARLEY_TRANSFER_BURST,
                    requestBytes: config.PARLEY_FILE_CHUNK_BYTES,
                    maxWaitMs: TRANSFER_MAX_WAIT_MS,
                  },
                }),
              },
              files,
            );
            broker.onRequest((connection, principal, payload) => dispatcher.enqueue(connection, principal, payload));
            broker.limitSubscriptions((connection, principal) => dispatcher.takeRequest(connection, principal));
            return dispatcher;
          },
          inject: [
            AccountsService,
            MessagingService,
            PRESENCE_API,
            RECEIPTS_API,
            GROUP_API,
            InboxPublisher,
            Metrics,
            PARLEY_CONFIG,
            MqttBroker,
            FileRequests,
            LoginThrottle,
          ],
        },
        {
          provide: PresenceTracker,
          useFactory: (broker: MqttBroker, policy: AccessPolicy, presence: PresenceApi, config: ParleyConfig) =>
            new PresenceTracker(broker.aedes, policy, presence, config.PARLEY_GATEWAY_ID),
          inject: [MqttBroker, AccessPolicy, PRESENCE_API, PARLEY_CONFIG],
        },
        {
          provide: GatewayLiveness,
          useFactory: (backend: StorageBackend, presence: PresenceApi, tracker: PresenceTracker, config: ParleyConfig) =>
            backend.kind === 'redis'
              ? new GatewayLiveness(backend.redis, config.PARLEY_GATEWAY_ID, presence, tracker, {
                  beatMs: Math.max(250, Math.floor(config.PARLEY_GATEWAY_DEAD_AFTER_MS / 4)),
                  deadAfterMs: config.PARLEY_GATEWAY_DEAD_AFTER_MS,
                })
              : null,
          inject: [STORAGE_BACKEND, PRESENCE_API, PresenceTracker, PARLEY_CONFIG],
        },
        {
          provide: InboxSync,
          useFactory: (broker: MqttBroker, policy: AccessPolicy, conversations: Conversations, receipts: ReceiptsApi, metrics: Metrics, files: FileOfferApi) =>
            new InboxSync(broker.aedes, policy, conversations, receipts, metrics, (user) => files.syncEvent(user)),
          inject: [MqttBroker, AccessPolicy, Conversations, RECEIPTS_API, Metrics, FILE_OFFER_API],
        },
      ],
      exports: [MqttBroker],
    };
  }

  /** Standalone: when the server that used the data directory before was last alive, if it was killed; else null. */
  private readonly previousRunAliveAt: number | null;

  constructor(
    @Inject(MqttBroker) private readonly broker: MqttBroker,
    @Inject(PresenceTracker) private readonly presence: PresenceTracker,
    @Inject(InboxSync) private readonly inboxSync: InboxSync,
    @Inject(GatewayLiveness) private readonly liveness: GatewayLiveness | null,
    @Inject(Readiness) readiness: Readiness,
    @Inject(STORAGE_BACKEND) backend: StorageBackend,
    // Instantiated for its side effect: it connects itself to the broker.
    @Inject(RequestDispatcher) _dispatcher: RequestDispatcher,
  ) {
    this.previousRunAliveAt = backend.kind === 'embedded' ? backend.db.previousRunAliveAt : null;
    readiness.register('mqtt', () => broker.listening);
    readiness.register('storage', () => storageIsReady(backend));
    // A gateway that does not hear the others gives its users nothing the others deliver: none should be sent to it.
    if (backend.kind === 'redis') readiness.register('backplane', () => broker.hearsOthers());
    const writes = storageWritesCheck(backend);
    if (writes) readiness.register('storage:writes', writes, { required: false });
  }

  async onApplicationBootstrap(): Promise<void> {
    await this.broker.start();
    // Asked before the first beat replaces it; the realignment that closes what a killed previous run left waits for it.
    this.presence.start(this.liveness ? this.liveness.lastBeat() : Promise.resolve(this.previousRunAliveAt ?? undefined));
    this.inboxSync.start();
    this.liveness?.start();
  }

  async onApplicationShutdown(): Promise<void> {
    // The connections the shutdown ends are reported (stored and published) before the broker and the stores close;
    // then the gateway leaves the roster, or stays for another to sweep if presence did not get those reports.
    await this.broker.close(async () => {
      await this.presence.settle(SHUTDOWN_REPORTS_MS);
      await this.liveness?.stop(this.presence.inLine);
    });
  }
}
