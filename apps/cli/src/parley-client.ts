import { randomBytes, randomUUID, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import mqtt, { ErrorWithSubackPacket, type IClientOptions, type MqttClient } from 'mqtt';
import {
  DEFAULT_MAX_REQUEST_BYTES,
  readInboxEvent,
  readPresenceEvent,
  readResult,
  topics,
  type PresenceEvent,
  type RequestOp,
  type ResultOf,
  type ServerEvent,
} from '#libs/protocol';
import { probePort, type PortKind } from './port-probe.js';

/** The server answered a request with an error; `code` is the protocol's stable error code. */
export class RequestError extends Error {
  override readonly name = 'RequestError';
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** No answer to a request in time: `sent` when it was published (and may have been carried out), else never sent. */
export class RequestTimeout extends Error {
  override readonly name = 'RequestTimeout';
  constructor(
    readonly sent: boolean,
    message: string,
  ) {
    super(message);
  }
}

/**
 * What a request of a one-shot client learns when its connection closed before the answer came and connecting again
 * failed (see `rejoin`): `published`, how many times it went out (0: never).
 */
function closedBeforeAnswer(published: number): RequestTimeout {
  if (published === 0) return new RequestTimeout(false, 'not sent: the connection to the server closed, and connecting again failed');
  return new RequestTimeout(
    true,
    published > 1
      ? `the server closed the connection before it answered, each of the ${published} times it was sent (as it does on a request larger than it takes): it may or may not have been done`
      : 'the connection to the server closed before it answered, and connecting again failed: it may or may not have been done',
  );
}

/**
 * The CLI could not reach or log in to the server. `sent`: a request had gone out, and the connection closed before its
 * answer came, and logging in again was refused for good: the request may or may not have been done.
 */
export class ConnectError extends Error {
  override readonly name = 'ConnectError';
  constructor(
    message: string,
    readonly sent = false,
  ) {
    super(message);
  }
}

/**
 * A request's result, and whether it may answer a repeat: a copy of the same request (its id) went out before, and may
 * have been carried out with its answer lost (on a connection that closed first, or answered `unavailable`). The server
 * carries an id out once; a repeat that finds nothing to do ("read already") can then mean that copy did it.
 */
export interface Answer<T> {
  result: T;
  repeat: boolean;
}

export interface ConnectOptions {
  /** mqtt://, mqtts://, ws:// or wss:// (a WebSocket URL without a path gets `/`). */
  server: string;
  /** A CA certificate file (PEM) to trust for mqtts:// and wss://. */
  ca?: string;
  /** Omitted: an anonymous connection, which may only register. */
  user?: string;
  password?: string;
  /**
   * Reconnect after a dropped connection, and keep trying a first login refused with "try again" (interactive
   * commands); one-shot commands connect again only a few times after a drop, and give up such a login once `timeoutMs`
   * is over.
   */
  keepTrying?: boolean;
  /**
   * Makes the user online while connected (`chat`, `listen`). Otherwise the connection is quiet (device `.cli-…`):
   * a one-shot command does not flick its user online and offline for everyone watching.
   */
  present?: boolean;
  /**
   * With `present`: connect as this device (`user/DEVICE`) with a persistent session (clean session off), so the
   * server keeps the device's own delivery position and its catch-up starts there.
   */
  device?: string;
  /**
   * How long a request waits for its answer, and a one-shot command's first connect for a login the server refuses with
   * "try again" (CONNACK 3) to be accepted (10 s).
   */
  timeoutMs?: number;
  /**
   * Reconnect after a dropped connection, and send again what waits for an answer, like `keepTrying`, but try a first
   * login as a one-shot command does (a long transfer that should ride out a server's restart).
   */
  reconnect?: boolean;
  /** The pause between two attempts to connect: again after a drop (keepTrying), or after a "try again" refusal (2 s). */
  reconnectMs?: number;
  /** Told once, with the reason, when the first login is refused with "try again" (CONNACK 3) and will be tried again. */
  onUnavailable?: (reason: string) => void;
}

/** Answers that ask for the same request again, later; and the pauses before each retry. */
const RETRIED: ReadonlySet<string> = new Set(['rate_limited', 'unavailable']);
const RETRY_PAUSES_MS = [500, 1000, 2000, 4000];
/**
 * A one-shot client's pauses before each attempt to connect again after its connection dropped (see `rejoin`): a few,
 * short, within its request's time; one that fails them all fails what waits.
 */
const REJOIN_PAUSES_MS = [250, 500, 1000, 2000];

const CONNACK_REASONS: Record<number, string> = {
  1: 'the server does not speak this MQTT version',
  2: 'the server refused this client id',
  3: 'the server said to try again later: it cannot check logins now, or this user logs in too often',
  4: 'wrong user name or password',
  5: 'not authorized: too many failed logins or open connections; try again later',
};

/** A refusal worth trying again: `3`, the server cannot check logins just now. Any other will answer the same next time. */
const CONNACK_TRY_AGAIN = 3;

interface ClientEvents {
  newListener: [eventName: string | symbol, listener: unknown];
  event: [ServerEvent];
  presence: [PresenceEvent];
  offline: [];
  online: [];
}

/**
 * A Parley connection on MQTT.js (protocol 3.1.1): it subscribes to its inbox
 * (a one-shot command: its replies topic) before it sends anything, sends
 * requests to its requests topic, and matches replies by id. Everything else
 * arriving on the inbox is emitted as `event`.
 */
export class ParleyClient extends EventEmitter<ClientEvents> {
  /** Inbox events that arrived before the first 'event' listener (bounded), replayed to it in order. */
  private early: ServerEvent[] | undefined = [];
  private replaying = false;
  /**
   * Requests waiting for their reply; `published`: how many times it went out (on any connection), `on`: the connection
   * it last went out on (see `connections`).
   */
  private readonly pending = new Map<
    string,
    {
      op: RequestOp;
      body: string;
      published: number;
      on: number;
      /** Of the request's call (`ask`): its copies that went out and may have been carried out without their answer coming. */
      unanswered: { copies: number };
      resolve: (r: unknown) => void;
      reject: (e: Error) => void;
      timer: NodeJS.Timeout;
    }
  >();
  /** Connections made so far: the current one's number. */
  private connections = 0;
  /**
   * The inbox subscription is in place on the current connection, so a reply can reach us: requests are published only
   * then. Off from a drop until the next connection's inbox is subscribed again.
   */
  private ready = true;
  /** Why the connection ended for good (not by `close`); from then on every request fails at once with it. */
  private endedWith: ConnectError | undefined;
  private closing = false;
  /** The connection closed, and this client (a one-shot command's) could not connect again: see `rejoin`. */
  private gone = false;
  /** A one-shot client's attempts to connect again so far (see `rejoin`), and the pause before the next one. */
  private rejoins = 0;
  private rejoinTimer: NodeJS.Timeout | undefined;
  private readonly onEnded: (e: ConnectError) => void;
  /**
   * Resolves with the reason once the connection has ended for good, and will not be tried again: a refusal that
   * retrying cannot change (a wrong password, a lockout, the inbox subscription refused). Never resolves after `close`.
   */
  readonly ended: Promise<ConnectError>;

  private constructor(
    private readonly mqtt: MqttClient,
    readonly user: string | null,
    /** Where replies (and, for `chat` and `listen`, events) come: the inbox, or a one-shot command's replies topic. */
    private readonly inbox: string,
    private readonly requests: string,
    private readonly timeoutMs: number,
    private readonly server: string,
    /** The device it connected as, with a persistent session (`device`), or null. */
    readonly device: string | null,
    /** What the connection received before this client existed (see connectOnce). */
    held: Held,
  ) {
    super();
    let onEnded!: (e: ConnectError) => void;
    this.ended = new Promise((resolve) => (onEnded = resolve));
    this.onEnded = onEnded;
    // The server starts the inbox sync as it grants the subscription, so events can arrive before anyone listens: they wait here.
    this.on('newListener', (name) => {
      if (name !== 'event' || !this.early || this.replaying) return;
      this.replaying = true;
      queueMicrotask(() => {
        const early = this.early ?? [];
        this.early = undefined;
        for (const e of early) this.emit('event', e);
      });
    });
    // What came before this client existed is handled first, in order; nothing can come in between.
    mqtt.off('message', held.listener);
    for (const [topic, payload] of held.messages) this.onMessage(topic, payload);
    mqtt.on('message', (topic, payload) => this.onMessage(topic, payload));
    // Errors while reconnecting (refused, unreachable) are reported as offline/online; MQTT.js tries again on its own,
    // after a CONNACK refusal too (reconnectOnConnackError). A refusal that cannot change ends it here instead.
    mqtt.on('error', (e) => {
      const code = (e as { code?: unknown }).code;
      if (typeof code === 'number' && code !== CONNACK_TRY_AGAIN) this.end(new ConnectError(describeConnectError(e, this.server)));
    });
    mqtt.on('offline', () => this.emit('offline'));
    mqtt.on('close', () => {
      this.ready = false;
      this.refuseOversized();
      // MQTT.js does not reconnect a one-shot command's connection (see connect): it does so itself, a few times.
      if (!mqtt.options.reconnectPeriod) this.rejoin();
    });
    mqtt.on('connect', () => {
      this.connections++;
      this.emit('online');
      void this.resume();
    });
  }

  /**
   * A new connection (the first one's 'connect' came before this client existed): once its inbox subscription is
   * granted, every request still waiting is published (again). One sent before the drop may have been carried out with
   * its reply lost, or lost itself; the same id never does anything twice, and the server answers it again.
   */
  private async resume(): Promise<void> {
    // A connection lost before the SUBACK: the next one subscribes again.
    const granted = await subscribed(this.mqtt, this.inbox, this.timeoutMs).catch(() => undefined);
    if (granted === false) return this.end(new ConnectError('the server refused the inbox subscription'));
    if (!granted || !this.mqtt.connected) return;
    this.ready = true;
    for (const id of this.pending.keys()) this.publish(id);
  }

  /** The connection ended for good: it is closed, every request waiting fails with the reason, and `ended` resolves. */
  private end(reason: ConnectError): void {
    if (this.closing || this.endedWith) return;
    this.endedWith = reason;
    this.ready = false;
    this.mqtt.end(true);
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      this.pending.delete(id);
      // Sent on a connection that closed before the answer (a refusal comes from a new one): it may have been done.
      p.reject(
        p.published > 0
          ? new ConnectError(
              `the connection to the server closed before it answered, and connecting again failed (${reason.message}): it may or may not have been done`,
              true,
            )
          : reason,
      );
    }
    this.onEnded(reason);
  }

  /**
   * The connection of a one-shot client closed (a server restarting, a network cut, or its limits: a request larger than
   * it takes): it connects again, after a short pause, and `resume` publishes again what waits for an answer, with the
   * same ids, so that a request carried out before the drop is answered as it was, not done twice. A few tries
   * (REJOIN_PAUSES_MS, within a request's time: its timer runs on meanwhile); then what waits fails at once, and so does
   * every later request, rather than at its timeout.
   */
  private rejoin(): void {
    if (this.closing || this.endedWith || this.gone || this.rejoinTimer) return;
    const pause = REJOIN_PAUSES_MS[this.rejoins++];
    if (pause === undefined) return this.lost();
    this.rejoinTimer = setTimeout(() => {
      this.rejoinTimer = undefined;
      if (this.closing || this.endedWith) return;
      this.mqtt.reconnect();
    }, pause);
  }

  /**
   * The connection closed, a second one in a row, with a request on it unanswered that is larger than a server takes
   * by default: a server closes the connection on a packet over its size limit, before it reads it. Such a request fails
   * now, `payload_too_large` as a server says of one over its request limit that still fits a packet, rather than
   * going out again on every new connection, to be cut off each time, until it times out. (Once could be a network
   * drop, on a server configured for larger requests; a file chunk has the size the server asked for.)
   */
  private refuseOversized(): void {
    for (const [id, p] of this.pending) {
      const bytes = Buffer.byteLength(p.body);
      if (p.published < 2 || p.on !== this.connections || bytes <= DEFAULT_MAX_REQUEST_BYTES || p.op === 'file.chunk') continue;
      clearTimeout(p.timer);
      this.pending.delete(id);
      p.reject(
        new RequestError(
          'payload_too_large',
          `the server closed the connection as this request came, ${p.published} times: at ${Math.ceil(bytes / 1024)} KiB, it is larger than a server takes by default (${DEFAULT_MAX_REQUEST_BYTES / 1024} KiB, PARLEY_MAX_REQUEST_BYTES); not sent again`,
        ),
      );
    }
  }

  /** A one-shot client could not connect again: every request waiting fails at once, and so does every later one. */
  private lost(): void {
    if (this.closing || this.endedWith || this.gone) return;
    this.gone = true;
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      this.pending.delete(id);
      p.reject(closedBeforeAnswer(p.published));
    }
  }

  private publish(id: string): void {
    const p = this.pending.get(id);
    if (!p) return;
    p.published++;
    p.on = this.connections;
    // A publish cut short by a drop is sent again by `resume` on the next connection, until the request times out; then
    // never again. (At QoS 1, MQTT.js would keep it, unacknowledged, and send it again on its own after a reconnect:
    // `chat` said a message failed, and it arrived later.)
    this.mqtt.publish(this.requests, p.body, { qos: 0 }, () => undefined);
  }

  static async connect(opts: ConnectOptions): Promise<ParleyClient> {
    const timeoutMs = opts.timeoutMs ?? 10_000;
    const anonymous = opts.user === undefined;
    const nonce = randomBytes(8).toString('hex');
    const device = opts.present ? opts.device : undefined;
    const clientId = anonymous
      ? `anon.${nonce}`
      : device !== undefined
        ? `${opts.user}/${device}`
        : `${opts.user}/${opts.present ? '' : '.'}cli-${randomBytes(4).toString('hex')}`;
    // A one-shot command wants its replies only: on the inbox, the server would first send it the user's whole unread
    // backlog, each time (it acknowledges nothing, so the backlog never shrinks).
    const repliesOnly = !anonymous && !opts.present;
    const inbox = anonymous ? topics.anonInbox(nonce) : repliesOnly ? topics.replies(opts.user!) : topics.inbox(opts.user!);
    const requests = anonymous ? topics.anonRequests(nonce) : topics.requests(opts.user!);
    const ca = opts.ca === undefined ? undefined : readCaFile(opts.ca);
    const pauseMs = opts.reconnectMs ?? 2000;
    // After a drop: `chat` and `listen` (keepTrying), and file transfers (reconnect).
    const reconnects = Boolean(opts.keepTrying || opts.reconnect);
    const options: IClientOptions = {
      ...(ca ? { ca: [ca] } : {}),
      // MQTT.js drops the brackets of an IPv6 literal when it rebuilds a ws:// or wss:// URL.
      transformWsUrl: (url, o) => (o.hostname?.includes(':') ? url.replace(`//${o.hostname}:`, `//[${o.hostname}]:`) : url),
      protocolVersion: 4,
      clientId,
      username: opts.user,
      password: opts.password,
      clean: device === undefined,
      reconnectPeriod: reconnects ? pauseMs : 0,
      // A server that cannot check logins for a while (its account store restarting) answers CONNACK 3, "try again":
      // keep trying. Refusals that retrying cannot change end the client (see the 'error' listener in the constructor).
      reconnectOnConnackError: reconnects,
      // Requests are published at QoS 0 and sent again by the client itself on each new connection while they wait
      // (`resume`): none is kept by MQTT.js to go out on a later connection, after the caller was told it failed.
      queueQoSZero: false,
    };
    // The first login gets the same "try again" answer while the server's account store restarts. `chat` and `listen`
    // keep trying, as they do after a drop; a one-shot command for as long as it waits for an answer, then gives the
    // reason. Once refused that way, the server was there: its being unreachable for a while is part of its restart.
    // Any other refusal (a wrong password, a lockout) and an unreachable server at the first attempt fail at once.
    const deadline = Date.now() + timeoutMs;
    let retrying = false;
    /** Whether the server has answered "try again" (CONNACK 3): then `chat` and `listen` keep trying without end. */
    let toldToTryAgain = false;
    /** Why the server refused the login the first time: the reason to give up with, whatever ended the last attempt. */
    let refusal = '';
    let connected: Connected;
    /** Where replies come on the connection: `inbox`, or the user's inbox on a server from before the replies topic. */
    let listening: string;
    for (;;) {
      try {
        // A one-shot command's last attempts wait no longer than what is left of its time.
        const connectTimeout = opts.keepTrying ? timeoutMs : Math.max(1000, deadline - Date.now());
        connected = await connectOnce(opts.server, { ...options, connectTimeout });
        // Nothing is sent before replies can come back: the login is not done until its inbox is subscribed.
        listening = await subscribeInbox(connected.client, inbox, repliesOnly ? topics.inbox(opts.user!) : null, connectTimeout);
        break;
      } catch (e) {
        if (e instanceof ConnectError) throw e;
        const code = (e as { code?: unknown }).code;
        // A server that took the connection and dropped it before answering the login, or before granting the inbox,
        // is going down or restarting: a command that rides out drops (file transfers, chat, listen) rides this one out
        // too.
        const dropped = code === CLOSED_BEFORE_ANSWER || code === CLOSED_BEFORE_SUBSCRIBED;
        const tryAgain = code === CONNACK_TRY_AGAIN || (retrying && typeof code !== 'number') || (reconnects && dropped);
        const reason = describeConnectError(e as Error, opts.server, opts.ca);
        if (!tryAgain) throw new ConnectError((await wrongScheme(e as Error, opts.server, ca)) ?? reason);
        // A first drop may be no restart but a TLS port spoken to in plain: then it is said at once, not retried.
        const misnamed = dropped && !retrying ? await wrongScheme(e as Error, opts.server, ca) : undefined;
        if (misnamed) throw new ConnectError(misnamed);
        if (code === CONNACK_TRY_AGAIN) toldToTryAgain = true;
        if (!retrying) refusal = reason;
        const left = deadline - Date.now();
        // A server that cannot check logins may take seconds to say so: the last attempt may time out instead. One that
        // only ever dropped the connection (a restart, or a port that speaks something else) is given as long as a
        // one-shot command waits.
        if ((!opts.keepTrying || !toldToTryAgain) && left <= 0) throw new ConnectError(`${refusal} (tried for ${Math.round(timeoutMs / 1000)} s)`);
        if (!retrying) opts.onUnavailable?.(reason);
        retrying = true;
        await new Promise((resolve) => setTimeout(resolve, opts.keepTrying ? pauseMs : Math.min(pauseMs, left)));
      }
    }
    const { client, held } = connected;
    // What arrived once the inbox was granted (a resumed session's sync) was held by connectOnce's listener, in order.
    return new ParleyClient(client, opts.user ?? null, listening, requests, timeoutMs, opts.server, device ?? null, held);
  }

  /**
   * Sends a request and resolves with its result; rejects with RequestError (server said no) or RequestTimeout (no answer).
   * An answer of `rate_limited` or `unavailable` asks for a retry with the same id, which can never do a thing twice:
   * it is retried a few times, after growing pauses, before it is reported.
   */
  async request<Op extends RequestOp>(op: Op, fields: Record<string, unknown> = {}, id: string = randomUUID()): Promise<ResultOf[Op]> {
    return (await this.ask(op, fields, id)).result;
  }

  /** As `request`, and tells whether the answer may be to a repeat of a copy carried out before (see `Answer`). */
  async ask<Op extends RequestOp>(op: Op, fields: Record<string, unknown> = {}, id: string = randomUUID()): Promise<Answer<ResultOf[Op]>> {
    let unavailable = false;
    const unanswered = { copies: 0 };
    for (let attempt = 1; ; attempt++) {
      try {
        const result = await this.requestOnce(op, fields, id, unanswered);
        return { result, repeat: unanswered.copies > 0 };
      } catch (e) {
        // A retry that got no answer after the server said `unavailable`: a service down, whose calls wait their turn
        // behind the connection's others (each for the server's own timeout). The cause goes with the timeout.
        if (e instanceof RequestTimeout && unavailable)
          throw new RequestTimeout(
            e.sent,
            `${e.message} (before that, the server said it could not do this right now: one of its services is down, or its storage is full)`,
          );
        if (!(e instanceof RequestError) || !RETRIED.has(e.code)) throw e;
        unavailable ||= e.code === 'unavailable';
        // `unavailable` may be a call the server gave up waiting for, carried out later; `rate_limited` did nothing.
        if (e.code === 'unavailable') unanswered.copies++;
        // Given up after the retries: said for a person, who runs the command again, not for a client that keeps an id.
        if (attempt >= RETRY_PAUSES_MS.length + 1)
          throw e.code === 'unavailable'
            ? new RequestError(
                e.code,
                `the server could not do this right now (one of its services is down, or its storage is full), even after ${attempt} tries; try again later`,
              )
            : e;
        await new Promise((resolve) => setTimeout(resolve, RETRY_PAUSES_MS[attempt - 1]));
      }
    }
  }

  /**
   * Publishes a request once the inbox can take its reply, and again on each new connection until the reply comes (see
   * `resume`). Times out after `timeoutMs`; a request that was never published is then given up for good, so nothing
   * is done after the caller was told it failed.
   */
  private requestOnce<Op extends RequestOp>(op: Op, fields: Record<string, unknown>, id: string, unanswered: { copies: number }): Promise<ResultOf[Op]> {
    return new Promise((resolve, reject) => {
      if (this.endedWith) return reject(this.endedWith);
      if (this.gone) return reject(closedBeforeAnswer(0));
      const timer = setTimeout(() => {
        const sent = (this.pending.get(id)?.published ?? 0) > 0;
        this.pending.delete(id);
        const secs = Math.round(this.timeoutMs / 1000);
        reject(
          new RequestTimeout(
            sent,
            sent ? `no answer from the server within ${secs} s: it may or may not have been done` : `not sent: no connection to the server for ${secs} s`,
          ),
        );
      }, this.timeoutMs);
      this.pending.set(id, {
        op,
        body: JSON.stringify({ op, id, ...fields }),
        published: 0,
        on: 0,
        unanswered,
        resolve: resolve as (r: unknown) => void,
        reject,
        timer,
      });
      if (this.ready && this.mqtt.connected) this.publish(id);
    });
  }

  /**
   * Follows a user's presence (retained: the current state arrives at once). Resolves false when the server refused
   * to (SUBACK 0x80: past its limit of followed users per connection); then no update of that user will come.
   */
  watchPresence(user: string): Promise<boolean> {
    return subscribed(this.mqtt, topics.presence(user), this.timeoutMs);
  }

  get connected(): boolean {
    return this.mqtt.connected;
  }

  async close(): Promise<void> {
    this.closing = true;
    clearTimeout(this.rejoinTimer);
    for (const p of this.pending.values()) clearTimeout(p.timer);
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        // A server that takes the goodbye and answers nothing (hung, or a network gone half-open) leaves the socket
        // open, which would keep the process alive: it goes. (MQTT.js's `end(true)` does nothing once an end is under way.)
        this.mqtt.end(true);
        this.mqtt.stream?.destroy();
        resolve();
      }, 2000);
      this.mqtt.end(!this.mqtt.connected, {}, () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  private onMessage(topic: string, payload: Buffer): void {
    let raw: unknown;
    try {
      raw = JSON.parse(payload.toString('utf8'));
    } catch {
      return;
    }
    // Read leniently: a field a newer server added is left out, not a reason to drop the payload (see `lenient`).
    if (topic !== this.inbox) {
      const presence = readPresenceEvent(raw);
      if (presence) this.emit('presence', presence);
      return;
    }
    const event = readInboxEvent(raw);
    if (!event) return;
    if (event.type === 'reply') {
      const waiter = event.id === null ? undefined : this.pending.get(event.id);
      if (!waiter) return;
      clearTimeout(waiter.timer);
      this.pending.delete(event.id!);
      // The copies before this one went out on connections that closed before their answers came.
      waiter.unanswered.copies += waiter.published - 1;
      if (!event.ok) waiter.reject(new RequestError(event.error.code, event.error.message));
      else {
        try {
          waiter.resolve(readResult(waiter.op, event.result));
        } catch (e) {
          waiter.reject(e instanceof Error ? e : new Error(String(e)));
        }
      }
      return;
    }
    if (this.early) {
      if (this.early.length < 10_000) this.early.push(event);
      return;
    }
    this.emit('event', event);
  }
}

/** Messages a connection received before its ParleyClient listened, and the listener that kept them. */
interface Held {
  messages: [string, Buffer][];
  listener: (topic: string, payload: Buffer) => void;
}

/** A connection the server accepted, and what it received before anyone else listened. */
interface Connected {
  client: MqttClient;
  held: Held;
}

/** The code of an attempt that an answer in HTTP ended (see `connectOnce`): a WebSocket listener's port, or another HTTP server's. */
const SPEAKS_HTTP = 'SPEAKS_HTTP';

/** The code of a connection the server closed before it answered the login (see `connectOnce`). */
const CLOSED_BEFORE_ANSWER = 'CLOSED_BEFORE_ANSWER';
/** The code of a connection that closed after the login was accepted, before the inbox subscription was answered. */
const CLOSED_BEFORE_SUBSCRIBED = 'CLOSED_BEFORE_SUBSCRIBED';

/**
 * Subscribes a new connection to `inbox`, or, refused it, to `fallback` (a server from before the replies topic sends
 * replies on the inbox, as it always did); resolves with the topic granted. A refusal ends the client and throws a
 * ConnectError, which trying again cannot change; a connection lost before the SUBACK ends it and throws an error with
 * the code CLOSED_BEFORE_SUBSCRIBED, which a command that rides out drops tries again, as a drop before the CONNACK.
 */
async function subscribeInbox(client: MqttClient, inbox: string, fallback: string | null, waitMs: number): Promise<string> {
  // A socket error meanwhile (a reset) comes before the close that fails the subscription: it must not go unheard, which
  // would throw (the ParleyClient listens from when this resolves).
  const unheard = () => undefined;
  client.on('error', unheard);
  try {
    for (const topic of fallback === null ? [inbox] : [inbox, fallback]) {
      let granted: boolean;
      try {
        granted = await subscribed(client, topic, waitMs);
      } catch (e) {
        client.end(true);
        const what = topic === inbox && fallback !== null ? 'the replies topic' : 'the inbox';
        throw Object.assign(new Error(`could not subscribe to ${what}: ${e instanceof Error ? e.message : String(e)}`), { code: CLOSED_BEFORE_SUBSCRIBED });
      }
      if (granted) return topic;
    }
    client.end(true);
    throw new ConnectError('the server refused the inbox subscription');
  } finally {
    client.off('error', unheard);
  }
}

/**
 * One attempt to connect: resolves with the client, and what it received meanwhile, once the server accepted the
 * login; rejects with the error that ended the attempt (a CONNACK refusal carries its code), the client closed.
 */
function connectOnce(server: string, options: IClientOptions): Promise<Connected> {
  const client = mqtt.connect(server, options);
  // What arrives right behind the CONNACK is kept for the ParleyClient made once this resolves: MQTT.js handles the
  // packets of one read back to back, before the promise's reaction runs, and a resumed session's inbox sync starts
  // as the server answers the login, so its first events can come in that same read.
  const held: [string, Buffer][] = [];
  const hold = (topic: string, payload: Buffer) => held.push([topic, payload]);
  client.on('message', hold);
  // What the server said first, before MQTT.js parses it: an HTTP answer (a WebSocket listener's "400 Bad Request")
  // fails the parse with a message about packet flags that means nothing to a person. Read ahead of MQTT.js's own
  // listener, which fails the attempt while it takes the same bytes.
  let first: Buffer | undefined;
  (client.stream as Duplex | undefined)?.prependOnceListener('data', (chunk: Buffer | string) => (first = Buffer.from(chunk)));
  return new Promise((resolve, reject) => {
    const fail = (e: Error) => {
      cleanup();
      client.end(true);
      reject(first?.subarray(0, 5).toString('latin1') === 'HTTP/' ? Object.assign(e, { code: SPEAKS_HTTP }) : e);
    };
    const closed = () => fail(Object.assign(new Error('the connection closed before the server answered'), { code: CLOSED_BEFORE_ANSWER }));
    const cleanup = () => {
      client.off('error', fail);
      client.off('close', closed);
    };
    client.once('connect', () => {
      cleanup();
      resolve({ client, held: { messages: held, listener: hold } });
    });
    client.once('error', fail);
    client.once('close', closed);
  });
}

/**
 * Subscribes at QoS 1: true when granted, false when the SUBACK refused it (0x80; MQTT.js rejects with the SUBACK).
 * No grant at all means MQTT.js counts it subscribed already (granted, or asked for and not answered yet). Other
 * failures (the connection closed before the SUBACK: MQTT.js rejects without a packet) reject.
 */
async function subscribed(client: MqttClient, topic: string, waitMs: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  // A server that keeps the connection and never answers is given as long as the login was (connectTimeout).
  const unanswered = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${Math.round(waitMs / 1000)} s`)), waitMs);
  });
  try {
    const granted = await Promise.race([client.subscribeAsync(topic, { qos: 1 }), unanswered]);
    return granted[0] === undefined || (granted[0].qos & 0x80) === 0;
  } catch (e) {
    const granted = e instanceof ErrorWithSubackPacket ? (e.packet as { granted?: unknown[] } | undefined)?.granted : undefined;
    if (granted?.some((g) => typeof g === 'number' && (g & 0x80) !== 0)) return false;
    throw e;
  } finally {
    clearTimeout(timer);
  }
}

/** What a TLS verification failure means to a person, by OpenSSL's (or Node's) code. */
const CERTIFICATE_FAULTS: Record<string, string> = {
  CERT_HAS_EXPIRED: 'its certificate has expired',
  CERT_NOT_YET_VALID: 'its certificate is not valid yet (is a clock wrong?)',
  ERR_TLS_CERT_ALTNAME_INVALID: 'its certificate is for another host name',
};

function describeConnectError(e: Error, server: string, ca?: string): string {
  const code = (e as { code?: unknown }).code;
  if (typeof code === 'number' && CONNACK_REASONS[code]) return `login refused by ${server}: ${CONNACK_REASONS[code]}`;
  if (code === CLOSED_BEFORE_SUBSCRIBED) return e.message;
  if (code === 'ECONNREFUSED') return `cannot reach ${server}: connection refused (is a Parley server running there?)`;
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return `cannot reach ${server}: unknown host`;
  if (/timeout/i.test(e.message)) return `cannot reach ${server}: no answer in time`;
  if (typeof code === 'string' && CERTIFICATE_FAULTS[code]) return `cannot reach ${server}: ${CERTIFICATE_FAULTS[code]} (${code})`;
  if (typeof code === 'string' && /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS/.test(code)) {
    const advice = ca === undefined ? 'pass --ca FILE or set PARLEY_CA' : `it is signed by neither the CA in ${ca} nor one this system trusts`;
    return `cannot reach ${server}: its certificate is not trusted (${code}); ${advice}`;
  }
  // TLS spoken to a port that does not (OpenSSL reads the plain answer as a record of a TLS version it does not know).
  if ((code === 'EPROTO' || code === 'ERR_SSL_WRONG_VERSION_NUMBER') && /wrong version number/i.test(e.message))
    return `cannot reach ${server}: it does not speak TLS on that port (mqtt:// or ws:// there?)`;
  // MQTT spoken to a WebSocket port, whose HTTP server answers a request it cannot read with 400.
  if (code === SPEAKS_HTTP) return `cannot reach ${server}: it speaks HTTP, not MQTT, on that port (if it is a WebSocket port: ws:// or wss://)`;
  // A WebSocket upgrade the port closed on (Node says "socket hang up"), said as a closed MQTT attempt is.
  if (closedUnanswered(e)) return `cannot reach ${server}: the connection closed before the server answered`;
  return `cannot reach ${server}: ${e.message}`;
}

/** A TLS handshake that the port answered in plain bytes (OpenSSL: "wrong version number"), or closed unanswered. */
function tlsRefused(e: Error, scheme: string): boolean {
  if (scheme !== 'mqtts:' && scheme !== 'wss:') return false;
  const code = (e as { code?: unknown }).code;
  if ((code === 'EPROTO' || code === 'ERR_SSL_WRONG_VERSION_NUMBER') && /wrong version number/i.test(e.message)) return true;
  return /before secure TLS connection was established/i.test(e.message);
}

/** A WebSocket upgrade request that went unanswered: the port closed on it (an MQTT port reads it as a bad packet). */
function upgradeUnanswered(e: Error, scheme: string): boolean {
  if (scheme !== 'ws:' && scheme !== 'wss:') return false;
  return closedUnanswered(e);
}

/** The port closed the connection before it answered anything. */
function closedUnanswered(e: Error): boolean {
  return (e as { code?: unknown }).code === CLOSED_BEFORE_ANSWER || /socket hang up/i.test(e.message);
}

/**
 * For a failure that suggests a scheme that does not fit the port (TLS to a plain port, MQTT to an HTTP one, WebSocket
 * to an MQTT one), what the port speaks and the URL to use, found by asking it (`probePort`); undefined when that
 * cannot be told, and `describeConnectError` says what it can. The question goes as far as the failed attempt went:
 * over TLS when its handshake succeeded, else plain.
 */
async function wrongScheme(e: Error, server: string, ca: Buffer | undefined): Promise<string | undefined> {
  let url: URL;
  try {
    url = new URL(server);
  } catch {
    return undefined;
  }
  const scheme = url.protocol;
  const tlsFailed = tlsRefused(e, scheme);
  const speaksHttp = (e as { code?: unknown }).code === SPEAKS_HTTP;
  // Plain bytes to a TLS port: it reads them as a broken handshake and closes without a word.
  const plainClosed = (scheme === 'mqtt:' || scheme === 'ws:') && closedUnanswered(e);
  if (!tlsFailed && !speaksHttp && !upgradeUnanswered(e, scheme) && !plainClosed) return undefined;
  const overTls = (scheme === 'mqtts:' || scheme === 'wss:') && !tlsFailed;
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  const port = url.port === '' ? DEFAULT_PORTS[scheme]! : Number(url.port);
  // A plain MQTT port would have answered the failed attempt's own CONNECT: no need to ask it again.
  const kind: PortKind = scheme === 'mqtt:' && plainClosed ? 'unknown' : await probePort({ host, port, ...(overTls ? { tls: { ca, servername: host } } : {}) });
  const as = (s: string) => `${s}//${url.host}`;
  const there = `cannot reach ${server}:`;
  if (plainClosed && kind === 'unknown') {
    // Asked again over TLS, whatever its certificate: only what the port speaks is told, and the URL to use.
    const overTlsKind = await probePort({ host, port, tls: { servername: host, unverified: true } });
    if (overTlsKind === 'mqtt') return `${there} it speaks MQTT over TLS${scheme === 'ws:' ? ', not WebSocket,' : ''} on that port: use ${as('mqtts:')}`;
    if (overTlsKind === 'websocket')
      return `${there} it speaks ${scheme === 'ws:' ? 'WebSocket' : 'HTTP (WebSocket)'} over TLS${scheme === 'mqtt:' ? ', not MQTT,' : ''} on that port: use ${as('wss:')}`;
  }
  // Parley's HTTP port answers /healthz: it is no MQTT port of any kind, and the listener wanted is on a port of its own.
  const healthPort = (wanted: string) => `it is a Parley health and metrics port (/healthz, /metrics); ${wanted} is on another port`;
  if (tlsFailed) {
    switch (kind) {
      case 'mqtt':
        return `${there} it does not speak TLS on that port, but plain MQTT: use ${as('mqtt:')}`;
      case 'websocket':
        return `${there} it does not speak TLS on that port, but plain HTTP (WebSocket): use ${as('ws:')}`;
      case 'parley-http':
        return `${there} it does not speak TLS on that port: ${healthPort(scheme === 'wss:' ? 'MQTT over secure WebSocket (PARLEY_WSS_PORT)' : 'MQTT over TLS (PARLEY_MQTTS_PORT)')}`;
      case 'http':
        return `${there} it does not speak TLS on that port, but plain HTTP, and no WebSocket there`;
      case 'unknown':
        return /wrong version number/i.test(e.message)
          ? undefined
          : `${there} it closed the connection before the TLS handshake was done: it does not seem to speak TLS on that port (mqtt:// or ws:// there?)`;
    }
  }
  if (scheme === 'mqtt:' || scheme === 'mqtts:') {
    switch (kind) {
      case 'websocket':
        return `${there} it speaks HTTP (WebSocket), not MQTT, on that port: use ${as(overTls ? 'wss:' : 'ws:')}`;
      case 'parley-http':
        return `${there} it speaks HTTP, not MQTT, on that port: ${healthPort('MQTT (PARLEY_MQTT_PORT, 1883 by default)')}`;
      case 'http':
        return `${there} it speaks HTTP, not MQTT, on that port, and takes no WebSocket there either: is it the right port?`;
      case 'mqtt':
      case 'unknown':
        return undefined;
    }
  }
  switch (kind) {
    case 'mqtt':
      return `${there} it speaks MQTT, not WebSocket, on that port: use ${as(overTls ? 'mqtts:' : 'mqtt:')}`;
    case 'parley-http':
      return `${there} it takes no WebSocket on that port: ${healthPort('MQTT over WebSocket (PARLEY_WS_PORT)')}`;
    case 'websocket':
    case 'http':
    case 'unknown':
      return undefined;
  }
}

/** The port a URL without one names, by scheme. */
const DEFAULT_PORTS: Record<string, number> = { 'mqtt:': 1883, 'mqtts:': 8883, 'ws:': 80, 'wss:': 443 };

/** The CA file's certificates, read and checked: a file that holds none (a key, say) would otherwise be ignored without a word. */
function readCaFile(path: string): Buffer {
  let pem: Buffer;
  try {
    pem = readFileSync(path);
  } catch (e) {
    throw new ConnectError(`cannot read the CA file ${path}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
  try {
    new X509Certificate(pem);
  } catch {
    throw new ConnectError(`the CA file ${path} holds no PEM certificate`);
  }
  return pem;
}
