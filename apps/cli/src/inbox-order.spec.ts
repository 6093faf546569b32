import { describe, expect, it, vi } from 'vitest';
import type { MessageEvent, SyncEvent } from '#libs/protocol';
import { InboxOrder, type FilledStretch } from './inbox-order.js';

const msg = (conv: string, seq: number): MessageEvent => ({ type: 'message', conv, seq, from: 'a', to: 'b', ts: seq, id: `m${seq}`, text: `#${seq}` });
const sync = (...convs: [string, number][]): SyncEvent => ({
  type: 'sync',
  conversations: convs.map(([conv, after]) => ({ conv, after, last: after, mine: { delivered: after, deliveredAt: null, read: 0, readAt: null }, peers: {} })),
});

/** Runs a test on fake timers, and puts the real ones back however it ends. */
async function withFakeTimers(run: () => void | Promise<void>): Promise<void> {
  vi.useFakeTimers();
  try {
    await run();
  } finally {
    vi.useRealTimers();
  }
}

describe('InboxOrder', () => {
  it('holds events until the sync, then shows them in seq order from where the sync says', () => {
    const shown: number[] = [];
    const order = new InboxOrder((e) => shown.push(e.seq));
    order.accept(msg('c', 7)); // a live message overtaking the backlog
    order.accept(msg('c', 5));
    expect(shown).toEqual([]);
    order.sync(sync(['c', 4]));
    expect(shown).toEqual([5]);
    order.accept(msg('c', 6));
    expect(shown).toEqual([5, 6, 7]);
    order.stop();
  });

  it('does not wait for what the sync says the user may not see (said while they were out of the group)', () => {
    const shown: number[] = [];
    const order = new InboxOrder((e) => shown.push(e.seq));
    const s = sync(['g', 3]);
    s.conversations[0]!.hidden = [{ after: 5, upTo: 8 }];
    order.sync(s);
    for (const seq of [4, 5, 9, 10]) order.accept(msg('g', seq));
    expect(shown).toEqual([4, 5, 9, 10]);
    order.stop();
  });

  it('does not wait for what came before the event that lets the user back in', () => {
    const shown: number[] = [];
    const back = (e: { seq: number }) => e.seq === 9;
    const order = new InboxOrder((e) => shown.push(e.seq), undefined, undefined, back);
    order.sync(sync(['g', 5]));
    order.accept(msg('g', 10));
    expect(shown).toEqual([]);
    order.accept(msg('g', 9));
    expect(shown).toEqual([9, 10]);
    // Any other gap is still waited for.
    order.accept(msg('g', 12));
    expect(shown).toEqual([9, 10]);
    order.stop();
  });

  it('drops repeats: a replayed backlog after a reconnect shows nothing twice', () => {
    const shown: number[] = [];
    const order = new InboxOrder((e) => shown.push(e.seq));
    order.sync(sync(['c', 0]));
    for (const s of [1, 2, 3]) order.accept(msg('c', s));
    order.reconnecting();
    order.sync(sync(['c', 1])); // the server only knew delivery up to 1
    for (const s of [2, 3, 4]) order.accept(msg('c', s));
    expect(shown).toEqual([1, 2, 3, 4]);
    order.stop();
  });

  it('starts a conversation the sync did not mention at its first event, and keeps conversations apart', () => {
    const shown: string[] = [];
    const order = new InboxOrder((e) => shown.push(`${e.conv}${e.seq}`));
    order.sync(sync(['a', 2]));
    order.accept(msg('new', 1));
    order.accept(msg('a', 3));
    order.accept(msg('new', 2));
    expect(shown).toEqual(['new1', 'a3', 'new2']);
    order.stop();
  });

  it('gives up on a gap after the timeout instead of holding messages forever; what it passed over is shown when it comes, and acknowledged only then', () =>
    withFakeTimers(() => {
      const shown: number[] = [];
      const order = new InboxOrder((e) => shown.push(e.seq), 1000);
      order.sync(sync(['c', 0]));
      order.accept(msg('c', 3));
      order.accept(msg('c', 4));
      expect(shown).toEqual([]);
      vi.advanceTimersByTime(1000);
      expect(shown).toEqual([3, 4]);
      // Nothing said #1 and #2 are not there: acknowledging #4 would tell the server they were delivered.
      expect(order.acknowledgeableUpTo('c')).toBe(0);
      order.accept(msg('c', 2)); // late: shown all the same, once
      order.accept(msg('c', 2));
      expect(shown).toEqual([3, 4, 2]);
      expect(order.acknowledgeableUpTo('c')).toBe(0);
      order.accept(msg('c', 1));
      expect(shown).toEqual([3, 4, 2, 1]);
      expect(order.acknowledgeableUpTo('c')).toBe(4);
      order.stop();
    }));

  it('does not give up on a gap that a slow catch-up is still filling', () =>
    withFakeTimers(() => {
      const shown: number[] = [];
      const order = new InboxOrder((e) => shown.push(e.seq), 1000);
      order.sync(sync(['c', 0]));
      order.accept(msg('c', 10)); // a live message overtakes a backlog of 9
      for (let seq = 1; seq <= 9; seq++) {
        vi.advanceTimersByTime(600); // each backlog entry comes in less than the timeout, all of them in more
        order.accept(msg('c', seq));
      }
      expect(shown).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
      order.stop();
    }));

  it('asks the server for a gap that does not fill by itself, page after page, and shows it in place', () =>
    withFakeTimers(async () => {
      const shown: number[] = [];
      const asked: [number, number][] = [];
      const order = new InboxOrder(
        (e) => shown.push(e.seq),
        1000,
        (conv, after, before) => {
          asked.push([after, before]);
          // The server answers at most two entries at a time.
          const entries = Array.from({ length: Math.min(2, before - after - 1) }, (_, i) => msg(conv, after + 1 + i));
          return Promise.resolve({ entries, through: after + entries.length });
        },
      );
      order.sync(sync(['c', 2]));
      order.accept(msg('c', 8)); // #3–#7 were lost on the way
      await vi.advanceTimersByTimeAsync(999);
      expect(shown).toEqual([]);
      await vi.advanceTimersByTimeAsync(1);
      expect(shown).toEqual([3, 4, 5, 6, 7, 8]);
      expect(asked).toEqual([
        [2, 8],
        [4, 8],
        [6, 8],
      ]);
      order.stop();
    }));

  it('shows again, before the backlog, what a sync was moved back to (delivered, not read), asking the server at once', async () => {
    const shown: number[] = [];
    const asked: [string, number, number][] = [];
    const order = new InboxOrder((e) => shown.push(e.seq), 60_000);
    // #3 is not the user's: the answer leaves it out.
    const fetch = (conv: string, after: number, upTo: number) => {
      asked.push([conv, after, upTo]);
      const entries = [2, 3, 4, 5].filter((seq) => seq > after && seq <= upTo && seq !== 3).map((seq) => msg(conv, seq));
      return Promise.resolve({ entries, through: upTo });
    };
    // Read up to #1, delivered up to #5 (to another command); the backlog brings #6.
    order.sync(sync(['c', 5], ['d', 2]), (c) => (c.conv === 'c' ? 1 : c.after));
    order.accept(msg('c', 6));
    order.accept(msg('d', 3));
    expect(shown).toEqual([3]); // d's backlog goes on; c's waits behind what is fetched
    expect(order.acknowledgeableUpTo('c')).toBe(1);
    await order.fetchUnread(fetch);
    expect(shown).toEqual([3, 2, 4, 5, 6]);
    expect(asked).toEqual([['c', 1, 5]]);
    expect(order.acknowledgeableUpTo('c')).toBe(6);
    // Fetched once: a second call asks nothing.
    await order.fetchUnread(fetch);
    expect(asked).toHaveLength(1);
    order.stop();
  });

  it('does not ask for the unread stretch twice: the backlog held behind a slow fetch is no gap of its own', () =>
    withFakeTimers(async () => {
      const shown: number[] = [];
      const gapAsks: [string, number, number][] = [];
      const order = new InboxOrder(
        (e) => shown.push(e.seq),
        1000,
        (conv, after, before) => {
          gapAsks.push([conv, after, before]);
          return Promise.resolve({ entries: [], through: before - 1 });
        },
      );
      let answer!: (a: FilledStretch) => void;
      order.sync(sync(['c', 3]), () => 0);
      order.accept(msg('c', 4));
      const fetching = order.fetchUnread(() => new Promise<FilledStretch>((resolve) => (answer = resolve)));
      // The fetch takes longer than the gap timeout, twice over: the gap rounds leave its conversation be.
      await vi.advanceTimersByTimeAsync(2500);
      expect(gapAsks).toEqual([]);
      expect(shown).toEqual([]);
      answer({ entries: [1, 2, 3].map((seq) => msg('c', seq)), through: 3 });
      await fetching;
      expect(shown).toEqual([1, 2, 3, 4]);
      expect(order.acknowledgeableUpTo('c')).toBe(4);
      await vi.advanceTimersByTimeAsync(2000);
      expect(gapAsks).toEqual([]);
      order.stop();
    }));

  it('keeps leaving a reconnect’s unread fetch alone when the fetch of the connection before it ends', () =>
    withFakeTimers(async () => {
      const gapAsks: [string, number, number][] = [];
      const order = new InboxOrder(
        () => undefined,
        1000,
        (conv, after, before) => {
          gapAsks.push([conv, after, before]);
          return Promise.resolve({ entries: [], through: before - 1 });
        },
      );
      const answers: ((a: FilledStretch) => void)[] = [];
      const slowFetch = () => new Promise<FilledStretch>((resolve) => answers.push(resolve));
      order.sync(sync(['c', 3]), () => 0);
      const first = order.fetchUnread(slowFetch);
      // The connection drops; the next one's sync moves back again, and its fetch is slow too.
      order.reconnecting();
      order.sync(sync(['c', 3]), () => 0);
      order.accept(msg('c', 4));
      const second = order.fetchUnread(slowFetch);
      answers[0]!({ entries: [], through: 3 });
      await first;
      await vi.advanceTimersByTimeAsync(2500);
      expect(gapAsks).toEqual([]);
      answers[1]!({ entries: [1, 2, 3].map((seq) => msg('c', seq)), through: 3 });
      await second;
      expect(order.acknowledgeableUpTo('c')).toBe(4);
      order.stop();
    }));

  it('passes over a stretch moved back to that holds nothing of the user’s (a group joined late), with nothing waiting behind it', async () => {
    const shown: number[] = [];
    const order = new InboxOrder((e) => shown.push(e.seq), 60_000);
    // Joined at #600 (read cursor 0), delivered up to #601; nothing new. All before #600 is not theirs.
    order.sync(sync(['g', 601]), () => 0);
    await order.fetchUnread((conv) => Promise.resolve({ entries: [msg(conv, 600), msg(conv, 601)], through: 601 }));
    expect(shown).toEqual([600, 601]);
    expect(order.acknowledgeableUpTo('g')).toBe(601);
    // And when none of it is theirs at all: passed over, and acknowledged, all the same.
    order.sync(sync(['h', 40]), () => 0);
    await order.fetchUnread(() => Promise.resolve({ entries: [], through: 40 }));
    expect(order.acknowledgeableUpTo('h')).toBe(40);
    order.accept(msg('h', 41));
    expect(shown).toEqual([600, 601, 41]);
    expect(order.acknowledgeableUpTo('h')).toBe(41);
    order.stop();
  });

  it('gives a stretch moved back to up as a gap when the server cannot answer: the backlog is shown, but never acknowledged past the stretch', () =>
    withFakeTimers(async () => {
      const shown: number[] = [];
      let answer: () => Promise<FilledStretch> = () => Promise.reject(new Error('offline'));
      const order = new InboxOrder(
        (e) => shown.push(e.seq),
        1000,
        () => answer(),
      );
      order.sync(sync(['c', 3]), () => 0);
      order.accept(msg('c', 4));
      await order.fetchUnread(() => answer());
      expect(shown).toEqual([4]);
      expect(order.acknowledgeableUpTo('c')).toBe(0);
      // The next connection's sync, moved back again, does not take the delivered cursor for what was shown: the stretch
      // is asked for with the next round of gaps, shown late, and acknowledged then.
      answer = () => Promise.resolve({ entries: [1, 2, 3].map((seq) => msg('c', seq)), through: 3 });
      order.reconnecting();
      order.sync(sync(['c', 4]), () => 0);
      await order.fetchUnread(() => answer());
      expect(order.acknowledgeableUpTo('c')).toBe(0);
      await vi.advanceTimersByTimeAsync(1000);
      expect(shown).toEqual([4, 1, 2, 3]);
      expect(order.acknowledgeableUpTo('c')).toBe(4);
      order.stop();
    }));

  it('gives up on a gap only when the server answers it has nothing there, not when it cannot answer', () =>
    withFakeTimers(async () => {
      const shown: number[] = [];
      // Offline at first; then #1, and nothing more before #3 (#2 is not the user's to see).
      const answers: ((before: number) => Promise<FilledStretch>)[] = [
        () => Promise.reject(new Error('offline')),
        (before) => Promise.resolve({ entries: [msg('c', 1)], through: before - 1 }),
      ];
      const order = new InboxOrder(
        (e) => shown.push(e.seq),
        1000,
        (_conv, _after, before) => answers.shift()!(before),
      );
      order.sync(sync(['c', 0]));
      order.accept(msg('c', 3));
      await vi.advanceTimersByTimeAsync(1000);
      expect(shown).toEqual([]); // no answer: nothing given up
      await vi.advanceTimersByTimeAsync(1000);
      expect(shown).toEqual([1, 3]);
      expect(answers).toEqual([]);
      // The server said what there is: all of it may be acknowledged.
      expect(order.acknowledgeableUpTo('c')).toBe(3);
      order.stop();
    }));

  it('drops a fill answered after the connection was replaced: the new connection’s sync decides', () =>
    withFakeTimers(async () => {
      const shown: number[] = [];
      let answer!: (stretch: FilledStretch) => void;
      const order = new InboxOrder(
        (e) => shown.push(e.seq),
        1000,
        () => new Promise((resolve) => (answer = resolve)),
      );
      order.sync(sync(['c', 15]));
      order.accept(msg('c', 20));
      await vi.advanceTimersByTimeAsync(1000); // asks for #16–#19
      order.reconnecting();
      answer({ entries: [msg('c', 16)], through: 19 });
      await vi.advanceTimersByTimeAsync(0);
      expect(shown).toEqual([]);
      order.sync(sync(['c', 15]));
      for (const seq of [16, 17, 18, 19]) order.accept(msg('c', seq)); // the new catch-up
      expect(shown).toEqual([16, 17, 18, 19, 20]);
      order.stop();
    }));

  it('proceeds without a sync when none comes', () =>
    withFakeTimers(() => {
      const shown: number[] = [];
      const order = new InboxOrder((e) => shown.push(e.seq), 500);
      order.accept(msg('c', 9));
      vi.advanceTimersByTime(500);
      expect(shown).toEqual([9]);
      order.stop();
    }));

  it('acknowledges nothing past what came before a sync that never came, and shows that backlog when a late sync brings it', () =>
    withFakeTimers(async () => {
      const shown: number[] = [];
      // The server cannot be asked either (its answer would not say where the user's part begins, with no sync).
      const order = new InboxOrder(
        (e) => shown.push(e.seq),
        500,
        () => Promise.reject(new Error('unavailable')),
      );
      order.accept(msg('c', 4)); // live; the catch-up of #1–#3 failed on the server
      await vi.advanceTimersByTimeAsync(500);
      expect(shown).toEqual([4]);
      expect(order.acknowledgeableUpTo('c')).toBe(0);
      // The server tries its catch-up again: a sync from the cursor, then the backlog.
      order.sync(sync(['c', 0]));
      for (const seq of [1, 2, 3, 4]) order.accept(msg('c', seq));
      expect(shown).toEqual([4, 1, 2, 3]);
      expect(order.acknowledgeableUpTo('c')).toBe(4);
      order.stop();
    }));

  it('takes a late sync’s word for what is not missing: up to the cursor (acknowledged elsewhere), and its hidden stretches', () =>
    withFakeTimers(() => {
      const shown: number[] = [];
      const order = new InboxOrder((e) => shown.push(e.seq), 500);
      for (const [conv, seq] of [
        ['a', 4],
        ['g', 9],
      ] as const)
        order.accept(msg(conv, seq));
      vi.advanceTimersByTime(500);
      expect(shown).toEqual([4, 9]);
      const late = sync(['a', 3], ['g', 5]);
      late.conversations[1]!.hidden = [{ after: 6, upTo: 8 }];
      order.sync(late);
      expect(order.acknowledgeableUpTo('a')).toBe(4);
      // #6 of the group is still to come; #7 and #8 are not the user's.
      expect(order.acknowledgeableUpTo('g')).toBe(5);
      order.accept(msg('g', 6));
      expect(order.acknowledgeableUpTo('g')).toBe(9);
      expect(shown).toEqual([4, 9, 6]);
      order.stop();
    }));

  it('asks the server for a gap given up on without a sync, where it begins is known, and acknowledges past it only once answered', () =>
    withFakeTimers(async () => {
      const shown: number[] = [];
      const settled: string[] = [];
      let answer: (after: number, before: number) => Promise<FilledStretch> = () => Promise.reject(new Error('unavailable'));
      const order = new InboxOrder(
        (e) => shown.push(e.seq),
        500,
        (_conv, after, before) => answer(after, before),
        undefined,
        (conv) => settled.push(conv),
      );
      order.sync(sync(['c', 2]));
      order.reconnecting(); // and the new connection's sync never comes
      order.accept(msg('c', 6));
      await vi.advanceTimersByTimeAsync(500);
      expect(shown).toEqual([6]);
      expect(order.acknowledgeableUpTo('c')).toBe(2); // asked, not answered
      // The next gap's round asks again: now the server has #3 and #5 (#4 is not the user's).
      answer = (after, before) =>
        Promise.resolve({ entries: [3, 5, 7].filter((seq) => seq > after && seq < before).map((seq) => msg('c', seq)), through: before - 1 });
      order.accept(msg('c', 8));
      await vi.advanceTimersByTimeAsync(500);
      expect(shown).toEqual([6, 3, 5, 7, 8]);
      expect(order.acknowledgeableUpTo('c')).toBe(8);
      expect(settled).toContain('c');
      order.stop();
    }));
});
