import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { Logger } from '@nestjs/common';
import { Aedes, type Client, type ConnectPacket, type PublishPacket, type Subscription } from 'aedes';
import { OpenCounts, type AccessPolicy } from './access-policy.js';
import { ownCopy, type Backplane } from './broker-backplane.js';
import { DELIVERY_QOS, inboxTopicOf, type Principal } from '#libs/protocol';
import type { Metrics } from '#libs/health';
import { LogThrottle } from '#libs/runtime';
import type { AddressRanges } from '#libs/config';
import { GuardedConnection, guardOf, type GuardDrop, type GuardLimits, type RequestLane } from './connection-guard.js';
import { SessionKeeper, type SessionLimits } from './session-keeper.js';
import { LocalInboxes } from './local-inboxes.js';
import { addressKey } from './login-throttle.js';
import type { ProxyHeaderDrop } from './proxy-header.js';
import { openListener, type ListenerKind, type OpenListener, type TlsFiles } from './mqtt-listeners.js';

/** Dropped connections logged per address in 10 s before the rest are only counted (see `MqttBroker.dropLog`). */
const DROPS_LOGGED_PER_ADDRESS = 50;

export { ListenError } from './mqtt-listeners.js';

export interface BrokerOptions {
  /** Longest client id accepted: `user/<device>` is at most 32 + 1 + 64 characters. */
  maxClientIdLength: number;
  /** Shared with other gateways (Redis) or in memory (standalone). */
  backplane: Backplane;
  /** Names this broker among the gateways, like the gateway id. */
  id: string;
  /** What every connection is held to before and after login (see GuardedConnection). */
  guard: GuardLimits;
  /** What is kept of each user's persistent sessions (see SessionKeeper). */
  sessions: SessionLimits;
  /**
   * Trusted proxies (PARLEY_PROXY_FROM): a plain or TLS MQTT connection from one of them starts with a PROXY protocol
   * header, and the client address it names is the connection's address for limits and logs.
   */
  proxyFrom?: AddressRanges;
  /**
   * Connections from one address (IPv6: its /64) that may be logging in at once, from their first byte (after a
   * trusted proxy's header; after the handshake on TLS and WebSocket listeners) to their CONNACK; more are closed as
   * they come (PARLEY_MAX_CONNECTING_PER_ADDRESS). None when absent.
   */
  maxConnectingPerAddress?: number;
}

/**
 * Aedes drops a packet for a client when that client already got a higher-numbered packet from the same broker (its
 * per-client `duplicates` check, meant for a packet that reaches a client twice). Aedes numbers a packet when it makes
 * it, before asynchronous steps of varying length (a retained publish waits for the retained store, a QoS 1 one for
 * the offline queues, a packet written straight to one connection for nothing, one from another gateway for the
 * backplane), so packets reach a client out of number order, and the check dropped the overtaken one without a trace: a
 * reply whose request had been PUBACKed, or a presence change, never arrived. Parley routes each packet to a client
 * once, so the check is switched off. The one case it covered, a packet matching two of a client's overlapping
 * subscriptions, now gets a copy per subscription, as MQTT 3.1.1 allows (section 3.3.5) and Mosquitto does.
 */
const NO_DUPLICATE_CHECK: Record<string, number> = new Proxy(Object.create(null) as Record<string, number>, {
  get: () => undefined,
  set: () => true,
  deleteProperty: () => true,
});

/** The payload an inbound QoS 2 packet is kept with until its PUBREL: none (see `storeOnlyWhatSessionsNeed`). */
const NO_PAYLOAD = Buffer.alloc(0);

/** Hands a connection to the broker, with the duplicate check off (see NO_DUPLICATE_CHECK). */
export function handleConnection(aedes: Aedes, stream: Duplex): Client {
  const client = aedes.handle(stream);
  (client as Client & { duplicates: Record<string, number> }).duplicates = NO_DUPLICATE_CHECK;
  return client;
}

/**
 * Gives a CONNECT packet's will a payload of its own. As parsed, it is a view of the bytes the client sent, and the
 * broker keeps the packet, and the will, as long as the connection lasts: with them, all of those bytes.
 */
export function keepWillApart(packet: ConnectPacket): void {
  if (packet.will?.payload && packet.will.payload.length > 0) packet.will.payload = ownCopy(packet.will.payload);
}

/**
 * Makes the broker's session store keep no more of a session than Parley needs: the filters it was granted, and no
 * payload of an inbound QoS 2 packet awaiting its PUBREL.
 */
function storeOnlyWhatSessionsNeed(persistence: unknown, policy: AccessPolicy): void {
  const store = persistence as {
    addSubscriptions(client: Client, subs: Subscription[]): Promise<unknown>;
    incomingStorePacket(client: Client, packet: PublishPacket): Promise<unknown>;
  };
  // An inbound QoS 2 packet is kept until its PUBREL only so that one sent again is known by its packet id
  // [MQTT-4.3.3-2]: the request in it was handled as it came (authorizePublish), and the broker never reads the kept
  // payload. Kept whole, each of the 1000 a connection may leave awaiting a PUBREL held up to PARLEY_MAX_PACKET_BYTES,
  // and a persistent session keeps them once its connection ends: 128 MB per session, 50 sessions per user, for the
  // session's expiry (a week), which a logged-in user could fill until the gateway ran out of memory.
  const storeIncoming = store.incomingStorePacket.bind(store);
  store.incomingStorePacket = (client, packet) => storeIncoming(client, { ...packet, payload: NO_PAYLOAD });
  // A persistent session keeps only the filters it was granted: Aedes stores every filter of its SUBSCRIBE, refused
  // ones too. Aedes calls this once per granted filter, each time with the whole packet; the packet is stored once,
  // after every filter of it has been authorized (synchronously, before this microtask runs).
  const addSubscriptions = store.addSubscriptions.bind(store);
  const storing = new WeakMap<Subscription[], Promise<unknown>>();
  store.addSubscriptions = (client, subs) => {
    let stored = storing.get(subs);
    if (!stored) {
      stored = Promise.resolve().then(() =>
        addSubscriptions(
          client,
          subs.filter((sub) => policy.holds(client, sub.topic)),
        ),
      );
      storing.set(subs, stored);
    }
    return stored;
  };
}

/** Receives each authorized request, in the order the connection sent them. */
export type RequestSink = (connection: Client, principal: Principal, payload: Buffer) => void;

/** What Parley touches of an Aedes client beyond its typings: its keep-alive timer (lib/handlers/index.js). */
type ClientKeepAlive = Client & { _keepaliveInterval?: number; _keepaliveTimer?: NodeJS.Timeout | null };

/**
 * The embedded Aedes broker and its TCP listener. Login and topic access go
 * through the AccessPolicy; requests are handed to the RequestDispatcher as
 * they arrive and never routed to subscribers. A logged-in connection's
 * requests and inbox events take a lane of their own past the broker's
 * routing (GuardedConnection.openRequests, LocalInboxes); the broker keeps
 * the sessions, subscriptions, presence and everything else.
 */
export class MqttBroker {
  private readonly logger = new Logger('MqttBroker');
  readonly aedes: Aedes;
  /** Forgets persistent sessions beyond their limits (see SessionKeeper). */
  private readonly sessions: SessionKeeper;
  private listeners: OpenListener[] = [];
  private sink: RequestSink | undefined;
  /** Whether a connection may take up one more subscription now (the request rate limits); every one when unset. */
  private subscriptionRate: ((connection: Client, principal: Principal) => boolean) | undefined;
  /** This gateway's connections by inbox topic: where inbox events are written. */
  readonly inboxes = new LocalInboxes();
  /**
   * What each connection's guard holds it to: `opts.guard`, with every SUBSCRIBE's QoS lowered to the one the server
   * delivers at (DELIVERY_QOS) before the broker reads it, so that what a persistent session stores of it is what was granted.
   */
  private readonly guardLimits: GuardLimits;

  constructor(
    private readonly policy: AccessPolicy,
    private readonly metrics: Metrics,
    private readonly opts: BrokerOptions,
  ) {
    this.guardLimits = { ...opts.guard, maxSubscribeQos: DELIVERY_QOS };
    this.aedes = new Aedes({
      id: opts.id,
      mq: opts.backplane.mq,
      persistence: opts.backplane.persistence,
      maxClientsIdLength: opts.maxClientIdLength,
      // The guard never lets a write wait (see GuardedConnection.write); should a wait for 'drain' happen anyway, it ends
      // when the guard would drop a client that takes no bytes, not after Aedes's default minute.
      drainTimeout: opts.guard.writeStallMs,
      // The password is taken out of the CONNECT packet, which the broker keeps, and handed to the login from there.
      preConnect: (client, packet, done) => {
        policy.holdPassword(client, packet);
        keepWillApart(packet);
        done(null, true);
      },
      authenticate: (client, username, _password, done) =>
        policy.authenticate(client, username ?? undefined, policy.heldPassword(client), (error, success) => {
          // A refused login ends the connection (the broker answers the CONNACK and closes it): logged as any drop is.
          if (error) this.brokerDropped(client, { reason: `login refused: ${error.message}`, connack: error.returnCode });
          done(error, success);
        }),
      authorizePublish: (client, packet, done) => {
        // Kept apart from `client`, which mayPublish's type guard leaves as nothing below when it says no.
        const publisher = client;
        if (!this.policy.mayPublish(client, packet)) {
          // The broker closes the connection for it [MQTT-3.3.5-2]. A Will is published the same way once its connection
          // has closed (`client.closed`): that one is only dropped, as docs/topics.md says, and no connection is.
          if (publisher && !publisher.closed)
            this.brokerDropped(publisher, { reason: 'PUBLISH to a topic other than its own requests topic', clause: 'MQTT-3.3.5-2' });
          return done(new Error(`not allowed to publish to ${packet.topic}`));
        }
        // A request is an instruction to the server, never a message to keep:
        // it is handled here, once, and not retained.
        packet.retain = false;
        const principal = this.policy.principalOf(client);
        if (principal && this.sink) this.sink(client, principal, Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload));
        done(null);
      },
      // A persistent session's subscriptions restored at its login cost nothing: they were paid for when made, the client
      // is told its session is present and does not subscribe again, and a restore replays no retained message. Charged,
      // a user out of requests (several devices reconnecting at once) lost them without a word.
      authorizeSubscribe: (client, sub, done) =>
        done(
          null,
          this.policy.grantSubscription(client, sub, (principal) =>
            guardOf(client.conn)?.admitted === false ? true : (this.subscriptionRate?.(client, principal) ?? true),
          ),
        ),
      authorizeForward: (client, packet) => (this.policy.mayReceive(client, packet.topic) ? packet : null),
    });
    // Packets from other gateways may have been missed: every client reconnects and is brought up to date by InboxSync.
    opts.backplane.onGap(() => {
      for (const client of this.clients()) client.close();
    });
    // The broker answered a CONNECT: the guard lets the client's other packets through only after a successful one, and
    // the connection's requests and inbox events take their lane from then on.
    this.aedes.on('connackSent', (connack, client) => {
      const guard = guardOf(client.conn);
      guard?.admit(connack.returnCode === 0);
      if (guard) this.loginOver(guard);
      // The CONNACK is answered a turn after the broker registered the client: a socket that failed meanwhile has been
      // closed (and its 'clientDisconnect' has come and gone), and must not be filed.
      const principal = connack.returnCode === 0 && !client.closed ? this.policy.principalOf(client) : undefined;
      if (!principal) return;
      this.inboxes.add(inboxTopicOf(principal), client);
      guard?.openRequests(principal);
    });
    storeOnlyWhatSessionsNeed(opts.backplane.persistence, policy);
    this.aedes.on('unsubscribe', (filters, client) => policy.released(client, filters));
    // Bounds the persistent sessions each user leaves in this gateway's memory.
    this.sessions = new SessionKeeper(this.aedes, policy, opts.sessions).start();
    this.aedes.on('clientReady', () => this.metrics.connections.inc());
    this.aedes.on('clientDisconnect', (client) => {
      this.metrics.connections.dec();
      const principal = this.policy.principalOf(client);
      if (principal) this.inboxes.remove(inboxTopicOf(principal), client);
    });
    opts.backplane.onRelayed((topic, payload) => this.inboxes.write(topic, payload));
    // A client silent for 1.5 times its keep-alive [MQTT-3.1.2-24], which the broker watches (a keep-alive within the
    // limit), is dropped by the broker: logged as the guard's own drop of one silent past the limit is.
    this.aedes.on('keepaliveTimeout', (client) => {
      // Aedes's timer runs 1.5 times the keep-alive plus 1 ms (lib/handlers/connect.js): the reason says the 1.5 times.
      const ms = (client as ClientKeepAlive)._keepaliveInterval ?? 0;
      this.brokerDropped(client, { reason: `silent for ${Math.max(0, ms - 1)} ms`, clause: 'MQTT-3.1.2-24' });
    });
    // Client faults (bad packets, dropped sockets) end that connection only. One is the client's doing, and logged as a
    // drop: more QoS 2 requests left awaiting their PUBREL than the broker keeps (Aedes's maxInflightInbound, 1000).
    this.aedes.on('clientError', (client, err) => {
      if (err.message.startsWith('maxInflightInbound exceeded'))
        this.brokerDropped(client, { reason: err.message.replace(/^maxInflightInbound exceeded: /, '') }, true);
      else this.logger.debug?.({ event: 'client_error', client: client?.id, error: err.message });
    });
    this.aedes.on('connectionError', (client, err) => this.logger.debug?.({ event: 'connection_error', client: client?.id, error: err.message }));
  }

  /** Where authorized requests go. */
  onRequest(sink: RequestSink): void {
    this.sink = sink;
  }

  /**
   * Counts each subscription a connection takes up against the request rate limits: a SUBSCRIBE to presence replays
   * every retained presence it matches, so one repeated without a limit would make the server send any amount.
   */
  limitSubscriptions(mayTake: (connection: Client, principal: Principal) => boolean): void {
    this.subscriptionRate = mayTake;
  }

  private started: Promise<void> | undefined;

  /** Readies the broker's persistence, so it can publish (retained presence, say) before any listener is up. Idempotent. */
  start(): Promise<void> {
    this.started ??= this.aedes.listen();
    return this.started;
  }

  /** Starts the TCP listener. On `::` it is dual-stack: IPv4 clients arrive as IPv4-mapped addresses on the same socket. */
  listen(host: string, port: number): Promise<AddressInfo> {
    return this.listenOn('mqtt', host, port);
  }

  /** Starts a listener of one kind (plain, TLS, WebSocket, secure WebSocket); TLS kinds need the certificate files. */
  async listenOn(kind: ListenerKind, host: string, port: number, tls?: TlsFiles): Promise<AddressInfo> {
    await this.start();
    const proxyFrom = this.opts.proxyFrom;
    const listener = await openListener(kind, host, port, (stream, address) => this.accept(stream, address), {
      tls,
      maxPacketBytes: this.opts.guard.maxPacketBytes,
      connectTimeoutMs: this.opts.guard.connectTimeoutMs,
      proxy: proxyFrom && { from: proxyFrom, headerTimeoutMs: this.opts.guard.connectTimeoutMs, onDrop: this.logProxyDrop },
      onDrop: this.logListenerDrop,
    });
    this.listeners.push(listener);
    return listener.address;
  }

  /**
   * Connections logging in (see `maxConnectingPerAddress`), per address key, and each one's key until its CONNACK or
   * its end. Each holds a file descriptor for up to the connect timeout before any login is checked: one address
   * reopening them as fast as they were closed ran a gateway out of descriptors (its health checks timed out with them).
   */
  private readonly connecting = new OpenCounts();
  private readonly connectingKeys = new WeakMap<GuardedConnection, string>();

  /** Hands a client's stream to the broker behind its guard. */
  private accept(stream: Duplex, remoteAddress: string): void {
    const max = this.opts.maxConnectingPerAddress;
    const key = addressKey(remoteAddress);
    if (max !== undefined && this.connecting.of(key) >= max) {
      stream.destroy();
      this.logDropped(remoteAddress, { reason: `more than ${max} connections from this address logging in at once`, bytesRead: 0 });
      return;
    }
    const guarded = new GuardedConnection(stream, remoteAddress, this.guardLimits, this.logDrop, this.takeRequest, this.connectionClosed);
    if (max !== undefined) {
      this.connecting.add(key);
      this.connectingKeys.set(guarded, key);
    }
    // No 'error' listener of the gateway's own: the broker's client listens from here on, and leaves a no-op one
    // behind when it lets the connection go. (A third listener grew the guard's list of them to 19 slots.)
    guarded.owner = handleConnection(this.aedes, guarded);
  }

  /** One function for every connection's end, not a listener per connection: the policy counts open connections. */
  private readonly connectionClosed = (guard: GuardedConnection): void => {
    this.loginOver(guard);
    this.policy.connectionClosed(guard.owner as Client);
  };

  /** The connection's login is over (answered, or the connection ended): it no longer counts as logging in. */
  private loginOver(guard: GuardedConnection): void {
    const key = this.connectingKeys.get(guard);
    if (key === undefined) return;
    this.connectingKeys.delete(guard);
    this.connecting.remove(key);
  }

  /**
   * Drops logged per address (IPv6: its /64): the first DROPS_LOGGED_PER_ADDRESS in 10 s each, then one line with how many
   * were left out. Anyone can make a connection be dropped, and without a bound a stranger could write the log at will.
   */
  private readonly dropLog = new LogThrottle(10_000, undefined, DROPS_LOGGED_PER_ADDRESS, (address, n) =>
    this.logger.log({ event: 'log_left_out', of: 'connection_dropped', address, alikeLeftOut: n }),
  );

  private logDropped(address: string, drop: (GuardDrop & { connack?: number }) | ProxyHeaderDrop): void {
    const fields = this.dropLog.logFields(addressKey(address));
    if (fields) this.logger.log({ event: 'connection_dropped', address, ...drop, ...fields });
  }

  /**
   * A connection the broker itself ends for what its client did (a refused login, a forbidden PUBLISH, silence, QoS 2
   * requests left unreleased): logged as the guard's drops are. `ended`: the broker has ended it already.
   */
  private brokerDropped(client: Client, drop: { reason: string; clause?: string; connack?: number }, ended = false): void {
    const guard = guardOf(client.conn);
    // Otherwise, one the guard has ended, or that closed, was logged then, or was no drop.
    if (guard && (ended || !guard.destroyed)) this.logDropped(guard.remoteAddress, { ...drop, bytesRead: guard.bytesReceived });
  }

  /** One function for every connection's drops (the guard passes itself), not a closure per connection. */
  private readonly logDrop = (drop: GuardDrop, guard: GuardedConnection): void => this.logDropped(guard.remoteAddress, drop);

  /** A TLS or WebSocket connection closed before it reached a guard (its handshake or upgrade failed, or came too late). */
  private readonly logListenerDrop = (drop: { reason: string; bytesRead: number }, address: string): void => this.logDropped(address, drop);

  /** A trusted proxy's connection closed for its PROXY protocol header: logged as the guard's drops are, by the proxy's address. */
  private readonly logProxyDrop = (drop: ProxyHeaderDrop, proxyAddress: string): void => this.logDropped(proxyAddress, drop);

  /** A request a guard took off the broker's path: handled as `authorizePublish` handles one that went through it. */
  private readonly takeRequest: RequestLane = (guard, payload) => {
    const client = guard.owner as ClientKeepAlive;
    // A connection the broker has closed (taken over, say) stopped reading: what it sends now is left to the broker, unread.
    const principal = client.closed ? undefined : this.policy.principalOf(client);
    if (!principal || !this.sink) return false;
    // The broker counts every packet it handles as a sign of life [MQTT-3.1.2-24]; this one it never sees.
    if ((client._keepaliveInterval ?? 0) > 0) client._keepaliveTimer?.refresh();
    this.sink(client, principal, payload);
    return true;
  };

  /** Sends an inbox event for these inboxes to the other gateways (they write it to their own connections). */
  relay(topics: readonly string[], payload: Buffer): void {
    this.opts.backplane.relay(topics, payload);
  }

  /** Whether this gateway hears the other gateways now (see `Backplane.hearing`). */
  hearsOthers(): boolean {
    return this.opts.backplane.hearing();
  }

  /** Settles once what was relayed so far has left this process for good (see `Backplane.sent`); undefined: at once. */
  relayed(): Promise<boolean> | undefined {
    return this.opts.backplane.sent();
  }

  /** The clients connected now. */
  private clients(): Client[] {
    return Object.values((this.aedes as unknown as { clients: Record<string, Client> }).clients);
  }

  get listening(): boolean {
    return this.listeners.length > 0 && this.listeners.every((l) => l.listening);
  }

  /**
   * Stops listening and ends every connection, then waits for `beforeClosing` while the broker can still publish (the
   * presence changes of those connections), then closes the broker.
   */
  async close(beforeClosing?: () => Promise<void>): Promise<void> {
    const listeners = this.listeners;
    this.listeners = [];
    const closed = Promise.all(listeners.map((l) => l.close()));
    await Promise.all(this.clients().map((client) => new Promise<void>((resolve) => client.close(() => resolve()))));
    await beforeClosing?.();
    await new Promise<void>((resolve) => this.aedes.close(() => resolve()));
    this.sessions.stop();
    await closed;
  }
}
