import { describe, expect, it } from 'vitest';
import { RequestLimiter } from './request-limiter.js';

describe('RequestLimiter', () => {
  it('allows a burst, then the average rate, per connection', () => {
    let now = 0;
    const limiter = new RequestLimiter({ perSecond: 2, burst: 3 }, { perSecond: 100, burst: 100 }, undefined, () => now);
    const conn = {};
    expect([1, 2, 3, 4].map(() => limiter.take(conn, 'alice'))).toEqual([true, true, true, false]);
    now += 500;
    expect(limiter.take(conn, 'alice')).toBe(true);
    expect(limiter.take(conn, 'alice')).toBe(false);
    // Another connection has its own bucket.
    expect(limiter.take({}, 'bob')).toBe(true);
  });

  it('shares one budget among all connections of a user, and none with other users', () => {
    const limiter = new RequestLimiter({ perSecond: 100, burst: 100 }, { perSecond: 1, burst: 2 }, { perSecond: 1, burst: 1 }, () => 0);
    const [a, b] = [{}, {}];
    expect([limiter.take(a, 'alice'), limiter.take(b, 'alice'), limiter.take(a, 'alice')]).toEqual([true, true, false]);
    expect(limiter.take({}, 'bob')).toBe(true);
    // Anonymous connections share one budget per address.
    expect([limiter.take({}, null, '192.0.2.1'), limiter.take({}, null, '::ffff:192.0.2.1'), limiter.take({}, null, '192.0.2.2')]).toEqual([true, false, true]);
  });
});
