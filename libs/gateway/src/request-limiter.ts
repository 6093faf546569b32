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
 * user's connections on this gateway together). A request over either limit
 * is answered `rate_limited` and does nothing; other users' buckets are
 * untouched.
 */
export class RequestLimiter {
  private readonly connections = new WeakMap<object, TokenBucket>();
  private readonly users = new Map<string, TokenBucket>();
  private lastSweep = 0;

  constructor(
    private readonly perConnection: RateLimit,
    private readonly perUser: RateLimit,
    private readonly now: () => number = Date.now,
  ) {}

  /** True when the request may run; takes one token from each bucket. */
  take(connection: object, user: string | null): boolean {
    const now = this.now();
    this.sweep(now);
    let conn = this.connections.get(connection);
    if (!conn) this.connections.set(connection, (conn = new TokenBucket(this.perConnection, now)));
    if (user === null) return conn.take(now);
    let bucket = this.users.get(user);
    if (!bucket) this.users.set(user, (bucket = new TokenBucket(this.perUser, now)));
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
