import { randomBytes } from 'node:crypto';
import { Logger } from '@nestjs/common';
import { Redis } from 'ioredis';
import { withDeadline } from '#libs/health';
import { LogThrottle } from '#libs/runtime';

/**
 * The shared Redis connection of one process, and the key prefix every
 * adapter builds its keys under (so several Parley deployments, or test runs,
 * can share one Redis without touching each other's data).
 */
export class RedisConnection {
  readonly client: Redis;
  /** How many times the connection to Redis was lost, or its data found wiped (see `generation`). */
  private lost = 0;
  /** The token last read from the wipe marker (see `watchForWipes`); null before the first read. */
  private marker: string | null = null;
  private readonly markerCheck: NodeJS.Timeout;
  private readonly readMarker: (keys: string[], args: string[]) => Promise<unknown>;
  private readonly logger = new Logger('Redis');
  private readonly errorLog = new LogThrottle();
  /** Whether a connection error was seen since Redis last answered, so that its return is logged once. */
  private unreachable = false;
  /** Outages that ended: each one's errors are throttled on their own. */
  private outages = 0;

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
      // An automatic pipeline knows the scripts defined when it was opened: the marker's first read, issued as this
      // connection is made, must not open one that the stores' scripts, defined just after, would then be missing from.
      autoPipeliningIgnoredCommands: ['parleyMarker'],
      lazyConnect: false,
    });
    // Connection errors are retried by ioredis and surface on the commands that
    // need Redis; an unhandled 'error' event must not crash the process. They are
    // logged (once per 10 s): a domain service started on a Redis it cannot reach
    // waits for it, and without this line its log would not say why.
    this.client.on('error', (e: Error) => {
      const fields = this.errorLog.logFields(`outage ${this.outages}`);
      if (fields) this.logger.warn({ event: 'redis_unreachable', error: e.message, ...fields });
      this.unreachable = true;
    });
    this.client.on('ready', () => {
      if (this.unreachable) {
        this.logger.log({ event: 'redis_reachable' });
        // The next outage is said at once, however soon it comes: its errors are counted apart from this one's.
        this.outages++;
      }
      this.unreachable = false;
    });
    this.client.on('close', () => void this.lost++);
    this.readMarker = this.script('parleyMarker', 1, MARKER_LUA);
    this.markerCheck = setInterval(() => void this.checkMarker(), MARKER_CHECK_MS).unref();
    void this.checkMarker();
  }

  /**
   * Changes whenever the connection to Redis is lost, or its data is found wiped behind a kept connection. The Redis it
   * reconnects to may have lost what it held (a restart without persistence, a failover to a replica that was behind),
   * and one that stayed connected may have been emptied (`FLUSHALL`, a proxy failing over behind one TCP connection),
   * so what a process remembers of Redis's data holds within one generation only.
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

  /**
   * Reads the wipe marker: a key every process of the deployment shares, holding a random token the first of them wrote.
   * Gone (the data wiped; whoever reads first writes a new token, never one written before) or changed since the last
   * read, it starts a new generation; so does the first read that succeeds.
   * Checked once a second, so what a process remembers of a wiped Redis is trusted for a second at most; a read that
   * fails (Redis away) changes nothing here, the lost connection does.
   */
  private async checkMarker(): Promise<void> {
    let token: string;
    try {
      token = String(await this.readMarker([this.key('marker')], [randomBytes(9).toString('base64url')]));
    } catch {
      return;
    }
    // A token other than the last one read means the data was wiped in between. So does the first one read: until then
    // this process had nothing to compare with, and what it learnt of Redis meanwhile (its first reads refused, say, a
    // full Redis, while it already served) may predate a wipe. A new generation only makes it check what it knew again.
    if (token !== this.marker) this.lost++;
    this.marker = token;
  }

  close(): Promise<void> {
    clearInterval(this.markerCheck);
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

/** How often each process reads the wipe marker (see `RedisConnection.checkMarker`). */
const MARKER_CHECK_MS = 1000;

/** The marker's token, written first when there is none. */
const MARKER_LUA = `local t = redis.call('GET', KEYS[1])
if t then return t end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]`;
