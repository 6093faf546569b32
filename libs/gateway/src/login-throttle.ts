import { randomUUID } from 'node:crypto';
import { isIPv4 } from 'node:net';
import { unmappedAddress } from '#libs/config';
import type { RedisConnection } from '#libs/storage';

export interface LoginThrottleLimits {
  /** Failed logins from one address within the window that lock that address out. */
  maxFailuresPerAddress: number;
  /** Failed logins for one user name, from anywhere, within the window that lock that user name out. */
  maxFailuresPerUser: number;
  windowMs: number;
  lockoutMs: number;
}

/** One counter to charge a failure to, and how many failures within the window lock it. */
export interface FailureCharge {
  key: string;
  max: number;
}

/**
 * Where failed logins are counted: failures in a sliding window per key, and a
 * lockout once a key reaches its limit. In memory for one gateway; in Redis,
 * shared by every gateway on it, so an attack spread over gateways counts once.
 */
export interface FailureLedger {
  /** The latest time (epoch ms) any of the keys is locked out until, or 0 when none is locked at `now`. */
  lockedUntil(keys: string[], now: number): Promise<number>;
  /** Records one failure against each key, locking out (until `now + lockoutMs`) a key that reaches its max within `windowMs`. */
  fail(charges: FailureCharge[], now: number, windowMs: number, lockoutMs: number): Promise<void>;
}

/** One gateway's failures, in memory. */
export class MemoryFailureLedger implements FailureLedger {
  private readonly entries = new Map<string, { failures: number[]; lockedUntil: number }>();
  private lastSweep = 0;

  lockedUntil(keys: string[], now: number): Promise<number> {
    let until = 0;
    for (const key of keys) {
      const e = this.entries.get(key);
      if (e && e.lockedUntil > now) until = Math.max(until, e.lockedUntil);
    }
    return Promise.resolve(until);
  }

  fail(charges: FailureCharge[], now: number, windowMs: number, lockoutMs: number): Promise<void> {
    for (const { key, max } of charges) {
      const e = this.entries.get(key) ?? { failures: [], lockedUntil: 0 };
      e.failures = e.failures.filter((t) => t > now - windowMs);
      e.failures.push(now);
      if (e.failures.length >= max) {
        e.lockedUntil = now + lockoutMs;
        e.failures = [];
      }
      this.entries.set(key, e);
    }
    // Forgets what is over now and then, so the table stays as small as the current attack.
    if (now - this.lastSweep > windowMs) {
      this.lastSweep = now;
      for (const [key, e] of this.entries) if (e.lockedUntil <= now && !e.failures.some((t) => t > now - windowMs)) this.entries.delete(key);
    }
    return Promise.resolve();
  }

  /** How many keys are tracked (for tests). */
  get size(): number {
    return this.entries.size;
  }
}

/**
 * KEYS: per charge, its window (sorted set of failure times) and its lock (the
 * lockout's end, expiring with it). ARGV: now, window, lockout, a unique id for
 * this failure, then each charge's max.
 */
const FAIL = `
local now, window, lockout = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
for i = 1, #KEYS, 2 do
  local failures, lock = KEYS[i], KEYS[i + 1]
  redis.call('ZREMRANGEBYSCORE', failures, '-inf', now - window)
  redis.call('ZADD', failures, now, ARGV[4])
  if redis.call('ZCARD', failures) >= tonumber(ARGV[4 + (i + 1) / 2]) then
    redis.call('SET', lock, now + lockout, 'PX', lockout)
    redis.call('DEL', failures)
  else
    redis.call('PEXPIRE', failures, window)
  end
end
return 1
`;

/** Failures of every gateway on one Redis: `{prefix}login:failures:{key}` and `{prefix}login:lock:{key}`. */
export class RedisFailureLedger implements FailureLedger {
  constructor(private readonly redis: RedisConnection) {}

  async lockedUntil(keys: string[], now: number): Promise<number> {
    const locks = await this.redis.client.mget(...keys.map((k) => this.redis.key('login', 'lock', k)));
    return Math.max(0, ...locks.map((v) => Number(v ?? 0)).filter((t) => t > now));
  }

  async fail(charges: FailureCharge[], now: number, windowMs: number, lockoutMs: number): Promise<void> {
    const keys = charges.flatMap(({ key }) => [this.redis.key('login', 'failures', key), this.redis.key('login', 'lock', key)]);
    // The number of keys follows the charges: EVAL (failed logins are rare).
    await this.redis.client.eval(FAIL, keys.length, ...keys, now, windowMs, lockoutMs, `${now}:${randomUUID()}`, ...charges.map((c) => c.max));
  }
}

/**
 * Failed-login throttling, asked before the password is hashed, so a brute
 * force costs the server a lookup rather than a scrypt run. An address that
 * fails too often is locked out (other addresses log in as usual); a user name
 * that fails too often from everywhere (a spread-out attack) is locked out too,
 * with a higher bar. IPv6 addresses count per /64, the block one host usually
 * holds. Counted per gateway standalone, and across all gateways on Redis.
 */
export class LoginThrottle {
  private readonly addressTurns: Turns;
  private readonly userTurns: Turns;

  constructor(
    private readonly limits: LoginThrottleLimits,
    private readonly ledger: FailureLedger = new MemoryFailureLedger(),
    private readonly now: () => number = Date.now,
  ) {
    this.addressTurns = new Turns(limits.maxFailuresPerAddress);
    this.userTurns = new Turns(limits.maxFailuresPerUser);
  }

  /**
   * Runs a login attempt (its lockout check, password check and failure count) once fewer attempts of its address, and
   * of its user name, are under way than would lock them out; until then it waits. Failures are counted as attempts
   * end: attempts sent all at once all passed the lockout check before the first was counted, and each cost a KDF run
   * (300 from one address, at once: 300 guesses, seconds of CPU each second). On this gateway; across gateways, each
   * bounds its own.
   */
  attempt<T>(user: string, address: string, run: () => Promise<T>): Promise<T> {
    return this.addressTurns.take(addressCounter(address), () => this.userTurns.take(userCounter(user), run));
  }

  /** 0 when a login attempt may proceed; otherwise the time (epoch ms) the lockout ends. */
  lockedUntil(user: string, address: string): Promise<number> {
    return this.ledger.lockedUntil([addressCounter(address), userCounter(user)], this.now());
  }

  failed(user: string, address: string): Promise<void> {
    return this.ledger.fail(
      [
        { key: addressCounter(address), max: this.limits.maxFailuresPerAddress },
        { key: userCounter(user), max: this.limits.maxFailuresPerUser },
      ],
      this.now(),
      this.limits.windowMs,
      this.limits.lockoutMs,
    );
  }
}

/** At most `max` tasks of one key run at once; the others wait, in order, for one to end. */
class Turns {
  private readonly keys = new Map<string, { running: number; waiting: (() => void)[] }>();

  constructor(private readonly max: number) {}

  async take<T>(key: string, run: () => Promise<T>): Promise<T> {
    const turns = this.keys.get(key) ?? { running: 0, waiting: [] };
    this.keys.set(key, turns);
    // A task that ends hands its place to the first waiting, so `running` counts both.
    if (turns.running < this.max) turns.running++;
    else await new Promise<void>((resolve) => turns.waiting.push(resolve));
    try {
      return await run();
    } finally {
      const next = turns.waiting.shift();
      if (next) next();
      else if (--turns.running === 0) this.keys.delete(key);
    }
  }
}

const addressCounter = (address: string) => `address:${addressKey(address)}`;
const userCounter = (user: string) => `user:${user}`;

/** An IPv4 address (mapped or not) as is; an IPv6 address by its /64. */
export function addressKey(address: string): string {
  const v4 = unmappedAddress(address);
  if (isIPv4(v4)) return v4;
  const [head = '', tail = ''] = address.split('::');
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  const groups = address.includes('::') ? [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right] : left;
  return `${groups
    .slice(0, 4)
    .map((g) => (parseInt(g, 16) || 0).toString(16))
    .join(':')}::/64`;
}
