import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BEHIND_LOAD_BALANCER, startLoadBalancer, type LoadBalancer } from '../support/load-balancer.js';
import { MqttUser } from '../support/mqtt-user.js';
import { startParley, type ParleyServer } from '../support/parley-server.js';
import { sample, scrape } from '../support/prometheus.js';
import { startRedis, type RedisServer } from '../support/redis-server.js';
import { startTcpGate, type TcpGate } from '../support/tcp-gate.js';
import { TestUsers } from '../support/test-users.js';
import { droppedConnections } from '../support/proxy-protocol.js';
import { connectPacket, PINGREQ, RawClient } from '../support/raw-mqtt.js';

/**
 * docker-compose.yml's load balancer, deploy/haproxy.cfg, run for real in
 * front of two gateways on one Redis (only its addresses rewritten to
 * loopback): it takes IPv4 and IPv6 clients on one port, sends them only to a
 * gateway whose /readyz is 200, and when a gateway dies its clients come back
 * through the same address to the other and catch up.
 */
describe('deploy/haproxy.cfg in front of two gateways', () => {
  let redis: RedisServer;
  let ready: ParleyServer;
  let waiting: ParleyServer;
  let gate: TcpGate;
  let lb: LoadBalancer;
  let env: Record<string, string>;
  const open: MqttUser[] = [];
  const users = new TestUsers(() => [lb.url, lb.url6], 'balanced password');
  const connectionsOf = async (g: ParleyServer) => sample(await scrape(g.httpUrl), 'parley_mqtt_connections') ?? 0;

  beforeAll(async () => {
    redis = await startRedis({ appendonly: true });
    env = { ...BEHIND_LOAD_BALANCER, REDIS_URL: redis.url, PARLEY_REDIS_PREFIX: `lb${randomBytes(4).toString('hex')}:` };
    // A complete node on Redis, and one whose way to the same Redis is shut for now: not ready.
    gate = await startTcpGate({ host: '127.0.0.1', port: redis.port });
    ready = await startParley({ env: { ...env, PARLEY_GATEWAY_ID: 'gw-ready' } });
    waiting = await startParley({ env: { ...env, REDIS_URL: gate.url, PARLEY_GATEWAY_ID: 'gw-waiting' } });
    lb = await startLoadBalancer([ready, waiting]);
  });
  afterAll(async () => {
    await Promise.all(open.map((u) => u.close()));
    await lb?.stop();
    await Promise.all([ready?.dispose(), waiting?.dispose()]);
    await gate?.close();
    await redis?.stop();
  });

  it('takes IPv4 and IPv6 clients on one port and sends them only to the ready gateway', async () => {
    await lb.waitForState('gw1', 'DOWN');
    const names = [await users.fresh('ann'), await users.fresh('ben'), await users.fresh('cat'), await users.fresh('dan')];
    for (const [i, name] of names.entries()) open.push(await MqttUser.connect(i % 2 ? lb.url6 : lb.url, name, users.password));
    expect(await connectionsOf(ready)).toBe(4);
    expect(await connectionsOf(waiting)).toBe(0);
  });

  it('sends new clients to a gateway too once it becomes ready', async () => {
    gate.open();
    await lb.waitForState('gw1', 'UP');
    // leastconn: the gateway with no connection gets the next one.
    open.push(await MqttUser.connect(lb.url, await users.fresh('eve'), users.password));
    expect(await connectionsOf(waiting)).toBe(1);
  });

  it('brings the clients of a gateway that dies back through the same address to the other, where they catch up', async () => {
    const [alice, bob] = [await users.fresh('alice'), await users.fresh('bob')];
    const gateways = [ready, waiting];
    const before = await Promise.all(gateways.map(connectionsOf));
    const bobClient = await MqttUser.connect(lb.url, bob, users.password);
    open.push(bobClient);
    const after = await Promise.all(gateways.map(connectionsOf));
    const bobsGateway = after.findIndex((n, i) => n > before[i]!);
    const [doomed, survivor] = bobsGateway === 0 ? [ready, waiting] : [waiting, ready];

    const dropped = new Promise<void>((resolve) => bobClient.client.once('close', () => resolve()));
    await doomed.kill9();
    await dropped;
    // While Bob is away (HAProxy may not have noticed yet: a connection to the dead gateway is redispatched).
    const aliceClient = await MqttUser.connect(lb.url6, alice, users.password);
    open.push(aliceClient);
    expect(await aliceClient.request({ op: 'send', to: bob, text: 'are you still there?' })).toMatchObject({ ok: true, result: { status: 'accepted' } });

    await lb.waitForState(`gw${bobsGateway}`, 'DOWN');
    const bobAgain = await MqttUser.connect(lb.url, bob, users.password);
    open.push(bobAgain);
    await bobAgain.waitFor((e) => e.type === 'message' && e.text === 'are you still there?');
    expect(await bobAgain.waitFor((e) => e.type === 'synced')).toMatchObject({ messages: 1 });
    expect(await connectionsOf(survivor)).toBeGreaterThanOrEqual(2);
  });
});

/**
 * Behind HAProxy every connection comes from HAProxy's address; with the PROXY
 * protocol (send-proxy-v2, PARLEY_PROXY_FROM) the gateways see each client's
 * own. Without it, one client's failed logins locked every client out.
 */
describe('deploy/haproxy.cfg passes each client’s address to the gateways', () => {
  const MAX_FAILURES = 3;
  let redis: RedisServer;
  let gateways: ParleyServer[] = [];
  let lb: LoadBalancer;
  const open: MqttUser[] = [];
  const users = new TestUsers(() => [lb.url6], 'balanced password');

  beforeAll(async () => {
    redis = await startRedis({ appendonly: false });
    const env = {
      ...BEHIND_LOAD_BALANCER,
      REDIS_URL: redis.url,
      PARLEY_REDIS_PREFIX: `lbp${randomBytes(4).toString('hex')}:`,
      PARLEY_LOGIN_MAX_FAILURES: String(MAX_FAILURES),
    };
    gateways = await Promise.all(['gw-a', 'gw-b'].map((id) => startParley({ env: { ...env, PARLEY_GATEWAY_ID: id } })));
    lb = await startLoadBalancer(gateways);
  });
  afterAll(async () => {
    await Promise.all(open.map((u) => u.close()));
    await lb?.stop();
    await Promise.all(gateways.map((g) => g.dispose()));
    await redis?.stop();
  });

  /** A raw connection through HAProxy from `host` that sends `bytes`; the CONNACK code, or 'closed'. */
  const through = async (host: '127.0.0.1' | '::1', bytes: Buffer) => {
    const c = await RawClient.open(lb.port, host);
    try {
      c.send(bytes);
      return await c.connackCode();
    } finally {
      c.close();
    }
  };
  const login = (user: string, password: string) => connectPacket({ clientId: `${user}/raw`, username: user, password });

  it('locks out the client that failed logins, not the others behind the same HAProxy', async () => {
    await Promise.all([lb.waitForState('gw0', 'UP'), lb.waitForState('gw1', 'UP')]);
    const [mia, max] = [await users.fresh('mia'), await users.fresh('max')];
    // From 127.0.0.1: wrong passwords for mia, over both gateways (leastconn spreads them; the count is shared in Redis).
    for (let i = 0; i < MAX_FAILURES; i++) expect(await through('127.0.0.1', login(mia, 'wrong password'))).toBe(4);
    expect(await through('127.0.0.1', login(mia, users.password))).toBe(5);
    expect(await through('127.0.0.1', login(max, users.password))).toBe(5);
    // From ::1, through the same HAProxy to the same gateways: both log in.
    expect(await through('::1', login(max, users.password))).toBe(0);
    open.push(await MqttUser.connect(lb.url6, mia, users.password));
  });

  it('logs the client’s address, not HAProxy’s', async () => {
    // A first packet that is not CONNECT: dropped, and logged by the connection's address.
    expect(await through('::1', PINGREQ)).toBe('closed');
    expect(await through('127.0.0.1', PINGREQ)).toBe('closed');
    const dropsFrom = (address: string) =>
      gateways.flatMap((g) => droppedConnections(g)).filter((d) => d.reason === 'first packet is not CONNECT' && d.address === address);
    await expect.poll(() => dropsFrom('::1').length, { timeout: 10_000 }).toBe(1);
    await expect.poll(() => dropsFrom('127.0.0.1').length, { timeout: 10_000 }).toBe(1);
    // An IPv4 address is logged as such, never in its IPv4-mapped form (::ffff:127.0.0.1), whether it came in a PROXY
    // header or from the socket; and HAProxy's own (127.0.0.1, from the socket) was not logged in place of the client's.
    expect(gateways.flatMap((g) => droppedConnections(g)).filter((d) => d.address.startsWith('::ffff:'))).toEqual([]);
  });
});
