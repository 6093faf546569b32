import { randomBytes } from 'node:crypto';
import { Logger } from '@nestjs/common';
import { Command, Redis } from 'ioredis';
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
   * A Lua script for calls that come many to a turn (a message's append): the calls made within one event-loop turn
   * go to Redis as one script call, which runs `body` for each of them in the order they were made. Each call still
   * resolves to what `body` returned for it, or rejects with the error its own commands raised; one call's failure
   * stops none of the others. `body` is the text of a Lua function of (KEYS, ARGV), the call's own keys and
   * arguments, `keysPerCall` keys each.
   *
   * Each call of a script costs the process about as much as the script's work: a command object and its promise,
   * a place in the pipeline, a reply to decode, and Redis a script lookup. At 1:1 saturation a turn holds tens of
   * appends, so one call for all of them saves most of that.
   *
   * The batch is sent at the end of the turn (`setImmediate`) and straight onto the connection, past the automatic
   * pipeline: queued there, it would wait for the next turn whenever the pipeline of this turn had left before it.
   * So a batched call is ordered with the other calls of its script, not with the other commands of its turn. It is
   * sent as EVAL, with the script's text, never as EVALSHA: batches of several turns may be in flight at once, and an
   * EVALSHA that Redis answered NOSCRIPT (its scripts flushed, a failover behind the same connection) would be sent
   * again after batches of later turns had run, its calls then applied after theirs. The text is about 1.4 KB a batch,
   * which Redis finds in its script cache by its digest.
   */
  batchedScript(name: string, keysPerCall: number, body: string): (keys: string[], args: (string | number)[]) => Promise<unknown> {
    const lua = batchLua(keysPerCall, body);
    let pending: { keys: string[]; args: (string | number)[]; done: Deferred }[] = [];
    const send = (calls: typeof pending) => {
      const keys: string[] = [];
      const args: (string | number)[] = [];
      for (const c of calls) {
        keys.push(...c.keys);
        args.push(c.args.length, ...c.args);
      }
      const command = new Command('eval', [lua, keys.length, ...keys, ...args], { replyEncoding: 'utf8' });
      void this.client.sendCommand(command);
      (command.promise as Promise<unknown[]>).then(
        (replies) => calls.forEach((c, i) => settle(c.done, replies[i])),
        (e: unknown) => calls.forEach((c) => c.done.reject(e)),
      );
    };
    const flush = () => {
      const calls = pending;
      pending = [];
      for (let i = 0; i < calls.length; i += MAX_BATCH) send(calls.slice(i, i + MAX_BATCH));
    };
    return (keys, args) => {
      if (keys.length !== keysPerCall) throw new Error(`${name} takes ${keysPerCall} keys, not ${keys.length}`);
      if (pending.length === 0) setImmediate(flush);
      return new Promise((resolve, reject) => pending.push({ keys, args, done: { resolve, reject } }));
    };
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

/** At most this many calls go in one batched script call (see `RedisConnection.batchedScript`), so that none holds Redis long. */
const MAX_BATCH = 128;

interface Deferred {
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
}

/**
 * Settles one call of a batch by its reply: `{1, result}`, or `{0, message}` for an error its own commands raised. A
 * result of nil leaves `{1}` (Lua's tables end at a nil): null, as a script's own nil reply is.
 */
function settle(done: Deferred, reply: unknown): void {
  if (!Array.isArray(reply)) done.reject(new Error('no reply for this call in the batch'));
  else if (reply[0] === 1) done.resolve(reply.length > 1 ? reply[1] : null);
  else done.reject(new Error(String(reply[1])));
}

/**
 * The batch around one call's `body` (see `RedisConnection.batchedScript`). ARGV holds each call's arguments after
 * their count; KEYS, `keysPerCall` for each call. Each call runs under `pcall`, so that an error raised by its
 * commands (`redis.call` raises a table with `err`) is its own reply, and the calls after it still run.
 */
function batchLua(keysPerCall: number, body: string): string {
  return `local function one(KEYS, ARGV)
${body}
end
local out = {}
local a = 1
for i = 0, #KEYS / ${keysPerCall} - 1 do
  local k = {}
  for j = 1, ${keysPerCall} do k[j] = KEYS[i * ${keysPerCall} + j] end
  local n = tonumber(ARGV[a])
  local v = {}
  for j = 1, n do v[j] = ARGV[a + j] end
  a = a + n + 1
  local ok, r = pcall(one, k, v)
  if ok then
    out[#out + 1] = {1, r}
  elseif type(r) == 'table' then
    out[#out + 1] = {0, r.err or 'script error'}
  else
    out[#out + 1] = {0, tostring(r)}
  end
end
return out`;
}

/** The marker's token, written first when there is none. */
const MARKER_LUA = `local t = redis.call('GET', KEYS[1])
if t then return t end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]`;
