import { isIPv4 } from 'node:net';

export interface LoginThrottleLimits {
  /** Failed logins from one address within the window that lock that address out. */
  maxFailuresPerAddress: number;
  /** Failed logins for one user name, from anywhere, within the window that lock that user name out. */
  maxFailuresPerUser: number;
  windowMs: number;
  lockoutMs: number;
}

/** Failures counted in a sliding window, and a lockout once they reach the limit. */
class FailureCounter {
  private readonly entries = new Map<string, { failures: number[]; lockedUntil: number }>();

  constructor(
    private readonly max: number,
    private readonly limits: LoginThrottleLimits,
  ) {}

  lockedUntil(key: string, now: number): number {
    const e = this.entries.get(key);
    return e && e.lockedUntil > now ? e.lockedUntil : 0;
  }

  fail(key: string, now: number): void {
    const e = this.entries.get(key) ?? { failures: [], lockedUntil: 0 };
    e.failures = e.failures.filter((t) => t > now - this.limits.windowMs);
    e.failures.push(now);
    if (e.failures.length >= this.max) {
      e.lockedUntil = now + this.limits.lockoutMs;
      e.failures = [];
    }
    this.entries.set(key, e);
  }

  /** Forgets what is over, so the table stays as small as the current attack. */
  sweep(now: number): void {
    for (const [key, e] of this.entries) {
      if (e.lockedUntil <= now && !e.failures.some((t) => t > now - this.limits.windowMs)) this.entries.delete(key);
    }
  }

  get size(): number {
    return this.entries.size;
  }
}

/**
 * Failed-login throttling, asked before the password is hashed, so a brute
 * force costs the server a map lookup rather than a scrypt run. An address
 * that fails too often is locked out (other addresses log in as usual); a user
 * name that fails too often from everywhere (a spread-out attack) is locked
 * out too, with a higher bar. IPv6 addresses count per /64, the block one
 * host usually holds. State is per gateway process.
 */
export class LoginThrottle {
  private readonly byAddress: FailureCounter;
  private readonly byUser: FailureCounter;
  private lastSweep = 0;

  constructor(
    private readonly limits: LoginThrottleLimits,
    private readonly now: () => number = Date.now,
  ) {
    this.byAddress = new FailureCounter(limits.maxFailuresPerAddress, limits);
    this.byUser = new FailureCounter(limits.maxFailuresPerUser, limits);
  }

  /** 0 when a login attempt may proceed; otherwise the time (epoch ms) the lockout ends. */
  lockedUntil(user: string, address: string): number {
    const now = this.now();
    return Math.max(this.byAddress.lockedUntil(addressKey(address), now), this.byUser.lockedUntil(user, now));
  }

  failed(user: string, address: string): void {
    const now = this.now();
    this.byAddress.fail(addressKey(address), now);
    this.byUser.fail(user, now);
    if (now - this.lastSweep > this.limits.windowMs) {
      this.lastSweep = now;
      this.byAddress.sweep(now);
      this.byUser.sweep(now);
    }
  }

  /** How many addresses and users are tracked (for tests and metrics). */
  get tracked(): number {
    return this.byAddress.size + this.byUser.size;
  }
}

/** An IPv4 address (mapped or not) as is; an IPv6 address by its /64. */
export function addressKey(address: string): string {
  const v4 = address.startsWith('::ffff:') ? address.slice(7) : address;
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
