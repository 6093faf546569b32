import { describe, expect, it } from 'vitest';
import { RequestLimiter } from './request-limiter.js';

describe('RequestLimiter', () => {
  it('allows a burst, then the average rate, per connection', () => {
    let now = 0;
    const limiter = new RequestLimiter({ perConnection: { perSecond: 2, burst: 3 }, perUser: { perSecond: 100, burst: 100 }, now: () => now });
    const conn = {};
    expect([1, 2, 3, 4].map(() => limiter.take(conn, 'alice'))).toEqual([true, true, true, false]);
    now += 500;
    expect(limiter.take(conn, 'alice')).toBe(true);
    expect(limiter.take(conn, 'alice')).toBe(false);
    // Another connection has its own bucket.
    expect(limiter.take({}, 'bob')).toBe(true);
  });

  it('shares one budget among all connections of a user, and none with other users', () => {
    const limiter = new RequestLimiter({
      perConnection: { perSecond: 100, burst: 100 },
      perUser: { perSecond: 1, burst: 2 },
      perAnonymousAddress: { perSecond: 1, burst: 1 },
      now: () => 0,
    });
    const [a, b] = [{}, {}];
    expect([limiter.take(a, 'alice'), limiter.take(b, 'alice'), limiter.take(a, 'alice')]).toEqual([true, true, false]);
    expect(limiter.take({}, 'bob')).toBe(true);
    // Anonymous connections share one budget per address.
    expect([limiter.take({}, null, '192.0.2.1'), limiter.take({}, null, '::ffff:192.0.2.1'), limiter.take({}, null, '192.0.2.2')]).toEqual([true, false, true]);
  });

  it("refuses a connection past its own limit without taking from its user's shared budget, so the user's other connections go on", () => {
    const limiter = new RequestLimiter({ perConnection: { perSecond: 1, burst: 2 }, perUser: { perSecond: 1, burst: 4 }, now: () => 0 });
    const [runaway, phone] = [{}, {}];
    expect([1, 2, 3, 4, 5, 6].map(() => limiter.take(runaway, 'alice'))).toEqual([true, true, false, false, false, false]);
    expect([limiter.take(phone, 'alice'), limiter.take(phone, 'alice')]).toEqual([true, true]);
  });

  it('counts file chunks that move their chunk in bytes, not requests: over the budget they wait, and past the longest wait they are refused', () => {
    let now = 0;
    const limiter = new RequestLimiter({
      perConnection: { perSecond: 1, burst: 2 },
      perUser: { perSecond: 1, burst: 2 },
      // 100 bytes a second, a burst of 300, chunks of 100, held back at most 1.5 s.
      transfer: { perSecond: 100, burst: 300, requestBytes: 100, maxWaitMs: 1500 },
      now: () => now,
    });
    const conn = {};
    // Each chunk that moves gives back the request it took: three at once, then each a second later than the one before.
    const chunk = () => {
      const holdMs = limiter.takeTransfer(conn, 'alice');
      if (holdMs !== null) limiter.moved(conn, 'alice');
      return holdMs;
    };
    expect([1, 2, 3, 4, 5].map(chunk)).toEqual([0, 0, 0, 1000, null]);
    now += 1000;
    expect(chunk()).toBe(1000);
    // The request budget is untouched by all that.
    expect([limiter.take(conn, 'alice'), limiter.take(conn, 'alice'), limiter.take(conn, 'alice')]).toEqual([true, true, false]);
    // Another user's budgets are untouched.
    expect(limiter.takeTransfer({}, 'bob')).toBe(0);
  });

  it('counts a chunk request that moves nothing (an unknown offer, a refused chunk) as a request, so a flood of them is limited like any other', () => {
    const limiter = new RequestLimiter({
      perConnection: { perSecond: 1, burst: 100 },
      perUser: { perSecond: 1, burst: 3 },
      transfer: { perSecond: 1e9, burst: 1e9, requestBytes: 100, maxWaitMs: 1500 },
      now: () => 0,
    });
    const conn = {};
    // Three answered with an error (not `moved`): the fourth is refused, though bytes are plentiful.
    expect([1, 2, 3, 4].map(() => limiter.takeTransfer(conn, 'alice'))).toEqual([0, 0, 0, null]);
    expect(limiter.take(conn, 'alice')).toBe(false);
    // A chunk refused by the byte budget gives its request back: it did nothing.
    const tight = new RequestLimiter({
      perConnection: { perSecond: 1, burst: 100 },
      perUser: { perSecond: 1, burst: 1 },
      transfer: { perSecond: 100, burst: 100, requestBytes: 100, maxWaitMs: 0 },
      now: () => 0,
    });
    expect([tight.takeTransfer(conn, 'bob'), tight.takeTransfer({}, 'bob')]).toEqual([0, null]);
    tight.moved(conn, 'bob');
    expect([tight.takeTransfer({}, 'bob'), tight.take({}, 'bob')]).toEqual([null, true]);
  });

  it('counts file chunks as requests when there is no transfer budget', () => {
    const limiter = new RequestLimiter({ perConnection: { perSecond: 1, burst: 2 }, perUser: { perSecond: 100, burst: 100 }, now: () => 0 });
    const conn = {};
    expect([limiter.takeTransfer(conn, 'alice'), limiter.take(conn, 'alice'), limiter.takeTransfer(conn, 'alice')]).toEqual([0, true, null]);
  });
});
