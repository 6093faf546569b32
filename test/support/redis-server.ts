import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';

export interface RedisServer {
  url: string;
  port: number;
  dir: string;
  /** The redis-server process id (for resource accounting, e.g. by the bench). */
  readonly pid: number | undefined;
  /** SIGTERM (then SIGKILL after a bound) and remove the data dir. */
  stop(): Promise<void>;
  /** SIGKILL, as a crash would; keeps the data dir. */
  kill9(): Promise<void>;
  /** SIGTERM, as `redis-cli shutdown` does (the AOF is flushed); keeps the data dir, for `restart`. */
  shutdown(): Promise<void>;
  /** Start again on the same port and dir (with AOF on, what was written survives). */
  restart(): Promise<void>;
}

export interface RedisOptions {
  appendonly?: boolean;
}

/** Ports this process has handed out: never handed out twice, so servers started side by side cannot be given one port. */
const handedOut = new Set<number>();

/**
 * Where this test process picks its ports: below the kernel's ephemeral range, in a slice of its own. A port from the
 * ephemeral range (what `listen(0)` gives) can be taken while its server is down for a restart: by another worker's
 * `listen(0)`, or by a client retrying a connection to it, which the kernel may give that very port as its own end
 * (a TCP self-connect); either way the server cannot bind it again. Below the range, no outgoing connection ever gets
 * it, and each vitest worker has a slice of its own, so only a process outside the tests could take it.
 */
function portSlice(): { from: number; size: number } | null {
  let ephemeralFrom = 32768;
  try {
    ephemeralFrom = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
  } catch {
    // Not Linux: the usual default.
  }
  const from = 10_000;
  const slices = 16;
  const size = Math.floor((ephemeralFrom - from) / slices);
  if (!(size >= 200)) return null;
  const worker = Number(process.env.VITEST_POOL_ID ?? process.env.VITEST_WORKER_ID ?? 0) || 0;
  return { from: from + (worker % slices) * size, size };
}

/** Whether `port` could be bound on `host` a moment ago. */
function bindable(port: number, host: string): Promise<number | null> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(null));
    srv.listen({ port, host, ipv6Only: false }, () => {
      const { port: bound } = srv.address() as { port: number };
      srv.close(() => resolve(bound));
    });
  });
}

/**
 * A TCP port that was free on `host` (127.0.0.1 unless told; `::` for a dual-stack listener) a moment ago, picked
 * outside the ephemeral range where it can be (see `portSlice`). Another process may still take it: retry on a bind
 * failure.
 */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  const slice = portSlice();
  for (let attempt = 0; attempt < 1000; attempt++) {
    const wanted = slice ? slice.from + Math.floor(Math.random() * slice.size) : 0;
    if (handedOut.has(wanted)) continue;
    const port = await bindable(wanted, host);
    if (port === null || handedOut.has(port)) continue;
    handedOut.add(port);
    return port;
  }
  throw new Error('no free TCP port that this process has not handed out already');
}

function assertInstalled(): void {
  const probe = spawnSync('redis-server', ['--version'], { stdio: 'ignore' });
  if (probe.error) throw new Error('redis-server is not installed: run `apt-get install redis-server` (or `bash .ci/run`, which installs it)');
}

/** Waits, bounded, until the server answers PING. */
async function waitReady(port: number, child: ChildProcess, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const client = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, enableOfflineQueue: false });
  client.on('error', () => undefined);
  try {
    for (;;) {
      if (child.exitCode !== null) throw new Error(`redis-server exited with ${child.exitCode} before it was ready`);
      try {
        await client.connect();
        if ((await client.ping()) === 'PONG') return;
      } catch {
        client.disconnect();
      }
      if (Date.now() > deadline) throw new Error(`redis-server on port ${port} not ready within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 25));
    }
  } finally {
    client.disconnect();
  }
}

/**
 * Starts a private redis-server on a free loopback port, with its own data
 * dir, no config file and no snapshotting; AOF on request.
 */
export async function startRedis(opts: RedisOptions = {}): Promise<RedisServer> {
  assertInstalled();
  const dir = mkdtempSync(join(tmpdir(), 'parley-redis-'));
  let child: ChildProcess | undefined;
  let port = 0;

  const launch = async (): Promise<void> => {
    const args = [
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--save',
      '',
      '--appendonly',
      opts.appendonly ? 'yes' : 'no',
      '--dir',
      dir,
      '--daemonize',
      'no',
    ];
    // Its log, in its dir, says why it stopped when it does (a port it could not bind, say).
    const log = openSync(join(dir, 'redis.log'), 'a');
    child = spawn('redis-server', args, { stdio: ['ignore', log, log] });
    closeSync(log);
    try {
      await waitReady(port, child);
    } catch (e) {
      throw new Error(`${(e as Error).message}; its log ends: ${logTail(dir)}`, { cause: e });
    }
  };
  const terminate = async (signal: NodeJS.Signals) => {
    const c = child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => c.once('exit', () => resolve()));
    c.kill(signal);
    const timer = setTimeout(() => c.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  };

  /**
   * Launches, trying up to 5 times: another process may have taken the port between our probe and redis's bind (a
   * fresh one is picked for each try), or, for a restart on the same port, while the server was down (whoever took it
   * for a moment lets it go again).
   */
  const launchRetrying = async (freshPort: boolean): Promise<void> => {
    for (let attempt = 1; ; attempt++) {
      if (freshPort) port = await freePort();
      try {
        await launch();
        return;
      } catch (e) {
        await terminate('SIGKILL');
        if (attempt >= 5) throw e;
        if (!freshPort) await new Promise((r) => setTimeout(r, 200));
      }
    }
  };
  await launchRetrying(true);

  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    dir,
    get pid() {
      return child?.pid;
    },
    stop: async () => {
      await terminate('SIGTERM');
      rmSync(dir, { recursive: true, force: true });
    },
    kill9: () => terminate('SIGKILL'),
    shutdown: () => terminate('SIGTERM'),
    restart: async () => {
      await terminate('SIGTERM');
      await launchRetrying(false);
    },
  };
}

/** The last lines of a redis-server's log, on one line. */
function logTail(dir: string): string {
  try {
    return readFileSync(join(dir, 'redis.log'), 'utf8').trim().split('\n').slice(-3).join(' | ') || '(empty)';
  } catch {
    return '(no log)';
  }
}
