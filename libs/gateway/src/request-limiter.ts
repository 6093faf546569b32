import { addressKey } from './login-throttle.js';

export interface RateLimit {
  /** Requests per second, on average. */
  perSecond: number;
  /** Requests allowed in a burst above the average. */
  burst: number;
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
    this.tokens = Math.min(this.limit.burst, this.tokens + ((now - this.at) / 1000) * this.limit.perSecond);
    this.at = now;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  full(now: number): boolean {
    return this.tokens + ((now - this.at) / 1000) * this.limit.perSecond >= this.limit.burst;
  }
}

/**
 * Request rate limits, one bucket per connection and one per user (all of a
 * user's connections on this gateway together). Anonymous connections, which
 * may only register (a password hash each), share one bucket per address. A
 * request over any limit is answered `rate_limited` and does nothing; other
 * users' buckets are untouched.
 */
export class RequestLimiter {
  private readonly connections = new WeakMap<object, TokenBucket>();
  private readonly users = new Map<string, TokenBucket>();
  private lastSweep = 0;

  constructor(
    private readonly perConnection: RateLimit,
    private readonly perUser: RateLimit,
    private readonly perAnonymousAddress: RateLimit = perUser,
    private readonly now: () => number = Date.now,
  ) {}

  /** True when the request may run; takes one token from each bucket. `user` null: an anonymous connection from `address`. */
  take(connection: object, user: string | null, address = 'unknown'): boolean {
    const now = this.now();
    this.sweep(now);
    let conn = this.connections.get(connection);
    if (!conn) this.connections.set(connection, (conn = new TokenBucket(this.perConnection, now)));
    // User names never contain '@', so the two kinds of key cannot meet.
    const key = user ?? `anonymous@${addressKey(address)}`;
    let bucket = this.users.get(key);
    if (!bucket) this.users.set(key, (bucket = new TokenBucket(user === null ? this.perAnonymousAddress : this.perUser, now)));
    // Both must allow it.
    if (!bucket.take(now)) return false;
    return conn.take(now);
  }

  /** Full buckets carry no state worth keeping. */
  private sweep(now: number): void {
    if (now - this.lastSweep < 60_000) return;
    this.lastSweep = now;
    for (const [user, bucket] of this.users) if (bucket.full(now)) this.users.delete(user);
  }
}
