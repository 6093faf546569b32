import { afterEach, describe, expect, it, vi } from 'vitest';
import { heldBack } from './request-dispatcher.js';

describe('heldBack', () => {
  afterEach(() => void vi.useRealTimers());

  it('waits from when the request came, not from when the one before it was done', async () => {
    vi.useFakeTimers();
    const settled: string[] = [];
    let release!: () => void;
    const before = new Promise<void>((resolve) => (release = resolve));
    void heldBack(before, 1500, () => Date.now()).then(() => settled.push('held'));
    // The request before it takes a second; this one's budget covers it half a second after that.
    await vi.advanceTimersByTimeAsync(1000);
    release();
    await vi.advanceTimersByTimeAsync(499);
    expect(settled).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    expect(settled).toEqual(['held']);
  });

  it('goes at once when the requests before it took longer than its hold', async () => {
    vi.useFakeTimers();
    const settled: string[] = [];
    let release!: () => void;
    const before = new Promise<void>((resolve) => (release = resolve));
    void heldBack(before, 500, () => Date.now()).then(() => settled.push('held'));
    await vi.advanceTimersByTimeAsync(2000);
    release();
    await vi.advanceTimersByTimeAsync(0);
    expect(settled).toEqual(['held']);
  });
});
