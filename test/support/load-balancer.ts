import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { ParleyServer } from './parley-server.js';
import { REPO_ROOT } from './parley-server.js';
import { freePort } from './redis-server.js';

/**
 * The environment gateways behind startLoadBalancer need: deploy/haproxy.cfg sends them the PROXY protocol
 * (send-proxy-v2), and HAProxy reaches them from loopback.
 */
export const BEHIND_LOAD_BALANCER = { PARLEY_PROXY_FROM: '127.0.0.1,::1' } as const;

export interface LoadBalancer {
  /** mqtt://127.0.0.1:PORT and mqtt://[::1]:PORT: the one address clients use. */
  url: string;
  url6: string;
  port: number;
  /** Every line HAProxy wrote so far (its logs and its server state changes). */
  output: string[];
  /** Resolves once HAProxy has said that server (gw0, gw1, … in the order given) is UP or DOWN. */
  waitForState(server: string, state: 'UP' | 'DOWN', timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

/** Replaces exactly one match, so that a change to the shipped file the rewrite no longer fits fails loudly. */
function replaceOnce(text: string, pattern: RegExp, by: string): string {
  const matches = text.match(new RegExp(pattern.source, pattern.flags.includes('g') ? pattern.flags : pattern.flags + 'g'));
  if (matches?.length !== 1) throw new Error(`deploy/haproxy.cfg: expected one match of ${String(pattern)}, found ${matches?.length ?? 0}`);
  return text.replace(pattern, by);
}

/**
 * Runs HAProxy with the shipped deploy/haproxy.cfg in front of gateways on
 * loopback: only the addresses change (listen ports, the gateways' MQTT and
 * HTTP ports instead of container names, no Docker DNS); balancing, health
 * checks on /readyz, failover and the PROXY protocol are the file's own. Start
 * the gateways with BEHIND_LOAD_BALANCER in their environment.
 */
export async function startLoadBalancer(gateways: ParleyServer[]): Promise<LoadBalancer> {
  if (spawnSync('haproxy', ['-v'], { stdio: 'ignore' }).error) throw new Error('haproxy is not installed: run `apt-get install haproxy` (or `bash .ci/run`)');
  const [port, healthPort] = [await freePort(), await freePort()];
  let config = readFileSync(join(REPO_ROOT, 'deploy/haproxy.cfg'), 'utf8');
  config = replaceOnce(config, /^resolvers docker\n(?: {2}.*\n)+/m, '');
  config = replaceOnce(config, / resolvers docker init-addr \S+/, '');
  config = replaceOnce(config, /bind :::1883 v4v6/, `bind :::${port} v4v6`);
  config = replaceOnce(config, /bind :::8404 v4v6/, `bind 127.0.0.1:${healthPort}`);
  const servers = gateways.map((g, i) => `  server gw${i} 127.0.0.1:${g.mqttPort} port ${g.httpPort}\n`).join('');
  config = replaceOnce(config, /(?:^ {2}server gateway-\d+ .*\n)+/m, servers);

  const dir = mkdtempSync(join(tmpdir(), 'parley-haproxy-'));
  writeFileSync(join(dir, 'haproxy.cfg'), config);
  const child = spawn('haproxy', ['-db', '-f', join(dir, 'haproxy.cfg')], { stdio: ['ignore', 'pipe', 'pipe'] });
  const output: string[] = [];
  const listeners = new Set<() => void>();
  const onLine = (line: string) => {
    output.push(line);
    for (const l of listeners) l();
  };
  createInterface({ input: child.stdout }).on('line', onLine);
  createInterface({ input: child.stderr }).on('line', onLine);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));

  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(dir, { recursive: true, force: true });
  };

  // Ready once the health frontend answers.
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null) {
      await stop();
      throw new Error(`haproxy exited (${child.exitCode}):\n${output.join('\n')}`);
    }
    const ok = await fetch(`http://127.0.0.1:${healthPort}/healthz`).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`haproxy did not answer on its health port within 10 s:\n${output.join('\n')}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }

  return {
    url: `mqtt://127.0.0.1:${port}`,
    url6: `mqtt://[::1]:${port}`,
    port,
    output,
    stop,
    waitForState: (server, state, timeoutMs = 20_000) =>
      new Promise((resolve, reject) => {
        // The last change HAProxy reported; a server counts as UP until its checks say otherwise.
        const current = () => {
          const changes = output.map((l) => new RegExp(`Server gateways/${server} is (UP|DOWN)`).exec(l)?.[1]).filter((s) => s !== undefined);
          return changes[changes.length - 1] ?? 'UP';
        };
        const check = () => {
          if (current() === state) done(resolve);
        };
        const timer = setTimeout(
          () => done(() => reject(new Error(`haproxy: ${server} not ${state} within ${timeoutMs} ms:\n${output.join('\n')}`))),
          timeoutMs,
        );
        const done = (then: () => void) => {
          clearTimeout(timer);
          listeners.delete(check);
          then();
        };
        listeners.add(check);
        check();
      }),
  };
}
