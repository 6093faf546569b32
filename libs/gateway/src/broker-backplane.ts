import { randomUUID } from 'node:crypto';
import { Logger } from '@nestjs/common';
import aedesPersistence from 'aedes-persistence';
import { Redis, type RedisOptions } from 'ioredis';
import mqemitter, { type MQEmitter } from 'mqemitter';
import { Packr } from 'msgpackr';
import { TOPIC_ROOT } from '#libs/protocol';
import { quitRedis } from '#libs/storage';
import { deferred } from './deferred.js';

/**
 * What an Aedes broker shares with the other gateways: the message emitter
 * (who gets a published packet) and the persistence (retained messages).
 * Standalone, both are in memory. With Redis, gateways on one Redis act as
 * one broker: a packet published on gateway A reaches a subscriber on
 * gateway B, and retained presence is seen on every gateway.
 *
 * Why not the stock `mqemitter-redis` + `aedes-persistence-redis` pair: it
 * costs several sequential Redis round trips per QoS 1 packet (outgoing queues
 * per subscriber), its setup blocks the broker until Redis answers (so a
 * gateway could not even tell a client "unavailable"), and mqemitter-redis
 * subscribes per topic, which races a reconnecting user. Parley needs none of
 * MQTT's session persistence across gateways: a client that (re)connects is
 * brought up to date from the conversation logs (InboxSync), not from broker
 * queues. So sessions stay in each gateway's memory, packets travel over one
 * Redis channel, and retained messages are mirrored in one Redis hash.
 */
export interface Backplane {
  mq: MQEmitter;
  persistence: unknown;
  /** Called when this gateway may have missed packets from the others: its clients should reconnect and resync. */
  onGap(listener: () => void): void;
  /** Whether this gateway hears the others now (its subscription to their channel is up). Standalone: always. */
  hearing(): boolean;
  /**
   * Sends an inbox event to the other gateways only, for each of the inboxes given (one record, the payload once): each
   * gateway writes inbox events to its own connections itself (LocalInboxes), without the broker's routing. Standalone
   * there is no other gateway and this does nothing.
   */
  relay(topics: readonly string[], payload: Buffer): void;
  /**
   * Settles once every packet handed over so far has reached Redis, whose PUBLISH answer means each other gateway
   * has it on its way: what a request delivered is then out of this process, and survives its crash. Undefined when
   * there is nothing to wait for (standalone, or nothing on its way). Never rejects: it resolves false when a publish
   * failed (which is logged) or a packet was handed over once closed (dropped), true once Redis answered.
   */
  sent(): Promise<boolean> | undefined;
  /** Where inbox events relayed by other gateways go; without a listener they are routed by the broker like any packet. */
  onRelayed(listener: (topic: string, payload: Buffer) => void): void;
}

export type Packet = { topic: string; payload?: Buffer | string; retain?: boolean } & Record<string, unknown>;
type Done = (err?: Error) => void;

const REQUESTS = new RegExp(`^${TOPIC_ROOT.replace('/', '\\/')}\\/(users|anon)\\/[^/]+\\/requests$`);
/** Requests are handled by the gateway that received them and subscribed to by no one: they are never routed. */
const isRequest = (p: Packet) => REQUESTS.test(p.topic);
const INBOXES = new RegExp(`^${TOPIC_ROOT.replace('/', '\\/')}\\/(users|anon)\\/[^/]+\\/inbox$`);

/**
 * How many packets the emitter hands to subscribers at once; more wait in its queue. Writes to clients never wait
 * (GuardedConnection), so a slot is normally free again within a turn of the event loop. At 100, a burst (a 1,000-message
 * send, a group post to many members) or deliveries still held by connections that were just closing filled every slot
 * under load, and an unrelated reply then waited behind them for over 10 s.
 */
const EMITTER_CONCURRENCY = 10_000;

function localEmitter(): MQEmitter {
  return mqemitter({ concurrency: EMITTER_CONCURRENCY, matchEmptyLevels: true });
}

interface MemoryPersistence {
  setup(broker: unknown): Promise<void>;
  storeRetained(packet: Packet): Promise<void>;
}
// A CommonJS module whose function is its default export at run time; its typings describe it as a namespace.
const aedesMemoryPersistence = aedesPersistence as unknown as () => MemoryPersistence;

/** Aedes's in-memory persistence, keeping each retained payload in an allocation of its own (see `ownCopy`). */
function memoryPersistence(): MemoryPersistence {
  const persistence = aedesMemoryPersistence();
  const store = persistence.storeRetained.bind(persistence);
  persistence.storeRetained = async (packet) => store(packet.payload && packet.payload.length > 0 ? { ...packet, payload: ownCopy(packet.payload) } : packet);
  return persistence;
}

/**
 * A payload copied into memory of its own. A small Buffer is a view of an 8 KiB slab that Node shares among small
 * allocations; a retained message lives as long as its user's presence does, and keeps the whole slab alive, while
 * whatever else was cut from it is long gone. In a heap snapshot of 600 idle users, the slabs their presence pinned
 * came to about 600 bytes per connection, against 60 bytes of payload.
 */
export function ownCopy(payload: Uint8Array | string): Buffer {
  const bytes = typeof payload === 'string' ? Buffer.from(payload) : payload;
  const copy = Buffer.allocUnsafeSlow(bytes.length);
  copy.set(bytes);
  return copy;
}

/** Where a standalone broker keeps its retained messages (the users' presence), so that a restart does not forget them. */
export interface RetainedStore {
  /** Every retained message kept, read once as the broker starts. */
  all(): Iterable<Packet>;
  put(packet: Packet): Promise<void>;
  remove(topic: string): Promise<void>;
}

/**
 * Standalone: the broker's own in-memory emitter (requests still not routed) and persistence; retained messages are
 * written through to `retained` and loaded from it as the broker starts (before any listener is up).
 */
export function inMemoryBackplane(retained?: RetainedStore): Backplane {
  const local = localEmitter();
  const emit = local.emit.bind(local);
  const mq = Object.assign(local, { emit: (p: Packet, done?: Done) => (isRequest(p) ? (done?.(), local) : emit(p, done)) });
  const persistence = memoryPersistence();
  if (retained) keepRetained(persistence, retained);
  return {
    mq,
    persistence,
    onGap: () => undefined,
    hearing: () => true,
    relay: () => undefined,
    onRelayed: () => undefined,
    sent: () => undefined,
  };
}

function keepRetained(persistence: MemoryPersistence, store: RetainedStore): void {
  const logger = new Logger('BrokerBackplane');
  const storeLocally = persistence.storeRetained.bind(persistence);
  const setupLocally = persistence.setup.bind(persistence);
  persistence.setup = async (broker) => {
    await setupLocally(broker);
    for (const packet of store.all()) await storeLocally(packet);
  };
  persistence.storeRetained = async (packet) => {
    await storeLocally(packet);
    const payload = Buffer.from(packet.payload ?? '');
    // Not awaited, like the Redis hash: the live copy has gone out; the store is for the next start.
    const write = payload.length === 0 ? store.remove(packet.topic) : store.put({ ...packet, payload });
    write.catch((e: unknown) => logger.warn({ event: 'retained_write_failed', topic: packet.topic, error: String(e) }));
  };
}

/** How soon a SUBSCRIBE to the backplane's channel that failed is tried again. */
const SUBSCRIBE_RETRY_MS = 1000;

/** How long a closing backplane waits for Redis to answer its last batch before it quits all the same. */
const QUIT_WAIT_MS = 2000;

/**
 * Gateways on one Redis: every packet goes once to `{prefix}broker:packets`;
 * each gateway hands what comes from the others to its own in-memory emitter,
 * which knows its local subscribers. One channel for everything means no
 * per-topic SUBSCRIBE that could race a reconnect, at the price of every
 * gateway seeing every packet — fine for the handful of gateways a deployment
 * runs. Retained messages live in each gateway's memory, written through to
 * `{prefix}broker:retained` and loaded from it at start.
 */
export function redisBackplane(url: string, prefix: string): Backplane {
  const logger = new Logger('BrokerBackplane');
  const connect = (opts: RedisOptions = {}) => {
    const r = new Redis(url, { retryStrategy: (n: number) => Math.min(n * 100, 1000), ...opts });
    r.on('error', () => undefined);
    return r;
  };
  // Nothing awaits a publish here, so commands may queue while connecting; while Redis is away they fail after a few retries.
  const pub = connect({ maxRetriesPerRequest: 2, enableAutoPipelining: true });
  const sub = connect();
  const channel = `${prefix}broker:packets`;
  const retainedKey = `${prefix}broker:retained`;
  // Every batch starts with its gateway's id, so a gateway skips its own batches without decoding them.
  const origin = Buffer.from(randomUUID(), 'latin1');
  const packr = new Packr({ useRecords: false });
  const local = localEmitter();
  const gapListeners: (() => void)[] = [];
  let relayed: ((topic: string, payload: Buffer) => void) | undefined;

  const persistence = memoryPersistence();
  const storeLocally = persistence.storeRetained.bind(persistence);
  /** Topics whose retained message this gateway set or received since it started: newer than what Redis held at start. */
  const fresh = new Set<string>();
  const setupLocally = persistence.setup.bind(persistence);
  persistence.setup = async (broker) => {
    await setupLocally(broker);
    void loadRetained();
  };
  persistence.storeRetained = async (packet) => {
    fresh.add(packet.topic);
    await storeLocally(packet);
    const payload = Buffer.from(packet.payload ?? '');
    const write = payload.length === 0 ? pub.hdel(retainedKey, packet.topic) : pub.hset(retainedKey, packet.topic, packr.pack({ ...packet, payload }));
    // The live copy already went out over the channel; the hash is for gateways that start later.
    write.catch((e: unknown) => logger.warn({ event: 'retained_write_failed', topic: packet.topic, error: String(e) }));
  };

  async function loadRetained(): Promise<void> {
    for (let delay = 250; ; delay = Math.min(delay * 2, 5000)) {
      try {
        const all = await pub.hgetallBuffer(retainedKey);
        for (const [topic, raw] of Object.entries(all)) {
          if (fresh.has(topic)) continue;
          await storeLocally(packr.unpack(raw) as Packet);
        }
        return;
      } catch (e) {
        if (closed) return;
        logger.warn({ event: 'retained_load_retry', error: String(e), retryInMs: delay });
        await new Promise((resolve) => setTimeout(resolve, delay).unref());
      }
    }
  }

  let closed = false;
  let subscribed = false;
  sub.on('messageBuffer', (_channel: Buffer, raw: Buffer) => {
    if (raw.length < origin.length || origin.equals(raw.subarray(0, origin.length))) return;
    let packets: Packet[];
    try {
      packets = packr.unpackMultiple(raw.subarray(origin.length)) as Packet[];
    } catch {
      return;
    }
    for (const packet of packets) {
      if (packet.retain) {
        fresh.add(packet.topic);
        void storeLocally(packet);
        local.emit(packet);
      } else if (Buffer.isBuffer(packet.payload) && INBOXES.test(packet.topic)) {
        // An inbox event, for its first inbox and for those `also` lists (see `relayRecord`).
        const also = Array.isArray(packet.also) ? (packet.also as unknown[]) : [];
        const payload = packet.payload;
        const toInbox = (topic: string) => (relayed ? relayed(topic, payload) : local.emit({ ...packet, topic, also: undefined }));
        toInbox(packet.topic);
        for (const topic of also) if (typeof topic === 'string' && INBOXES.test(topic)) toInbox(topic);
      } else local.emit(packet);
    }
  });
  /** The SUBSCRIBE to the channel has succeeded once: ioredis renews it by itself at each reconnect from then on. */
  let joined = false;
  sub.on('ready', () => {
    // Not before the first SUBSCRIBE succeeds: a connection that is up but not subscribed hears nothing.
    if (joined) subscribed = true;
  });
  // Packets published while the subscription was down never reach this gateway: its clients must resync.
  sub.on('close', () => {
    if (!subscribed || closed) return;
    subscribed = false;
    logger.warn({ event: 'backplane_lost' });
    for (const l of gapListeners) l();
  });
  // ioredis subscribes again by itself after a reconnect, but only to what it had subscribed to: a SUBSCRIBE that gave up
  // (Redis away for its 20 tries at start, some 15 s) is tried again, else this gateway never heard the others.
  // Once one that failed succeeds, the clients that came meanwhile resync: what the others sent until then is missed.
  let failed = false;
  const subscribe = (): void => {
    sub.subscribe(channel).then(
      () => {
        joined = true;
        subscribed = true;
        if (!failed || closed) return;
        failed = false;
        logger.log({ event: 'backplane_subscribed' });
        for (const l of gapListeners) l();
      },
      (e: unknown) => {
        if (closed) return;
        failed = true;
        logger.warn({ event: 'backplane_subscribe_failed', error: String(e), retryInMs: SUBSCRIBE_RETRY_MS });
        setTimeout(subscribe, SUBSCRIBE_RETRY_MS).unref();
      },
    );
  };
  subscribe();

  let batch: Buffer[] = [];
  /** Settles once the batch being gathered has been published (see `sent`). */
  let batchSent: { promise: Promise<boolean>; resolve: (published: boolean) => void } | undefined;
  /** The last batch published, until Redis answers it. Redis answers a connection's commands in order. */
  let inFlight: Promise<boolean> | undefined;
  /** Packets published in one turn of the event loop travel as one batch: one PUBLISH, one decode on each gateway. */
  const toOthers = (packet: Packet | Buffer): void => {
    if (batch.length === 0) setImmediate(flush);
    batch.push(Buffer.isBuffer(packet) ? packet : packr.pack(packet));
  };
  const flush = () => {
    const packets = batch;
    const done = batchSent;
    batch = [];
    batchSent = undefined;
    if (packets.length === 0 || closed) return done?.resolve(packets.length === 0);
    const published: Promise<boolean> = pub
      .publish(channel, Buffer.concat([origin, ...packets]))
      .then(
        () => true,
        (e: unknown) => {
          logger.warn({ event: 'backplane_publish_failed', packets: packets.length, error: String(e) });
          return false;
        },
      )
      .then((ok) => {
        if (inFlight === published) inFlight = undefined;
        done?.resolve(ok);
        return ok;
      });
    inFlight = published;
  };
  /** A relay handed over once closed, which never leaves: from then on `sent` says false (see `relay`). */
  let dropped = false;
  const sent = (): Promise<boolean> | undefined => {
    if (dropped) return Promise.resolve(false);
    if (batch.length === 0) return inFlight;
    batchSent ??= deferred<boolean>();
    return batchSent.promise;
  };

  const mq = {
    on: (topic: string, listener: (p: Packet, done: () => void) => void, done?: () => void) => (local.on(topic, listener, done), mq),
    removeListener: (topic: string, listener: (p: Packet, done: () => void) => void, done?: () => void) => (local.removeListener(topic, listener, done), mq),
    emit: (packet: Packet, done?: Done) => {
      if (closed) {
        done?.(new Error('the broker backplane is closed'));
        return mq;
      }
      if (isRequest(packet)) {
        done?.();
        return mq;
      }
      local.emit(packet, done);
      // Encoded now: the broker goes on using the packet object.
      toOthers(packet);
      return mq;
    },
    close: (done?: () => void) => {
      flush();
      closed = true;
      sub.disconnect();
      // QUIT, not a dropped socket, and only once the last batch is answered: it (the presence changes of the connections
      // a shutdown ended) still reaches the other gateways. ioredis runs one auto-pipeline at a time, so a batch queued
      // behind one still awaiting Redis went out after a QUIT sent at once, and was lost ("Connection is closed").
      // Bounded, should Redis be gone.
      const last = inFlight;
      const answered = new Promise<void>((resolve) => {
        setTimeout(resolve, QUIT_WAIT_MS).unref();
        void last?.then(() => resolve());
        // Nothing in flight: QUIT at the end of this turn, after the auto-pipelined commands of this turn go out.
        if (!last) setImmediate(resolve);
      });
      void answered.then(() => quitRedis(pub)).finally(() => local.close(done ?? (() => undefined)));
    },
  };
  return {
    mq: mq as unknown as MQEmitter,
    persistence,
    onGap: (l) => gapListeners.push(l),
    hearing: () => subscribed && !closed,
    // A packet the broker can route too (it fills in a plain QoS 0 PUBLISH), so a gateway without a relay listener still
    // delivers it; only what differs from those defaults is encoded.
    // Once closed, an event a request still in flight delivers is dropped, and `sent` says so: taken for sent, a file's
    // announcement would be recorded as gone out (`announced`), and the sender's retry elsewhere not announce it again.
    relay: (topics, payload) => {
      if (closed) dropped = true;
      else if (topics.length > 0) toOthers(relayRecord(topics, payload));
    },
    onRelayed: (l) => (relayed = l),
    sent,
  };
}

/** map16 of two and of three entries: msgpackr writes an object's map with a 16-bit size. */
const MAP_OF_TWO = Buffer.from([0xde, 0x00, 0x02]);
const MAP_OF_THREE = Buffer.from([0xde, 0x00, 0x03]);
const TOPIC_KEY = Buffer.from([0xa5, ...Buffer.from('topic')]);
const PAYLOAD_KEY = Buffer.from([0xa7, ...Buffer.from('payload')]);
const ALSO_KEY = Buffer.from([0xa4, ...Buffer.from('also')]);

/**
 * An inbox event for the other gateways, in MessagePack as `Packr.pack` writes it, built directly (the generic encoder
 * was the largest part of relaying one): `{topic, payload}` for one inbox, `{topic, payload, also}` for more, `also`
 * listing the inboxes after the first. The payload goes once however many inboxes it is for: a 1:1 message's event (the
 * recipient's inbox and the sender's) or a group's (every member's). A gateway from before `also` reads the record as
 * one for its first inbox alone, so in a rolling upgrade its connections of the other inboxes get the event at their
 * next catch-up rather than live.
 */
export function relayRecord(topics: readonly string[], payload: Buffer): Buffer {
  const also = topics.length > 1 ? topics.slice(1) : undefined;
  let size = MAP_OF_TWO.length + TOPIC_KEY.length + strSize(topics[0]!) + PAYLOAD_KEY.length + binHead(payload.length) + payload.length;
  if (also) {
    size += ALSO_KEY.length + arrayHead(also.length);
    for (const topic of also) size += strSize(topic);
  }
  const out = Buffer.allocUnsafe(size);
  let at = (also ? MAP_OF_THREE : MAP_OF_TWO).copy(out, 0);
  at += TOPIC_KEY.copy(out, at);
  at = writeStr(out, at, topics[0]!);
  at += PAYLOAD_KEY.copy(out, at);
  // bin8, bin16 or bin32
  const head = binHead(payload.length);
  if (head === 2) out.writeUInt16BE(0xc400 | payload.length, at);
  else if (head === 3) out.writeUIntBE(0xc50000 | payload.length, at, 3);
  else {
    out[at] = 0xc6;
    out.writeUInt32BE(payload.length, at + 1);
  }
  at += head;
  at += payload.copy(out, at);
  if (also) {
    at += ALSO_KEY.copy(out, at);
    // fixarray, array16 or array32
    const count = also.length;
    if (count < 16) out[at] = 0x90 | count;
    else if (count < 0x10000) out.writeUIntBE(0xdc0000 | count, at, 3);
    else {
      out[at] = 0xdd;
      out.writeUInt32BE(count, at + 1);
    }
    at += arrayHead(count);
    for (const topic of also) at = writeStr(out, at, topic);
  }
  return out;
}

const binHead = (length: number) => (length < 0x100 ? 2 : length < 0x10000 ? 3 : 5);
const arrayHead = (length: number) => (length < 16 ? 1 : length < 0x10000 ? 3 : 5);
/** A string's head: fixstr, str8 or str16 (topics are far shorter than 64 KiB). */
const strHead = (bytes: number) => (bytes < 32 ? 1 : bytes < 0x100 ? 2 : 3);
/** A string's MessagePack size: its head and its UTF-8 bytes. */
function strSize(text: string): number {
  const bytes = Buffer.byteLength(text);
  return strHead(bytes) + bytes;
}
/** Writes a string as `strSize` counts it; returns where the next value goes. */
function writeStr(out: Buffer, at: number, text: string): number {
  const bytes = Buffer.byteLength(text);
  if (bytes < 32) out[at] = 0xa0 | bytes;
  else if (bytes < 0x100) out.writeUInt16BE(0xd900 | bytes, at);
  else out.writeUIntBE(0xda0000 | bytes, at, 3);
  const start = at + strHead(bytes);
  return start + out.write(text, start, 'utf8');
}
