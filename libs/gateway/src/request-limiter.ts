import { addressKey } from './login-throttle.js';

export interface RateLimit {
  /** Requests per second, on average. */
  perSecond: number;
  /** Requests allowed in a burst above the average. */
  burst: number;
}

/** File transfer budget of one user: bytes per second and a burst, in bytes. */
export interface TransferLimit extends RateLimit {
  /** What one transfer request (a chunk up or down) counts for, in bytes. */
  requestBytes: number;
  /** Longest a transfer request may be held back to stay within the budget; one that would wait longer is refused. */
  maxWaitMs: number;
}

export interface LimiterOptions {
  perConnection: RateLimit;
  /** All of a user's connections on this gateway together. */
  perUser: RateLimit;
  /** Anonymous connections of one address together; `perUser` when absent. */
  perAnonymousAddress?: RateLimit;
  /** File chunks, up and down; counted in bytes, and as requests only when they move nothing. None when absent (they count as requests then). */
  transfer?: TransferLimit;
  now?: () => number;
}

/** A token bucket: `burst` tokens, refilled at `perSecond`. */
class TokenBucket {
  private tokens: number;
  private at: number;

  constructor(
    private readonly limit: RateLimit,
    now: number,
  ) {
    this.tokens = limit.burst;
    this.at = now;
  }

  take(now: number): boolean {
    this.refill(now);
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  /**
   * Takes `cost` tokens now or on credit: returns how long (ms) until the bucket has covered them, 0 when it has
   * them already, or null (taking nothing) when that would be longer than `maxWaitMs`.
   */
  reserve(now: number, cost: number, maxWaitMs: number): number | null {
    this.refill(now);
    const left = this.tokens - cost;
    const waitMs = left >= 0 ? 0 : (-left / this.limit.perSecond) * 1000;
    if (waitMs > maxWaitMs) return null;
    this.tokens = left;
    return waitMs;
  }

  /** Gives one token back (a request that turned out to cost nothing here), never above the burst. */
  give(now: number): void {
    this.refill(now);
    this.tokens = Math.min(this.limit.burst, this.tokens + 1);
  }

  full(now: number): boolean {
    return this.tokens + ((now - this.at) / 1000) * this.limit.perSecond >= this.limit.burst;
  }

  private refill(now: number): void {
    this.tokens = Math.min(this.limit.burst, this.tokens + ((now - this.at) / 1000) * this.limit.perSecond);
    this.at = now;
  }
}

/**
 * Request rate limits, one bucket per connection and one per user (all of a
 * user's connections on this gateway together). Anonymous connections, which
 * may only register (a password hash each), share one bucket per address. A
 * request over any limit is answered `rate_limited` and does nothing; other
 * users' buckets are untouched.
 *
 * File chunks (uploads and downloads) are many small requests that move one
 * file; they draw on a per-user byte budget, and one over it is held back until
 * the budget covers it (so a pipelined upload keeps its order and just slows
 * down), or refused when that would take longer than `maxWaitMs`. Each also
 * takes a request while it is handled, given back once it has moved its chunk
 * (`moved`): a chunk that moves nothing (an unknown offer, a refused chunk) costs
 * a request like any other, and a flood of them is limited like any other, while
 * a transfer (a window of chunks in flight) holds only a few requests at a time.
 */
export class RequestLimiter {
  private readonly connections = new WeakMap<object, TokenBucket>();
  private readonly users = new Map<string, TokenBucket>();
  private readonly transfers = new Map<string, TokenBucket>();
  private lastSweep = 0;
  private readonly now: () => number;

  constructor(private readonly opts: LimiterOptions) {
    this.now = opts.now ?? Date.now;
  }

  /** True when the request may run; takes one token from each bucket. `user` null: an anonymous connection from `address`. */
  take(connection: object, user: string | null, address = 'unknown'): boolean {
    const now = this.now();
    this.sweep(now);
    let conn = this.connections.get(connection);
    if (!conn) this.connections.set(connection, (conn = new TokenBucket(this.opts.perConnection, now)));
    // User names never contain '@', so the two kinds of key cannot meet.
    const key = user ?? `anonymous@${addressKey(address)}`;
    let bucket = this.users.get(key);
    if (!bucket) this.users.set(key, (bucket = new TokenBucket(user === null ? (this.opts.perAnonymousAddress ?? this.opts.perUser) : this.opts.perUser, now)));
    // Both must allow it.
    if (!bucket.take(now)) return false;
    return conn.take(now);
  }

  /**
   * For a file transfer request of a logged-in user: how long (ms) to hold it back, 0 for not at all, or null to refuse
   * it. It takes a request (as `take`) and its bytes from the transfer budget; the request is given back by `moved`
   * once it has moved its chunk, and kept when it has not. Without a transfer budget it counts as an ordinary request.
   */
  takeTransfer(connection: object, user: string, address?: string): number | null {
    const limit = this.opts.transfer;
    if (!this.take(connection, user, address)) return null;
    if (!limit) return 0;
    const now = this.now();
    let bucket = this.transfers.get(user);
    if (!bucket) this.transfers.set(user, (bucket = new TokenBucket(limit, now)));
    const holdMs = bucket.reserve(now, limit.requestBytes, limit.maxWaitMs);
    // Refused: it did nothing, and costs what any refused request costs (nothing).
    if (holdMs === null) this.moved(connection, user);
    return holdMs;
  }

  /**
   * A transfer request admitted by `takeTransfer` moved its chunk: gives back the request it took, which its bytes
   * paid for. Does nothing without a transfer budget (chunks are ordinary requests then).
   */
  moved(connection: object, user: string): void {
    if (!this.opts.transfer) return;
    const now = this.now();
    this.connections.get(connection)?.give(now);
    this.users.get(user)?.give(now);
  }

  /** Full buckets carry no state worth keeping. */
  private sweep(now: number): void {
    if (now - this.lastSweep < 60_000) return;
    this.lastSweep = now;
    for (const buckets of [this.users, this.transfers]) for (const [key, bucket] of buckets) if (bucket.full(now)) buckets.delete(key);
  }
}
