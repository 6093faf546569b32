import { createServer, type AddressInfo, type Server } from 'node:net';
import { Aedes, type Client } from 'aedes';
import type { MqttClient } from 'mqtt';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { handleConnection, InboxPublisher, inMemoryBackplane, redisBackplane, type Backplane } from '#libs/gateway';
import type { InboxEvent } from '#libs/protocol';
import { connectClient, endClient } from '../support/mqtt-user.js';
import { startRedis, type RedisServer } from '../support/redis-server.js';

/**
 * Aedes drops a packet for a client when the client has already been handed a later-numbered packet from the same
 * broker (its "duplicates" check). The number is taken when a packet is made, but a QoS 1 publish reaches the client
 * only after asynchronous steps, a retained one after more, and a packet written straight to a connection (the inbox
 * sync, file chunks) after none. So a packet could be overtaken and then silently dropped: a reply never arrived,
 * although its request had been PUBACKed. Parley hands connections to the broker with that check off
 * (`handleConnection`). These tests use a bare Aedes on each backplane, with real MQTT.js clients, and publish in the
 * orders that lost packets.
 */
describe.each(['memory', 'redis'] as const)('broker backplane (%s): packets that overtake others', (kind) => {
  let redis: RedisServer | undefined;
  const closers: (() => Promise<unknown>)[] = [];

  beforeAll(async () => {
    if (kind === 'redis') redis = await startRedis();
  });
  afterEach(async () => {
    for (const close of closers.splice(0).reverse()) await close();
  });
  afterAll(() => redis?.stop());

  const INBOX = 'parley/v1/users/alice/inbox';

  /** A broker on an ephemeral port and a client subscribed to `filters`; resolves with the client's Aedes-side object. */
  async function setUp(filters: string[], clean = true): Promise<{ aedes: Aedes; serverSide: Client; client: MqttClient; received: string[] }> {
    const backplane: Backplane = kind === 'redis' ? redisBackplane(redis!.url, `bp${Math.random().toString(36).slice(2)}:`) : inMemoryBackplane();
    const aedes = new Aedes({ mq: backplane.mq, persistence: backplane.persistence as never });
    await aedes.listen();
    const server: Server = createServer((socket) => handleConnection(aedes, socket));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    closers.push(
      () => new Promise((resolve) => server.close(resolve)),
      () => new Promise<void>((resolve) => aedes.close(() => resolve())),
    );
    const { port } = server.address() as AddressInfo;
    const client = await connectClient(`mqtt://127.0.0.1:${port}`, { clientId: 'alice', clean });
    closers.push(() => endClient(client));
    const received: string[] = [];
    client.on('message', (topic, payload) => received.push(`${topic} ${payload.toString()}`));
    await client.subscribeAsync(filters, { qos: 1 });
    const serverSide = (aedes as unknown as { clients: Record<string, Client> }).clients['alice']!;
    return { aedes, serverSide, client, received };
  }

  const reply = (id: string): InboxEvent => ({ type: 'reply', id, op: 'who', ok: true, result: { user: 'bob', state: 'online', lastSeen: 1 } });

  /** Resolves once `count` messages have arrived, or after 5 s with what has: the assertions then say what is missing. */
  function arrivals(client: MqttClient, received: string[], count: number): Promise<string[]> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        client.off('message', check);
        resolve(received);
      };
      const check = () => void (received.length >= count && done());
      const timer = setTimeout(done, 5000);
      client.on('message', check);
      check();
    });
  }

  it('a published reply still arrives when a packet written straight to the connection overtakes it', async () => {
    const { aedes, serverSide, client, received } = await setUp([INBOX]);
    const inbox = new InboxPublisher(aedes);
    const published = inbox.publish(INBOX, reply('published'));
    const direct = inbox.publishTo(serverSide, INBOX, reply('direct'));
    await Promise.all([published, direct]);
    const got = await arrivals(client, received, 2);
    expect(got.map((m) => (JSON.parse(m.slice(INBOX.length + 1)) as { id: string }).id).sort()).toEqual(['direct', 'published']);
  });

  it('a retained packet (presence) still arrives when a later plain packet overtakes it', async () => {
    const { aedes, client, received } = await setUp([INBOX, 'parley/v1/presence/+']);
    const retained = new Promise<void>((resolve, reject) =>
      aedes.publish({ cmd: 'publish', topic: 'parley/v1/presence/bob', payload: Buffer.from('online'), qos: 1, retain: true, dup: false }, (err?: Error) =>
        err ? reject(err) : resolve(),
      ),
    );
    const plain = new InboxPublisher(aedes).publish(INBOX, reply('plain'));
    await Promise.all([retained, plain]);
    const got = await arrivals(client, received, 2);
    expect(got.some((m) => m.startsWith('parley/v1/presence/bob online'))).toBe(true);
    expect(got.some((m) => m.startsWith(INBOX))).toBe(true);
  });

  it('a client with a persistent session (clean session off) gets live packets and stays connected', async () => {
    const { aedes, client, received } = await setUp([INBOX], false);
    let closed = false;
    client.on('close', () => (closed = true));
    const inbox = new InboxPublisher(aedes);
    for (const id of ['one', 'two', 'three']) await inbox.publish(INBOX, reply(id));
    const got = await arrivals(client, received, 3);
    expect(got.map((m) => (JSON.parse(m.slice(INBOX.length + 1)) as { id: string }).id)).toEqual(['one', 'two', 'three']);
    expect(closed).toBe(false);
  });
});
