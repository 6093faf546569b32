import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CliProcess, runCli } from '../support/cli.js';
import { startParley, type ParleyServer } from '../support/parley-server.js';
import { droppedConnections } from '../support/proxy-protocol.js';

/**
 * Real networks, built for the test with `ip netns` and veth pairs: a server
 * host attached to an IPv4-only network (192.0.2.0/24) and an IPv6-only
 * network (2001:db8::/64), each a bridge on the server's side; one client
 * host on each network; and a third client on the server's own host. All
 * three reach the server's one `::` listener and chat, 1:1 and in a group;
 * receipts, presence and files cross between the two networks, the server
 * logs each host by its own address, and its HTTP endpoints answer over IPv6.
 * Addresses are documentation ranges, inside namespaces of our own.
 */
const tag = randomBytes(3).toString('hex');
const NS = { server: `parley-srv-${tag}`, v4: `parley-c4-${tag}`, v6: `parley-c6-${tag}` };
const SERVER_V4 = '192.0.2.1';
const SERVER_V6 = '2001:db8::1';

const ip = (...args: string[]) => execFileSync('ip', args, { stdio: 'pipe' }).toString();

/** A script for `node -e`: connects to argv host:port, sends a PUBLISH where CONNECT must come first, waits for the close. */
const JUNK = `const s = require('node:net').connect(Number(process.argv[2]), process.argv[1], () => s.write(Buffer.from([0x30, 0x02, 0, 0])));
s.on('error', () => undefined); s.on('close', () => undefined);`;
/** A script for `node -e`: prints the body of a GET of argv URL, exits 1 unless it is 2xx. */
const GET = `fetch(process.argv[1], { signal: AbortSignal.timeout(5000) }).then(async (r) => { process.stdout.write(await r.text()); process.exit(r.ok ? 0 : 1); });`;

/** Why network namespaces cannot be made here, or null when they can. */
function netnsUnavailable(): string | null {
  const probe = `parley-probe-${tag}`;
  try {
    ip('netns', 'add', probe);
    ip('netns', 'del', probe);
    return null;
  } catch (e) {
    return (e as { stderr?: Buffer }).stderr?.toString().trim() || String(e);
  }
}

const unavailable = netnsUnavailable();
if (unavailable) console.warn(`networks.e2e: skipped — cannot create network namespaces here (ip netns add: ${unavailable})`);

/** A veth pair from a client namespace to a bridge in the server namespace. */
function attach(client: string, bridge: string, n: string): { clientIf: string; serverIf: string } {
  const clientIf = `c${n}${tag}`;
  const serverIf = `s${n}${tag}`;
  ip('link', 'add', clientIf, 'type', 'veth', 'peer', 'name', serverIf);
  ip('link', 'set', clientIf, 'netns', client);
  ip('link', 'set', serverIf, 'netns', NS.server);
  ip('-n', NS.server, 'link', 'set', serverIf, 'master', bridge);
  ip('-n', NS.server, 'link', 'set', serverIf, 'up');
  return { clientIf, serverIf };
}

const sysctl = (ns: string, key: string) => execFileSync('ip', ['netns', 'exec', ns, 'sysctl', '-qw', key], { stdio: 'pipe' });

function buildNetworks(): void {
  for (const ns of Object.values(NS)) {
    ip('netns', 'add', ns);
    ip('-n', ns, 'link', 'set', 'lo', 'up');
    // Duplicate address detection off for every interface made from here on (link-local addresses too):
    // addresses are usable at once instead of tentative for a second or two.
    sysctl(ns, 'net.ipv6.conf.default.accept_dad=0');
  }
  // The IPv4-only network: a bridge with IPv6 off, and a client with IPv6 off.
  ip('-n', NS.server, 'link', 'add', 'br4', 'type', 'bridge');
  sysctl(NS.server, 'net.ipv6.conf.br4.disable_ipv6=1');
  ip('-n', NS.server, 'addr', 'add', `${SERVER_V4}/24`, 'dev', 'br4');
  ip('-n', NS.server, 'link', 'set', 'br4', 'up');
  const v4 = attach(NS.v4, 'br4', '4');
  sysctl(NS.server, `net.ipv6.conf.${v4.serverIf}.disable_ipv6=1`);
  sysctl(NS.v4, `net.ipv6.conf.${v4.clientIf}.disable_ipv6=1`);
  ip('-n', NS.v4, 'addr', 'add', '192.0.2.10/24', 'dev', v4.clientIf);
  ip('-n', NS.v4, 'link', 'set', v4.clientIf, 'up');
  // The IPv6-only network: no IPv4 address anywhere on it. nodad: the addresses are usable at once, not tentative.
  ip('-n', NS.server, 'link', 'add', 'br6', 'type', 'bridge');
  ip('-n', NS.server, 'addr', 'add', `${SERVER_V6}/64`, 'dev', 'br6', 'nodad');
  ip('-n', NS.server, 'link', 'set', 'br6', 'up');
  const v6 = attach(NS.v6, 'br6', '6');
  ip('-n', NS.v6, 'addr', 'add', '2001:db8::10/64', 'dev', v6.clientIf, 'nodad');
  ip('-n', NS.v6, 'link', 'set', v6.clientIf, 'up');
}

/** No address may still be tentative (duplicate address detection) when clients start. */
function tentative(): string {
  return Object.values(NS)
    .map((ns) => ip('-n', ns, '-6', 'addr', 'show', 'tentative').trim())
    .join('');
}

function teardown(): void {
  for (const ns of Object.values(NS)) {
    try {
      ip('netns', 'del', ns);
    } catch {
      /* never created */
    }
  }
}

describe.skipIf(unavailable !== null)('networks: IPv4-only and IPv6-only hosts on one dual-stack listener', () => {
  let server: ParleyServer;
  const running: CliProcess[] = [];

  beforeAll(async () => {
    buildNetworks();
    expect(tentative()).toBe('');
    server = await startParley({ netns: NS.server });
  });

  afterAll(async () => {
    await Promise.all(running.map((p) => p.stop()));
    await server?.dispose();
    teardown();
  });

  it('each client host sees only its own network', () => {
    expect(ip('-n', NS.v4, '-6', 'addr', 'show', 'scope', 'global').trim()).toBe('');
    expect(ip('-n', NS.v6, '-4', 'addr', 'show', 'scope', 'global').trim()).toBe('');
  });

  it('three clients on three hosts chat 1:1 and in a group', { timeout: 120_000 }, async () => {
    const port = server.mqttPort;
    const hosts = [
      { user: `ipv4${tag}`, netns: NS.v4, server: `mqtt://${SERVER_V4}:${port}` },
      { user: `ipv6${tag}`, netns: NS.v6, server: `mqtt://[${SERVER_V6}]:${port}` },
      { user: `local${tag}`, netns: NS.server, server: `mqtt://[::1]:${port}` },
    ];
    const env = (h: (typeof hosts)[number]) => ({ PARLEY_SERVER: h.server, PARLEY_USER: h.user, PARLEY_PASSWORD: 'network password' });
    const cli = (h: (typeof hosts)[number], ...args: string[]) => runCli(args, env(h), { netns: h.netns, timeoutMs: 30_000 });

    for (const h of hosts) expect((await cli(h, 'register')).code).toBe(0);
    const listeners = hosts.map((h) => CliProcess.start(['listen', '--json'], env(h), { netns: h.netns }));
    running.push(...listeners);
    await Promise.all(listeners.map((l) => l.waitForLine(/"type":"ready"/, 20_000)));

    // 1:1, around the ring: each host sends to the next.
    for (const [i, h] of hosts.entries()) {
      const to = hosts[(i + 1) % hosts.length]!;
      const sent = await cli(h, 'send', to.user, `from ${h.user} to ${to.user}`);
      expect(sent.code, sent.stderr).toBe(0);
      await listeners[(i + 1) % hosts.length]!.waitForLine(new RegExp(`from ${h.user} to ${to.user}`), 15_000);
    }

    // A group of all three; each posts, every other member receives.
    const [a, b, c] = hosts as [(typeof hosts)[number], (typeof hosts)[number], (typeof hosts)[number]];
    expect((await cli(a, 'group', 'create', `net${tag}`, b.user, c.user)).code).toBe(0);
    for (const h of hosts) expect((await cli(h, 'send', '--group', `net${tag}`, `group hello from ${h.user}`)).code).toBe(0);
    for (const [i, l] of listeners.entries()) {
      for (const h of hosts.filter((_, j) => j !== i)) await l.waitForLine(new RegExp(`group hello from ${h.user}`), 15_000);
    }
  });

  it('receipts, last seen and a file cross between the IPv4-only and the IPv6-only host', { timeout: 120_000 }, async () => {
    const port = server.mqttPort;
    const v4 = { user: `four${tag}`, netns: NS.v4, server: `mqtt://${SERVER_V4}:${port}` };
    const v6 = { user: `six${tag}`, netns: NS.v6, server: `mqtt://[${SERVER_V6}]:${port}` };
    const env = (h: typeof v4) => ({ PARLEY_SERVER: h.server, PARLEY_USER: h.user, PARLEY_PASSWORD: 'network password' });
    const cli = (h: typeof v4, ...args: string[]) => runCli(args, env(h), { netns: h.netns, timeoutMs: 30_000 });
    for (const h of [v4, v6]) expect((await cli(h, 'register')).code).toBe(0);
    const [listen4, listen6] = [v4, v6].map((h) => CliProcess.start(['listen', '--json'], env(h), { netns: h.netns })) as [CliProcess, CliProcess];
    running.push(listen4, listen6);
    await Promise.all([listen4, listen6].map((l) => l.waitForLine(/"type":"ready"/, 20_000)));

    // Delivered, then read: each receipt reaches the sender on the other network.
    expect((await cli(v4, 'send', v6.user, 'over both families')).code).toBe(0);
    await listen4.waitForLine(new RegExp(`"type":"receipt".*"user":"${v6.user}","status":"delivered"`), 15_000);
    expect((await cli(v6, 'read', v4.user)).code).toBe(0);
    await listen4.waitForLine(new RegExp(`"type":"receipt".*"user":"${v6.user}","status":"read"`), 15_000);

    // A file offered from the IPv4 host, accepted on the IPv6 host.
    const dir = mkdtempSync(join(tmpdir(), 'parley-net-'));
    try {
      const content = randomBytes(100_000);
      writeFileSync(join(dir, 'both.bin'), content);
      const sent = await cli(v4, '--json', 'file', 'send', v6.user, join(dir, 'both.bin'));
      expect(sent.code, sent.stderr).toBe(0);
      const offer = sent.json.find((l) => l.type === 'offered')!.offer as { id: string };
      const into = mkdtempSync(join(dir, 'into-'));
      const got = await cli(v6, 'file', 'accept', offer.id, '--to', into);
      expect(got.code, got.stderr).toBe(0);
      expect(readFileSync(join(into, 'both.bin'))).toEqual(content);
      await listen4.waitForLine(new RegExp(`"event":"received".*"id":"${offer.id}"`), 15_000);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }

    // The IPv6 host leaves: the IPv4 host sees it offline, with a last-seen time.
    await listen6.stop();
    await expect.poll(async () => (await cli(v4, 'who', v6.user)).stdout, { timeout: 15_000 }).toMatch(/offline, last seen/);
  });

  it('logs each host by its own address, the IPv4 one as such (not ::ffff:), and serves /readyz and /metrics over IPv6', async () => {
    // A first packet that is not CONNECT, from each client host: dropped, and logged by the address it came from.
    const junk = (netns: string, host: string) =>
      execFileSync('ip', ['netns', 'exec', netns, process.execPath, '-e', JUNK, host, String(server.mqttPort)], { stdio: 'pipe', timeout: 10_000 });
    junk(NS.v4, SERVER_V4);
    junk(NS.v6, SERVER_V6);
    const addresses = () => droppedConnections(server).map((d) => d.address);
    await expect.poll(addresses, { timeout: 10_000 }).toEqual(expect.arrayContaining(['192.0.2.10', '2001:db8::10']));
    expect(addresses().filter((a) => a.startsWith('::ffff:'))).toEqual([]);

    const get = (path: string) =>
      execFileSync('ip', ['netns', 'exec', NS.v6, process.execPath, '-e', GET, `http://[${SERVER_V6}]:${server.httpPort}${path}`], {
        encoding: 'utf8',
        timeout: 10_000,
      });
    expect(JSON.parse(get('/readyz'))).toMatchObject({ status: 'ready' });
    expect(get('/metrics')).toMatch(/^parley_/m);
  });
});
