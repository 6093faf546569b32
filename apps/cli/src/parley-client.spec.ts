import { createServer, type AddressInfo, type Server } from 'node:net';
import { Aedes } from 'aedes';
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { topics } from '#libs/protocol';
import { ConnectError, ParleyClient, RequestError, RequestTimeout } from './parley-client.js';
import { publishPacket, splitPackets } from '../../../test/support/raw-mqtt.js';
import { startRefusingBroker, type RefusingBroker } from '../../../test/support/refusing-broker.js';

/**
 * The CLI's client against what a newer server may send: fields this version
 * does not know. A plain Aedes broker carries the packets; a second MQTT client
 * answers the requests as such a server would.
 */
/** A reply as the server sends it: to the requester on its replies topic, and on the user's inbox for every device. */
function answer(server: MqttClient, user: string, reply: object): void {
  for (const topic of [topics.replies(user), topics.inbox(user)]) void server.publishAsync(topic, JSON.stringify(reply), { qos: 1 });
}

describe('ParleyClient and a newer server', () => {
  let broker: Aedes;
  let tcp: Server;
  let url: string;
  let server: MqttClient;
  /** How many times each request id was published. */
  const tries = new Map<string, number>();

  beforeAll(async () => {
    // Like a server past its limit of followed users: one presence topic is refused (SUBACK 0x80); and one user's inbox
    // and replies topic. One more ends the connection instead of answering. And a server from before the replies topic
    // for one user, `old`.
    broker = new Aedes({
      authorizeSubscribe: (client, sub, done) => {
        if (sub.topic === topics.presence('hang-up')) return client.close();
        const refused = [topics.presence('too-many'), topics.inbox('locked-out'), topics.replies('locked-out'), topics.replies('old')];
        done(null, refused.includes(sub.topic) ? null : sub);
      },
    });
    await broker.listen();
    tcp = createServer((socket) => broker.handle(socket));
    await new Promise<void>((resolve) => tcp.listen({ host: '127.0.0.1', port: 0 }, resolve));
    url = `mqtt://127.0.0.1:${(tcp.address() as AddressInfo).port}`;
    server = await mqtt.connectAsync(url, { clientId: 'newer-server', reconnectPeriod: 0 });
    await server.subscribeAsync(topics.requests('+'), { qos: 1 });
    server.on('message', (topic, payload) => {
      const user = topic.split('/').at(-2)!;
      const req = JSON.parse(payload.toString()) as { op: string; id: string };
      tries.set(req.id, (tries.get(req.id) ?? 0) + 1);
      const reply =
        req.op === 'who'
          ? { type: 'reply', id: req.id, op: 'who', ok: true, result: { user: 'bob', state: 'online', lastSeen: null, device: 'phone' }, served: 'v9' }
          : req.op === 'group.list'
            ? { type: 'reply', id: req.id, op: req.op, ok: false, error: { code: 'unavailable', message: 'retry with the same id' } }
            : { type: 'reply', id: req.id, op: req.op, ok: false, error: { code: 'quota_exceeded', message: 'over your quota', retryAfter: 5 } };
      answer(server, user, reply);
    });
  });

  afterAll(async () => {
    await server.endAsync();
    await new Promise<void>((resolve) => broker.close(() => resolve()));
    await new Promise<void>((resolve) => tcp.close(() => resolve()));
  });

  it('gets the answer to a request whose reply carries fields it does not know, instead of waiting out the timeout', async () => {
    const client = await ParleyClient.connect({ server: url, user: 'ann', password: 'unused', timeoutMs: 5000 });
    try {
      expect(await client.request('who', { user: 'bob' })).toEqual({ user: 'bob', state: 'online', lastSeen: null });
      // An error code this version does not know is still an answer, with the server's message.
      const refused = await client.request('send', { to: 'bob', text: 'hi' }).catch((e: unknown) => e);
      expect(refused).toBeInstanceOf(RequestError);
      expect(refused).toMatchObject({ code: 'quota_exceeded', message: 'over your quota' });
    } finally {
      await client.close();
    }
  });

  it('retries a request answered `unavailable` with the same id, then gives up in words for a person', { timeout: 20_000 }, async () => {
    const client = await ParleyClient.connect({ server: url, user: 'ann', password: 'unused', timeoutMs: 5000 });
    try {
      const failed = await client.request('group.list', {}, 'list-1').catch((e: unknown) => e);
      expect(failed).toMatchObject({ code: 'unavailable', message: expect.stringMatching(/even after 5 tries; try again later$/) });
      expect(tries.get('list-1')).toBe(5);
    } finally {
      await client.close();
    }
  });

  it('takes its replies on the inbox from a server that refuses the replies topic (one from before it)', async () => {
    const client = await ParleyClient.connect({ server: url, user: 'old', password: 'unused', timeoutMs: 5000 });
    try {
      expect(await client.request('who', { user: 'bob' })).toEqual({ user: 'bob', state: 'online', lastSeen: null });
    } finally {
      await client.close();
    }
  });

  it('shows a message event that carries fields it does not know', async () => {
    const client = await ParleyClient.connect({ server: url, user: 'cat', password: 'unused', timeoutMs: 5000, present: true });
    try {
      const got = new Promise<unknown>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('no event within 5 s')), 5000);
        client.once('event', (e) => {
          clearTimeout(timer);
          resolve(e);
        });
      });
      const event = { type: 'message', conv: 'dm:ann:cat', seq: 1, from: 'ann', to: 'cat', ts: 1, id: 'm1', text: 'hello', edited: false };
      await server.publishAsync(topics.inbox('cat'), JSON.stringify(event), { qos: 1 });
      const { edited: _edited, ...known } = event;
      expect(await got).toEqual(known);
    } finally {
      await client.close();
    }
  });

  it("tells whether the server agreed to follow a user's presence, instead of waiting silently for updates that never come", async () => {
    const client = await ParleyClient.connect({ server: url, user: 'dan', password: 'unused', timeoutMs: 5000 });
    try {
      expect(await client.watchPresence('bob')).toBe(true);
      expect(await client.watchPresence('too-many')).toBe(false);
      // Asked again for one it follows already: still followed.
      expect(await client.watchPresence('bob')).toBe(true);
      // The connection ends before the answer: an error that says so, not a failure of its own.
      const cut = await client.watchPresence('hang-up').catch((e: unknown) => e);
      expect(cut).toBeInstanceOf(Error);
      expect(cut).not.toBeInstanceOf(TypeError);
    } finally {
      await client.close();
    }
    await expect.poll(() => broker.connectedClients, { timeout: 5000 }).toBe(1);
    const refused = await ParleyClient.connect({ server: url, user: 'locked-out', password: 'unused', timeoutMs: 5000 }).catch((e: unknown) => e);
    expect(refused).toMatchObject({ message: 'the server refused the inbox subscription' });
    // The connection it could not use is closed, not left open.
    await expect.poll(() => broker.connectedClients, { timeout: 5000 }).toBe(1);
  });
});

/**
 * The CLI's client across a dropped connection. Clients reach a plain Aedes broker through a listener the test can
 * take down and bring back on the same port; a second MQTT client, on a listener that stays up, answers the requests
 * as the server would and records what it got.
 */
describe('ParleyClient across a dropped connection', () => {
  let broker: Aedes;
  let front: Server;
  let back: Server;
  let port: number;
  let server: MqttClient;
  const sockets = new Set<import('node:net').Socket>();
  const asked: { user: string; op: string; id: string; fields: Record<string, unknown> }[] = [];
  /** Users whose publishes the broker takes and holds, never passing them on nor acknowledging them: a server that hangs. */
  const hung = new Set<string>();
  /** Users whose next request is answered `unavailable`, after which they are hung. */
  const unavailableOnce = new Set<string>();
  /**
   * Users whose next requests (how many) the server carries out, and then cuts the clients' connections before it
   * answers: the answer is lost with the connection.
   */
  const cutBeforeAnswer = new Map<string, number>();

  const listen = (tcp: Server, at: number) => new Promise<void>((resolve) => tcp.listen({ host: '127.0.0.1', port: at }, resolve));

  beforeAll(async () => {
    broker = new Aedes({
      authorizePublish: (client, _packet, done) => {
        if (client && hung.has(client.id.split('/')[0]!)) return;
        done(null);
      },
    });
    await broker.listen();
    front = createServer((socket) => {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      broker.handle(socket);
    });
    await listen(front, 0);
    port = (front.address() as AddressInfo).port;
    back = createServer((socket) => broker.handle(socket));
    await listen(back, 0);
    server = await mqtt.connectAsync(`mqtt://127.0.0.1:${(back.address() as AddressInfo).port}`, { clientId: 'the-server', reconnectPeriod: 0 });
    await server.subscribeAsync(topics.requests('+'), { qos: 1 });
    server.on('message', (topic, payload) => {
      const user = topic.split('/').at(-2)!;
      const { op, id, ...fields } = JSON.parse(payload.toString()) as { op: string; id: string } & Record<string, unknown>;
      asked.push({ user, op, id, fields });
      const cuts = cutBeforeAnswer.get(user) ?? 0;
      if (cuts > 0) {
        cutBeforeAnswer.set(user, cuts - 1);
        for (const s of sockets) s.destroy();
        return;
      }
      if (unavailableOnce.delete(user)) {
        hung.add(user);
        return answer(server, user, { type: 'reply', id, op, ok: false, error: { code: 'unavailable', message: 'retry with the same id' } });
      }
      const reply = { type: 'reply', id, op: 'who', ok: true, result: { user: fields.user, state: 'online', lastSeen: null } };
      answer(server, user, reply);
    });
  });

  afterAll(async () => {
    await server.endAsync();
    await new Promise<void>((resolve) => broker.close(() => resolve()));
    for (const tcp of [front, back]) if (tcp.listening) await new Promise<void>((resolve) => tcp.close(() => resolve()));
  });

  /** Takes the clients' listener down, with every connection through it; resolves once the client has noticed. */
  async function drop(client: ParleyClient): Promise<void> {
    const closed = new Promise<void>((resolve) => front.close(() => resolve()));
    for (const s of sockets) s.destroy();
    await closed;
    await expect.poll(() => client.connected, { timeout: 5000 }).toBe(false);
  }

  it('sends a request made while the connection is down once it is back, and gets its answer', async () => {
    const client = await ParleyClient.connect({ server: `mqtt://127.0.0.1:${port}`, user: 'eve', password: 'unused', timeoutMs: 20_000, keepTrying: true });
    try {
      await drop(client);
      const answer = client.request('who', { user: 'bob' });
      await listen(front, port);
      expect(await answer).toEqual({ user: 'bob', state: 'online', lastSeen: null });
    } finally {
      await client.close();
    }
  });

  it('never sends later a request it sent and reported as not answered, on a later connection', async () => {
    const client = await ParleyClient.connect({ server: `mqtt://127.0.0.1:${port}`, user: 'gus', password: 'unused', timeoutMs: 1500, keepTrying: true });
    try {
      hung.add('gus');
      const failed = await client.request('who', { user: 'given-up' }).catch((e: unknown) => e);
      expect(failed).toMatchObject({ message: 'no answer from the server within 2 s: it may or may not have been done' });
      await drop(client);
      hung.delete('gus');
      await listen(front, port);
      await expect.poll(() => client.connected, { timeout: 10_000 }).toBe(true);
      expect(await client.request('who', { user: 'bob' })).toMatchObject({ user: 'bob' });
      expect(asked.filter((a) => a.user === 'gus').map((a) => a.fields.user)).toEqual(['bob']);
    } finally {
      await client.close();
    }
  });

  it('says the server answered unavailable before when a retry of that request gets no answer in time', async () => {
    const client = await ParleyClient.connect({ server: `mqtt://127.0.0.1:${port}`, user: 'ivy', password: 'unused', timeoutMs: 1500 });
    try {
      // The first answer is `unavailable`; the retry then waits behind what the service could not do either.
      unavailableOnce.add('ivy');
      const failed = await client.request('who', { user: 'bob' }).catch((e: unknown) => e);
      expect(failed).toBeInstanceOf(RequestTimeout);
      expect((failed as Error).message).toBe(
        'no answer from the server within 2 s: it may or may not have been done (before that, the server said it could not do this right now: one of its services is down, or its storage is full)',
      );
    } finally {
      hung.delete('ivy');
      await client.close();
    }
  });

  it('a one-shot client whose connection drops before the answer connects again and sends the request again, with its id', async () => {
    const client = await ParleyClient.connect({ server: `mqtt://127.0.0.1:${port}`, user: 'ned', password: 'unused', timeoutMs: 20_000 });
    try {
      // Carried out, and the connection cut before its answer: the answer comes to the same id, sent again.
      cutBeforeAnswer.set('ned', 1);
      const asking = Date.now();
      expect(await client.request('who', { user: 'bob' }, 'who-ned-1')).toEqual({ user: 'bob', state: 'online', lastSeen: null });
      expect(Date.now() - asking).toBeLessThan(5000);
      expect(asked.filter((a) => a.user === 'ned').map((a) => a.id)).toEqual(['who-ned-1', 'who-ned-1']);
      // The connection it made again serves the next request.
      expect(await client.request('who', { user: 'cat' })).toMatchObject({ user: 'cat' });
    } finally {
      await client.close();
    }
  });

  it('tells a command that an answer may be to a repeat: the request went out again after its connection closed unanswered', async () => {
    const client = await ParleyClient.connect({ server: `mqtt://127.0.0.1:${port}`, user: 'ora', password: 'unused', timeoutMs: 20_000 });
    try {
      expect(await client.ask('who', { user: 'bob' })).toEqual({ result: { user: 'bob', state: 'online', lastSeen: null }, repeat: false });
      // Carried out (by the server here, before it cut the connection), then sent again: "nothing to do" may mean done.
      cutBeforeAnswer.set('ora', 1);
      expect(await client.ask('who', { user: 'bob' }, 'who-ora-2')).toEqual({ result: { user: 'bob', state: 'online', lastSeen: null }, repeat: true });
      expect(asked.filter((a) => a.id === 'who-ora-2')).toHaveLength(2);
      // The next request, on the new connection, went out once.
      expect(await client.ask('who', { user: 'cat' })).toMatchObject({ repeat: false });
    } finally {
      await client.close();
    }
  });

  it('a one-shot client that cannot connect again within a few tries fails what waits, not at its timeout, and sends nothing later', async () => {
    const client = await ParleyClient.connect({ server: `mqtt://127.0.0.1:${port}`, user: 'hal', password: 'unused', timeoutMs: 20_000 });
    try {
      hung.add('hal');
      const waiting = client.request('who', { user: 'never-answered' }).catch((e: unknown) => e);
      // Published (the hung broker holds it unanswered), then the server goes away and does not come back in time.
      const asked = Date.now();
      await drop(client);
      expect(await waiting).toMatchObject({
        sent: true,
        message: 'the connection to the server closed before it answered, and connecting again failed: it may or may not have been done',
      });
      expect(Date.now() - asked).toBeLessThan(10_000);
      // Nothing more can go out on it: a later request says so at once.
      expect(await client.request('who', { user: 'bob' }).catch((e: unknown) => e)).toMatchObject({
        sent: false,
        message: 'not sent: the connection to the server closed, and connecting again failed',
      });
    } finally {
      hung.delete('hal');
      await client.close();
      await listen(front, port);
    }
  });

  it('a one-shot client whose request the server cuts off each time (one larger than it takes) gives up after a few tries, saying so', async () => {
    const client = await ParleyClient.connect({ server: `mqtt://127.0.0.1:${port}`, user: 'ole', password: 'unused', timeoutMs: 20_000 });
    try {
      cutBeforeAnswer.set('ole', 1000);
      const asking = Date.now();
      expect(await client.request('who', { user: 'bob' }, 'who-ole-1').catch((e: unknown) => e)).toMatchObject({
        sent: true,
        message:
          'the server closed the connection before it answered, each of the 5 times it was sent (as it does on a request larger than it takes): it may or may not have been done',
      });
      expect(Date.now() - asking).toBeLessThan(10_000);
      expect(asked.filter((a) => a.user === 'ole').map((a) => a.id)).toEqual(Array(5).fill('who-ole-1'));
    } finally {
      cutBeforeAnswer.delete('ole');
      await client.close();
    }
  });

  it('gives up on a request larger than a server takes by default when the connection closes as it goes out twice, one-shot or not', async () => {
    for (const [user, keepTrying] of [
      ['kim', false],
      ['lou', true],
    ] as const) {
      const client = await ParleyClient.connect({ server: `mqtt://127.0.0.1:${port}`, user, password: 'unused', timeoutMs: 20_000, keepTrying });
      try {
        // What a Parley server does with a packet over its size limit: it closes the connection, answering nothing.
        cutBeforeAnswer.set(user, 1000);
        const asking = Date.now();
        const failed = await client.request('send', { to: 'bob', text: 'x'.repeat(70_000) }, `big-${user}`).catch((e: unknown) => e);
        expect(failed).toBeInstanceOf(RequestError);
        expect(failed).toMatchObject({
          code: 'payload_too_large',
          message:
            'the server closed the connection as this request came, 2 times: at 69 KiB, it is larger than a server takes by default (64 KiB, PARLEY_MAX_REQUEST_BYTES); not sent again',
        });
        expect(Date.now() - asking).toBeLessThan(5000);
        // Twice, in case the first cut was the network's.
        expect(asked.filter((a) => a.user === user).map((a) => a.id)).toEqual([`big-${user}`, `big-${user}`]);
        // A request of an ordinary size, cut off once, still goes out again and is answered.
        cutBeforeAnswer.set(user, 1);
        expect(await client.request('who', { user: 'bob' })).toMatchObject({ user: 'bob' });
      } finally {
        cutBeforeAnswer.delete(user);
        await client.close();
      }
    }
  });

  it('never sends later a request it already reported as not sent', async () => {
    const client = await ParleyClient.connect({ server: `mqtt://127.0.0.1:${port}`, user: 'fay', password: 'unused', timeoutMs: 1500, keepTrying: true });
    try {
      await drop(client);
      const failed = await client.request('who', { user: 'given-up' }).catch((e: unknown) => e);
      expect(failed).toMatchObject({ message: 'not sent: no connection to the server for 2 s' });
      await listen(front, port);
      // Requests go out in order on the new connection: once a later one is answered, the first would have arrived.
      await expect.poll(() => client.connected, { timeout: 10_000 }).toBe(true);
      expect(await client.request('who', { user: 'bob' })).toMatchObject({ user: 'bob' });
      expect(asked.filter((a) => a.user === 'fay').map((a) => a.fields.user)).toEqual(['bob']);
    } finally {
      await client.close();
    }
  });
});

/**
 * The CLI's client while the server refuses logins for a while: a distributed server whose account store (Redis)
 * restarts answers CONNACK 3, "try again"; a wrong password, or a lockout, answers 4 or 5, which retrying cannot change.
 * A plain Aedes broker refuses with the code the test sets; a second MQTT client answers requests as the server would.
 */
describe('ParleyClient while the server refuses logins', () => {
  let refusing: RefusingBroker;
  let url: string;
  let server: MqttClient;
  const refuse = (user: string, code: number) => refusing.refuse.set(user, code);
  const refused = (user: string) => refusing.refused.get(user);
  /**
   * Users whose next request the server takes and does not answer: it drops their connections and refuses their logins
   * with this code from then on (a password changed, say).
   */
  const refuseOnRequest = new Map<string, number>();

  beforeAll(async () => {
    refusing = await startRefusingBroker();
    url = refusing.url;
    server = await mqtt.connectAsync(url, { clientId: 'the-server', username: 'the-server', reconnectPeriod: 0 });
    await server.subscribeAsync(topics.requests('+'), { qos: 1 });
    server.on('message', (topic, payload) => {
      const user = topic.split('/').at(-2)!;
      const { id, ...fields } = JSON.parse(payload.toString()) as { id: string } & Record<string, unknown>;
      const code = refuseOnRequest.get(user);
      if (code !== undefined) {
        refuseOnRequest.delete(user);
        refuse(user, code);
        return void refusing.drop(user);
      }
      const reply = { type: 'reply', id, op: 'who', ok: true, result: { user: fields.user, state: 'online', lastSeen: null } };
      answer(server, user, reply);
    });
  });

  afterAll(async () => {
    await server.endAsync();
    await refusing.close();
  });

  /** Drops every connection of `user` (once the broker counts it logged in); resolves once its client has noticed. */
  async function drop(client: ParleyClient, user: string): Promise<void> {
    await refusing.drop(user);
    await expect.poll(() => client.connected, { timeout: 5000 }).toBe(false);
  }

  it('keeps reconnecting while the server answers "unavailable, try again" (CONNACK 3), and is answered once it accepts', async () => {
    const client = await ParleyClient.connect({ server: url, user: 'gil', password: 'unused', timeoutMs: 20_000, keepTrying: true, reconnectMs: 100 });
    try {
      refuse('gil', 3);
      await drop(client, 'gil');
      // Refused again and again, and still trying.
      await expect.poll(() => refused('gil') ?? 0, { timeout: 5000 }).toBeGreaterThanOrEqual(3);
      const answer = client.request('who', { user: 'bob' });
      refuse('gil', 0);
      expect(await answer).toEqual({ user: 'bob', state: 'online', lastSeen: null });
      expect(client.connected).toBe(true);
    } finally {
      await client.close();
    }
  });

  it('keeps trying a first login refused with "try again" (CONNACK 3) when it keeps trying, past its timeout, saying so once', async () => {
    refuse('ida', 3);
    const told: string[] = [];
    const connecting = ParleyClient.connect({
      server: url,
      user: 'ida',
      password: 'unused',
      timeoutMs: 1000,
      keepTrying: true,
      reconnectMs: 100,
      onUnavailable: (reason) => told.push(reason),
    });
    // Refused for longer than its timeout (1 s at 100 ms a try), and still trying.
    await expect.poll(() => refused('ida') ?? 0, { timeout: 10_000 }).toBeGreaterThanOrEqual(15);
    refuse('ida', 0);
    const client = await connecting;
    try {
      expect(told).toEqual([`login refused by ${url}: the server said to try again later: it cannot check logins now, or this user logs in too often`]);
      expect(await client.request('who', { user: 'bob' })).toEqual({ user: 'bob', state: 'online', lastSeen: null });
    } finally {
      await client.close();
    }
  });

  it('gives up a first login at once when "try again" turns into a refusal that cannot change (CONNACK 4)', async () => {
    refuse('jon', 3);
    const connecting = ParleyClient.connect({ server: url, user: 'jon', password: 'unused', timeoutMs: 20_000, keepTrying: true, reconnectMs: 100 });
    const failed = connecting.catch((e: unknown) => e);
    await expect.poll(() => refused('jon') ?? 0, { timeout: 5000 }).toBeGreaterThanOrEqual(2);
    refuse('jon', 4);
    const reason = await failed;
    expect(reason).toBeInstanceOf(ConnectError);
    expect(reason).toMatchObject({ message: `login refused by ${url}: wrong user name or password` });
    // Not tried again after that.
    const count = refused('jon');
    await expect(ParleyClient.connect({ server: url, user: 'jon', password: 'unused', timeoutMs: 5000 })).rejects.toBeInstanceOf(ConnectError);
    expect(refused('jon')).toBe(count! + 1);
  });

  it('a one-shot client tries a first login refused with "try again" (CONNACK 3) for as long as its timeout, then gives the reason', async () => {
    refuse('kai', 3);
    const started = Date.now();
    const given = await ParleyClient.connect({ server: url, user: 'kai', password: 'unused', timeoutMs: 2000, reconnectMs: 100 }).catch((e: unknown) => e);
    expect(given).toBeInstanceOf(ConnectError);
    expect(given).toMatchObject({
      message: `login refused by ${url}: the server said to try again later: it cannot check logins now, or this user logs in too often (tried for 2 s)`,
    });
    expect(Date.now() - started).toBeGreaterThanOrEqual(2000);
    expect(refused('kai')).toBeGreaterThanOrEqual(5);

    // A server slow to refuse: the last attempt's wait ends first, and the reason is still the refusal.
    refuse('kai-slow', 3);
    refusing.slowness.set('kai-slow', 1500);
    const slow = await ParleyClient.connect({ server: url, user: 'kai-slow', password: 'unused', timeoutMs: 2000, reconnectMs: 100 }).catch((e: unknown) => e);
    expect(slow).toMatchObject({
      message: `login refused by ${url}: the server said to try again later: it cannot check logins now, or this user logs in too often (tried for 2 s)`,
    });

    // Accepted within that time: it goes on as if accepted at once.
    const connecting = ParleyClient.connect({ server: url, user: 'kai', password: 'unused', timeoutMs: 5000, reconnectMs: 100 });
    const before = refused('kai')!;
    await expect.poll(() => refused('kai'), { timeout: 5000 }).toBeGreaterThanOrEqual(before + 2);
    refuse('kai', 0);
    const client = await connecting;
    try {
      expect(await client.request('who', { user: 'bob' })).toEqual({ user: 'bob', state: 'online', lastSeen: null });
    } finally {
      await client.close();
    }
  });

  it('gives up at once, with the reason, on a refusal retrying cannot change (CONNACK 5), and fails what was waiting', async () => {
    const client = await ParleyClient.connect({ server: url, user: 'hal', password: 'unused', timeoutMs: 20_000, keepTrying: true, reconnectMs: 100 });
    try {
      refuse('hal', 5);
      await drop(client, 'hal');
      const waiting = client.request('who', { user: 'bob' }).catch((e: unknown) => e);
      const reason = await client.ended;
      expect(reason).toBeInstanceOf(ConnectError);
      expect(reason.message).toBe(`login refused by ${url}: not authorized: too many failed logins or open connections; try again later`);
      // What was waiting fails with it, long before its own timeout; and so does anything asked later.
      expect(await waiting).toBe(reason);
      expect(await client.request('who', { user: 'bob' }).catch((e: unknown) => e)).toBe(reason);
      expect(refused('hal')).toBe(1);
    } finally {
      await client.close();
    }
  });

  it('fails a request sent before the drop, its login then refused for good, saying it may have been done', async () => {
    const client = await ParleyClient.connect({ server: url, user: 'max', password: 'unused', timeoutMs: 20_000 });
    try {
      refuseOnRequest.set('max', 4);
      const failed = await client.request('who', { user: 'bob' }).catch((e: unknown) => e);
      expect(failed).toBeInstanceOf(ConnectError);
      expect(failed).toMatchObject({
        sent: true,
        message: `the connection to the server closed before it answered, and connecting again failed (login refused by ${url}: wrong user name or password): it may or may not have been done`,
      });
      // The client ends with the refusal itself; a request made after it was never sent, and says only that.
      expect((await client.ended).message).toBe(`login refused by ${url}: wrong user name or password`);
      expect(await client.request('who', { user: 'bob' }).catch((e: unknown) => e)).toMatchObject({
        sent: false,
        message: `login refused by ${url}: wrong user name or password`,
      });
    } finally {
      await client.close();
    }
  });
});

/**
 * A resumed session's sync starts as the server answers the login, so its first events can come in the same read as
 * the CONNACK; MQTT.js handles them back to back, before the connect's promise settles. A scripted peer writes them
 * in one piece, every time, to show they are kept.
 */
describe('ParleyClient and a resumed session', () => {
  it('keeps the events that came in the same read as the CONNACK, and hands them over in order', async () => {
    const inbox = topics.inbox('dev');
    const tcp = createServer((socket) => {
      let pending: Buffer = Buffer.alloc(0);
      socket.on('data', (chunk: Buffer) => {
        const { packets, rest } = splitPackets(Buffer.concat([pending, chunk]));
        pending = rest;
        for (const { type, body } of packets) {
          // CONNECT: the CONNACK (session present) and the sync's first events, in one write.
          if (type === 1)
            socket.write(
              Buffer.concat([
                Buffer.from([0x20, 0x02, 0x01, 0x00]),
                publishPacket(inbox, JSON.stringify({ type: 'sync', conversations: [] }), { qos: 0 }),
                publishPacket(inbox, JSON.stringify({ type: 'synced', messages: 0 }), { qos: 0 }),
              ]),
            );
          // SUBSCRIBE: granted at QoS 1.
          if (type === 8) socket.write(Buffer.from([0x90, 0x03, body[0]!, body[1]!, 0x01]));
        }
      });
      socket.on('error', () => undefined);
    });
    await new Promise<void>((resolve) => tcp.listen({ host: '127.0.0.1', port: 0 }, resolve));
    const server = `mqtt://127.0.0.1:${(tcp.address() as AddressInfo).port}`;
    const client = await ParleyClient.connect({ server, user: 'dev', password: 'unused', present: true, device: 'laptop', timeoutMs: 5000 });
    try {
      const events: string[] = [];
      client.on('event', (e: { type: string }) => events.push(e.type));
      await expect.poll(() => events, { timeout: 5000 }).toEqual(['sync', 'synced']);
    } finally {
      await client.close();
      await new Promise<void>((resolve) => tcp.close(() => resolve()));
    }
  });
});

describe('ParleyClient and a server that stops answering', () => {
  it('closes within its bound, its connection gone, when the server takes the goodbye and answers nothing (hung, or a half-open network)', async () => {
    const sockets: import('node:net').Socket[] = [];
    // Answers the login and the subscriptions; then reads and ignores everything, and never closes its side.
    const tcp = createServer({ allowHalfOpen: true }, (socket) => {
      sockets.push(socket);
      let pending: Buffer = Buffer.alloc(0);
      socket.on('data', (chunk: Buffer) => {
        const { packets, rest } = splitPackets(Buffer.concat([pending, chunk]));
        pending = rest;
        for (const { type, body } of packets) {
          if (type === 1) socket.write(Buffer.from([0x20, 0x02, 0x00, 0x00]));
          if (type === 8) socket.write(Buffer.from([0x90, 0x03, body[0]!, body[1]!, 0x00]));
        }
      });
      socket.on('error', () => undefined);
    });
    await new Promise<void>((resolve) => tcp.listen({ host: '127.0.0.1', port: 0 }, resolve));
    try {
      const server = `mqtt://127.0.0.1:${(tcp.address() as AddressInfo).port}`;
      const client = await ParleyClient.connect({ server, user: 'hal', password: 'unused', timeoutMs: 5000, keepTrying: true });
      await client.close();
      // Nothing of it is left to keep the process alive (Ctrl-C in chat or listen ends it).
      expect((client as unknown as { mqtt: MqttClient }).mqtt.stream.destroyed).toBe(true);
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => tcp.close(() => resolve()));
    }
  });
});

describe('ParleyClient and a server that drops a connection before it answers the login (it is restarting)', () => {
  it('rides it out when the command rides out drops (file transfers, chat, listen); a one-shot command fails at once', async () => {
    const broker = new Aedes();
    await broker.listen();
    // The first connections of each kind are dropped as their CONNECT arrives, as a server going down would.
    let toDrop = 0;
    const tcp = createServer((socket) => {
      if (toDrop > 0) {
        toDrop--;
        socket.once('data', () => socket.destroy());
        return;
      }
      broker.handle(socket);
    });
    await new Promise<void>((resolve) => tcp.listen({ host: '127.0.0.1', port: 0 }, resolve));
    const at = `mqtt://127.0.0.1:${(tcp.address() as AddressInfo).port}`;
    try {
      toDrop = 1;
      await expect(ParleyClient.connect({ server: at, user: 'ann', password: 'unused', timeoutMs: 5000 })).rejects.toThrow(
        'the connection closed before the server answered',
      );
      toDrop = 2;
      const riding = await ParleyClient.connect({ server: at, user: 'ann', password: 'unused', timeoutMs: 5000, reconnect: true, reconnectMs: 100 });
      expect(toDrop).toBe(0);
      await riding.close();
      // A port that only ever drops (it speaks something else): even chat and listen give up once a command's time is out.
      toDrop = 1000;
      await expect(ParleyClient.connect({ server: at, user: 'ann', password: 'unused', timeoutMs: 1500, keepTrying: true, reconnectMs: 100 })).rejects.toThrow(
        'the connection closed before the server answered (tried for 2 s)',
      );
      // A WebSocket upgrade it closes on is said the same way, not as Node's "socket hang up".
      const ws = at.replace('mqtt:', 'ws:');
      await expect(ParleyClient.connect({ server: ws, user: 'ann', password: 'unused', timeoutMs: 5000 })).rejects.toThrow(
        `cannot reach ${ws}: the connection closed before the server answered`,
      );
      toDrop = 0;
    } finally {
      await new Promise<void>((resolve) => tcp.close(() => resolve()));
      await new Promise<void>((resolve) => broker.close(() => resolve()));
    }
  });
});

describe('ParleyClient and a server that drops a connection between the login and the inbox subscription (it is restarting)', () => {
  it('rides it out, within the command’s time, when the command rides out drops; a one-shot command fails at once', async () => {
    // Logins are accepted; the first subscriptions of each kind end the connection instead of being answered.
    let toDrop = 0;
    let dropped = 0;
    const broker = new Aedes({
      authorizeSubscribe: (client, sub, done) => {
        if (toDrop > 0) {
          toDrop--;
          dropped++;
          return client.close();
        }
        done(null, sub);
      },
    });
    await broker.listen();
    const tcp = createServer((socket) => broker.handle(socket));
    await new Promise<void>((resolve) => tcp.listen({ host: '127.0.0.1', port: 0 }, resolve));
    const at = `mqtt://127.0.0.1:${(tcp.address() as AddressInfo).port}`;
    try {
      toDrop = 1;
      await expect(ParleyClient.connect({ server: at, user: 'ann', password: 'unused', timeoutMs: 5000 })).rejects.toThrow(
        'could not subscribe to the replies topic',
      );
      toDrop = 2;
      const told: string[] = [];
      const riding = await ParleyClient.connect({
        server: at,
        user: 'ann',
        password: 'unused',
        timeoutMs: 5000,
        reconnect: true,
        reconnectMs: 100,
        onUnavailable: (reason) => told.push(reason),
      });
      expect(toDrop).toBe(0);
      expect(told).toEqual([expect.stringContaining('could not subscribe to the replies topic')]);
      // Subscribed, it takes its replies.
      expect(riding.connected).toBe(true);
      await riding.close();
      // One that always drops there is given up once the command's time is out, never tried endlessly.
      toDrop = 1000;
      dropped = 0;
      await expect(ParleyClient.connect({ server: at, user: 'ann', password: 'unused', timeoutMs: 1500, keepTrying: true, reconnectMs: 100 })).rejects.toThrow(
        /^could not subscribe to the replies topic: .* \(tried for 2 s\)$/,
      );
      expect(dropped).toBeGreaterThan(1);
      toDrop = 0;
    } finally {
      await new Promise<void>((resolve) => tcp.close(() => resolve()));
      await new Promise<void>((resolve) => broker.close(() => resolve()));
    }
  });
});

describe('ParleyClient and a server that takes the login and never answers the inbox subscription', () => {
  it('gives up once the command’s time is out, instead of waiting for good', async () => {
    // Logins are accepted; subscriptions are never answered, the connection kept open.
    const broker = new Aedes({ authorizeSubscribe: () => undefined });
    await broker.listen();
    const tcp = createServer((socket) => broker.handle(socket));
    await new Promise<void>((resolve) => tcp.listen({ host: '127.0.0.1', port: 0 }, resolve));
    const at = `mqtt://127.0.0.1:${(tcp.address() as AddressInfo).port}`;
    try {
      await expect(ParleyClient.connect({ server: at, user: 'ann', password: 'unused', timeoutMs: 1500 })).rejects.toThrow(
        /^could not subscribe to the replies topic: no answer within \d+ s$/,
      );
    } finally {
      await new Promise<void>((resolve) => tcp.close(() => resolve()));
      await new Promise<void>((resolve) => broker.close(() => resolve()));
    }
  });
});
