import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CliProcess, runCli } from '../support/cli.js';
import { startParley, type ParleyServer } from '../support/parley-server.js';

/**
 * Real networks, built for the test with `ip netns` and veth pairs: a server
 * host attached to an IPv4-only network (192.0.2.0/24) and an IPv6-only
 * network (2001:db8::/64), each a bridge on the server's side; one client
 * host on each network; and a third client on the server's own host. All
 * three reach the server's one `::` listener and chat, 1:1 and in a group.
 * Addresses are documentation ranges, inside namespaces of our own.
 */
const tag = randomBytes(3).toString('hex');
const NS = { server: `parley-srv-${tag}`, v4: `parley-c4-${tag}`, v6: `parley-c6-${tag}` };
const SERVER_V4 = '192.0.2.1';
const SERVER_V6 = '2001:db8::1';

const ip = (...args: string[]) => execFileSync('ip', args, { stdio: 'pipe' }).toString();

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
});
