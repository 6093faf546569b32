import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { Aedes, type Client } from 'aedes';
import { Redis } from 'ioredis';
import type { MqttClient } from 'mqtt';
import { Logger } from '@nestjs/common';
import { Packr } from 'msgpackr';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { handleConnection, inMemoryBackplane, redisBackplane, type Backplane } from '#libs/gateway';
import type { InboxEvent } from '#libs/protocol';
import { connectClient, endClient } from '../support/mqtt-user.js';
import { REPO_ROOT } from '../support/parley-server.js';
import { startRedis, type RedisServer } from '../support/redis-server.js';

/**
 * Aedes drops a packet for a client when the client has already been handed a later-numbered packet from the same
 * broker (its "duplicates" check). The number is taken when a packet is made, but a QoS 1 publish reaches the client
 * only after asynchronous steps, a retained one after more, and a packet written straight to a connection after none.
 * So a packet could be overtaken and then silently dropped: a reply never arrived, although its request had been
 * PUBACKed. Parley hands connections to the broker with that check off (`handleConnection`): its inbox events no longer
 * go through the broker (LocalInboxes), but presence and anything a gateway without a relay listener routes still do.
 * These tests use a bare Aedes on each backplane, with real MQTT.js clients, and publish in the orders that lost packets.
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

  /** Publishes through the broker's routing, at the QoS given. */
  const publish = (aedes: Aedes, topic: string, payload: string, qos: 0 | 1, retain = false) =>
    new Promise<void>((resolve, reject) =>
      aedes.publish({ cmd: 'publish', topic, payload: Buffer.from(payload), qos, retain, dup: false }, (err?: Error) => (err ? reject(err) : resolve())),
    );
  /** Writes straight to one connection, as the broker delivers there. */
  const writeDirect = (serverSide: Client, topic: string, payload: string) =>
    new Promise<void>((resolve, reject) =>
      serverSide.publish({ cmd: 'publish', topic, payload: Buffer.from(payload), qos: 0, retain: false, dup: false }, (err?: Error) =>
        err ? reject(err) : resolve(),
      ),
    );

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

  it('a published packet still arrives when a packet written straight to the connection overtakes it', async () => {
    const { aedes, serverSide, client, received } = await setUp([INBOX]);
    const published = publish(aedes, INBOX, JSON.stringify(reply('published')), 1);
    const direct = writeDirect(serverSide, INBOX, JSON.stringify(reply('direct')));
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
    const plain = publish(aedes, INBOX, JSON.stringify(reply('plain')), 0);
    await Promise.all([retained, plain]);
    const got = await arrivals(client, received, 2);
    expect(got.some((m) => m.startsWith('parley/v1/presence/bob online'))).toBe(true);
    expect(got.some((m) => m.startsWith(INBOX))).toBe(true);
  });

  it('a client with a persistent session (clean session off) gets live packets and stays connected', async () => {
    const { aedes, client, received } = await setUp([INBOX], false);
    let closed = false;
    client.on('close', () => (closed = true));
    for (const id of ['one', 'two', 'three']) await publish(aedes, INBOX, JSON.stringify(reply(id)), 0);
    const got = await arrivals(client, received, 3);
    expect(got.map((m) => (JSON.parse(m.slice(INBOX.length + 1)) as { id: string }).id)).toEqual(['one', 'two', 'three']);
    expect(closed).toBe(false);
  });
});

describe('redis backplane: inbox events relayed between gateways', () => {
  let redis: RedisServer;
  const backplanes: Backplane[] = [];
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterEach(() => {
    for (const b of backplanes.splice(0)) b.mq.close(() => undefined);
  });
  afterAll(() => redis.stop());

  /** Two gateways' backplanes on one Redis, subscribed and ready. */
  async function twoGateways(): Promise<[Backplane, Backplane, string]> {
    const prefix = `relay${Math.random().toString(36).slice(2)}:`;
    const a = redisBackplane(redis.url, prefix);
    const b = redisBackplane(redis.url, prefix);
    backplanes.push(a, b);
    // Each seeing a packet the other emitted proves both subscriptions are up. (A gateway's own packets reach its own
    // emitter at once, through Redis or not: seeing those proved nothing, and a relay could go out before the other
    // gateway listened.)
    const seen = (bp: Backplane, from: string) => new Promise<void>((resolve) => bp.mq.on(`ready-${from}/+`, (_p, done) => (done(), resolve())));
    const ready = Promise.all([seen(a, 'b'), seen(b, 'a')]);
    for (let i = 0; i < 50; i++) {
      const settled = await Promise.race([ready.then(() => true), new Promise((r) => setTimeout(() => r(false), 100))]);
      if (settled) return [a, b, prefix];
      a.mq.emit({ topic: `ready-a/${i}`, payload: Buffer.from('') } as never);
      b.mq.emit({ topic: `ready-b/${i}`, payload: Buffer.from('') } as never);
    }
    throw new Error('backplanes never saw each other');
  }

  it('reaches the other gateway’s listener, once, and not the sender’s own', async () => {
    const [a, b] = await twoGateways();
    const atA: string[] = [];
    const atB: string[] = [];
    a.onRelayed((topic, payload) => atA.push(`${topic} ${payload.toString()}`));
    const arrived = new Promise<void>((resolve) =>
      b.onRelayed((topic, payload) => {
        atB.push(`${topic} ${payload.toString()}`);
        if (atB.length === 2) resolve();
      }),
    );
    a.relay(['parley/v1/users/alice/inbox'], Buffer.from('{"n":1}'));
    a.relay(['parley/v1/anon/n0nce123/inbox'], Buffer.from('{"n":2}'));
    await arrived;
    expect(atB).toEqual(['parley/v1/users/alice/inbox {"n":1}', 'parley/v1/anon/n0nce123/inbox {"n":2}']);
    expect(atA).toEqual([]);
  });

  it('hands an event relayed for several inboxes to the other gateway’s listener once for each, in order', async () => {
    const [a, b] = await twoGateways();
    const atB: string[] = [];
    const arrived = new Promise<void>((resolve) =>
      b.onRelayed((topic, payload) => {
        atB.push(`${topic} ${payload.toString()}`);
        if (atB.length === 4) resolve();
      }),
    );
    a.relay(['parley/v1/users/bob/inbox', 'parley/v1/users/ann/inbox', 'parley/v1/users/cy/inbox'], Buffer.from('{"n":1}'));
    a.relay(['parley/v1/users/bob/inbox'], Buffer.from('{"n":2}'));
    await arrived;
    expect(atB).toEqual([
      'parley/v1/users/bob/inbox {"n":1}',
      'parley/v1/users/ann/inbox {"n":1}',
      'parley/v1/users/cy/inbox {"n":1}',
      'parley/v1/users/bob/inbox {"n":2}',
    ]);
  });

  it('hears the other gateways once Redis is up, when Redis was down at its start for longer than one SUBSCRIBE tries', { timeout: 60_000 }, async () => {
    const late = await startRedis();
    const warned = vi.spyOn(Logger.prototype, 'warn');
    try {
      await late.shutdown();
      const prefix = `late${Math.random().toString(36).slice(2)}:`;
      const a = redisBackplane(late.url, prefix);
      backplanes.push(a);
      // A gateway started while Redis is away: its SUBSCRIBE gives up after its tries (some 15 s).
      await vi.waitFor(() => expect(warned).toHaveBeenCalledWith(expect.objectContaining({ event: 'backplane_subscribe_failed' })), {
        timeout: 40_000,
        interval: 200,
      });
      // It says it does not hear the others (its /readyz is 503), and once it does, its clients resync.
      expect(a.hearing()).toBe(false);
      let gaps = 0;
      a.onGap(() => gaps++);
      await late.restart();
      await vi.waitFor(() => expect([a.hearing(), gaps]).toEqual([true, 1]), { timeout: 15_000, interval: 200 });
      const b = redisBackplane(late.url, prefix);
      backplanes.push(b);
      const got: string[] = [];
      a.onRelayed((topic) => got.push(topic));
      await vi.waitFor(
        () => {
          b.relay(['parley/v1/users/alice/inbox'], Buffer.from('{}'));
          expect(got).toContain('parley/v1/users/alice/inbox');
        },
        { timeout: 15_000, interval: 250 },
      );
    } finally {
      warned.mockRestore();
      for (const bp of backplanes.splice(0)) await new Promise<void>((resolve) => bp.mq.close(resolve));
      await late.stop();
    }
  });

  it('sends what was published just before it closes: a shutdown’s last presence changes reach the others', async () => {
    const [a, b] = await twoGateways();
    const got = new Promise<string>((resolve) => b.onRelayed((topic, payload) => resolve(`${topic} ${payload.toString()}`)));
    a.relay(['parley/v1/users/alice/inbox'], Buffer.from('{"last":true}'));
    await new Promise<void>((resolve) => a.mq.close(resolve));
    expect(await got).toBe('parley/v1/users/alice/inbox {"last":true}');
  });

  it('sends its last batch to the other gateways when it closes, also while an earlier batch still awaits Redis', async () => {
    const packet = (topic: string) => ({ cmd: 'publish', topic, payload: Buffer.from(topic), qos: 0, retain: false, dup: false });
    const turn = () => new Promise((resolve) => setImmediate(resolve));
    const closing = redisBackplane(redis.url, 'close-test:');
    const other = redisBackplane(redis.url, 'close-test:');
    const seen: string[] = [];
    other.mq.on('t/#', (p: { topic: string }, done: () => void) => (seen.push(p.topic), done()));
    // The other gateway is subscribed once a probe reaches it (one sent at each try, until one does).
    await vi.waitFor(
      () => {
        closing.mq.emit(packet('t/probe'));
        expect(seen).toContain('t/probe');
      },
      { timeout: 5000, interval: 20 },
    );
    const admin = new Redis(redis.url);
    try {
      // Redis holds every command for a while: the first batch is sent and unanswered when the gateway closes.
      await admin.call('CLIENT', 'PAUSE', '300', 'ALL');
      closing.mq.emit(packet('t/first'));
      // The batch goes out at the end of this turn, and its auto-pipeline is written in the next.
      await turn();
      await turn();
      closing.mq.emit(packet('t/last'));
      await new Promise<void>((resolve) => closing.mq.close(resolve));
      await vi.waitFor(() => expect(seen).toEqual(expect.arrayContaining(['t/first', 't/last'])), { timeout: 3000 });
    } finally {
      admin.disconnect();
      await new Promise<void>((resolve) => other.mq.close(resolve));
    }
  });

  it('says when what it relayed has reached Redis: a gateway killed right after still delivered it to the others', async () => {
    const [a, b, prefix] = await twoGateways();
    expect(a.sent()).toBeUndefined();
    const got = new Promise<string>((resolve) => b.onRelayed((topic, payload) => resolve(`${topic} ${payload.toString()}`)));
    // A gateway in a process of its own (as built by \`npm run build\`) relays an event, waits for \`sent\`, and dies at once
    // with SIGKILL: nothing it had not handed to Redis by then leaves it.
    const script = `
      import { redisBackplane } from '#libs/gateway';
      const gateway = redisBackplane(${JSON.stringify(redis.url)}, ${JSON.stringify(prefix)});
      gateway.relay(['parley/v1/users/alice/inbox'], Buffer.from('{"last":"words"}'));
      await gateway.sent();
      process.kill(process.pid, 'SIGKILL');`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { cwd: REPO_ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
    let errors = '';
    child.stderr.on('data', (d: Buffer) => (errors += d.toString()));
    const [, signal] = (await once(child, 'exit')) as [number | null, string | null];
    expect(signal, errors).toBe('SIGKILL');
    const never = new Promise<string>((resolve) => setTimeout(() => resolve('nothing arrived within 5 s'), 5000).unref());
    expect(await Promise.race([got, never])).toBe('parley/v1/users/alice/inbox {"last":"words"}');
    // And a gateway's own: settled once published.
    a.relay(['parley/v1/users/bob/inbox'], Buffer.from('{}'));
    const sent = a.sent();
    expect(sent).toBeInstanceOf(Promise);
    expect(await sent).toBe(true);
    expect(a.sent()).toBeUndefined();
  });

  it('says an event relayed after it closed did not leave (a request that finished during a shutdown)', async () => {
    const a = redisBackplane(redis.url, `closed${Math.random().toString(36).slice(2)}:`);
    await new Promise<void>((resolve) => a.mq.close(resolve));
    a.relay(['parley/v1/users/bob/inbox'], Buffer.from('{}'));
    expect(await a.sent()).toBe(false);
  });

  it('hands an inbox packet routed by a gateway of an earlier version (a whole broker packet) to the listener too', async () => {
    const [a, b] = await twoGateways();
    const got = new Promise<string>((resolve) => b.onRelayed((topic, payload) => resolve(`${topic} ${payload.toString()}`)));
    const packet = {
      cmd: 'publish',
      topic: 'parley/v1/users/alice/inbox',
      payload: Buffer.from('{"n":4}'),
      qos: 0,
      retain: false,
      dup: false,
      brokerId: 'old',
      brokerCounter: 7,
    };
    a.mq.emit(packet as never);
    expect(await got).toBe('parley/v1/users/alice/inbox {"n":4}');
  });

  it('hands on only the inboxes of a record whose also is malformed (not a list, or holding other things), and goes on', async () => {
    const [, b, prefix] = await twoGateways();
    const atB: string[] = [];
    const arrived = new Promise<void>((resolve) =>
      b.onRelayed((topic, payload) => {
        atB.push(`${topic} ${payload.toString()}`);
        if (payload.toString() === '{"n":3}') resolve();
      }),
    );
    // A batch as another gateway's would be (its 36-byte id, then the records), with an also no gateway writes.
    const packr = new Packr({ useRecords: false });
    const payload = (n: number) => Buffer.from(`{"n":${n}}`);
    const batch = Buffer.concat([
      Buffer.from('x'.repeat(36), 'latin1'),
      packr.pack({ topic: 'parley/v1/users/bob/inbox', payload: payload(1), also: 'parley/v1/users/ann/inbox' }),
      packr.pack({ topic: 'parley/v1/users/bob/inbox', payload: payload(2), also: [7, null, 'parley/v1/users/ann/requests', 'parley/v1/users/cy/inbox'] }),
      packr.pack({ topic: 'parley/v1/users/bob/inbox', payload: payload(3) }),
    ]);
    const outsider = new Redis(redis.url);
    try {
      await outsider.publish(`${prefix}broker:packets`, batch);
      await arrived;
    } finally {
      outsider.disconnect();
    }
    expect(atB).toEqual([
      'parley/v1/users/bob/inbox {"n":1}',
      'parley/v1/users/bob/inbox {"n":2}',
      'parley/v1/users/cy/inbox {"n":2}',
      'parley/v1/users/bob/inbox {"n":3}',
    ]);
  });

  it('a gateway without a relay listener routes a relayed inbox event through its broker, like any packet, for each inbox', async () => {
    const [a, b] = await twoGateways();
    const routedTo = (topic: string) =>
      new Promise<string>((resolve) =>
        b.mq.on(topic, (packet, done) => {
          done();
          resolve(String((packet as { payload?: Buffer }).payload));
        }),
      );
    const alice = routedTo('parley/v1/users/alice/inbox');
    const bob = routedTo('parley/v1/users/bob/inbox');
    a.relay(['parley/v1/users/alice/inbox', 'parley/v1/users/bob/inbox'], Buffer.from('{"n":3}'));
    expect(await alice).toBe('{"n":3}');
    expect(await bob).toBe('{"n":3}');
  });
});
