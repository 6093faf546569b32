import request from 'supertest';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { OkReply, SendResult } from '#libs/protocol';
import type { ParleyServer } from '../support/parley-server.js';
import { sample, scrape } from '../support/prometheus.js';
import { TestUsers } from '../support/test-users.js';
import { startTopology, type Topology } from '../support/topology.js';

/**
 * What an operator watches, from the real distributed processes: every app's
 * /healthz, /readyz (503 while Redis is away) and
 * Prometheus /metrics (connections, messages accepted and delivered, request
 * and RPC latencies, queue depths), and JSON log lines.
 */
describe('health, readiness and metrics of the distributed apps', () => {
  let topo: Topology;
  const users = new TestUsers(() => topo.urls(), 'observability pass');
  const gateway = () => topo.server.httpUrl;
  const service = (name: string) => topo.services.get(name)!.httpUrl;
  const rpcCalls = (text: string, service: string, method: string, outcome: string) =>
    sample(text, 'parley_rpc_call_duration_seconds_count', { service, method, outcome }) ?? 0;

  beforeAll(async () => {
    topo = await startTopology('distributed', { PARLEY_RPC_TIMEOUT_MS: '1500' });
  });
  afterEach(() => users.closeAll());
  afterAll(() => topo?.dispose());

  it('counts connections, accepted and delivered messages, and the latency of requests and of RPC calls on both sides', async () => {
    const [a, b] = [await users.fresh('alice'), await users.fresh('bob')];
    const alice = await users.login(a);
    const before = await scrape(gateway());
    const beforeReceipts = await scrape(service('receipts'));

    // To bob while he is offline: delivered from the backlog when he logs in; then one live.
    const first = (await alice.request({ op: 'send', to: b, text: 'while you were away' })) as OkReply;
    const bob = await users.login(b);
    await bob.waitFor((e) => e.type === 'synced');
    expect(await alice.request({ op: 'send', to: b, text: 'now live' })).toMatchObject({ ok: true });
    await bob.waitFor((e) => e.type === 'message' && e.text === 'now live');
    const { conv, seq } = first.result as SendResult;
    expect(await bob.request({ op: 'receipt', conv, seq, status: 'read' })).toMatchObject({ ok: true });

    const delta = (text: string, name: string, labels: Record<string, string> = {}) => (sample(text, name, labels) ?? 0) - (sample(before, name, labels) ?? 0);
    await expect.poll(async () => delta(await scrape(gateway()), 'parley_messages_delivered_total', { path: 'sync' })).toBeGreaterThanOrEqual(1);
    const after = await scrape(gateway());
    expect(sample(after, 'parley_mqtt_connections')).toBeGreaterThanOrEqual(2);
    expect(delta(after, 'parley_messages_accepted_total')).toBe(2);
    // Each message went live to both members' inboxes (the sender's other devices see it too), whoever was connected.
    expect(delta(after, 'parley_messages_delivered_total', { path: 'live' })).toBe(4);
    expect(delta(after, 'parley_request_duration_seconds_count', { op: 'send' })).toBe(2);
    expect(sample(after, 'parley_requests_in_progress')).toBe(0);
    expect(rpcCalls(after, 'receipts', 'record', 'ok') - rpcCalls(before, 'receipts', 'record', 'ok')).toBe(1);
    expect(rpcCalls(after, 'presence', 'stateOf', 'ok') - rpcCalls(before, 'presence', 'stateOf', 'ok')).toBeGreaterThanOrEqual(2);
    expect(after).toMatch(/^parley_rpc_call_duration_seconds_bucket\{le="0\.25",service="receipts",method="record",outcome="ok"\} \d+$/m);
    // Every remote service's queue is empty once its calls are answered.
    for (const name of ['presence', 'receipts', 'group']) {
      expect(sample(after, 'parley_rpc_queue_depth', { service: name, state: 'waiting' }), name).toBe(0);
      expect(sample(after, 'parley_rpc_queue_depth', { service: name, state: 'pending' }), name).toBe(0);
    }

    const receipts = await scrape(service('receipts'));
    const handled = (text: string) => sample(text, 'parley_rpc_handle_duration_seconds_count', { service: 'receipts', method: 'record', outcome: 'ok' }) ?? 0;
    expect(handled(receipts) - handled(beforeReceipts)).toBe(1);
    expect(sample(receipts, 'parley_rpc_queue_depth', { service: 'receipts', state: 'waiting' })).toBe(0);
  });

  it('shows a call waiting in the queue of a service that is down, and the call that gave up by its outcome', async () => {
    const [a, b] = [await users.fresh('carol'), await users.fresh('dave')];
    const carol = await users.login(a);
    const dave = await users.login(b);
    const sent = (await carol.request({ op: 'send', to: b, text: 'read me later' })) as OkReply;
    const { conv, seq } = sent.result as SendResult;
    const before = await scrape(gateway());

    await topo.stopService('receipts');
    expect(await dave.request({ op: 'receipt', conv, seq, status: 'read' })).toMatchObject({ ok: false, error: { code: 'unavailable' } });
    const during = await scrape(gateway());
    expect(sample(during, 'parley_rpc_queue_depth', { service: 'receipts', state: 'waiting' })).toBe(1);
    expect(rpcCalls(during, 'receipts', 'record', 'unavailable') - rpcCalls(before, 'receipts', 'record', 'unavailable')).toBe(1);
    expect(sample(during, 'parley_requests_total', { op: 'receipt', outcome: 'unavailable' })).toBeGreaterThanOrEqual(1);

    // Back: the new process takes the call that waited, finds its caller gone (dave was told `unavailable`), settles it
    // without doing it, and the queue drains.
    await topo.restartService('receipts', 'stop');
    await expect
      .poll(
        async () =>
          sample(await scrape(service('receipts')), 'parley_rpc_handle_duration_seconds_count', {
            service: 'receipts',
            method: 'record',
            outcome: 'unavailable',
          }),
        {
          timeout: 15_000,
        },
      )
      .toBe(1);
    const after = await scrape(gateway());
    expect(sample(after, 'parley_rpc_queue_depth', { service: 'receipts', state: 'waiting' })).toBe(0);
    expect(sample(after, 'parley_rpc_queue_depth', { service: 'receipts', state: 'pending' })).toBe(0);
  });

  it('logs JSON lines, each with a level and a message', () => {
    const processes: [string, ParleyServer][] = [['gateway', topo.server], ...topo.services];
    for (const [name, p] of processes) {
      expect(p.output.length, name).toBeGreaterThan(0);
      for (const line of p.output) {
        const record = JSON.parse(line) as Record<string, unknown>;
        expect(record, `${name}: ${line}`).toHaveProperty('level');
        expect(record, `${name}: ${line}`).toHaveProperty('message');
      }
    }
  });

  it('answers 503 on /readyz of every app while Redis is unreachable, stays alive on /healthz, and is ready again once Redis is back', async () => {
    const urls = [gateway(), ...[...topo.services.keys()].map(service)];
    for (const url of urls) await request(url).get('/readyz').expect(200);

    await topo.redis!.kill9();
    for (const url of urls) {
      await expect.poll(async () => (await request(url).get('/readyz')).status, { timeout: 15_000 }).toBe(503);
      await request(url).get('/healthz').expect(200, { status: 'ok' });
      // Metrics still answer; the queue depths, which need Redis, are left out rather than stale.
      expect(sample(await scrape(url), 'parley_rpc_queue_depth', { service: 'receipts', state: 'pending' })).toBeUndefined();
    }
    expect((await request(gateway()).get('/readyz')).body).toMatchObject({ status: 'not ready', checks: { storage: false } });
    expect((await request(service('presence')).get('/readyz')).body).toMatchObject({ status: 'not ready', checks: { storage: false } });

    await topo.redis!.restart();
    for (const url of urls) await expect.poll(async () => (await request(url).get('/readyz')).status, { timeout: 20_000 }).toBe(200);
  });
});
