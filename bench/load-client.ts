import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import mqtt, { type MqttClient } from 'mqtt';
import { topics } from '#libs/protocol';
import { connectClient, endClient } from '../test/support/mqtt-user.js';

/** Parley speaks its request/reply protocol; a bare broker is plain MQTT publish/subscribe on `bench/…` topics. */
export type Protocol = 'parley' | 'mqtt';

export interface Endpoint {
  url: string;
  protocol: Protocol;
  password: string;
  /** A bare broker whose every connection is a persistent session (clean=false), so it keeps each QoS 1 message until acknowledged. */
  persistentSessions?: boolean;
  /** The QoS a bare broker's subscribers ask for (1 unless set). */
  subscribeQos?: 0 | 1;
}

/** What a generator sees of one message: arrived at a recipient, or acknowledged to its sender. */
export interface LoadEvents {
  /** A message with this id reached this connection's user (never called for the user's own messages). */
  delivered?: (id: string, conv: string | undefined, seq: number | undefined) => void;
  /** The sender's answer for a message: Parley's `accepted` reply, a bare broker's PUBACK. */
  acked?: (id: string, ok: boolean) => void;
}

/** Generous for Parley (a login the server does not remember runs the password KDF, and many may queue for it); a bare broker answers at once or is stuck. */
const CONNECT_TIMEOUT_MS = 60_000;
const BARE_CONNECT_TIMEOUT_MS = 10_000;
const ID_END = 0x7c; // '|': bare-broker payloads are `<id>|<padding>`
/** How long a closing Parley client waits for the answers to its acknowledgements. */
const ACK_TIMEOUT_MS = 30_000;

/**
 * One logged-in user of the load generator. Against Parley: login, inbox
 * subscription (waiting for its `synced`), `send` requests and their replies.
 * Against a bare broker: the same shape over `bench/<user>/inbox` and
 * `bench/group/<name>`, where PUBACK stands in for `accepted`.
 */
export class LoadClient {
  events: LoadEvents = {};

  private constructor(
    readonly user: string,
    readonly client: MqttClient,
    private readonly protocol: Protocol,
    private readonly body: string,
  ) {
    client.on('message', (_topic, payload) => this.onPayload(payload));
    // MQTT.js leaves Nagle on: a client's PUBACK followed by its next PUBLISH would wait for the broker's delayed ACK
    // (~40 ms), which measures the generator, not the broker. Every target gets the same no-delay generator.
    client.once('connect', () => (client.stream as Socket).setNoDelay?.(true));
    if (client.connected) (client.stream as Socket).setNoDelay?.(true);
  }

  /**
   * Connects and subscribes. `session` makes a bare-broker connection persistent (clean=false, fixed client id);
   * `groups` are bare-broker group topics to subscribe to as well.
   */
  static async open(ep: Endpoint, user: string, opts: { payloadBytes: number; session?: boolean; groups?: string[] }): Promise<LoadClient> {
    const nonce = randomBytes(4).toString('hex');
    const body = 'x'.repeat(opts.payloadBytes);
    if (ep.protocol === 'parley') {
      const client = await connectClient(ep.url, {
        username: user,
        password: ep.password,
        clientId: `${user}/bench-${nonce}`,
        connectTimeout: CONNECT_TIMEOUT_MS,
      });
      const c = new LoadClient(user, client, 'parley', body);
      const synced = new Promise<void>((resolve) => (c.onSynced = resolve));
      await client.subscribeAsync(topics.inbox(user), { qos: 1 });
      await bounded(synced, 30_000, `${user}: no synced event`);
      c.onSynced = undefined;
      return c;
    }
    const session = opts.session ?? ep.persistentSessions ?? false;
    const client = await connectClient(ep.url, {
      clientId: session ? `bench-${user}` : `${user}-${nonce}`,
      clean: !session,
      connectTimeout: CONNECT_TIMEOUT_MS,
    });
    await client.subscribeAsync([`bench/${user}/inbox`, ...(opts.groups ?? []).map((g) => `bench/group/${g}`)], { qos: ep.subscribeQos ?? 1 });
    return new LoadClient(user, client, 'mqtt', body);
  }

  /**
   * Connects the drain receiver (the drain scenario times from here). The handlers are in place before CONNACK:
   * a broker may send a session's backlog in the same read as the CONNACK.
   */
  static async resume(ep: Endpoint, user: string, events: LoadEvents): Promise<LoadClient> {
    const parley = ep.protocol === 'parley';
    const client = mqtt.connect(ep.url, {
      protocolVersion: 4,
      reconnectPeriod: 0,
      connectTimeout: parley ? CONNECT_TIMEOUT_MS : BARE_CONNECT_TIMEOUT_MS,
      ...(parley
        ? { username: user, password: ep.password, clientId: `${user}/bench-${randomBytes(4).toString('hex')}` }
        : { clientId: `bench-${user}`, clean: false }),
    });
    const c = new LoadClient(user, client, ep.protocol, '');
    c.events = events;
    try {
      await bounded(
        new Promise<void>((resolve, reject) => {
          client.once('connect', () => resolve());
          client.once('error', reject);
          client.once('close', () => reject(new Error('connection closed before CONNACK')));
        }),
        parley ? CONNECT_TIMEOUT_MS : BARE_CONNECT_TIMEOUT_MS,
        `${user}: no CONNACK`,
      );
    } catch (e) {
      client.end(true);
      throw e;
    }
    if (parley) await client.subscribeAsync(topics.inbox(user), { qos: 1 });
    return c;
  }

  private onSynced: (() => void) | undefined;
  private pendingRequests = new Map<string, (reply: Record<string, unknown>) => void>();

  /** Sends one message to a user. */
  sendTo(to: string, id: string): void {
    this.publish(this.protocol === 'parley' ? topics.requests(this.user) : `bench/${to}/inbox`, id, { to });
  }

  /** Sends one message to a group (Parley: its id; bare broker: its topic name). */
  sendToGroup(group: string, id: string): void {
    this.publish(this.protocol === 'parley' ? topics.requests(this.user) : `bench/group/${group}`, id, { group });
  }

  /** A Parley request other than `send` (setup and receipts); resolves with its reply. */
  request(fields: Record<string, unknown> & { id: string }, timeoutMs = 30_000): Promise<Record<string, unknown>> {
    const reply = new Promise<Record<string, unknown>>((resolve) => this.pendingRequests.set(fields.id, resolve));
    this.client.publish(topics.requests(this.user), JSON.stringify(fields), { qos: 1 });
    return bounded(reply, timeoutMs, `${this.user}: no reply to ${String(fields.op)}`);
  }

  /**
   * Disconnects. A Parley user first acknowledges (`delivered`) everything it got, as a real client does once it has
   * shown it, so its next login's catch-up does not resend every message of the run so far: by the third repetition
   * that was millions of messages over the users of one scenario, and some logins timed out waiting for `synced`.
   * It happens after a scenario's measuring, and costs one request per conversation.
   */
  async close(): Promise<void> {
    if (this.protocol === 'parley' && this.client.connected) {
      const acks = [...this.lastSeq].map(([conv, seq], i) =>
        this.request({ op: 'receipt', id: `ack-${randomBytes(4).toString('hex')}-${i}`, conv, seq, status: 'delivered' }, ACK_TIMEOUT_MS).catch(
          () => undefined,
        ),
      );
      await Promise.all(acks);
    }
    return endClient(this.client);
  }

  /** The highest seq this connection got in each conversation (Parley). */
  private readonly lastSeq = new Map<string, number>();

  private publish(topic: string, id: string, target: { to: string } | { group: string }): void {
    if (this.protocol === 'parley') {
      // Parley's answer is the `accepted` reply on the inbox, not the PUBACK.
      this.client.publish(topic, JSON.stringify({ op: 'send', id, ...target, text: this.body }), { qos: 1 });
      return;
    }
    const payload = Buffer.from(`${id}|${this.body}`.slice(0, Math.max(this.body.length, id.length + 1)));
    this.client.publish(topic, payload, { qos: 1 }, (err) => this.events.acked?.(id, !err));
  }

  private onPayload(payload: Buffer): void {
    if (this.protocol === 'mqtt') {
      const end = payload.indexOf(ID_END);
      this.events.delivered?.(payload.toString('latin1', 0, end < 0 ? payload.length : end), undefined, undefined);
      return;
    }
    const event = JSON.parse(payload.toString()) as { type: string; id?: string; from?: string; ok?: boolean; conv?: string; seq?: number; result?: unknown };
    switch (event.type) {
      case 'message':
      case 'group':
        if (event.conv !== undefined && event.seq !== undefined && event.seq > (this.lastSeq.get(event.conv) ?? 0)) this.lastSeq.set(event.conv, event.seq);
        if (event.type === 'message' && event.from !== this.user && event.id !== undefined) this.events.delivered?.(event.id, event.conv, event.seq);
        return;
      case 'reply': {
        const id = event.id ?? '';
        const waiting = this.pendingRequests.get(id);
        if (waiting) {
          this.pendingRequests.delete(id);
          waiting(event);
        } else this.events.acked?.(id, event.ok === true);
        return;
      }
      case 'synced':
        this.onSynced?.();
        return;
      default:
        return;
    }
  }
}

/** Rejects when the promise has not settled within the bound. */
export function bounded<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what} within ${ms} ms`)), ms);
    p.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(timer);
        reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
}

/** Opens many clients, a bounded number at a time. */
export async function openAll<T>(items: readonly string[], concurrency: number, open: (item: string) => Promise<T>): Promise<T[]> {
  const out: T[] = new Array<T>(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await open(items[i]!);
      }
    }),
  );
  return out;
}
