import { randomBytes, randomUUID } from 'node:crypto';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { expect } from 'vitest';
import { withDeadline } from '#libs/health';
import { InboxEvent, topics, type OkReply, type ErrorReply } from '#libs/protocol';
import { waitForMatches } from './wait-for-events.js';

export interface Waiter<T> {
  promise: Promise<T>;
}

/**
 * A logged-in test user on a real MQTT.js connection: it subscribes to its
 * inbox, records every event, and waits (bounded) for the ones a test expects.
 */
export class MqttUser {
  readonly events: InboxEvent[] = [];
  private readonly listeners = new Set<() => void>();
  /** How many events have arrived, and when (by that count) each did: a reply is looked for among those after its request. */
  private arrivals = 0;
  private readonly arrivedAs = new WeakMap<InboxEvent, number>();

  private constructor(
    readonly user: string,
    readonly client: MqttClient,
  ) {
    client.on('message', (topic, payload) => {
      if (topic !== topics.inbox(user)) return;
      const event = InboxEvent.parse(JSON.parse(payload.toString()));
      this.arrivedAs.set(event, ++this.arrivals);
      this.events.push(event);
      for (const l of this.listeners) l();
    });
  }

  static async connect(url: string, user: string, password: string, opts: IClientOptions = {}): Promise<MqttUser> {
    // Listening from before the CONNACK: a resumed session's sync starts as the server answers the login, and MQTT.js
    // handles what came in the same read before `connectClient`'s promise settles.
    let u!: MqttUser;
    const client = await connectClient(url, { username: user, password, clientId: `${user}/test-${randomBytes(4).toString('hex')}`, ...opts }, (c) => {
      u = new MqttUser(user, c);
    });
    // Bounded: a SUBACK that never comes fails the login, naming the client, instead of holding the test until its timeout.
    try {
      await withDeadline(client.subscribeAsync(topics.inbox(user), { qos: 1 }), SUBACK_MS);
    } catch (e) {
      client.end(true);
      throw new Error(`${user} (${client.options.clientId}): no SUBACK for the inbox: ${(e as Error).message}`, { cause: e });
    }
    return u;
  }

  /** Publishes a request and resolves with its reply. */
  async request(fields: Record<string, unknown>, timeoutMs = 10_000): Promise<OkReply | ErrorReply> {
    const id = typeof fields.id === 'string' ? fields.id : randomUUID();
    // Whether the server acknowledged the request (PUBACK) tells, when no reply comes, a request never received from a
    // reply that was lost on the way back.
    let pubacked = false;
    // A reply to this request, not one to an earlier request with the same id (a retry's test asks twice).
    const after = this.arrivals;
    const answers = (e: InboxEvent) => e.type === 'reply' && e.id === id && this.arrivedAs.get(e)! > after;
    const reply = this.waitFor(answers, timeoutMs, `reply to ${String(fields.op)} ${id}`).catch((e: unknown) => {
      throw new Error(`${(e as Error).message} (the request was ${pubacked ? '' : 'not '}PUBACKed)`);
    });
    const published = this.client.publishAsync(topics.requests(this.user), JSON.stringify({ ...fields, id }), { qos: 1 }).then(() => {
      pubacked = true;
    });
    // Bounded even when the publish itself never completes (a connection the server closed queues it forever).
    const [, answer] = await Promise.all([published, reply]);
    return answer as OkReply | ErrorReply;
  }

  /** Resolves with the first recorded event (past or future) that matches; rejects after the timeout. */
  waitFor(match: (e: InboxEvent) => boolean, timeoutMs = 10_000, what = 'event'): Promise<InboxEvent> {
    return this.waitForCount(match, 1, timeoutMs, what).then((all) => all[0]!);
  }

  /** Resolves once `count` recorded events match; rejects after the timeout. */
  waitForCount(match: (e: InboxEvent) => boolean, count: number, timeoutMs = 10_000, what = 'events'): Promise<InboxEvent[]> {
    return waitForMatches(
      this.events,
      this.listeners,
      match,
      count,
      timeoutMs,
      () => new Error(`${this.user}: timed out after ${timeoutMs} ms waiting for ${count} × ${what}; got ${JSON.stringify(this.events.slice(-5))}`),
    );
  }

  /** Calls `listener` with every event from now on, in arrival order. */
  onEvent(listener: (e: InboxEvent) => void): void {
    let seen = this.events.length;
    this.listeners.add(() => {
      while (seen < this.events.length) listener(this.events[seen++]!);
    });
  }

  /** Disconnects cleanly when connected; a connection the server already closed is just released. */
  close(): Promise<void> {
    return endClient(this.client);
  }
}

/** How long a login waits for the SUBACK of its inbox subscription. */
const SUBACK_MS = 10_000;

/** Connects a raw MQTT 3.1.1 client, rejecting (never hanging) on refusal or timeout. */
export function connectClient(url: string, opts: IClientOptions, setup?: (client: MqttClient) => void): Promise<MqttClient> {
  return new Promise((resolve, reject) => {
    const client = mqtt.connect(url, { protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 5000, ...opts });
    // Listeners that must see packets arriving right behind the CONNACK (a resumed session's queue) go on before it.
    setup?.(client);
    const fail = (err: Error) => {
      client.end(true);
      reject(err);
    };
    const closed = () => fail(new Error('connection closed before CONNACK'));
    client.once('connect', () => {
      client.off('error', fail);
      client.off('close', closed);
      resolve(client);
    });
    client.once('error', fail);
    client.once('close', closed);
  });
}

export function endClient(client: MqttClient): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      client.end(true);
      resolve();
    }, 2000);
    client.end(!client.connected, {}, () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** Subscribes and returns the SUBACK return codes, refusals (0x80) included, instead of throwing on them. */
export async function subscribeCodes(client: MqttClient, filters: string[]): Promise<number[]> {
  try {
    const granted = await client.subscribeAsync(filters, { qos: 1 });
    return granted.map((g) => g.qos);
  } catch (e) {
    const packet = (e as { packet?: { granted?: (number | { reasonCode: number })[] } }).packet;
    if (!packet?.granted) throw e;
    return packet.granted.map((g) => (typeof g === 'number' ? g : g.reasonCode));
  }
}

/** Registers a user over an anonymous connection, as `parley register` does. */
export async function registerUser(url: string, user: string, password: string): Promise<OkReply | ErrorReply> {
  const nonce = randomBytes(8).toString('hex');
  const client = await connectClient(url, { clientId: `anon.${nonce}` });
  let timer: NodeJS.Timeout | undefined;
  try {
    const reply = new Promise<OkReply | ErrorReply>((resolve, reject) => {
      timer = setTimeout(() => reject(new Error('no reply to register')), 10_000);
      client.on('message', (_t, payload) => {
        clearTimeout(timer);
        resolve(JSON.parse(payload.toString()) as OkReply | ErrorReply);
      });
    });
    // When the subscribe or publish below fails, that error is the one thrown: this one must not go unhandled meanwhile.
    reply.catch(() => undefined);
    await client.subscribeAsync(topics.anonInbox(nonce), { qos: 1 });
    await client.publishAsync(topics.anonRequests(nonce), JSON.stringify({ op: 'register', id: 'reg-1', user, password }), { qos: 1 });
    return await reply;
  } finally {
    clearTimeout(timer);
    await endClient(client);
  }
}

/** The result of a reply that must be ok; fails the test with the reply when it is an error. */
export async function okResult<T>(reply: Promise<unknown>): Promise<T> {
  const r = (await reply) as OkReply;
  expect(r, JSON.stringify(r)).toMatchObject({ ok: true });
  return r.result as T;
}
