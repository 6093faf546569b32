import { afterEach, describe, expect, it, vi } from 'vitest';
import { LogThrottle } from './log-throttle.js';

describe('LogThrottle', () => {
  it('logs the first failure of a kind in a window, counts the rest, and says how many were left out with the next one logged', () => {
    const clock = { now: 0 };
    const throttle = new LogThrottle(10_000, () => clock.now);
    expect(throttle.admit('send\0disk full')).toEqual({ leftOut: 0 });
    for (let i = 0; i < 482; i++) expect(throttle.admit('send\0disk full')).toBeNull();
    // Another kind is its own.
    expect(throttle.admit('history\0disk full')).toEqual({ leftOut: 0 });
    clock.now = 10_000;
    expect(throttle.admit('send\0disk full')).toEqual({ leftOut: 482 });
    expect(throttle.admit('send\0disk full')).toBeNull();
  });

  it('gives the fields for the log line: none for the first of a kind, the count left out with the next one logged', () => {
    const clock = { now: 0 };
    const throttle = new LogThrottle(10_000, () => clock.now);
    expect(throttle.logFields('k')).toEqual({});
    expect(throttle.logFields('k')).toBeNull();
    clock.now = 10_000;
    expect(throttle.logFields('k')).toEqual({ alikeLeftOut: 1 });
  });

  it('logs up to a burst of a kind in a window, when asked to, before it only counts', () => {
    const clock = { now: 0 };
    const throttle = new LogThrottle(10_000, () => clock.now, 3);
    for (let i = 0; i < 3; i++) expect(throttle.admit('::1')).toEqual({ leftOut: 0 });
    for (let i = 0; i < 7; i++) expect(throttle.admit('::1')).toBeNull();
    expect(throttle.admit('192.0.2.1')).toEqual({ leftOut: 0 });
    clock.now = 10_000;
    expect(throttle.admit('::1')).toEqual({ leftOut: 7 });
    expect(throttle.admit('::1')).toEqual({ leftOut: 0 });
  });

  describe('told of what a window left out as it ends', () => {
    afterEach(() => {
      vi.useRealTimers();
    });

    it('tells the count of a flood that stopped, once, and the next one logged does not count it again', () => {
      vi.useFakeTimers();
      const told: [string, number][] = [];
      const throttle = new LogThrottle(
        10_000,
        () => Date.now(),
        2,
        (kind, n) => told.push([kind, n]),
      );
      for (let i = 0; i < 2; i++) expect(throttle.admit('::1')).toEqual({ leftOut: 0 });
      for (let i = 0; i < 5; i++) expect(throttle.admit('::1')).toBeNull();
      // A kind that left nothing out is not told.
      expect(throttle.admit('192.0.2.1')).toEqual({ leftOut: 0 });
      vi.advanceTimersByTime(9_999);
      expect(told).toEqual([]);
      vi.advanceTimersByTime(1);
      expect(told).toEqual([['::1', 5]]);
      expect(throttle.admit('::1')).toEqual({ leftOut: 0 });
      vi.advanceTimersByTime(60_000);
      expect(told).toEqual([['::1', 5]]);
    });

    it('tells nothing at the end when the next one logged, at the window end, has counted them', () => {
      vi.useFakeTimers();
      const told: [string, number][] = [];
      const clock = { now: 0 };
      const throttle = new LogThrottle(
        10_000,
        () => clock.now,
        1,
        (kind, n) => told.push([kind, n]),
      );
      throttle.admit('k');
      throttle.admit('k');
      // The clock the throttle reads reaches the window's end before its timer has run.
      clock.now = 10_000;
      expect(throttle.admit('k')).toEqual({ leftOut: 1 });
      vi.advanceTimersByTime(10_000);
      expect(told).toEqual([]);
    });
  });
});
