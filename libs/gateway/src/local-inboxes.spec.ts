import { Duplex, PassThrough } from 'node:stream';
import type { Client } from 'aedes';
import { afterEach, describe, expect, it } from 'vitest';
import { GuardedConnection } from './connection-guard.js';
import { LocalInboxes, writeToConnection } from './local-inboxes.js';
import { publishPacket } from './mqtt-frame.js';

const limits = { connectTimeoutMs: 1000, maxConnectBytes: 1024, maxPacketBytes: 4096, maxKeepAliveS: 60, maxOutboundBytes: 1 << 20, writeStallMs: 1000 };
const ALICE = 'parley/v1/users/alice/inbox';
const BOB = 'parley/v1/users/bob/inbox';

const guards: GuardedConnection[] = [];
afterEach(() => {
  for (const g of guards.splice(0)) g.destroy();
});

/** A connection as the broker holds it: its guard over an in-memory socket, and the broker's record of its subscriptions. */
function connection(subscribedTo: string[]): { client: Client & { closed: boolean }; received: () => Buffer } {
  const toServer = new PassThrough();
  const fromServer = new PassThrough();
  const guard = new GuardedConnection(Duplex.from({ readable: toServer, writable: fromServer }), '192.0.2.1', limits);
  guard.on('error', () => undefined);
  guards.push(guard);
  const chunks: Buffer[] = [];
  fromServer.on('data', (d: Buffer) => chunks.push(d));
  const client = { closed: false, conn: guard, subscriptions: Object.fromEntries(subscribedTo.map((t) => [t, { qos: 0 }])) };
  return { client: client as unknown as Client & { closed: boolean }, received: () => Buffer.concat(chunks) };
}

/** Writes are flushed once per turn of the event loop. */
const flushed = () => new Promise((resolve) => setImmediate(resolve));

describe('LocalInboxes', () => {
  it('writes an event once to each connection filed under its topic that is subscribed to it, as one QoS 0 PUBLISH', async () => {
    const inboxes = new LocalInboxes();
    const phone = connection([ALICE]);
    const laptop = connection([ALICE, 'parley/v1/presence/+']);
    const script = connection([]); // a one-shot command that only publishes
    const bob = connection([BOB]);
    for (const [topic, c] of [
      [ALICE, phone],
      [ALICE, laptop],
      [ALICE, script],
      [BOB, bob],
    ] as const)
      inboxes.add(topic, c.client);
    const payload = Buffer.from('{"type":"reply","id":"1"}');
    // A topic built afresh, as the dispatcher builds it for each event.
    expect(inboxes.write(['parley/v1/users', 'alice', 'inbox'].join('/'), payload)).toBe(2);
    await flushed();
    expect(phone.received()).toEqual(publishPacket(ALICE, payload));
    expect(laptop.received()).toEqual(publishPacket(ALICE, payload));
    expect(script.received()).toEqual(Buffer.alloc(0));
    expect(bob.received()).toEqual(Buffer.alloc(0));
    expect(inboxes.write('parley/v1/users/carol/inbox', payload)).toBe(0);
  });

  it('lets a connection go when it ends, and one that closed without a word when the next of its user logs in', async () => {
    const inboxes = new LocalInboxes();
    const [a, b, c] = [connection([ALICE]), connection([ALICE]), connection([ALICE])];
    inboxes.add(ALICE, a.client);
    inboxes.add(ALICE, b.client);
    expect(inboxes.countOf(ALICE)).toBe(2);
    inboxes.remove(ALICE, a.client);
    expect(inboxes.countOf(ALICE)).toBe(1);
    b.client.closed = true;
    expect(inboxes.write(ALICE, Buffer.from('{}'))).toBe(0);
    inboxes.add(ALICE, c.client);
    expect(inboxes.countOf(ALICE)).toBe(1);
    inboxes.remove(ALICE, c.client);
    expect(inboxes.countOf(ALICE)).toBe(0);
    await flushed();
    expect([a, b, c].map((x) => x.received().length)).toEqual([0, 0, 0]);
  });

  it('writes to one connection only when it is subscribed to the topic', async () => {
    const subscribed = connection([ALICE]);
    const publishing = connection([]);
    expect(writeToConnection(subscribed.client, ALICE, Buffer.from('{"n":1}'))).toBe(true);
    expect(writeToConnection(publishing.client, ALICE, Buffer.from('{"n":1}'))).toBe(false);
    subscribed.client.closed = true;
    expect(writeToConnection(subscribed.client, ALICE, Buffer.from('{"n":2}'))).toBe(false);
    await flushed();
    expect(subscribed.received()).toEqual(publishPacket(ALICE, Buffer.from('{"n":1}')));
    expect(publishing.received()).toEqual(Buffer.alloc(0));
  });
});
