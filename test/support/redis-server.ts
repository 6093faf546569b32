import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
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

/** A TCP port that was free on 127.0.0.1 a moment ago (another process may still take it: retry on a bind failure). */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 1000; attempt++) {
    const port = await new Promise<number>((resolve, reject) => {
      const srv = createServer();
      srv.once('error', reject);
      srv.listen(0, '127.0.0.1', () => {
        const { port } = srv.address() as { port: number };
        srv.close(() => resolve(port));
      });
    });
    if (handedOut.has(port)) continue;
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
    child = spawn('redis-server', args, { stdio: 'ignore' });
    await waitReady(port, child);
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

  for (let attempt = 1; ; attempt++) {
    port = await freePort();
    try {
      await launch();
      break;
    } catch (e) {
      await terminate('SIGKILL');
      // Another process may have taken the port between our probe and redis's bind.
      if (attempt >= 5) throw e;
    }
  }

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
      await launch();
    },
  };
}
