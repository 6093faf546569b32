import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  topics,
  type MessageEvent,
  type OkReply,
  type PresenceEvent,
  type ReceiptEvent,
  type SendResult,
  type SyncEvent,
  type WhoResult,
} from '#libs/protocol';
import { connectClient, endClient, okResult, type MqttUser } from '../support/mqtt-user.js';
import { TestUsers } from '../support/test-users.js';
import { startTopology, type Mode, type Topology } from '../support/topology.js';

const PASSWORD = 'offline and back';
const modes: Mode[] = ['embedded', 'redis', 'distributed'];

const isMessage = (text?: string) => (e: { type: string; text?: string }) => e.type === 'message' && (text === undefined || e.text === text);

/** Sends `n` messages (`${prefix} 0` …) to `to` at once, pipelined, and checks that each is accepted. */
async function sendMany(from: MqttUser, to: string, n: number, prefix: string): Promise<void> {
  const replies = await Promise.all(Array.from({ length: n }, (_, i) => from.request({ op: 'send', to, text: `${prefix} ${i}` }, 60_000)));
  expect(replies.every((r) => r.ok)).toBe(true);
}

describe.each(modes)('delivery you can trust, %s', (mode) => {
  let topo: Topology;
  const users = new TestUsers(() => topo.urls(), PASSWORD);
  const fresh = (base: string) => users.fresh(base);
  const login = (name: string) => users.login(name);
  const logout = (u: MqttUser) => users.logout(u);

  beforeAll(async () => {
    topo = await startTopology(mode);
  });
  afterEach(() => users.closeAll());
  afterAll(() => topo?.dispose());

  it('offline send → last seen → reconnect → in-order single delivery → delivered, then read', async () => {
    const [aliceName, bobName] = [await fresh('alice'), await fresh('bob')];
    const bobFirst = await login(bobName);
    await logout(bobFirst);
    const alice = await login(aliceName);

    // The server sees bob's disconnect a moment after his client has closed: wait for it, bounded.
    await expect
      .poll(async () => ((await alice.request({ op: 'who', user: bobName })) as OkReply).result, { timeout: 10_000 })
      .toMatchObject({ user: bobName, state: 'offline' });
    const who = (await alice.request({ op: 'who', user: bobName })) as OkReply;
    const lastSeen = (who.result as WhoResult).lastSeen!;
    expect(lastSeen).toBeGreaterThan(0);

    const replies: OkReply[] = [];
    for (let i = 1; i <= 5; i++) replies.push((await alice.request({ op: 'send', to: bobName, text: `while you were out ${i}` })) as OkReply);
    for (const r of replies) expect((r.result as SendResult).recipient).toEqual({ state: 'offline', lastSeen });

    const bob = await login(bobName);
    const sync = (await bob.waitFor((e) => e.type === 'sync')) as SyncEvent;
    expect(sync.conversations).toContainEqual(expect.objectContaining({ conv: replies[0]!.result && (replies[0]!.result as SendResult).conv, last: 5 }));
    await bob.waitFor((e) => e.type === 'synced');
    const got = bob.events.filter(isMessage()) as MessageEvent[];
    expect(got.map((m) => m.text)).toEqual([1, 2, 3, 4, 5].map((i) => `while you were out ${i}`));
    expect(got.map((m) => m.seq)).toEqual([1, 2, 3, 4, 5]);
    expect(got.every((m) => m.from === aliceName)).toBe(true);
    expect(got.map((m) => m.ts)).toEqual(replies.map((r) => (r.result as SendResult).ts));

    // Alice sees bob come online on the retained presence topic.
    const conv = got[0]!.conv;
    expect(await bob.request({ op: 'receipt', conv, seq: 5, status: 'delivered' })).toMatchObject({
      ok: true,
      result: { moved: true, cursors: { delivered: 5, read: 0 } },
    });
    expect(await alice.waitFor((e) => e.type === 'receipt' && e.status === 'delivered')).toMatchObject({ conv, user: bobName, seq: 5 });
    expect(await bob.request({ op: 'receipt', conv, seq: 3, status: 'read' })).toMatchObject({ ok: true, result: { cursors: { delivered: 5, read: 3 } } });
    const read = (await alice.waitFor((e) => e.type === 'receipt' && e.status === 'read')) as ReceiptEvent;
    expect(read).toMatchObject({ conv, user: bobName, seq: 3 });

    // A reconnect starts after the delivered cursor: nothing is sent again.
    await logout(bob);
    const bobAgain = await login(bobName);
    await bobAgain.waitFor((e) => e.type === 'synced');
    expect(bobAgain.events.filter(isMessage())).toEqual([]);

    // History shows each message's state from the sender's side.
    const history = (await alice.request({ op: 'history', with: bobName })) as OkReply;
    expect(history.result).toMatchObject({ peers: { [bobName]: { delivered: 5, read: 3 } } });
  });

  it('a connection on its replies topic gets the replies to its own requests there, and nothing else: no catch-up, no messages', async () => {
    const [aliceName, bobName] = [await fresh('alice'), await fresh('bob')];
    const alice = await login(aliceName);
    // Bob has unread messages: an inbox subscription would be sent them first.
    for (const text of ['unread 1', 'unread 2']) await okResult(alice.request({ op: 'send', to: bobName, text }));
    const inbox = await login(bobName);
    await inbox.waitForCount(isMessage(), 2);
    const connect = (device: string) => connectClient(topo.server.mqttUrl, { username: bobName, password: PASSWORD, clientId: `${bobName}/${device}` });
    const [tool, other] = [await connect('.tool'), await connect('.other')];
    try {
      const got = { tool: [] as { topic: string; event: { type: string; id?: string } }[], other: [] as unknown[] };
      tool.on('message', (topic, payload) => got.tool.push({ topic, event: JSON.parse(payload.toString()) as { type: string; id?: string } }));
      other.on('message', (_t, payload) => got.other.push(JSON.parse(payload.toString())));
      expect((await tool.subscribeAsync(topics.replies(bobName), { qos: 1 }))[0]?.qos).toBe(0);
      expect((await other.subscribeAsync(topics.replies(bobName), { qos: 1 }))[0]?.qos).toBe(0);
      // Someone else's replies are not to be had.
      await expect(tool.subscribeAsync(topics.replies(aliceName), { qos: 1 })).rejects.toThrow(/Subscribe error/);
      const ask = async (id: string) => {
        await tool.publishAsync(topics.requests(bobName), JSON.stringify({ op: 'who', id, user: aliceName }), { qos: 1 });
        await expect.poll(() => got.tool.some((g) => g.event.id === id), { timeout: 10_000 }).toBe(true);
      };
      await ask('w1');
      // Every reply still goes on the inbox too, for the user's other devices.
      await inbox.waitFor((e) => e.type === 'reply' && e.id === 'w1');
      // A message now: on the inbox, not on the replies topic (the next reply comes after it would have).
      await okResult(alice.request({ op: 'send', to: bobName, text: 'live' }));
      await inbox.waitFor(isMessage('live'));
      await ask('w2');
      expect(got.tool.map((g) => [g.topic, g.event.type, g.event.id])).toEqual([
        [topics.replies(bobName), 'reply', 'w1'],
        [topics.replies(bobName), 'reply', 'w2'],
      ]);
      // The other connection on the replies topic made no request, and got no reply.
      expect(got.other).toEqual([]);
    } finally {
      await Promise.all([endClient(tool), endClient(other)]);
    }
  });

  it('receipts that happen while the sender is offline reach it on reconnect', async () => {
    const [aliceName, bobName] = [await fresh('alice'), await fresh('bob')];
    const alice = await login(aliceName);
    const sent = (await alice.request({ op: 'send', to: bobName, text: 'read me later' })) as OkReply;
    const { conv } = sent.result as SendResult;
    await logout(alice);

    const bob = await login(bobName);
    await bob.waitFor(isMessage('read me later'));
    expect(await bob.request({ op: 'receipt', conv, seq: 1, status: 'read' })).toMatchObject({ ok: true });

    const back = await login(aliceName);
    const sync = (await back.waitFor((e) => e.type === 'sync')) as SyncEvent;
    const entry = sync.conversations.find((c) => c.conv === conv);
    expect(entry?.peers[bobName]).toMatchObject({ delivered: 1, read: 1 });
    expect(entry?.peers[bobName]?.readAt).toBeGreaterThan(0);
  });

  it('a kill -9 between accept and delivery loses nothing', async () => {
    const [aliceName, bobName] = [await fresh('alice'), await fresh('bob')];
    const alice = await login(aliceName);
    const texts = Array.from({ length: 20 }, (_, i) => `survive ${i}`);
    for (const text of texts) expect(await alice.request({ op: 'send', to: bobName, text })).toMatchObject({ ok: true });
    await logout(alice);

    await topo.crashAndRestart();

    const bob = await login(bobName);
    await bob.waitFor((e) => e.type === 'synced');
    expect((bob.events.filter(isMessage()) as MessageEvent[]).map((m) => m.text)).toEqual(texts);
  });

  it('1,000 messages queued for an offline user arrive complete and in order', async () => {
    const [aliceName, bobName] = [await fresh('alice'), await fresh('bob')];
    const alice = await login(aliceName);
    const n = 1000;
    await sendMany(alice, bobName, n, 'queued');

    const bob = await login(bobName);
    await bob.waitFor((e) => e.type === 'synced', 60_000);
    const got = bob.events.filter(isMessage()) as MessageEvent[];
    expect(got).toHaveLength(n);
    expect(got.map((m) => m.seq)).toEqual(Array.from({ length: n }, (_, i) => i + 1));
    // Sent concurrently on one connection, they are stored in the order they were published.
    expect(got.map((m) => m.text)).toEqual(Array.from({ length: n }, (_, i) => `queued ${i}`));
    // Its waits are bounded at 60 s each (a busy 2-core machine, distributed): the test's own bound covers them.
  }, 150_000);

  it('a reconnect that drops half way through the catch-up loses nothing', async () => {
    const [aliceName, bobName] = [await fresh('alice'), await fresh('bob')];
    const alice = await login(aliceName);
    for (let i = 0; i < 300; i++)
      alice.client.publish(topics.requests(aliceName), JSON.stringify({ op: 'send', id: `d${i}`, to: bobName, text: `drop ${i}` }), { qos: 1 });
    await alice.waitForCount((e) => e.type === 'reply', 300, 30_000);

    // Bob acknowledges what he has shown as it arrives, and his connection drops part way.
    const bob = await login(bobName);
    // The first 50 only: on a busy machine more (even all 300) may have arrived by the time this runs.
    const firstBatch = ((await bob.waitForCount(isMessage(), 50)) as MessageEvent[]).slice(0, 50);
    const shown = new Map<number, MessageEvent>();
    for (const m of firstBatch) shown.set(m.seq, m);
    const ackTo = Math.max(...shown.keys());
    await bob.request({ op: 'receipt', conv: firstBatch[0]!.conv, seq: ackTo, status: 'delivered' });
    (bob.client.stream as unknown as { destroy(): void }).destroy();

    const again = await login(bobName);
    await again.waitFor((e) => e.type === 'synced', 30_000);
    const second = again.events.filter(isMessage()) as MessageEvent[];
    // The second catch-up starts right after what was acknowledged, so nothing acknowledged comes again…
    expect(second[0]!.seq).toBe(ackTo + 1);
    // …and together the two cover every message, once each as shown.
    for (const m of second) if (!shown.has(m.seq)) shown.set(m.seq, m);
    expect([...shown.keys()].sort((a, b) => a - b)).toEqual(Array.from({ length: 300 }, (_, i) => i + 1));
  });

  it('live events come at QoS 0; what a dropped connection did not acknowledge comes again at the next catch-up', async () => {
    const [aliceName, bobName] = [await fresh('alice'), await fresh('bob')];
    const alice = await login(aliceName);
    const bob = await login(bobName);
    await bob.waitFor((e) => e.type === 'synced');
    const qos: number[] = [];
    bob.client.on('message', (_topic, _payload, packet) => qos.push(packet.qos));
    for (let i = 0; i < 40; i++)
      alice.client.publish(topics.requests(aliceName), JSON.stringify({ op: 'send', id: `q${i}`, to: bobName, text: `live ${i}` }), { qos: 1 });
    const first = (await bob.waitForCount(isMessage(), 10)) as MessageEvent[];
    // Bob acknowledges only the first 5 (as a client does once it has shown them), then his connection breaks.
    await bob.request({ op: 'receipt', conv: first[0]!.conv, seq: 5, status: 'delivered' });
    (bob.client.stream as unknown as { destroy(): void }).destroy();
    await alice.waitForCount((e) => e.type === 'reply', 40, 30_000);
    expect(qos.length).toBeGreaterThan(0);
    expect(new Set(qos)).toEqual(new Set([0]));

    const again = await login(bobName);
    await again.waitFor((e) => e.type === 'synced', 30_000);
    const caughtUp = (again.events.filter(isMessage()) as MessageEvent[]).map((m) => m.seq);
    // Everything after the acknowledged 5 comes again, however much of it the broken connection had received.
    expect(caughtUp).toEqual(Array.from({ length: 35 }, (_, i) => i + 6));
  });

  it('subscribing to the inbox again on the same connection brings a catch-up of its own, with what was sent while unsubscribed', async () => {
    const [aliceName, bobName] = [await fresh('alice'), await fresh('bob')];
    const alice = await login(aliceName);
    const bob = await login(bobName);
    await bob.waitFor((e) => e.type === 'synced');
    await bob.client.unsubscribeAsync(topics.inbox(bobName));
    await alice.request({ op: 'send', to: bobName, text: 'while unsubscribed' });
    await bob.client.subscribeAsync(topics.inbox(bobName), { qos: 1 });
    // A second sync, the message in its backlog, then synced: in that order, on the connection that never closed.
    await bob.waitForCount((e) => e.type === 'synced', 2);
    const kinds = bob.events.map((e) => (e.type === 'message' ? e.text : e.type)).filter((k) => k === 'sync' || k === 'synced' || k === 'while unsubscribed');
    expect(kinds).toEqual(['sync', 'synced', 'sync', 'while unsubscribed', 'synced']);
    // Live messages come again, once each.
    await alice.request({ op: 'send', to: bobName, text: 'live again' });
    await bob.waitFor(isMessage('live again'));
    await alice.request({ op: 'send', to: bobName, text: 'and after' });
    await bob.waitFor(isMessage('and after'));
    expect(bob.events.filter(isMessage('live again'))).toHaveLength(1);
  });

  // Six logins, five catch-ups: each wait is bounded well inside the test's own timeout, so a step that stalls is named.
  it('a device that keeps a session gets, back, what another device of the user acknowledged while it was away', { timeout: 90_000 }, async () => {
    const [aliceName, bobName] = [await fresh('alice'), await fresh('bob')];
    const alice = await login(aliceName);
    const synced = (u: MqttUser) => u.waitFor((e) => e.type === 'synced', 12_000, `synced for ${String(u.client.options.clientId)}`);
    const caughtUp = (u: MqttUser) => (u.events.filter(isMessage()) as MessageEvent[]).map((m) => m.text);
    const laptopOpts = { clientId: `${bobName}/laptop`, clean: false };
    let laptop = await users.login(bobName, undefined, laptopOpts);
    await synced(laptop);
    await alice.request({ op: 'send', to: bobName, text: 'one' });
    const one = (await laptop.waitFor(isMessage('one'))) as MessageEvent;
    await laptop.request({ op: 'receipt', conv: one.conv, seq: one.seq, status: 'delivered' });
    await logout(laptop);

    // Bob's phone (no session) gets two more, and acknowledges them: Bob's delivered cursor passes them.
    const phone = await login(bobName);
    await synced(phone);
    for (const text of ['two', 'three']) await alice.request({ op: 'send', to: bobName, text });
    const three = (await phone.waitFor(isMessage('three'))) as MessageEvent;
    await phone.request({ op: 'receipt', conv: three.conv, seq: three.seq, status: 'delivered' });
    await logout(phone);

    // The laptop comes back: it gets them all the same, from where it stood itself.
    laptop = await users.login(bobName, undefined, laptopOpts);
    const sync = (await laptop.waitFor((e) => e.type === 'sync')) as SyncEvent;
    expect(sync.conversations.find((c) => c.conv === one.conv)).toMatchObject({ after: one.seq, mine: { delivered: three.seq } });
    await synced(laptop);
    expect(caughtUp(laptop)).toEqual(['two', 'three']);
    await laptop.request({ op: 'receipt', conv: three.conv, seq: three.seq, status: 'delivered' });
    await logout(laptop);

    // A device without a session starts at the user's cursor; the laptop, which has acknowledged them now, at its own.
    const tablet = await login(bobName);
    await synced(tablet);
    expect(caughtUp(tablet)).toEqual([]);
    laptop = await users.login(bobName, undefined, laptopOpts);
    await synced(laptop);
    expect(caughtUp(laptop)).toEqual([]);
  });

  it('presence: online while any connection is up, offline when the last drops, retained for subscribers', async () => {
    const [aliceName, bobName] = [await fresh('alice'), await fresh('bob')];
    const alice = await login(aliceName);
    const seen: PresenceEvent[] = [];
    const presence = new Promise<PresenceEvent[]>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`two presence changes of bob expected; got ${JSON.stringify(seen)}; alice connected: ${alice.client.connected}`)),
        20_000,
      );
      alice.client.on('message', (topic, payload) => {
        if (topic !== topics.presence(bobName)) return;
        seen.push(JSON.parse(payload.toString()) as PresenceEvent);
        if (seen.length === 2) {
          clearTimeout(timer);
          resolve(seen);
        }
      });
    });
    presence.catch(() => undefined);
    expect((await alice.client.subscribeAsync(topics.presence(bobName), { qos: 1 }))[0]!.qos).toBe(0);

    const phone = await login(bobName);
    const laptop = await login(bobName);
    // The server reports a connection to presence just after the CONNACK: wait for it, bounded.
    await expect
      .poll(async () => ((await alice.request({ op: 'who', user: bobName })) as OkReply).result, { timeout: 10_000 })
      .toMatchObject({ state: 'online' });
    await logout(phone);
    expect((await alice.request({ op: 'who', user: bobName })) as OkReply).toMatchObject({ result: { state: 'online' } });
    // A dropped connection (no DISCONNECT, no will) is noticed by the broker.
    (laptop.client.stream as unknown as { destroy(): void }).destroy();
    const events = await presence;
    // Bob had never been online, so nothing was retained yet: online once (two devices), offline once (the last one gone).
    expect(events.map((e) => e.state)).toEqual(['online', 'offline']);
    expect(events[1]!.lastSeen).toBeGreaterThanOrEqual(events[0]!.lastSeen!);

    // A late subscriber sees the current state at once (retained).
    const carol = await login(await fresh('carol'));
    const retained = new Promise<PresenceEvent>((resolve) =>
      carol.client.on('message', (topic, payload) => topic === topics.presence(bobName) && resolve(JSON.parse(payload.toString()) as PresenceEvent)),
    );
    await carol.client.subscribeAsync(topics.presence(bobName), { qos: 1 });
    expect(await retained).toMatchObject({ user: bobName, state: 'offline' });
  });

  it('retained presence outlives a restart of the server: a new subscriber still sees who was last seen when', async () => {
    const [aliceName, bobName] = [await fresh('alice'), await fresh('bob')];
    const alice = await login(aliceName);
    await logout(await login(bobName));
    await expect
      .poll(async () => ((await alice.request({ op: 'who', user: bobName })) as OkReply).result, { timeout: 10_000 })
      .toMatchObject({ state: 'offline', lastSeen: expect.any(Number) });
    const { lastSeen } = ((await alice.request({ op: 'who', user: bobName })) as OkReply).result as WhoResult;
    await logout(alice);

    await topo.restart();

    const carol = await login(await fresh('carol'));
    const retained = new Promise<PresenceEvent>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no retained presence of ${bobName} within 10 s`)), 10_000);
      carol.client.on('message', (topic, payload) => {
        if (topic !== topics.presence(bobName)) return;
        clearTimeout(timer);
        resolve(JSON.parse(payload.toString()) as PresenceEvent);
      });
    });
    await carol.client.subscribeAsync(topics.presence(bobName), { qos: 1 });
    expect(await retained).toEqual({ type: 'presence', user: bobName, state: 'offline', lastSeen });
  });

  it('a read on one device reaches the reader’s other devices; what reached one device is nothing to the others', async () => {
    const [aliceName, bobName] = [await fresh('alice'), await fresh('bob')];
    const alice = await login(aliceName);
    const phone = await users.login(bobName, undefined, { clientId: `${bobName}/phone` });
    const laptop = await users.login(bobName, undefined, { clientId: `${bobName}/laptop` });
    const { conv } = await okResult<SendResult>(alice.request({ op: 'send', to: bobName, text: 'read me' }));
    await laptop.waitFor(isMessage('read me'));
    await okResult(laptop.request({ op: 'receipt', conv, seq: 1, status: 'delivered' }));
    await okResult(laptop.request({ op: 'receipt', conv, seq: 1, status: 'read' }));
    await phone.waitFor((e) => e.type === 'receipt' && e.user === bobName && e.status === 'read' && e.seq === 1);
    await alice.waitFor((e) => e.type === 'receipt' && e.status === 'read' && e.seq === 1);
    // The read came after the delivered receipt: had that been sent to bob's devices, it would be here by now.
    expect(phone.events.filter((e) => e.type === 'receipt').map((e) => (e as { status: string }).status)).toEqual(['read']);
  });

  it('announces a receipt only when it moves past someone else’s messages, not past the reader’s own', async () => {
    const [aliceName, bobName] = [await fresh('alice'), await fresh('bob')];
    const [alice, bob] = [await login(aliceName), await login(bobName)];
    const { conv } = await okResult<SendResult>(alice.request({ op: 'send', to: bobName, text: 'mine' }));
    // Alice's client acknowledges her own message as it shows it: no news for Bob.
    expect(await alice.request({ op: 'receipt', conv, seq: 1, status: 'read' })).toMatchObject({ ok: true, result: { moved: true } });
    await okResult(bob.request({ op: 'send', to: aliceName, text: 'yours' }));
    expect(await alice.request({ op: 'receipt', conv, seq: 2, status: 'read' })).toMatchObject({ ok: true, result: { moved: true } });
    // Receipts reach Bob in the order Alice sent them: once the second is here, the first would have been.
    await bob.waitFor((e) => e.type === 'receipt' && e.seq === 2);
    expect(bob.events.filter((e) => e.type === 'receipt').map((e) => e.seq)).toEqual([2]);
  });

  it('a device logging in again with its client id while its old connection is still catching up takes over, and gets the whole backlog once, in order', async () => {
    const [aliceName, bobName] = [await fresh('alice'), await fresh('bob')];
    const alice = await login(aliceName);
    const n = 300;
    await sendMany(alice, bobName, n, 'backlog');
    let last = n;
    for (const clean of [false, true]) {
      // The same device (client id) twice: the second login takes over the first part way through its catch-up.
      const opts = { clientId: `${bobName}/tablet-${String(clean)}`, clean };
      const old = await users.login(bobName, undefined, opts);
      await old.waitForCount(isMessage(), 20, 20_000);
      const taken = new Promise<void>((resolve) => old.client.once('close', () => resolve()));
      const again = await users.login(bobName, undefined, opts);
      await again.waitFor((e) => e.type === 'synced', 30_000);
      await taken;
      const got = again.events.filter(isMessage()) as MessageEvent[];
      expect(got.map((m) => m.seq)).toEqual(Array.from({ length: last }, (_, i) => i + 1));
      // Live messages reach the new connection too.
      last = (await okResult<SendResult>(alice.request({ op: 'send', to: bobName, text: `live ${String(clean)}` }))).seq;
      await again.waitFor(isMessage(`live ${String(clean)}`));
      await logout(again);
    }
  }, 90_000);

  it('refuses bad receipts and presence queries without changing anyone\u2019s state', async () => {
    const [aliceName, bobName, malloryName] = [await fresh('alice'), await fresh('bob'), await fresh('mallory')];
    const alice = await login(aliceName);
    const sent = (await alice.request({ op: 'send', to: bobName, text: 'private' })) as OkReply;
    const { conv } = sent.result as SendResult;
    const mallory = await login(malloryName);
    expect(await mallory.request({ op: 'receipt', conv, seq: 1, status: 'read' })).toMatchObject({ ok: false, error: { code: 'not_member' } });
    expect(await mallory.request({ op: 'receipt', conv: 'dm:zzz:yyy', seq: 1, status: 'read' })).toMatchObject({ ok: false, error: { code: 'not_member' } });
    expect(await mallory.request({ op: 'who', user: 'no-such-user' })).toMatchObject({ ok: false, error: { code: 'unknown_user' } });
    expect(await mallory.request({ op: 'receipt', conv, seq: 0, status: 'read' })).toMatchObject({ ok: false, error: { code: 'bad_request' } });
    expect(await mallory.request({ op: 'receipt', conv, seq: 1, status: 'seen' })).toMatchObject({ ok: false, error: { code: 'bad_request' } });

    const bob = await login(bobName);
    expect(await bob.request({ op: 'receipt', conv, seq: 99, status: 'read' })).toMatchObject({ ok: false, error: { code: 'no_such_message' } });
    expect(await bob.request({ op: 'receipt', conv, seq: 1, status: 'read' })).toMatchObject({ ok: true, result: { moved: true } });
    // Backwards (or the same) is a no-op.
    expect(await bob.request({ op: 'receipt', conv, seq: 1, status: 'delivered' })).toMatchObject({
      ok: true,
      result: { moved: false, cursors: { delivered: 1, read: 1 } },
    });

    const history = (await alice.request({ op: 'history', with: bobName })) as OkReply;
    expect(history.result).toMatchObject({ peers: { [bobName]: { delivered: 1, read: 1 } } });
    // Only Bob's own receipt reached Alice; Mallory's attempts changed nothing.
    const receipts = alice.events.filter((e): e is ReceiptEvent => e.type === 'receipt');
    expect(receipts.every((r) => r.user === bobName)).toBe(true);
  });
});
