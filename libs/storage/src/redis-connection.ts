import { Redis } from 'ioredis';
import { withDeadline } from '#libs/health';

/**
 * The shared Redis connection of one process, and the key prefix every
 * adapter builds its keys under (so several Parley deployments, or test runs,
 * can share one Redis without touching each other's data).
 */
export class RedisConnection {
  readonly client: Redis;
  /** How many times the connection to Redis was lost (see `generation`). */
  private lost = 0;

  constructor(
    url: string,
    readonly prefix: string,
  ) {
    this.client = new Redis(url, {
      // A command waits for a reconnect at most this many times, then fails:
      // callers get `unavailable` instead of hanging while Redis is down.
      maxRetriesPerRequest: 2,
      // Reconnect attempts at most a second apart, so a command fails (or goes through) within a few seconds of Redis going away.
      retryStrategy: (attempt: number) => Math.min(attempt * 100, 1000),
      enableAutoPipelining: true,
      lazyConnect: false,
    });
    // Connection errors are retried by ioredis and surface on the commands that
    // need Redis; an unhandled 'error' event must not crash the process.
    this.client.on('error', () => undefined);
    this.client.on('close', () => void this.lost++);
  }

  /**
   * Changes whenever the connection to Redis is lost. The Redis it reconnects to may have lost what it held (a restart
   * without persistence, a failover to a replica that was behind), so what a process remembers of Redis's data holds
   * within one generation only.
   */
  get generation(): number {
    return this.lost;
  }

  /** Builds a key under this deployment's prefix. */
  key(...parts: (string | number)[]): string {
    return this.prefix + parts.join(':');
  }

  /**
   * Registers a Lua script once and returns a caller for it. ioredis sends it
   * by EVALSHA and falls back to EVAL when Redis does not have it cached (after
   * a restart, say), so each call is one round trip.
   */
  script(name: string, numberOfKeys: number, lua: string): (keys: string[], args: (string | number)[]) => Promise<unknown> {
    this.client.defineCommand(name, { numberOfKeys, lua });
    const client = this.client as unknown as Record<string, (...a: (string | number)[]) => Promise<unknown>>;
    return (keys, args) => client[name]!(...keys, ...args);
  }

  /**
   * Whether Redis takes writes: a small key written with an expiry. PING still answers a Redis at `maxmemory` (with
   * `noeviction`) or a read-only replica, where every write is refused.
   */
  async writable(): Promise<boolean> {
    try {
      return (await this.client.set(this.key('health', 'probe'), String(Date.now()), 'PX', 60_000)) === 'OK';
    } catch {
      return false;
    }
  }

  async ping(): Promise<boolean> {
    try {
      return (await this.client.ping()) === 'PONG';
    } catch {
      return false;
    }
  }

  close(): Promise<void> {
    return quitRedis(this.client);
  }
}

/**
 * Closes a connection without ever waiting on a Redis that is gone: QUIT
 * (which lets replies in flight arrive) while connected, bounded in time;
 * otherwise, or after the bound, the socket is just dropped.
 */
export async function quitRedis(client: Redis, boundMs = 2000): Promise<void> {
  if (client.status === 'ready') await withDeadline(client.quit(), boundMs).catch(() => undefined);
  client.disconnect();
}
