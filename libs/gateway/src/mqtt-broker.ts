import { createServer, type AddressInfo, type Server } from 'node:net';
import { Logger } from '@nestjs/common';
import { Aedes, type Client } from 'aedes';
import type { AccessPolicy } from './access-policy.js';
import type { Principal } from '#libs/protocol';
import type { Metrics } from '#libs/health';
import { describeListenError } from '#libs/runtime';

export interface BrokerOptions {
  /** Longest client id accepted: `user/<device>` is at most 32 + 1 + 64 characters. */
  maxClientIdLength: number;
}

/** Receives each authorized request, in the order the connection sent them. */
export type RequestSink = (connection: Client, principal: Principal, payload: Buffer) => void;

export class ListenError extends Error {
  override readonly name = 'ListenError';
}

/**
 * The embedded Aedes broker and its TCP listener. Login and topic access go
 * through the AccessPolicy; requests are handed to the RequestDispatcher as
 * they arrive and never routed to subscribers.
 */
export class MqttBroker {
  private readonly logger = new Logger('MqttBroker');
  readonly aedes: Aedes;
  private server: Server | undefined;
  private sink: RequestSink | undefined;

  constructor(
    private readonly policy: AccessPolicy,
    private readonly metrics: Metrics,
    opts: BrokerOptions,
  ) {
    this.aedes = new Aedes({
      maxClientsIdLength: opts.maxClientIdLength,
      authenticate: (client, username, password, done) => policy.authenticate(client, username ?? undefined, password ?? undefined, done),
      authorizePublish: (client, packet, done) => {
        if (!this.policy.mayPublish(client, packet)) return done(new Error(`not allowed to publish to ${packet.topic}`));
        // A request is an instruction to the server, never a message to keep:
        // it is handled here, once, and not retained.
        packet.retain = false;
        const principal = this.policy.principalOf(client);
        if (principal && this.sink) this.sink(client, principal, Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload));
        done(null);
      },
      authorizeSubscribe: (client, sub, done) => done(null, this.policy.grantSubscription(client, sub)),
      authorizeForward: (client, packet) => (this.policy.mayReceive(client, packet.topic) ? packet : null),
    });
    this.aedes.on('clientReady', () => this.metrics.connections.inc());
    this.aedes.on('clientDisconnect', () => this.metrics.connections.dec());
    // Client faults (bad packets, dropped sockets) end that connection only.
    this.aedes.on('clientError', (client, err) => this.logger.debug?.({ event: 'client_error', client: client?.id, error: err.message }));
    this.aedes.on('connectionError', (client, err) => this.logger.debug?.({ event: 'connection_error', client: client?.id, error: err.message }));
  }

  /** Where authorized requests go. */
  onRequest(sink: RequestSink): void {
    this.sink = sink;
  }

  private started: Promise<void> | undefined;

  /** Readies the broker's persistence, so it can publish (retained presence, say) before any listener is up. Idempotent. */
  start(): Promise<void> {
    this.started ??= this.aedes.listen();
    return this.started;
  }

  /** Starts the TCP listener. On `::` it is dual-stack: IPv4 clients arrive as IPv4-mapped addresses on the same socket. */
  async listen(host: string, port: number): Promise<AddressInfo> {
    await this.start();
    // No Nagle: a request's PUBACK, its reply and the deliveries are separate small writes; with Nagle each waits for the peer's (delayed) ACK.
    const server = createServer({ noDelay: true }, (socket) => this.aedes.handle(socket));
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) => reject(new ListenError(describeListenError(err, host, port, 'MQTT'))));
      server.listen({ host, port, ipv6Only: false }, () => resolve());
    });
    server.on('error', (err) => this.logger.error({ event: 'listener_error', error: err.message }));
    this.server = server;
    return server.address() as AddressInfo;
  }

  get listening(): boolean {
    return this.server?.listening ?? false;
  }

  async close(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
    await new Promise<void>((resolve) => this.aedes.close(() => resolve()));
  }
}
