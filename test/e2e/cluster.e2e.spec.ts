import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { topics, type GroupInfo, type InboxEvent, type OkReply, type PresenceEvent, type SendResult, type WhoResult } from '#libs/protocol';
import { InboxOrder, type LogEvent } from '../../apps/cli/src/inbox-order.js';
import { connectClient, endClient, okResult, type MqttUser } from '../support/mqtt-user.js';
import type { ParleyServer } from '../support/parley-server.js';
import { TestUsers } from '../support/test-users.js';
import { startTopology, type Topology } from '../support/topology.js';

/**
 * The compose topology as plain processes on loopback: Redis with AOF, two
 * gateways (gw-a, gw-b) on it, and the presence, receipts and group services
 * each as its own process. Clients on different gateways talk as if there
 * were one server.
 */
describe('cluster: two gateways and the services on one Redis', () => {
  let topo: Topology;
  let gwA: ParleyServer;
  let gwB: ParleyServer;
  const users = new TestUsers(() => topo.urls(), 'cluster password');
  const on = (g: ParleyServer, name: string) => users.login(name, g.mqttUrl);

  beforeAll(async () => {
    topo = await startTopology('distributed', {
      PARLEY_GATEWAY_DEAD_AFTER_MS: '1500',
      PARLEY_RPC_TIMEOUT_MS: '4000',
      // Low enough to reach in a test; only the user under attack is locked out (the address limit stays at its default).
      PARLEY_LOGIN_MAX_USER_FAILURES: '4',
    });
    gwA = topo.server;
    gwB = await topo.addGateway('gw-b');
  });
  afterEach(() => users.closeAll());
  afterAll(() => topo?.dispose());

  it('1:1 across gateways, both ways, with presence and receipts', async () => {
    const [a, b] = [await users.fresh('alice'), await users.fresh('bob')];
    const alice = await on(gwA, a);
    const bob = await on(gwB, b);

    const sent = await okResult<SendResult>(alice.request({ op: 'send', to: b, text: 'from gateway a' }));
    expect(sent.recipient).toMatchObject({ state: 'online' });
    expect(await bob.waitFor((e) => e.type === 'message' && e.text === 'from gateway a')).toMatchObject({ from: a, seq: sent.seq });
    await okResult(bob.request({ op: 'receipt', conv: sent.conv, seq: sent.seq, status: 'read' }));
    expect(await alice.waitFor((e) => e.type === 'receipt' && e.status === 'read')).toMatchObject({ user: b, seq: sent.seq });

    await okResult(bob.request({ op: 'send', to: a, text: 'and back from b' }));
    expect(await alice.waitFor((e) => e.type === 'message' && e.text === 'and back from b')).toMatchObject({ from: b });

    // Bob's presence, published by gateway B, is retained and seen by a subscriber on gateway A.
    const watcher = await connectClient(gwA.mqttUrl, { username: a, password: users.password, clientId: `${a}/watch` });
    try {
      const retained = new Promise<PresenceEvent>((resolve) => watcher.on('message', (_t, p) => resolve(JSON.parse(p.toString()) as PresenceEvent)));
      await watcher.subscribeAsync(topics.presence(b), { qos: 1 });
      expect(await retained).toMatchObject({ user: b, state: 'online' });
    } finally {
      await endClient(watcher);
    }
  });

  it('counts failed logins across gateways: guesses spread over both lock the user out on both', async () => {
    const victim = await users.fresh('victim');
    const attempt = (g: ParleyServer, password: string) =>
      connectClient(g.mqttUrl, { username: victim, password, clientId: `${victim}/bf${randomUUID().slice(0, 8)}` }).then(
        async (c) => {
          await endClient(c);
          return 0;
        },
        (e: { code?: number }) => e.code ?? -1,
      );
    const codes: number[] = [];
    for (const g of [gwA, gwB, gwA, gwB]) codes.push(await attempt(g, 'a wrong guess'));
    expect(codes).toEqual([4, 4, 4, 4]);
    // Two failures on each gateway, four in all: locked out on both (0x05), even with the right password.
    expect(await attempt(gwA, users.password)).toBe(5);
    expect(await attempt(gwB, users.password)).toBe(5);
    // Someone else still logs in.
    await users.login(await users.fresh('bystander'), gwB.mqttUrl);
  });

  it('a user connected to both gateways at once gets each message on both', async () => {
    const [a, b] = [await users.fresh('alice'), await users.fresh('bob')];
    const alice = await on(gwA, a);
    const [bobOnA, bobOnB] = [await on(gwA, b), await on(gwB, b)];
    // Once caught up, a device gets live messages only (during catch-up a message may also come in the backlog, which the client drops by seq).
    await Promise.all([bobOnA, bobOnB].map((d) => d.waitFor((e) => e.type === 'synced')));
    const sent = await okResult<SendResult>(alice.request({ op: 'send', to: b, text: 'to both of your devices' }));
    for (const device of [bobOnA, bobOnB]) {
      expect(await device.waitFor((e) => e.type === 'message' && e.text === 'to both of your devices')).toMatchObject({ seq: sent.seq });
    }
    // Exactly once on each device.
    expect(bobOnA.events.filter((e) => e.type === 'message')).toHaveLength(1);
    expect(bobOnB.events.filter((e) => e.type === 'message')).toHaveLength(1);
  });

  /** Alice on gateway A sends `text` to bob, who has a phone on gateway B and a laptop on A (clean sessions both). */
  async function toTwoDevices(text: string) {
    const [a, b] = [await users.fresh('alice'), await users.fresh('bob')];
    const alice = await on(gwA, a);
    const [phone, laptop] = [await on(gwB, b), await on(gwA, b)];
    const sent = await okResult<SendResult>(alice.request({ op: 'send', to: b, text }));
    return { a, b, alice, phone, laptop, sent };
  }

  it('a message read on one device and then acknowledged as delivered by another is never shown to the sender as going back to delivered', async () => {
    const { a, b, alice, phone, laptop, sent } = await toTwoDevices('read me on your phone');
    // The phone shows it and reads it before the laptop (a clean session) acknowledges it.
    await phone.waitFor((e) => e.type === 'message' && e.seq === sent.seq);
    await okResult(phone.request({ op: 'receipt', conv: sent.conv, seq: sent.seq, status: 'read' }));
    expect(await alice.waitFor((e) => e.type === 'receipt' && e.status === 'read')).toMatchObject({ user: b, seq: sent.seq });
    await laptop.waitFor((e) => e.type === 'message' && e.seq === sent.seq);
    await okResult(laptop.request({ op: 'receipt', conv: sent.conv, seq: sent.seq, status: 'delivered' }));
    // Whatever the laptop's receipt announced reached alice before this message does.
    await okResult(laptop.request({ op: 'send', to: a, text: 'after the receipts' }));
    await alice.waitFor((e) => e.type === 'message' && e.text === 'after the receipts');
    const receipts = alice.events.filter((e) => e.type === 'receipt' && e.user === b);
    expect(receipts.map((e) => e.type === 'receipt' && e.status)).toEqual(['read']);
  });

  it("a message two of the recipient's devices acknowledge as delivered is announced to the sender once; a retry of the first is announced again", async () => {
    const { a, b, alice, phone, laptop, sent } = await toTwoDevices('one delivered, please');
    await phone.waitFor((e) => e.type === 'message' && e.seq === sent.seq);
    await laptop.waitFor((e) => e.type === 'message' && e.seq === sent.seq);
    const receipt = { op: 'receipt', conv: sent.conv, seq: sent.seq, status: 'delivered' };
    await okResult(phone.request({ ...receipt, id: 'phone-ack' }));
    await okResult(laptop.request({ ...receipt, id: 'laptop-ack' }));
    // Whatever the receipts announced reached alice before this message does.
    await okResult(laptop.request({ op: 'send', to: a, text: 'after both receipts' }));
    await alice.waitFor((e) => e.type === 'message' && e.text === 'after both receipts');
    const delivered = () => alice.events.filter((e) => e.type === 'receipt' && e.user === b && e.status === 'delivered');
    expect(delivered()).toHaveLength(1);
    // The phone's receipt again, its answer lost, say: announced again, as that first announcement may have been lost too.
    await okResult(phone.request({ ...receipt, id: 'phone-ack' }));
    await okResult(phone.request({ op: 'send', to: a, text: 'after the retry' }));
    await alice.waitFor((e) => e.type === 'message' && e.text === 'after the retry');
    expect(delivered()).toHaveLength(2);
  });

  it('a group across gateways: offline member catches up on the other gateway, the sender sees who read', async () => {
    const [a, b, c] = [await users.fresh('alice'), await users.fresh('bob'), await users.fresh('carol')];
    const [alice, bob] = [await on(gwA, a), await on(gwB, b)];
    const group = await okResult<GroupInfo>(alice.request({ op: 'group.create', name: `across ${randomUUID().slice(0, 6)}`, members: [b, c] }));
    const sent = await okResult<SendResult>(alice.request({ op: 'send', group: group.id, text: 'group hello' }));
    expect(sent).toMatchObject({ recipients: 2 });
    expect(await bob.waitFor((e) => e.type === 'message' && e.text === 'group hello')).toMatchObject({ from: a, group: { id: group.id } });

    const carol = await on(gwB, c);
    await carol.waitFor((e) => e.type === 'synced');
    expect(carol.events.flatMap((e) => (e.type === 'message' ? [e.text] : []))).toEqual(['group hello']);
    await okResult(carol.request({ op: 'receipt', conv: sent.conv, seq: sent.seq, status: 'read' }));
    await alice.waitFor((e) => e.type === 'receipt' && e.user === c && e.status === 'read');
    const info = await okResult<{ members: { user: string; delivered: boolean; read: boolean }[] }>(
      alice.request({ op: 'info', group: group.id, seq: sent.seq }),
    );
    expect(info.members).toEqual(
      expect.arrayContaining([expect.objectContaining({ user: c, delivered: true, read: true }), expect.objectContaining({ user: b, read: false })]),
    );
  });

  it('a gateway taken for dead while it was only paused records its connections again: its users are back online', async () => {
    const [a, c] = [await users.fresh('alice'), await users.fresh('carol')];
    const alice = await on(gwA, a);
    await on(gwB, c);
    const whoCarol = async () => ((await alice.request({ op: 'who', user: c })) as OkReply).result;
    await expect.poll(whoCarol, { timeout: 10_000 }).toMatchObject({ state: 'online' });
    // Paused (as a host that stalls, or one cut off from Redis): silent for PARLEY_GATEWAY_DEAD_AFTER_MS, so gateway A
    // takes it for dead and closes its connections in presence.
    gwB.process.kill('SIGSTOP');
    try {
      await expect.poll(whoCarol, { timeout: 15_000 }).toMatchObject({ state: 'offline' });
    } finally {
      gwB.process.kill('SIGCONT');
    }
    // Gateway B still holds carol's connection: once it beats again and finds itself taken for dead, it records it again.
    await expect.poll(whoCarol, { timeout: 15_000 }).toMatchObject({ state: 'online' });
  });

  it('a gateway started later sees the presence that is already retained', async () => {
    const a = await users.fresh('alice');
    await on(gwA, a);
    const late = await topo.addGateway('gw-late');
    const watcher = await connectClient(late.mqttUrl, { username: a, password: users.password, clientId: `${a}/late` });
    try {
      const retained = new Promise<PresenceEvent>((resolve) => watcher.on('message', (_t, p) => resolve(JSON.parse(p.toString()) as PresenceEvent)));
      await watcher.subscribeAsync(topics.presence(a), { qos: 1 });
      expect(await retained).toMatchObject({ user: a, state: 'online' });
    } finally {
      await endClient(watcher);
      await late.dispose();
    }
  });
});

/**
 * A killed process loses no accepted message. The sender retries every
 * request that got no answer with the same id (as the CLI does), on whichever
 * gateway is up; the receiver counts what it would show (InboxOrder, the
 * CLI's own ordering and de-duplication).
 */
describe('cluster under faults', () => {
  let topo: Topology;
  let gwA: ParleyServer;
  let gwB: ParleyServer;
  // Gateway A is killed by the first test: registrations go to B.
  const users = new TestUsers(() => [gwB.mqttUrl], 'cluster fault password');

  beforeAll(async () => {
    topo = await startTopology('distributed', { PARLEY_GATEWAY_DEAD_AFTER_MS: '1500', PARLEY_RPC_TIMEOUT_MS: '3000' });
    gwA = topo.server;
    gwB = await topo.addGateway('gw-b');
  });
  afterEach(() => users.closeAll());
  afterAll(() => topo?.dispose());

  /** What a user would be shown, across reconnects: each seq once, in order. */
  class Screen {
    readonly shown: number[] = [];
    private readonly order = new InboxOrder((e: LogEvent) => {
      if (e.type === 'message') this.shown.push(e.seq);
    });
    attach(u: MqttUser): void {
      this.order.reconnecting();
      u.onEvent((e: InboxEvent) => {
        if (e.type === 'sync') this.order.sync(e);
        else if (e.type === 'message') this.order.accept(e);
      });
    }
    stop(): void {
      this.order.stop();
    }
  }

  /** Sends `count` messages, one at a time; a request without an answer is retried with the same id on `fallback()`. */
  async function stream(sender: () => MqttUser, to: string, count: number, midway: () => Promise<void>, reconnect: () => Promise<void>) {
    const accepted: number[] = [];
    for (let i = 0; i < count; i++) {
      if (i === Math.floor(count / 2)) await midway();
      const id = `m-${i}`;
      for (let attempt = 0; ; attempt++) {
        expect(attempt, `message ${i} never accepted`).toBeLessThan(5);
        const reply = await sender()
          .request({ op: 'send', id, to, text: `n${i}` }, 6000)
          .catch(() => undefined);
        if (reply?.ok) {
          accepted.push((reply.result as SendResult).seq);
          break;
        }
        if (reply && reply.error.code !== 'unavailable') throw new Error(JSON.stringify(reply));
        if (!reply || !sender().client.connected) await reconnect();
      }
    }
    return accepted;
  }

  function report(what: string, sent: number, accepted: number[], shown: number[]) {
    const shownSet = new Set(shown);
    const lost = accepted.filter((s) => !shownSet.has(s)).length;
    const duplicated = shown.length - shownSet.size;
    console.log(`${what}: sent ${sent}, accepted ${accepted.length}, delivered ${shownSet.size}, lost ${lost}, duplicated-as-shown ${duplicated}`);
    expect(lost).toBe(0);
    expect(duplicated).toBe(0);
    expect(shown).toEqual([...shown].sort((x, y) => x - y));
  }

  it('kill -9 of a gateway mid-traffic: its clients reconnect to the other, catch up, and lose nothing; its users go offline meanwhile', async () => {
    const [a, b, c] = [await users.fresh('alice'), await users.fresh('bob'), await users.fresh('carol')];
    let alice = await users.login(a, gwB.mqttUrl);
    let bob = await users.login(b, gwA.mqttUrl);
    const carol = await users.login(c, gwA.mqttUrl);
    const watcher = await users.login(await users.fresh('dave'), gwB.mqttUrl);
    const screen = new Screen();
    screen.attach(bob);
    await bob.waitFor((e) => e.type === 'synced');
    void carol;

    const accepted = await stream(
      () => alice,
      b,
      60,
      async () => {
        const killedAt = Date.now();
        await gwA.kill9();
        // Carol was only on gateway A: the other gateway takes her for offline once A stops beating, and she was last
        // seen when A last beat (it beats every quarter of the 1.5 s it may be silent), not when that was noticed.
        const who = async () => ((await watcher.request({ op: 'who', user: c })) as OkReply).result as WhoResult;
        await expect.poll(who, { timeout: 15_000, interval: 300 }).toMatchObject({ state: 'offline' });
        const { lastSeen } = await who();
        expect(lastSeen).toBeLessThanOrEqual(killedAt);
        expect(lastSeen).toBeGreaterThan(killedAt - 1500);
        bob = await users.login(b, gwB.mqttUrl);
        screen.attach(bob);
      },
      async () => {
        alice = await users.login(a, gwB.mqttUrl);
      },
    );
    await expect.poll(() => screen.shown.length, { timeout: 20_000 }).toBeGreaterThanOrEqual(accepted.length);
    screen.stop();
    report('gateway kill -9', 60, accepted, screen.shown);
  });

  /** A receiver that, like the CLI, logs in again whenever its connection is closed, until `stop()`. */
  function stayConnected(name: string, url: string, screen: Screen) {
    let stopped = false;
    const connect = async (): Promise<void> => {
      for (let attempt = 0; !stopped && attempt < 60; attempt++) {
        try {
          const u = await users.login(name, url);
          screen.attach(u);
          u.client.once('close', () => void connect());
          return;
        } catch {
          await new Promise((resolve) => setTimeout(resolve, Math.min(100 * 2 ** attempt, 1000)));
        }
      }
    };
    return { ready: connect(), stop: () => (stopped = true) };
  }

  it('Redis restarted (AOF) mid-traffic: gateways and services come back, and every accepted message is delivered once', async () => {
    const [a, b] = [await users.fresh('alice'), await users.fresh('bob')];
    let alice = await users.login(a, gwB.mqttUrl);
    const screen = new Screen();
    const bob = stayConnected(b, gwB.mqttUrl, screen);
    await bob.ready;
    const accepted = await stream(
      () => alice,
      b,
      40,
      () => topo.redis!.restart(),
      async () => {
        for (let attempt = 0; ; attempt++) {
          try {
            alice = await users.login(a, gwB.mqttUrl);
            return;
          } catch (e) {
            if (attempt > 20) throw e;
            await new Promise((resolve) => setTimeout(resolve, 250));
          }
        }
      },
    );
    await expect.poll(() => screen.shown.length, { timeout: 20_000 }).toBeGreaterThanOrEqual(accepted.length);
    bob.stop();
    screen.stop();
    report('Redis restart', 40, accepted, screen.shown);
  }, 90_000);

  it('kill -9 of a service mid-traffic: calls wait or fail clearly, and every accepted message is delivered once', async () => {
    const [a, b] = [await users.fresh('alice'), await users.fresh('bob')];
    let alice = await users.login(a, gwB.mqttUrl);
    const bob = await users.login(b, gwB.mqttUrl);
    const screen = new Screen();
    screen.attach(bob);
    await bob.waitFor((e) => e.type === 'synced');
    const accepted = await stream(
      () => alice,
      b,
      40,
      () => topo.restartService('presence', 'kill9'),
      async () => {
        alice = await users.login(a, gwB.mqttUrl);
      },
    );
    await expect.poll(() => screen.shown.length, { timeout: 20_000 }).toBeGreaterThanOrEqual(accepted.length);
    screen.stop();
    report('service kill -9', 40, accepted, screen.shown);
  });
});

/** The simplest scale-out: complete nodes (`npm start` with REDIS_URL: every service in process) on one Redis act as one service. */
describe('complete nodes on one Redis', () => {
  let topo: Topology;
  let nodeB: ParleyServer;
  const users = new TestUsers(() => topo.urls(), 'complete nodes password');

  beforeAll(async () => {
    topo = await startTopology('redis', { PARLEY_GATEWAY_ID: 'node-a' });
    nodeB = await topo.addGateway('node-b');
  });
  afterEach(() => users.closeAll());
  afterAll(() => topo?.dispose());

  it('users on different nodes chat 1:1 and in a group, with receipts and presence', async () => {
    const [a, b, c] = [await users.fresh('alice'), await users.fresh('bob'), await users.fresh('carol')];
    const alice = await users.login(a, topo.server.mqttUrl);
    const bob = await users.login(b, nodeB.mqttUrl);
    const carol = await users.login(c, nodeB.mqttUrl);

    const sent = (await alice.request({ op: 'send', to: b, text: 'node to node' })) as OkReply;
    expect(sent.result).toMatchObject({ status: 'accepted', recipient: { state: 'online' } });
    await bob.waitFor((e) => e.type === 'message' && e.text === 'node to node');
    const { conv, seq } = sent.result as SendResult;
    expect(await bob.request({ op: 'receipt', conv, seq, status: 'read' })).toMatchObject({ ok: true });
    await alice.waitFor((e) => e.type === 'receipt' && e.user === b && e.status === 'read');

    const group = ((await alice.request({ op: 'group.create', name: 'nodes', members: [b, c] })) as OkReply).result as GroupInfo;
    // Bob, on the other node, renames nothing (not the owner) but posts to all.
    expect(await bob.request({ op: 'group.rename', group: group.id, name: 'mine' })).toMatchObject({ ok: false, error: { code: 'not_group_owner' } });
    expect(await bob.request({ op: 'send', group: group.id, text: 'hello nodes' })).toMatchObject({ ok: true });
    for (const u of [alice, carol]) await u.waitFor((e) => e.type === 'message' && e.text === 'hello nodes' && e.from === b);

    await users.logout(carol);
    await expect.poll(async () => ((await alice.request({ op: 'who', user: c })) as OkReply).result, { timeout: 10_000 }).toMatchObject({ state: 'offline' });
  });
});

describe('two gateway processes started with one PARLEY_GATEWAY_ID', () => {
  let topo: Topology;
  beforeAll(async () => {
    topo = await startTopology('redis', { PARLEY_GATEWAY_ID: 'gw-same', PARLEY_GATEWAY_DEAD_AFTER_MS: '1000' });
  });
  afterAll(() => topo?.dispose());

  it('each says so in an error (they would take each other’s connections for their own), and a restart is not taken for one', async () => {
    const said = (g: ParleyServer) => g.output.some((l) => l.includes('"gateway_id_in_use"') && l.includes('gw-same'));
    // Killed and started again at once: the new process replaces the old one's token once, and hears of no other.
    await topo.crashAndRestart();
    const redis = new Redis(topo.redis!.url);
    try {
      // Its beats (every 250 ms) move its score in the roster: three of them, and not a word.
      const beats = new Set<string | null>();
      await expect
        .poll(async () => beats.add(await redis.zscore(`${topo.env.PARLEY_REDIS_PREFIX}gateways`, 'gw-same')).size, { timeout: 10_000, interval: 100 })
        .toBeGreaterThanOrEqual(4);
      expect(said(topo.server)).toBe(false);
    } finally {
      redis.disconnect();
    }
    const twin = await topo.addGateway('gw-same');
    await expect.poll(() => said(twin), { timeout: 10_000 }).toBe(true);
    await expect.poll(() => said(topo.server), { timeout: 10_000 }).toBe(true);
    await twin.dispose();
  });
});
