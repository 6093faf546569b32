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
export class TokenBucket {
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

  /** How long (ms) until it has a token: 0 when it has one now. */
  waitMs(now: number): number {
    this.refill(now);
    return this.tokens >= 1 ? 0 : ((1 - this.tokens) / this.limit.perSecond) * 1000;
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
 * One token bucket per key (a user, say), made full on first use. A full bucket carries no state worth keeping: the
 * full ones are let go once a minute, so keys that come and go cost nothing for long.
 */
export class KeyedBuckets {
  private readonly buckets = new Map<string, TokenBucket>();
  private lastSweep = 0;

  constructor(
    private readonly limit: RateLimit,
    private readonly now: () => number = Date.now,
  ) {}

  /** The key's bucket, as of `now`. */
  of(key: string, now = this.now()): TokenBucket {
    if (now - this.lastSweep >= 60_000) {
      this.lastSweep = now;
      for (const [k, bucket] of this.buckets) if (bucket.full(now)) this.buckets.delete(k);
    }
    let bucket = this.buckets.get(key);
    if (!bucket) this.buckets.set(key, (bucket = new TokenBucket(this.limit, now)));
    return bucket;
  }

  /** Takes a token of the key's; false (taking nothing) when it has none. */
  take(key: string): boolean {
    const now = this.now();
    return this.of(key, now).take(now);
  }

  /** Gives a token back to the key (one taken for what did not happen), never above the burst. */
  give(key: string): void {
    const now = this.now();
    this.buckets.get(key)?.give(now);
  }

  /** How long (ms) until the key has a token again: 0 when it has one now. */
  waitMs(key: string): number {
    const now = this.now();
    return this.buckets.get(key)?.waitMs(now) ?? 0;
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
  private readonly users: KeyedBuckets;
  private readonly anonymous: KeyedBuckets;
  private readonly transfers: KeyedBuckets | undefined;
  private readonly now: () => number;

  constructor(private readonly opts: LimiterOptions) {
    this.now = opts.now ?? Date.now;
    this.users = new KeyedBuckets(opts.perUser, this.now);
    this.anonymous = new KeyedBuckets(opts.perAnonymousAddress ?? opts.perUser, this.now);
    this.transfers = opts.transfer && new KeyedBuckets(opts.transfer, this.now);
  }

  /** True when the request may run; takes one token from each bucket. `user` null: an anonymous connection from `address`. */
  take(connection: object, user: string | null, address = 'unknown'): boolean {
    const now = this.now();
    let conn = this.connections.get(connection);
    if (!conn) this.connections.set(connection, (conn = new TokenBucket(this.opts.perConnection, now)));
    const shared = user === null ? this.anonymous.of(addressKey(address), now) : this.users.of(user, now);
    // Both must allow it, and a refused request takes from neither: a connection past its own limit would otherwise
    // drain the bucket it shares with the user's other connections, and have them refused for requests that did nothing.
    if (!shared.take(now)) return false;
    if (conn.take(now)) return true;
    shared.give(now);
    return false;
  }

  /**
   * For a file transfer request of a logged-in user: how long (ms) to hold it back, 0 for not at all, or null to refuse
   * it. It takes a request (as `take`) and its bytes from the transfer budget; the request is given back by `moved`
   * once it has moved its chunk, and kept when it has not. Without a transfer budget it counts as an ordinary request.
   */
  takeTransfer(connection: object, user: string, address?: string): number | null {
    const limit = this.opts.transfer;
    if (!this.take(connection, user, address)) return null;
    if (!limit || !this.transfers) return 0;
    const now = this.now();
    const holdMs = this.transfers.of(user, now).reserve(now, limit.requestBytes, limit.maxWaitMs);
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
    this.users.give(user);
  }
}
