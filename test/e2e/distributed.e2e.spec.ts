import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import request from 'supertest';
import { afterAll, afterEach, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import type { OkReply, SendResult, WhoResult } from '#libs/protocol';
import { CliProcess, runCli } from '../support/cli.js';
import { connectClient, endClient, MqttUser, registerUser } from '../support/mqtt-user.js';
import { sample, scrape } from '../support/prometheus.js';
import { TestUsers } from '../support/test-users.js';
import { startTopology, type Topology } from '../support/topology.js';

/** The distributed wiring under faults: a service that is down gives a clear error, and nothing it was asked is lost. */
describe('services as their own processes', () => {
  let topo: Topology;
  const users = new TestUsers(() => topo.urls(), 'distributed pass');

  beforeAll(async () => {
    // Uploads at 1 MiB/s past a small burst: a file of a few MiB is still on its way when a test kills its service.
    topo = await startTopology('distributed', { PARLEY_RPC_TIMEOUT_MS: '1500', PARLEY_TRANSFER_RATE: '1048576', PARLEY_TRANSFER_BURST: '262144' });
  });
  afterEach(() => users.closeAll());
  afterAll(() => topo?.dispose());

  it('answers unavailable (not a hang) while the receipts service is down, reports it degraded (still ready), and works once it is back', async () => {
    const [a, b] = [await users.fresh('alice'), await users.fresh('bob')];
    const alice = await users.login(a);
    const bob = await users.login(b);
    const sent = (await alice.request({ op: 'send', to: b, text: 'receipt me' })) as OkReply;
    const { conv, seq } = sent.result as SendResult;
    const ready = await request(topo.server.httpUrl).get('/readyz');
    expect(ready.body).toMatchObject({ status: 'ready', checks: { 'service:presence': true, 'service:receipts': true, 'service:group': true }, degraded: [] });

    await topo.stopService('receipts');
    const started = Date.now();
    expect(await bob.request({ op: 'receipt', conv, seq, status: 'read' })).toMatchObject({ ok: false, error: { code: 'unavailable' } });
    expect(Date.now() - started).toBeLessThan(5000);
    // Ready still: every gateway shares the service, and 1:1 messages go on (a load balancer that took the gateways out
    // would stop those too). The body says what is missing.
    await expect
      .poll(async () => (await request(topo.server.httpUrl).get('/readyz')).body as unknown, { timeout: 10_000 })
      .toMatchObject({ status: 'ready', checks: { 'service:receipts': false }, degraded: ['service:receipts'] });
    expect((await request(topo.server.httpUrl).get('/readyz')).status).toBe(200);
    const during = (await alice.request({ op: 'send', to: b, text: 'while receipts is away' })) as OkReply;
    expect(during).toMatchObject({ ok: true, result: { status: 'accepted' } });
    await bob.waitFor((e) => e.type === 'message' && e.text === 'while receipts is away');

    await topo.restartService('receipts', 'stop');
    expect(await bob.request({ op: 'receipt', conv, seq, status: 'read' }, 15_000)).toMatchObject({ ok: true, result: { cursors: { read: seq } } });
    await alice.waitFor((e) => e.type === 'receipt' && e.user === b);
    await expect
      .poll(async () => ((await request(topo.server.httpUrl).get('/readyz')).body as { degraded: string[] }).degraded, { timeout: 10_000 })
      .toEqual([]);
  });

  it('brings a user up to date once the receipts service is back, when it was down as they logged in, and tells them why it is late', async () => {
    const [a, b, c] = [await users.fresh('alice'), await users.fresh('bob'), await users.fresh('carol')];
    const alice = await users.login(a);
    for (const text of ['first while away', 'second while away'])
      expect(await alice.request({ op: 'send', to: b, text })).toMatchObject({ ok: true, result: { status: 'accepted' } });
    expect(await alice.request({ op: 'send', to: c, text: 'for carol while away' })).toMatchObject({ ok: true });
    await topo.stopService('receipts');
    // The catch-up needs bob's cursors: it cannot start yet, and the server says why and when it tries again. Live
    // messages still come.
    const bob = await users.login(b);
    const delayed = await bob.waitFor((e) => e.type === 'sync_delayed', 15_000);
    expect(delayed).toMatchObject({ type: 'sync_delayed', error: { code: 'unavailable', message: expect.stringContaining('receipts service') as string } });
    expect((delayed as { retryInMs: number }).retryInMs).toBeGreaterThan(0);
    // The CLI tells a person so, once.
    const listen = CliProcess.start(['listen'], { PARLEY_SERVER: topo.urls()[0]!, PARLEY_USER: c, PARLEY_PASSWORD: users.password });
    onTestFinished(() => void listen.stop());
    await listen.waitForLine(
      /^\* your missed messages have not come yet: the receipts service .*; the server tries again in [\d.]+ s, and they will come then$/,
      15_000,
    );
    expect(await alice.request({ op: 'send', to: b, text: 'live meanwhile' })).toMatchObject({ ok: true });
    await bob.waitFor((e) => e.type === 'message' && e.text === 'live meanwhile');
    expect(bob.events.some((e) => e.type === 'sync')).toBe(false);
    await topo.restartService('receipts', 'stop');
    await listen.waitForLine(/^\* caught up: what you missed is shown above$/, 30_000);
    expect(await listen.stop()).toBe(0);
    expect(listen.lines.filter((l) => l.includes('for carol while away'))).toHaveLength(1);
    expect(listen.lines.filter((l) => l.startsWith('* your missed messages'))).toHaveLength(1);
    // The gateway tries again: the sync and the backlog come on the same connection, without a reconnect. (Whether the
    // backlog also holds the live message depends on whether the attempt that succeeded began before or after it.)
    await bob.waitFor((e) => e.type === 'synced', 30_000);
    const afterSync = bob.events.slice(bob.events.findIndex((e) => e.type === 'sync'));
    const texts = (events: typeof bob.events) => events.filter((e) => e.type === 'message').map((e) => (e as { text: string }).text);
    expect(texts(afterSync).slice(0, 2)).toEqual(['first while away', 'second while away']);
    expect(new Set(texts(bob.events))).toEqual(new Set(['first while away', 'second while away', 'live meanwhile']));
  });

  it('parley file send rides out a file-offer service killed mid-upload: chunks refused as out of order meanwhile resume from where the server stands', async () => {
    const [a, b] = [await users.fresh('alice'), await users.fresh('bob')];
    const dir = mkdtempSync(join(tmpdir(), 'parley-upload-'));
    try {
      const data = randomBytes(4 * 1024 * 1024 + 123);
      writeFileSync(join(dir, 'big.bin'), data);
      const as = (user: string) => ({ PARLEY_SERVER: topo.urls()[0]!, PARLEY_USER: user, PARLEY_PASSWORD: users.password });
      const send = CliProcess.start(['--json', 'file', 'send', b, join(dir, 'big.bin')], as(a));
      await send.waitForLine((l) => l.startsWith('{') && (JSON.parse(l) as { type: string; bytes?: number }).bytes! > 0, 20_000);
      await topo.services.get('file-offer')!.kill9();
      // The gateway has answered a chunk unavailable (the client retries it; the chunks behind it were on their way).
      const unavailable = async () =>
        sample(await scrape(topo.server.httpUrl), 'parley_rpc_call_duration_seconds_count', {
          service: 'file-offer',
          method: 'putChunk',
          outcome: 'unavailable',
        }) ?? 0;
      await expect.poll(unavailable, { timeout: 15_000 }).toBeGreaterThan(0);
      await topo.restartService('file-offer', 'stop');
      expect(await send.exited, send.lines.join('\n')).toBe(0);
      expect(send.json().filter((l) => l.type === 'error')).toEqual([]);
      const offer = (send.json().find((l) => l.type === 'offered')?.offer as { id: string } | undefined)?.id;
      expect(offer).toBeDefined();
      const got = await runCli(['--json', 'file', 'accept', offer!, '--to', dir], as(b), { timeoutMs: 60_000 });
      expect(got.code, got.stdout + got.stderr).toBe(0);
      expect(readFileSync(join(dir, 'big (1).bin')).equals(data)).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);

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

  it('loses no presence change made while the presence service was killed, and answers sends meanwhile without waiting for it', async () => {
    const carol = await users.fresh('carol');
    const daveName = await users.fresh('dave');
    const dave = await users.login(daveName);
    // A gateway whose calls wait (nearly) for ever: a send whose reply waited for the presence read's RPC timeout would
    // not be answered within the request's wait below.
    const patient = await topo.addGateway('gw-patient', { PARLEY_RPC_TIMEOUT_MS: '600000' });
    const daveThere = await users.login(daveName, patient.mqttUrl);
    await topo.restartService('presence', 'kill9').then(() => undefined);
    await topo.stopService('presence');
    // Carol connects while no presence service runs: the gateway's report waits in the stream.
    const c: MqttUser = await users.login(carol);
    expect(await dave.request({ op: 'who', user: carol })).toMatchObject({ ok: false, error: { code: 'unavailable' } });
    // A message is stored and delivered all the same, and answered at once: accepted, only without the recipient's
    // presence. On both gateways, whatever their RPC timeout.
    for (const [sender, text] of [
      [dave, 'while presence is away'],
      [daveThere, 'while presence is away, via a patient gateway'],
    ] as const) {
      const sent = (await sender.request({ op: 'send', to: carol, text }, 10_000)) as OkReply;
      expect(sent).toMatchObject({ ok: true, result: { status: 'accepted' } });
      expect((sent.result as SendResult).recipient).toBeUndefined();
      await c.waitFor((e) => e.type === 'message' && e.text === text);
    }
    // A burst of sends pipelined on one connection: each waits for presence on its own (a second at most), not one
    // after another (before, the tenth was answered ten seconds on).
    const burst = Array.from({ length: 10 }, (_, i) => `burst ${i} while presence is away`);
    const answers = await Promise.all(burst.map((text) => daveThere.request({ op: 'send', to: carol, text }, 5_000)));
    expect(answers.map((a) => (a as OkReply).ok)).toEqual(burst.map(() => true));
    expect(answers.map((a) => ((a as OkReply).result as SendResult).seq)).toEqual(
      [...answers.map((a) => ((a as OkReply).result as SendResult).seq)].sort((x, y) => x - y),
    );
    for (const text of burst) await c.waitFor((e) => e.type === 'message' && e.text === text);
    await topo.restartService('presence', 'stop');
    await expect
      .poll(async () => ((await dave.request({ op: 'who', user: carol }, 15_000)) as OkReply).result, { timeout: 15_000 })
      .toMatchObject({ state: 'online' });
    await users.logout(c);
    await expect
      .poll(async () => ((await dave.request({ op: 'who', user: carol })) as OkReply).result, { timeout: 15_000 })
      .toMatchObject({ state: 'offline' });
  });

  it('a gateway stopped while presence is away leaves its users for another gateway to close, at its stop', async () => {
    const quick = { PARLEY_GATEWAY_DEAD_AFTER_MS: '1500' };
    const sweeper = await topo.addGateway('gw-sweeper', quick);
    // Its calls expire 300 ms after they are made, so none is left for the presence service that starts after it stopped.
    const leaving = await topo.addGateway('gw-leaving', { ...quick, PARLEY_RPC_TIMEOUT_MS: '300' });
    const [erin, frank] = [await users.fresh('erin'), await users.fresh('frank')];
    await users.login(erin, leaving.mqttUrl);
    const watcher = await users.login(frank, sweeper.mqttUrl);
    const who = async () => ((await watcher.request({ op: 'who', user: erin }, 15_000)) as OkReply).result as WhoResult;
    await expect.poll(who, { timeout: 10_000 }).toMatchObject({ state: 'online' });
    await topo.stopService('presence');
    // A clean stop, whose report of Erin's connection's end cannot reach presence.
    const stopping = Date.now();
    await leaving.stop();
    const stopped = Date.now();
    await topo.restartService('presence', 'stop');
    // The stopped gateway stayed in the roster: another takes it for dead and closes its connections, at its last beat.
    await expect.poll(who, { timeout: 15_000, interval: 300 }).toMatchObject({ state: 'offline' });
    const { lastSeen } = await who();
    expect(lastSeen).toBeGreaterThanOrEqual(stopping);
    expect(lastSeen).toBeLessThanOrEqual(stopped);
    // Its quick judgement of the dead would sweep the other gateways, which beat more slowly, for the rest of the file.
    await users.logout(watcher);
    await sweeper.stop();
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

/** Presence reports that failed while Redis was away are not lost: the gateway brings its records back in line. */
describe('presence across a Redis restart', () => {
  let topo: Topology;
  const users = new TestUsers(() => topo.urls(), 'redis restart pass');

  beforeAll(async () => {
    topo = await startTopology('distributed', { PARLEY_RPC_TIMEOUT_MS: '1500' });
  });
  afterEach(() => users.closeAll());
  afterAll(() => topo?.dispose());

  it('a user whose connection ended while Redis was down goes offline once it is back', async () => {
    const [a, b] = [await users.fresh('alice'), await users.fresh('bob')];
    // A raw client of a device: presence counts it (not a quiet one).
    const phone = await connectClient(topo.server.mqttUrl, { username: b, password: users.password, clientId: `${b}/phone` });
    const alice = await users.login(a);
    await expect.poll(async () => ((await alice.request({ op: 'who', user: b })) as OkReply).result, { timeout: 10_000 }).toMatchObject({ state: 'online' });
    // Alice leaves while Redis is up: the only end the gateway cannot report is the phone's (failures alike are logged
    // once per 10 s, so one line is all that says so).
    await alice.close();
    const conns = (user: string) => withRedis((redis) => redis.scard(`${topo.env.PARLEY_REDIS_PREFIX}presence:conns:${user}`));
    await expect.poll(() => conns(a), { timeout: 10_000 }).toBe(0);
    const failuresBefore = reportFailures();

    await topo.redis!.shutdown();
    // The gateway closes its clients when it loses the backplane; bob's phone goes either way, while Redis is down.
    await endClient(phone);
    await expect.poll(reportFailures, { timeout: 10_000 }).toBeGreaterThanOrEqual(failuresBefore + 1);
    await topo.redis!.restart();

    const watcher = await loginWhenBack(a);
    await expect
      .poll(async () => ((await watcher.request({ op: 'who', user: b })) as OkReply).result, { timeout: 20_000, interval: 250 })
      .toMatchObject({ state: 'offline' });
    // And Redis holds no connection of bob's.
    expect(await conns(b)).toBe(0);
    // A user who connects now is shown online as usual.
    await users.login(b);
    await expect.poll(async () => ((await watcher.request({ op: 'who', user: b })) as OkReply).result, { timeout: 10_000 }).toMatchObject({ state: 'online' });
  });

  /** Runs `read` on a connection of its own to the topology's Redis. */
  async function withRedis<T>(read: (redis: Redis) => Promise<T>): Promise<T> {
    const redis = new Redis(topo.redis!.url);
    try {
      return await read(redis);
    } finally {
      redis.disconnect();
    }
  }

  function reportFailures(): number {
    return topo.server.output.filter((l) => l.includes('presence_report_failed')).length;
  }

  /** Logs in once the gateway takes logins again (its account store is back). */
  async function loginWhenBack(name: string): Promise<MqttUser> {
    let user: MqttUser | undefined;
    await expect.poll(async () => (user ??= await users.login(name).catch(() => undefined)), { timeout: 15_000, interval: 250 }).toBeDefined();
    return user!;
  }
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

/**
 * A Redis that comes back empty (restarted without persistence): what the gateway remembered of its data is not taken
 * as still there. The accounts are gone, as the README says; a message accepted after that is delivered.
 */
describe('after Redis lost its data', () => {
  let topo: Topology;
  const users = new TestUsers(() => topo.urls(), 'redis wipe pass');

  beforeAll(async () => {
    topo = await startTopology('redis');
  });
  afterEach(() => users.closeAll());
  afterAll(() => topo?.dispose());

  it('says in /readyz when Redis takes no writes (full at maxmemory), without taking the gateway out', async () => {
    // Ready first: a gateway reports `listening` before its subscription to the other gateways is up (`backplane`).
    await expect.poll(async () => (await request(topo.server.httpUrl).get('/readyz')).status, { timeout: 10_000 }).toBe(200);
    const redis = new Redis(topo.redis!.url);
    try {
      await redis.config('SET', 'maxmemory', '1');
      const full = await request(topo.server.httpUrl).get('/readyz').expect(200);
      expect(full.body).toMatchObject({ status: 'ready', checks: { storage: true, 'storage:writes': false }, degraded: ['storage:writes'] });
    } finally {
      await redis.config('SET', 'maxmemory', '0');
      redis.disconnect();
    }
    const ready = await request(topo.server.httpUrl).get('/readyz').expect(200);
    expect(ready.body).toMatchObject({ checks: { 'storage:writes': true }, degraded: [] });
  });

  it('indexes a conversation again, refuses accounts it lost, and delivers what it accepts afterwards', async () => {
    const [a, b, c] = [await users.fresh('alice'), await users.fresh('bob'), await users.fresh('carol')];
    const alice = await users.login(a);
    // The gateway now knows alice's and carol's passwords (a registration is remembered as a login), that bob and carol exist, and that alice and bob's conversation is indexed.
    expect(await alice.request({ op: 'send', to: b, text: 'before' })).toMatchObject({ ok: true });
    expect(await alice.request({ op: 'send', to: c, text: 'before' })).toMatchObject({ ok: true });
    await users.closeAll();

    await topo.redis!.kill9();
    await topo.redis!.restart();

    // Only alice and bob register again; carol's account is gone.
    const url = topo.urls()[0]!;
    await expect.poll(async () => (await registerUser(url, a, users.password).catch(() => undefined))?.ok, { timeout: 15_000, interval: 250 }).toBe(true);
    expect(await registerUser(url, b, users.password)).toMatchObject({ ok: true });
    const again = await users.login(a);
    expect(await again.request({ op: 'send', to: c, text: 'to no one' })).toMatchObject({ ok: false, error: { code: 'unknown_user' } });
    expect(await again.request({ op: 'send', to: b, text: 'after' })).toMatchObject({ ok: true, result: { seq: 1 } });
    await expect(MqttUser.connect(url, c, users.password)).rejects.toThrow();

    // bob's catch-up finds the conversation, and the message in it.
    const bob = await users.login(b);
    await bob.waitFor((e) => e.type === 'message' && e.text === 'after');
  });

  it('notices a Redis emptied behind a kept connection (FLUSHALL) within seconds, as one that restarted empty', async () => {
    const [a, b, c] = [await users.fresh('alice'), await users.fresh('bob'), await users.fresh('carol')];
    const alice = await users.login(a);
    expect(await alice.request({ op: 'send', to: b, text: 'before' })).toMatchObject({ ok: true });
    expect(await alice.request({ op: 'send', to: c, text: 'before' })).toMatchObject({ ok: true });

    const redis = new Redis(topo.redis!.url);
    try {
      await redis.flushall();
    } finally {
      redis.disconnect();
    }
    // alice stays connected throughout, as does the gateway's own connection to Redis: nothing was dropped.
    const url = topo.urls()[0]!;
    expect(await registerUser(url, a, users.password)).toMatchObject({ ok: true });
    expect(await registerUser(url, b, users.password)).toMatchObject({ ok: true });
    // Until the gateway notices, it still takes carol for a user it knows; then she is refused.
    await expect
      .poll(async () => ((await alice.request({ op: 'send', to: c, text: 'to no one' })) as { error?: { code: string } }).error?.code, {
        timeout: 10_000,
        interval: 250,
      })
      .toBe('unknown_user');
    expect(await alice.request({ op: 'send', to: b, text: 'after' })).toMatchObject({ ok: true, result: { seq: 1 } });
    await expect(MqttUser.connect(url, c, users.password)).rejects.toThrow();

    const bob = await users.login(b);
    await bob.waitFor((e) => e.type === 'message' && e.text === 'after');
  });
});
