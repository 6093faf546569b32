import request from 'supertest';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { OkReply, SendResult } from '#libs/protocol';
import type { MqttUser } from '../support/mqtt-user.js';
import { TestUsers } from '../support/test-users.js';
import { startTopology, type Topology } from '../support/topology.js';

/** The distributed wiring under faults: a service that is down gives a clear error, and nothing it was asked is lost. */
describe('services as their own processes', () => {
  let topo: Topology;
  const users = new TestUsers(() => topo.urls(), 'distributed pass');

  beforeAll(async () => {
    topo = await startTopology('distributed', { PARLEY_RPC_TIMEOUT_MS: '1500' });
  });
  afterEach(() => users.closeAll());
  afterAll(() => topo?.dispose());

  it('answers unavailable (not a hang) while the receipts service is down, reports not ready, and works once it is back', async () => {
    const [a, b] = [await users.fresh('alice'), await users.fresh('bob')];
    const alice = await users.login(a);
    const bob = await users.login(b);
    const sent = (await alice.request({ op: 'send', to: b, text: 'receipt me' })) as OkReply;
    const { conv, seq } = sent.result as SendResult;
    const ready = await request(topo.server.httpUrl).get('/readyz');
    expect(ready.body).toMatchObject({ status: 'ready', checks: { 'service:presence': true, 'service:receipts': true, 'service:group': true } });

    await topo.stopService('receipts');
    const started = Date.now();
    expect(await bob.request({ op: 'receipt', conv, seq, status: 'read' })).toMatchObject({ ok: false, error: { code: 'unavailable' } });
    expect(Date.now() - started).toBeLessThan(5000);
    await expect
      .poll(async () => (await request(topo.server.httpUrl).get('/readyz')).body as unknown, { timeout: 10_000 })
      .toMatchObject({ status: 'not ready', checks: { 'service:receipts': false } });

    await topo.restartService('receipts', 'stop');
    expect(await bob.request({ op: 'receipt', conv, seq, status: 'read' }, 15_000)).toMatchObject({ ok: true, result: { cursors: { read: seq } } });
    await alice.waitFor((e) => e.type === 'receipt' && e.user === b);
    await expect.poll(async () => (await request(topo.server.httpUrl).get('/readyz')).status, { timeout: 10_000 }).toBe(200);
  });

  it('brings a user up to date once the receipts service is back, when it was down as they logged in', async () => {
    const [a, b] = [await users.fresh('alice'), await users.fresh('bob')];
    const alice = await users.login(a);
    for (const text of ['first while away', 'second while away'])
      expect(await alice.request({ op: 'send', to: b, text })).toMatchObject({ ok: true, result: { status: 'accepted' } });
    await topo.stopService('receipts');
    // The catch-up needs bob's cursors: it cannot start yet. Live messages still come.
    const bob = await users.login(b);
    expect(await alice.request({ op: 'send', to: b, text: 'live meanwhile' })).toMatchObject({ ok: true });
    await bob.waitFor((e) => e.type === 'message' && e.text === 'live meanwhile');
    expect(bob.events.some((e) => e.type === 'sync')).toBe(false);
    await topo.restartService('receipts', 'stop');
    // The gateway tries again: the sync and the whole backlog come on the same connection, without a reconnect.
    expect(await bob.waitFor((e) => e.type === 'synced', 30_000)).toMatchObject({ messages: 3 });
    const texts = bob.events.filter((e) => e.type === 'message').map((e) => (e as { text: string }).text);
    expect(texts.slice(1)).toEqual(['first while away', 'second while away', 'live meanwhile']);
  });

  it('does not carry out, once its service is back, a request it answered unavailable; the same id then does it once', async () => {
    const [a, b] = [await users.fresh('alice'), await users.fresh('bob')];
    const alice = await users.login(a);
    const g = (await alice.request({ op: 'group.create', name: 'too late', members: [b] })) as OkReply;
    const group = (g.result as { id: string }).id;
    await topo.stopService('group');
    const late = { op: 'send', id: 'late-post-1', group, text: 'posted while the group service was down' };
    expect(await alice.request(late)).toMatchObject({ ok: false, error: { code: 'unavailable' } });
    await topo.restartService('group', 'stop');
    // The call waited in the service's stream. Once the service has taken and settled everything there, it has found
    // its caller gone, and done nothing.
    const queued = async () => {
      const text = (await request(topo.server.httpUrl).get('/metrics')).text;
      return ['waiting', 'pending'].map((state) => new RegExp(`parley_rpc_queue_depth\\{service="group",state="${state}"\\} (\\d+)`).exec(text)?.[1]);
    };
    await expect.poll(queued, { timeout: 15_000 }).toEqual(['0', '0']);
    const history = async () => ((await alice.request({ op: 'history', group }, 15_000)) as OkReply).result as { messages: { id: string }[] };
    expect((await history()).messages.map((m) => m.id)).not.toContain('late-post-1');
    // Sent again with the same id (from a new connection, whose replies are its own): done, once.
    const again = await users.login(a);
    expect(await again.request(late, 15_000)).toMatchObject({ ok: true, result: { status: 'accepted' } });
    expect((await history()).messages.filter((m) => m.id === 'late-post-1')).toHaveLength(1);
  });

  it('loses no presence change made while the presence service was killed', async () => {
    const carol = await users.fresh('carol');
    const dave = await users.login(await users.fresh('dave'));
    await topo.restartService('presence', 'kill9').then(() => undefined);
    await topo.stopService('presence');
    // Carol connects while no presence service runs: the gateway's report waits in the stream.
    const c: MqttUser = await users.login(carol);
    expect(await dave.request({ op: 'who', user: carol })).toMatchObject({ ok: false, error: { code: 'unavailable' } });
    // A message is stored and delivered all the same: accepted, only without the recipient's presence.
    const sent = (await dave.request({ op: 'send', to: carol, text: 'while presence is away' }, 15_000)) as OkReply;
    expect(sent).toMatchObject({ ok: true, result: { status: 'accepted' } });
    expect((sent.result as SendResult).recipient).toBeUndefined();
    await c.waitFor((e) => e.type === 'message' && e.text === 'while presence is away');
    await topo.restartService('presence', 'stop');
    await expect
      .poll(async () => ((await dave.request({ op: 'who', user: carol }, 15_000)) as OkReply).result, { timeout: 15_000 })
      .toMatchObject({ state: 'online' });
    await users.logout(c);
    await expect
      .poll(async () => ((await dave.request({ op: 'who', user: carol })) as OkReply).result, { timeout: 15_000 })
      .toMatchObject({ state: 'offline' });
  });

  it('serves health, readiness and metrics from each service process', async () => {
    for (const [name, s] of topo.services) {
      await request(s.httpUrl).get('/healthz').expect(200);
      const ready = await request(s.httpUrl).get('/readyz').expect(200);
      expect(ready.body, name).toMatchObject({ status: 'ready', checks: { rpc: true } });
      expect((await request(s.httpUrl).get('/metrics').expect(200)).text).toContain('parley_process_');
    }
  });
});

describe('stopping while Redis is gone', () => {
  it('every process stops cleanly on SIGTERM, without waiting for Redis', async () => {
    const topo = await startTopology('distributed');
    try {
      await topo.redis!.kill9();
      const all = [topo.server, ...topo.services.values()];
      await Promise.all(all.map((p) => p.stop()));
      // stop() sends SIGTERM and only resorts to SIGKILL after 10 s: a clean exit is code 0, not a signal.
      for (const p of all) expect({ code: p.process.exitCode, signal: p.process.signalCode }).toEqual({ code: 0, signal: null });
    } finally {
      await topo.dispose();
    }
  });
});
