import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { startParley } from '../test/support/parley-server.js';
import { freePort, startRedis, type RedisServer } from '../test/support/redis-server.js';
import { collectGarbage, INSPECT_ARGS, inspectorUrlOf, type HeapUse } from './inspector.js';
import type { Protocol } from './load-client.js';

/** Everything the bench measures, each in its own process(es) on loopback. */
export const TARGETS = ['parley', 'parley-redis', 'aedes', 'aedes-qos0', 'aedes-redis', 'aedes-redis-sessions', 'mosquitto'] as const;
export type TargetName = (typeof TARGETS)[number];

export const TARGET_LABELS: Record<TargetName, string> = {
  parley: 'Parley standalone (LMDB)',
  'parley-redis': 'Parley on Redis',
  aedes: 'bare Aedes (memory)',
  'aedes-qos0': 'bare Aedes, its subscribers asking for QoS 0, the QoS Parley grants a clean session: no PUBACK from recipients',
  'aedes-redis': 'Aedes + persistence-redis + mqemitter-redis',
  'aedes-redis-sessions': 'the same pair, persistent sessions (clean=false): it stores each QoS 1 message until acknowledged',
  mosquitto: 'Mosquitto',
};

export interface Target {
  name: TargetName;
  protocol: Protocol;
  url: string;
  /** The broker/server process whose memory and CPU are reported. */
  pid: number;
  /** Its Redis, when it has one (CPU reported too: the work moved there). */
  redisPid?: number;
  /**
   * Parley on the embedded store: its HTTP address, whose /metrics has the commit histogram
   * (`parley_store_commit_duration_seconds`) that tells how long the server waited for the disk in a run.
   */
  metricsAt?: string;
  /** Its clients connect with persistent sessions (clean=false). */
  persistentSessions?: boolean;
  /** The QoS its clients subscribe with (1 unless set). */
  subscribeQos?: 0 | 1;
  /** Why the server process is gone (its exit and last output lines), or undefined while it runs. */
  death(): string | undefined;
  /** A Node server: runs a full garbage collection in it (through its inspector), and reads what its JS keeps then. */
  collectGarbage?(): Promise<HeapUse>;
  stop(): Promise<void>;
}

function deathOf(child: ChildProcess, output: readonly string[] = []): string | undefined {
  if (child.exitCode === null && child.signalCode === null) return undefined;
  return `exited (${child.exitCode ?? child.signalCode}); last output:\n${output.slice(-15).join('\n')}`;
}

const SERVER_START_MS = 30_000;

/**
 * Targets measured on some scenarios only. The stock Redis pair with persistent sessions is the durable counterpart of
 * Parley on Redis (each message is written to Redis before it is acknowledged), which matters for 1:1 throughput.
 */
export const TARGET_SCENARIOS: Partial<Record<TargetName, readonly string[]>> = {
  'aedes-redis-sessions': ['saturation'],
  // Bare Aedes doing the packet work Parley does for a clean session: a reference point for 1:1 throughput.
  'aedes-qos0': ['saturation'],
};

export function mosquittoInstalled(): boolean {
  return !spawnSync('mosquitto', ['-h'], { stdio: 'ignore' }).error;
}

export interface StartOptions {
  /** Parley's processes write a V8 CPU profile there (`node --cpu-prof`) when they stop. */
  profileDir?: string | undefined;
  /**
   * Node targets open their inspector on a free loopback port, so that the idle scenario can collect their garbage
   * before reading memory. Only when that scenario runs: it is an unauthenticated debugger port.
   */
  inspect: boolean;
}

export async function startTarget(name: TargetName, benchDir: string, opts: StartOptions): Promise<Target> {
  switch (name) {
    case 'parley':
      return startParleyTarget(name, opts);
    case 'parley-redis': {
      const redis = await startRedis({ appendonly: true });
      return withRedis(redis, () => startParleyTarget(name, opts, redis));
    }
    case 'aedes':
    case 'aedes-qos0':
      return startBareAedes(name, benchDir, opts);
    case 'aedes-redis':
    case 'aedes-redis-sessions': {
      const redis = await startRedis({ appendonly: true });
      return withRedis(redis, () => startBareAedes(name, benchDir, opts, redis));
    }
    case 'mosquitto':
      return startMosquitto();
  }
}

/** Starts what needs the Redis, stopping the Redis again if that fails. */
async function withRedis(redis: RedisServer, start: () => Promise<Target>): Promise<Target> {
  try {
    return await start();
  } catch (e) {
    await redis.stop();
    throw e;
  }
}

async function startParleyTarget(name: TargetName, opts: StartOptions, redis?: RedisServer): Promise<Target> {
  const server = await startParley({
    env: {
      PARLEY_MQTT_HOST: '127.0.0.1',
      PARLEY_HTTP_HOST: '127.0.0.1',
      // The load generator is a trusted flood: lift the per-connection and per-user request limits (bare brokers have none).
      PARLEY_CONNECTION_RATE: '1000000',
      PARLEY_CONNECTION_BURST: '1000000',
      PARLEY_USER_RATE: '1000000',
      PARLEY_USER_BURST: '1000000',
      PARLEY_REGISTRATIONS_PER_MINUTE: '1000000',
      // A scenario logs in its hundreds of users at once, from one address, and a repetition logs them in again.
      PARLEY_MAX_CONNECTING_PER_ADDRESS: '1000000',
      PARLEY_LOGINS_PER_MINUTE: '1000000',
      // Every login of the run is paid for (the password KDF) when the users are registered, outside the measurements: a
      // full run outlasts the default ten minutes a login is remembered, and a scenario's 200 logins at once would then
      // queue for the KDF, past the default 10 s a login may take.
      PARLEY_LOGIN_CACHE_MS: String(3_600_000),
      // Registration is set-up, not measured: the cheapest password hashing (~3 ms a user instead of ~0.15 s) keeps it
      // to seconds instead of minutes, and leaves no 32 MiB KDF buffers behind in the resident set the idle scenario reads.
      PARLEY_PASSWORD_COST: '10',
      PARLEY_CONNECT_TIMEOUT_MS: '60000',
      ...(redis ? { REDIS_URL: redis.url } : {}),
    },
    nodeArgs: [...(opts.inspect ? INSPECT_ARGS : []), ...(opts.profileDir ? ['--cpu-prof', `--cpu-prof-dir=${opts.profileDir}`] : [])],
    timeoutMs: SERVER_START_MS,
  });
  let inspector: string | undefined;
  try {
    if (opts.inspect) inspector = await inspectorUrlOf(server.process, server.output, name);
  } catch (e) {
    await server.dispose();
    throw e;
  }
  return {
    name,
    protocol: 'parley',
    url: server.mqttUrl,
    pid: server.process.pid!,
    ...(redis ? {} : { metricsAt: server.httpUrl }),
    ...(redis?.pid !== undefined ? { redisPid: redis.pid } : {}),
    death: () => deathOf(server.process, server.output),
    ...(inspector !== undefined ? { collectGarbage: () => collectGarbage(inspector) } : {}),
    stop: async () => {
      await server.dispose();
      await redis?.stop();
    },
  };
}

/** Waits, bounded, for a JSON line `{"event":"listening","port":N}` from a child; what it printed goes to `output`. */
function listeningPort(child: ChildProcess, what: string, output: string[] = []): Promise<number> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what} did not listen within ${SERVER_START_MS} ms:\n${output.join('\n')}`)), SERVER_START_MS);
    createInterface({ input: child.stdout! }).on('line', (line) => {
      output.push(line);
      try {
        const rec = JSON.parse(line) as { event?: string; port?: number };
        if (rec.event === 'listening' && rec.port) {
          clearTimeout(timer);
          resolve(rec.port);
        }
      } catch {
        /* not ours */
      }
    });
    createInterface({ input: child.stderr! }).on('line', (l) => output.push(l));
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited (${code}) before listening:\n${output.join('\n')}`));
    });
  });
}

/** SIGTERM, then SIGKILL if the process has not exited within a bound. */
async function terminate(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
}

async function startBareAedes(name: TargetName, benchDir: string, opts: StartOptions, redis?: RedisServer): Promise<Target> {
  const child = spawn(process.execPath, [...(opts.inspect ? INSPECT_ARGS : []), join(benchDir, 'bare-broker.js')], {
    env: { PATH: process.env.PATH ?? '', ...(redis ? { BENCH_REDIS_URL: redis.url } : {}) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  try {
    const output: string[] = [];
    const port = await listeningPort(child, name, output);
    const inspector = opts.inspect ? await inspectorUrlOf(child, output, name) : undefined;
    return {
      name,
      protocol: 'mqtt',
      url: `mqtt://127.0.0.1:${port}`,
      pid: child.pid!,
      ...(redis?.pid !== undefined ? { redisPid: redis.pid } : {}),
      ...(name === 'aedes-redis-sessions' ? { persistentSessions: true } : {}),
      ...(name === 'aedes-qos0' ? { subscribeQos: 0 as const } : {}),
      death: () => deathOf(child),
      ...(inspector !== undefined ? { collectGarbage: () => collectGarbage(inspector) } : {}),
      stop: async () => {
        await terminate(child);
        await redis?.stop();
      },
    };
  } catch (e) {
    await terminate(child);
    throw e;
  }
}

/** Waits, bounded, until something accepts TCP connections on the port. */
async function waitForPort(port: number, child: ChildProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`mosquitto exited with ${child.exitCode} before listening`);
    const open = await new Promise<boolean>((resolve) => {
      const socket = connect({ host: '127.0.0.1', port }, () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (open) return;
    if (Date.now() > deadline) throw new Error(`mosquitto did not listen on ${port} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Stock Mosquitto, in memory; the only change to its defaults is room for the 10,000-message offline backlog (1,000 by default). */
async function startMosquitto(): Promise<Target> {
  const dir = mkdtempSync(join(tmpdir(), 'parley-bench-mosquitto-'));
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const config = join(dir, 'mosquitto.conf');
    writeFileSync(
      config,
      [`listener ${port} 127.0.0.1`, 'allow_anonymous true', 'persistence false', 'max_queued_messages 1000000', 'log_dest none', ''].join('\n'),
    );
    const child = spawn('mosquitto', ['-c', config], { stdio: 'ignore' });
    try {
      await waitForPort(port, child, SERVER_START_MS);
      return {
        name: 'mosquitto',
        protocol: 'mqtt',
        url: `mqtt://127.0.0.1:${port}`,
        pid: child.pid!,
        death: () => deathOf(child),
        stop: async () => {
          await terminate(child);
          rmSync(dir, { recursive: true, force: true });
        },
      };
    } catch (e) {
      await terminate(child);
      // Another process may have taken the port between the probe and mosquitto's bind.
      if (attempt >= 3) {
        rmSync(dir, { recursive: true, force: true });
        throw e;
      }
    }
  }
}

/** Resident memory of a process, in bytes (Linux /proc). */
export function rssOf(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}

/**
 * CPU time (ns) used so far by the threads a process has now, from the scheduler's own accounting
 * (/proc/<pid>/task/<tid>/schedstat): exact to the nanosecond, where `cpuMsOf` counts 10 ms ticks, and a process using
 * a few percent of a core would cross no tick in many 100 ms windows. For short windows; `cpuMsOf` also counts threads
 * that have ended, so it is the one for a run's total.
 */
export function cpuNsOf(pid: number | undefined): number {
  if (pid === undefined) return 0;
  let total = 0;
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      try {
        total += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
      } catch {
        // A thread that ended meanwhile.
      }
    }
  } catch {
    return 0;
  }
  return total;
}

/** CPU time (user + system) a process has used so far, in ms (Linux /proc). */
export function cpuMsOf(pid: number | undefined): number {
  if (pid === undefined) return 0;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // Fields 14 and 15 of stat (utime, stime) are the 12th and 13th after the command name, in clock ticks (100 per second on Linux).
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
  } catch {
    return 0;
  }
}
