import { Inject, Module, type OnApplicationShutdown } from '@nestjs/common';
import { AccountsModule, AccountsService } from '#libs/accounts';
import { PARLEY_CONFIG, type ParleyConfig } from '#libs/config';
import { Metrics, Readiness } from '#libs/health';
import { MessagingModule, MessagingService } from '#libs/messaging';
import { storageIsReady, STORAGE_BACKEND, type StorageBackend } from '#libs/storage';
import { AccessPolicy } from './access-policy.js';
import { InboxPublisher } from './inbox-publisher.js';
import { MqttBroker } from './mqtt-broker.js';
import { RequestDispatcher } from './request-dispatcher.js';

/** The MQTT edge: broker, login and ACLs, and the request dispatcher. */
@Module({
  imports: [AccountsModule, MessagingModule],
  providers: [
    { provide: AccessPolicy, useFactory: (accounts: AccountsService, metrics: Metrics) => new AccessPolicy(accounts, metrics), inject: [AccountsService, Metrics] },
    {
      provide: MqttBroker,
      useFactory: (policy: AccessPolicy, metrics: Metrics) => new MqttBroker(policy, metrics, { maxClientIdLength: 97 }),
      inject: [AccessPolicy, Metrics],
    },
    { provide: InboxPublisher, useFactory: (broker: MqttBroker) => new InboxPublisher(broker.aedes), inject: [MqttBroker] },
    {
      provide: RequestDispatcher,
      useFactory: (accounts: AccountsService, messaging: MessagingService, inbox: InboxPublisher, metrics: Metrics, config: ParleyConfig, broker: MqttBroker) => {
        const dispatcher = new RequestDispatcher(accounts, messaging, inbox, metrics, { maxRequestBytes: config.PARLEY_MAX_REQUEST_BYTES });
        broker.onRequest((connection, principal, payload) => dispatcher.enqueue(connection, principal, payload));
        return dispatcher;
      },
      inject: [AccountsService, MessagingService, InboxPublisher, Metrics, PARLEY_CONFIG, MqttBroker],
    },
  ],
  exports: [MqttBroker],
})
export class GatewayModule implements OnApplicationShutdown {
  constructor(
    @Inject(MqttBroker) private readonly broker: MqttBroker,
    @Inject(Readiness) readiness: Readiness,
    @Inject(STORAGE_BACKEND) backend: StorageBackend,
    // Instantiated for its side effect: it connects itself to the broker.
    @Inject(RequestDispatcher) _dispatcher: RequestDispatcher,
  ) {
    readiness.register('mqtt', () => broker.listening);
    readiness.register('storage', () => storageIsReady(backend));
  }

  async onApplicationShutdown(): Promise<void> {
    await this.broker.close();
  }
}
