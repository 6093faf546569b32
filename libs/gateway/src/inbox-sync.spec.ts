import { EventEmitter } from 'node:events';
import { Duplex, PassThrough } from 'node:stream';
import type { Aedes, Client } from 'aedes';
import { afterEach, describe, expect, it } from 'vitest';
import type { Conversations, ConversationView } from '#libs/group';
import type { Metrics } from '#libs/health';
import type { InboxEvent, MessageEvent } from '#libs/protocol';
import type { ReceiptsApi } from '#libs/receipts';
import type { AccessPolicy } from './access-policy.js';
import { GuardedConnection } from './connection-guard.js';
import { InboxSync } from './inbox-sync.js';
import { readFixedHeader } from './mqtt-frame.js';

const INBOX = 'parley/v1/users/alice/inbox';
const CONV = 'dm:alice:bob';
const limits = { connectTimeoutMs: 1000, maxConnectBytes: 1024, maxPacketBytes: 4096, maxKeepAliveS: 60, maxOutboundBytes: 1 << 20, writeStallMs: 1000 };

const guards: GuardedConnection[] = [];
afterEach(() => {
  for (const g of guards.splice(0)) g.destroy();
});

/**
 * Alice's connection as the broker holds it (her guard over an in-memory socket, the broker's record of her
 * subscriptions), the broker's subscribe and unsubscribe events, and a store whose answers the test lets through one
 * catch-up at a time: what each catch-up sent is what reached the socket.
 */
function setUp() {
  const fromServer = new PassThrough();
  const guard = new GuardedConnection(Duplex.from({ readable: new PassThrough(), writable: fromServer }), '192.0.2.1', limits);
  guard.on('error', () => undefined);
  guards.push(guard);
  const bytes: Buffer[] = [];
  fromServer.on('data', (d: Buffer) => bytes.push(d));
  const client = { id: 'alice', clean: true, closed: false, conn: guard, subscriptions: {} as Record<string, unknown> };
  const broker = new EventEmitter();
  const log: MessageEvent[] = [];
  /** Catch-ups waiting for the store's first answer: each is let through by `answer()`. */
  const waiting: (() => void)[] = [];
  let asked = 0;
  const conversations = {
    conversationsOf: () => {
      asked++;
      return new Promise<string[]>((resolve) => waiting.push(() => resolve([CONV])));
    },
    viewOf: (conv: string) => Promise.resolve({ conv, after: 0, last: log.length, hidden: [], members: ['alice', 'bob'] } satisfies ConversationView),
    entriesAfter: (_view: ConversationView, after: number, limit: number) => Promise.resolve(log.slice(after, after + limit)),
  } as unknown as Conversations;
  const cursors = { delivered: 0, deliveredAt: null, read: 0, readAt: null };
  const receipts = { cursorsOf: () => Promise.resolve(cursors), peersOf: () => Promise.resolve({}) } as unknown as ReceiptsApi;
  const policy = { principalOf: () => ({ kind: 'user', user: 'alice' }) } as unknown as AccessPolicy;
  const metrics = { messagesDelivered: { inc: () => undefined } } as unknown as Metrics;
  new InboxSync(broker as unknown as Aedes, policy, conversations, receipts, metrics).start();

  const asClient = client as unknown as Client;
  return {
    send: (text: string) => log.push({ type: 'message', conv: CONV, seq: log.length + 1, from: 'bob', to: 'alice', ts: 1, id: text, text }),
    /** A SUBSCRIBE to the inbox, as the broker reports it once it has recorded it and sent the SUBACK. */
    subscribe: () => {
      client.subscriptions[INBOX] = { qos: 0 };
      broker.emit('subscribe', [{ topic: INBOX, qos: 0 }], asClient);
    },
    unsubscribe: () => {
      delete client.subscriptions[INBOX];
      broker.emit('unsubscribe', [INBOX], asClient);
    },
    /** How many catch-ups have started (asked the store for the conversations). */
    started: () => asked,
    /** Lets the oldest waiting catch-up have its answer, and waits until what it writes has reached the socket. */
    answer: async () => {
      waiting.shift()!();
      for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
    },
    /** What reached the socket: each event as `type` or `message:text`. */
    received: () => publishedEvents(Buffer.concat(bytes)).map((e) => (e.type === 'message' ? `message:${e.text}` : e.type)),
  };
}

/** The inbox events in a run of QoS 0 PUBLISH packets. */
function publishedEvents(bytes: Buffer): InboxEvent[] {
  const events: InboxEvent[] = [];
  for (let at = 0; at < bytes.length;) {
    const header = readFixedHeader(bytes.subarray(at));
    if (header === 'incomplete' || 'reason' in header) throw new Error('not whole packets');
    const body = bytes.subarray(at + header.headerLength, at + header.headerLength + header.remainingLength);
    events.push(JSON.parse(body.subarray(2 + body.readUInt16BE(0)).toString()) as InboxEvent);
    at += header.headerLength + header.remainingLength;
  }
  return events;
}

describe('InboxSync', () => {
  it('brings each new subscription up to date: again after an UNSUBSCRIBE, with what came meanwhile, and on a SUBSCRIBE once the last is over', async () => {
    const s = setUp();
    s.send('one');
    s.subscribe();
    // Repeated while its catch-up is under way: that one catch-up covers it.
    s.subscribe();
    s.subscribe();
    await s.answer();
    expect(s.received()).toEqual(['sync', 'message:one', 'synced']);
    expect(s.started()).toBe(1);

    s.unsubscribe();
    s.send('while away');
    s.subscribe();
    await s.answer();
    expect(s.received().slice(3)).toEqual(['sync', 'message:one', 'message:while away', 'synced']);

    // A SUBSCRIBE again while subscribed, its catch-up over: it gets one of its own too.
    s.subscribe();
    await s.answer();
    expect(s.received().slice(7)).toEqual(['sync', 'message:one', 'message:while away', 'synced']);
    expect(s.started()).toBe(3);
  });

  it('stops a catch-up whose subscription was dropped midway, gives one subscribed since a whole one of its own after it, and none when no SUBSCRIBE followed', async () => {
    const s = setUp();
    s.send('one');
    s.subscribe();
    // Dropped and made again (twice) before the first catch-up has written anything.
    s.unsubscribe();
    s.subscribe();
    s.unsubscribe();
    s.send('while away');
    s.subscribe();
    await s.answer();
    // The first wrote nothing for the subscription it was for; one more, whole, runs for the one held now.
    expect(s.received()).toEqual([]);
    expect(s.started()).toBe(2);
    await s.answer();
    expect(s.received()).toEqual(['sync', 'message:one', 'message:while away', 'synced']);
    expect(s.started()).toBe(2);

    // Dropped with no SUBSCRIBE after: it stops, and nothing more runs until the next SUBSCRIBE.
    s.subscribe();
    s.unsubscribe();
    await s.answer();
    expect(s.received()).toHaveLength(4);
    expect(s.started()).toBe(3);
    s.send('later');
    s.subscribe();
    await s.answer();
    expect(s.received().slice(4)).toEqual(['sync', 'message:one', 'message:while away', 'message:later', 'synced']);
  });
});
