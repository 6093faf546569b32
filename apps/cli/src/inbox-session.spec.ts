import { EventEmitter } from 'node:events';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { MAX_HISTORY_LIMIT, type InboxEvent, type MessageEvent } from '#libs/protocol';
import { InboxSession, TRACKED_PER_CONVERSATION } from './inbox-session.js';
import { markText, Printer, reportCatchUp } from './output.js';
import type { ParleyClient } from './parley-client.js';

const CONV = 'dm:ann:bob';
const T1 = new Date(2026, 10, 24, 10, 1, 0).getTime();
const GCONV = 'grp:g1';
/** Ann's post #seq in the group crew (g1). */
const post = (seq: number): MessageEvent => ({
  type: 'message',
  conv: GCONV,
  seq,
  from: 'ann',
  group: { id: 'g1', name: 'crew' },
  ts: T1,
  id: `g${seq}`,
  text: `g${seq}`,
});
const T2 = new Date(2026, 10, 24, 10, 2, 0).getTime();

// A time of today shows as HH:MM:SS, of another day with its date: these tests run on the day of T1 and T2.
beforeEach(() => {
  vi.useFakeTimers({ toFake: ['Date'] });
  vi.setSystemTime(T2 + 60_000);
});
afterEach(() => {
  vi.useRealTimers();
});
const message = (seq: number): MessageEvent => ({ type: 'message', conv: CONV, seq, from: 'ann', to: 'bob', ts: T1 - 1000, id: `m${seq}`, text: `#${seq}` });
const sync = (read: number, readAt: number): InboxEvent => ({
  type: 'sync',
  conversations: [
    {
      conv: CONV,
      after: 2,
      last: 2,
      mine: { delivered: 2, deliveredAt: T1, read: 2, readAt: T1 },
      peers: { bob: { delivered: 2, deliveredAt: readAt, read, readAt } },
    },
  ],
});

/** A session of Ann's over a client that only carries events (what the server would send). */
function annSession() {
  const client = Object.assign(new EventEmitter(), { user: 'ann', request: () => Promise.resolve({}) });
  const marks: [number, string][] = [];
  const session = new InboxSession(
    client as unknown as ParleyClient,
    { show: () => undefined, mark: (m, mark) => marks.push([m.seq, markText(mark)]) },
    'none',
  );
  return { session, marks, emit: (e: InboxEvent) => client.emit('event', e) };
}

describe('InboxSession marks of my direct messages', () => {
  it('keeps a read time once known: a receipt re-marks only what it moved, and a reconnect does not lose it', async () => {
    const { session, marks, emit } = annSession();
    emit(sync(1, T1));
    for (const seq of [1, 2]) session.track(message(seq));
    expect(markText(session.markOf(message(1)))).toBe('✓✓ read 10:01:00');
    expect(markText(session.markOf(message(2)))).toBe('✓✓');

    marks.length = 0;
    emit({ type: 'receipt', conv: CONV, user: 'bob', status: 'read', seq: 2, ts: T2 });
    expect(marks).toEqual([[2, '✓✓ read 10:02:00']]);

    // Reconnected: the cursor now stands at #2, but #1 was read at 10:01.
    emit(sync(2, T2));
    expect(markText(session.markOf(message(1)))).toBe('✓✓ read 10:01:00');
    expect(markText(session.markOf(message(2)))).toBe('✓✓ read 10:02:00');
    await session.stop();
  });

  it('follows only the latest messages of a long session', async () => {
    const { session, marks, emit } = annSession();
    emit(sync(0, T1));
    const total = TRACKED_PER_CONVERSATION + 5;
    for (let seq = 3; seq < 3 + total; seq++) session.track(message(seq));
    marks.length = 0;
    emit({ type: 'receipt', conv: CONV, user: 'bob', status: 'read', seq: 2 + total, ts: T2 });
    expect(marks).toHaveLength(TRACKED_PER_CONVERSATION);
    expect(marks[0]![0]).toBe(3 + 5);
    await session.stop();
  });

  it('reports a receipt once, however many times it comes, and never one that moves no cursor', async () => {
    const client = Object.assign(new EventEmitter(), { user: 'ann', request: () => Promise.resolve({}) });
    const receipts: string[] = [];
    const session = new InboxSession(
      client as unknown as ParleyClient,
      { show: () => undefined, receipt: (r) => receipts.push(`${r.status} ${r.seq}`) },
      'none',
    );
    const emit = (e: InboxEvent) => client.emit('event', e);
    emit(sync(1, T1));
    const receipt = (status: 'delivered' | 'read', seq: number) => emit({ type: 'receipt', conv: CONV, user: 'bob', status, seq, ts: T2 });
    receipt('read', 1); // the sync said bob had read #1 already
    receipt('read', 2);
    receipt('read', 2); // announced again: a retry, or bob's second device
    receipt('delivered', 2); // delivered is at #2 too
    receipt('delivered', 3);
    expect(receipts).toEqual(['read 2', 'delivered 3']);
    await session.stop();
  });

  it('keeps a receipt that came before an older sync snapshot', async () => {
    const { session, emit } = annSession();
    emit(sync(0, T1));
    session.track(message(2));
    emit({ type: 'receipt', conv: CONV, user: 'bob', status: 'read', seq: 2, ts: T2 });
    // A reconnect's sync, read on the server just before that receipt moved the cursor.
    emit(sync(1, T1));
    expect(markText(session.markOf(message(2)))).toBe('✓✓ read 10:02:00');
    await session.stop();
  });
});

describe('InboxSession marks of my group messages', () => {
  const group = { id: 'g1', name: 'crew' };
  const cursors = (delivered: number, joined: number) => ({ delivered, deliveredAt: T1, read: 0, readAt: null, joined });
  const change = (seq: number, c: Extract<InboxEvent, { type: 'group' }>['change']): InboxEvent => ({
    type: 'group',
    conv: GCONV,
    seq,
    from: 'ann',
    group,
    ts: T1,
    id: `c${seq}`,
    change: c,
  });
  /** The sync of a reconnect: the group's log up to #2, with these peers. */
  const groupSync = (peers: Record<string, ReturnType<typeof cursors>>): InboxEvent => ({
    type: 'sync',
    conversations: [{ conv: GCONV, group, after: 2, last: 2, mine: { delivered: 2, deliveredAt: T1, read: 2, readAt: T1 }, peers }],
  });
  /** Ann's message #3 to the group. */
  const mine: MessageEvent = { type: 'message', conv: GCONV, seq: 3, from: 'ann', group, ts: T1, id: 'g3', text: 'hello crew' };

  it('counts a member only for the messages after the change that added them, also one added again', async () => {
    const { session, emit } = annSession();
    // Bob has #2; Cy has nothing yet; both were there from the start (#1).
    emit(groupSync({ bob: cursors(2, 1), cy: cursors(0, 1) }));
    emit(mine);
    expect(markText(session.markOf(mine))).toBe('✓');
    // Dan joins at #4 and Cy is removed and added again (#5, #6); then all of them have everything up to #7.
    emit(change(4, { kind: 'member_added', members: ['dan'] }));
    emit(change(5, { kind: 'member_removed', members: ['cy'] }));
    emit(change(6, { kind: 'member_added', members: ['cy'] }));
    for (const user of ['bob', 'cy', 'dan']) emit({ type: 'receipt', conv: GCONV, user, status: 'delivered', seq: 7, ts: T2 });
    // Of those who could have had #3, Bob and Cy count (Cy was in the group then, before her removal at #5); Dan never had it.
    expect(markText(session.markOf(mine))).toBe('✓✓ 2/2 delivered');
    const later: MessageEvent = { ...mine, seq: 7, id: 'g7' };
    expect(markText(session.markOf(later))).toBe('✓✓ 3/3 delivered');
    await session.stop();
  });

  it('takes my own read, made on another device, for no member: it changes no mark and is handed on as it came', async () => {
    const client = Object.assign(new EventEmitter(), { user: 'ann', request: () => Promise.resolve({}) });
    const receipts: [string, number][] = [];
    const session = new InboxSession(
      client as unknown as ParleyClient,
      { show: () => undefined, receipt: (r, passed) => receipts.push([r.user, passed.length]) },
      'none',
    );
    client.emit('event', groupSync({ bob: cursors(0, 1) }));
    client.emit('event', mine);
    client.emit('event', { type: 'receipt', conv: GCONV, user: 'ann', status: 'read', seq: 3, ts: T2 });
    expect(markText(session.markOf(mine))).toBe('✓');
    expect(receipts).toEqual([['ann', 0]]);
    await session.stop();
  });

  it('re-marks my older messages when the change that added a member is shown after that member\u2019s receipt', async () => {
    const { session, marks, emit } = annSession();
    emit(groupSync({ bob: cursors(0, 1) }));
    emit(mine);
    // Dan's receipt overtakes the change that added him (#4): for now he counts.
    emit({ type: 'receipt', conv: GCONV, user: 'dan', status: 'delivered', seq: 4, ts: T2 });
    expect(markText(session.markOf(mine))).toBe('✓✓ 1/2 delivered');
    marks.length = 0;
    emit(change(4, { kind: 'member_added', members: ['dan'] }));
    expect(marks).toEqual([[3, '✓']]);
    await session.stop();
  });

  it('tells which of my messages a member\u2019s receipt moved their cursor past, none for one about others\u2019 messages', async () => {
    const client = Object.assign(new EventEmitter(), { user: 'ann', request: () => Promise.resolve({}) });
    const told: string[] = [];
    const session = new InboxSession(
      client as unknown as ParleyClient,
      { show: () => undefined, receipt: (r, passed) => told.push(`${r.user} ${r.status} ${r.seq}: ${passed.map((m) => m.seq).join(',')}`) },
      'none',
    );
    const emit = (e: InboxEvent) => client.emit('event', e);
    const receipt = (user: string, status: 'delivered' | 'read', seq: number) => emit({ type: 'receipt', conv: GCONV, user, status, seq, ts: T2 });
    // Bob has #2, Cy nothing yet. Then #3 from Bob, #4 mine (from the backlog or live, alike), #5 from Cy.
    emit(groupSync({ bob: cursors(2, 1), cy: cursors(0, 1) }));
    emit({ ...mine, seq: 3, id: 'g3', from: 'bob' });
    emit({ ...mine, seq: 4, id: 'g4' });
    emit({ ...mine, seq: 5, id: 'g5', from: 'cy' });
    receipt('cy', 'delivered', 3);
    receipt('cy', 'read', 3);
    receipt('bob', 'delivered', 4);
    receipt('bob', 'read', 5);
    receipt('cy', 'delivered', 5);
    receipt('cy', 'read', 5);
    // Dan joins at #6: his first receipt passes my #4 without his ever having had it; my #7 he has.
    emit(change(6, { kind: 'member_added', members: ['dan'] }));
    receipt('dan', 'delivered', 6);
    emit({ ...mine, seq: 7, id: 'g7' });
    receipt('dan', 'read', 7);
    expect(told).toEqual([
      'cy delivered 3: ',
      'cy read 3: ',
      'bob delivered 4: 4',
      'bob read 5: 4',
      'cy delivered 5: 4',
      'cy read 5: 4',
      'dan delivered 6: ',
      'dan read 7: 7',
    ]);
    await session.stop();
  });

  it('keeps the latest join when a sync read before it comes after it', async () => {
    const { session, emit } = annSession();
    const synced = groupSync({ bob: cursors(0, 1), cy: cursors(0, 1) });
    emit(synced);
    emit(change(3, { kind: 'member_removed', members: ['cy'] }));
    // Said while Cy was out of the group.
    const whileOut: MessageEvent = { ...mine, seq: 4, id: 'g4' };
    emit(whileOut);
    emit(change(5, { kind: 'member_added', members: ['cy'] }));
    // A reconnect's sync, read before Cy was removed, still says she joined at #1 and is in.
    emit(synced);
    emit({ type: 'receipt', conv: GCONV, user: 'cy', status: 'delivered', seq: 5, ts: T2 });
    expect(markText(session.markOf(whileOut))).toBe('✓');
    await session.stop();
  });

  it('counts members who left, or all of a deleted group, for what was said before they went', async () => {
    const { session, emit } = annSession();
    emit(groupSync({ bob: cursors(2, 1), cy: cursors(2, 1) }));
    emit(mine);
    emit({ type: 'receipt', conv: GCONV, user: 'bob', status: 'read', seq: 3, ts: T2 });
    emit({ type: 'receipt', conv: GCONV, user: 'cy', status: 'delivered', seq: 3, ts: T2 });
    expect(markText(session.markOf(mine))).toBe('✓✓ 2/2 delivered, 1 read');
    emit(change(4, { kind: 'member_left', user: 'cy' }));
    emit(change(5, { kind: 'deleted' }));
    expect(markText(session.markOf(mine))).toBe('✓✓ 2/2 delivered, 1 read');
    // A later sync names them with when they went, as the server keeps them.
    emit({
      type: 'sync',
      conversations: [
        {
          conv: GCONV,
          group,
          after: 5,
          last: 5,
          mine: { delivered: 5, deliveredAt: T1, read: 5, readAt: T1 },
          peers: {},
          formerPeers: { bob: { ...cursors(3, 1), read: 3, readAt: T2, left: 5 }, cy: { ...cursors(3, 1), left: 4 } },
        },
      ],
    });
    expect(markText(session.markOf(mine))).toBe('✓✓ 2/2 delivered, 1 read');
    await session.stop();
  });
});

describe('InboxSession acknowledgements', () => {
  const CCONV = 'dm:ann:carol';
  const fromAnn = (seq: number): MessageEvent => ({ type: 'message', conv: CCONV, seq, from: 'ann', to: 'carol', ts: T1, id: `c${seq}`, text: `c${seq}` });

  it('never acknowledges past messages it has not shown: a catch-up that failed on the server keeps the receipt below them until they come', async () => {
    vi.useFakeTimers();
    try {
      // Carol's listen: the receipts service is down, so the server sends no sync (its catch-up failed); history fails too.
      const receipts: number[] = [];
      const client = Object.assign(new EventEmitter(), {
        user: 'carol',
        request: (op: string, fields: { seq?: number }) => {
          if (op === 'receipt') receipts.push(fields.seq!);
          return op === 'receipt' ? Promise.resolve({}) : Promise.reject(new Error('unavailable'));
        },
      });
      const shown: number[] = [];
      const session = new InboxSession(client as unknown as ParleyClient, { show: (e) => shown.push(e.seq) }, 'delivered');
      const emit = (e: InboxEvent) => client.emit('event', e);
      emit(fromAnn(4)); // live, while c1–c3 wait on the server
      await vi.advanceTimersByTimeAsync(10_000);
      expect(shown).toEqual([4]);
      expect(receipts).toEqual([]);
      // The server's catch-up works again: a sync from carol's cursor, then the backlog.
      emit({
        type: 'sync',
        conversations: [{ conv: CCONV, after: 0, last: 4, mine: { delivered: 0, deliveredAt: null, read: 0, readAt: null }, peers: {} }],
      });
      for (const seq of [1, 2, 3, 4]) emit(fromAnn(seq));
      await vi.advanceTimersByTimeAsync(1000);
      expect(shown).toEqual([4, 1, 2, 3]);
      expect(receipts).toEqual([4]);
      await session.stop();
    } finally {
      vi.useRealTimers();
    }
  });
  it('in chat, shows what was delivered but not read before the backlog, says the catch-up is over after it, and only then reads past it', async () => {
    vi.useFakeTimers();
    try {
      // Carol's listen had c1–c3 (delivered up to 3); she read up to 1. Her chat opens; c4 is the backlog.
      const receipts: [number, string][] = [];
      const asked: unknown[] = [];
      const client = Object.assign(new EventEmitter(), {
        user: 'carol',
        request: (op: string, fields: { seq?: number; status?: string; before?: number; limit?: number }) => {
          if (op === 'receipt') receipts.push([fields.seq!, fields.status!]);
          if (op !== 'history') return Promise.resolve({});
          asked.push(fields);
          return Promise.resolve({ conv: CCONV, messages: [fromAnn(2), fromAnn(3)], peers: {} });
        },
      });
      const shown: number[] = [];
      const events: string[] = [];
      const session = new InboxSession(
        client as unknown as ParleyClient,
        { show: (e) => (shown.push(e.seq), events.push(`#${e.seq}`)), synced: (n) => events.push(`synced ${n}`) },
        'read',
      );
      const emit = (e: InboxEvent) => client.emit('event', e);
      emit({
        type: 'sync',
        conversations: [{ conv: CCONV, after: 3, last: 4, mine: { delivered: 3, deliveredAt: T1, read: 1, readAt: T1 }, peers: {} }],
      });
      emit(fromAnn(4));
      emit({ type: 'synced', messages: 1 });
      await vi.advanceTimersByTimeAsync(1000);
      expect(asked).toEqual([{ with: 'ann', before: 4, limit: MAX_HISTORY_LIMIT }]);
      expect(events).toEqual(['#2', '#3', '#4', 'synced 1']);
      expect(receipts).toEqual([[4, 'read']]);
      await session.stop();
    } finally {
      vi.useRealTimers();
    }
  });

  it('in chat, pages back from the delivered cursor for a group joined late: a request per page of what the user may see, not of the log', async () => {
    // Carol was added at #600 (read cursor still 0); listen had everything up to #1200.
    const asked: number[] = [];
    const client = Object.assign(new EventEmitter(), {
      user: 'carol',
      request: (op: string, fields: { before?: number; limit?: number }) => {
        if (op !== 'history') return Promise.resolve({});
        asked.push(fields.before!);
        const seqs: number[] = [];
        for (let seq = fields.before! - 1; seq >= 600 && seqs.length < fields.limit!; seq--) seqs.unshift(seq);
        return Promise.resolve({ conv: GCONV, messages: seqs.map(post), peers: {} });
      },
    });
    const shown: number[] = [];
    const session = new InboxSession(client as unknown as ParleyClient, { show: (e) => shown.push(e.seq) }, 'read');
    client.emit('event', {
      type: 'sync',
      conversations: [{ conv: GCONV, after: 1200, last: 1200, mine: { delivered: 1200, deliveredAt: T1, read: 0, readAt: null }, peers: {} }],
    });
    await vi.waitFor(() => expect(shown).toHaveLength(601), { timeout: 2000 });
    expect(shown[0]).toBe(600);
    expect(shown.at(-1)).toBe(1200);
    expect(asked).toEqual([1201, 1201 - MAX_HISTORY_LIMIT]);
    await session.stop();
  });

  it('acknowledges only seqs of entries it showed: not where a sync started a group joined late, nor a stretch the user was out of', async () => {
    vi.useFakeTimers();
    try {
      // Carol was added at #4, out of the group for #6 and #7, and back at #8 (whose backlog is slow to come).
      const receipts: number[] = [];
      const client = Object.assign(new EventEmitter(), {
        user: 'carol',
        request: (op: string, fields: { seq?: number }) => {
          if (op === 'receipt') receipts.push(fields.seq!);
          return Promise.resolve({});
        },
      });
      const shown: number[] = [];
      const session = new InboxSession(client as unknown as ParleyClient, { show: (e) => shown.push(e.seq) }, 'delivered');
      client.emit('event', {
        type: 'sync',
        conversations: [
          {
            conv: GCONV,
            after: 3,
            last: 8,
            mine: { delivered: 0, deliveredAt: null, read: 0, readAt: null },
            peers: {},
            hidden: [{ after: 5, upTo: 7 }],
          },
        ],
      });
      await vi.advanceTimersByTimeAsync(1000);
      // #3 is where the backlog starts, not a message of hers: "carol had up to #3" would be untrue (and is refused).
      expect(receipts).toEqual([]);
      for (const seq of [4, 5]) client.emit('event', post(seq));
      await vi.advanceTimersByTimeAsync(1000);
      expect(receipts).toEqual([5]);
      await session.stop();
      expect(shown).toEqual([4, 5]);
      expect(receipts).toEqual([5]);
    } finally {
      vi.useRealTimers();
    }
  });

  it('in listen, shows only the backlog after the delivered cursor, read or not', async () => {
    const asked: string[] = [];
    const client = Object.assign(new EventEmitter(), {
      user: 'carol',
      request: (op: string) => (asked.push(op), Promise.resolve({})),
    });
    const shown: number[] = [];
    const session = new InboxSession(client as unknown as ParleyClient, { show: (e) => shown.push(e.seq) }, 'delivered');
    client.emit('event', {
      type: 'sync',
      conversations: [{ conv: CCONV, after: 3, last: 4, mine: { delivered: 3, deliveredAt: T1, read: 1, readAt: T1 }, peers: {} }],
    });
    client.emit('event', fromAnn(4));
    expect(shown).toEqual([4]);
    await session.stop();
    expect(asked).toEqual(['receipt']);
  });

  it('says the catch-up is over once per connection: a device session caught up at login and again by its own SUBSCRIBE', async () => {
    const client = Object.assign(new EventEmitter(), { user: 'carol', request: () => Promise.resolve({}) });
    const events: string[] = [];
    const session = new InboxSession(
      client as unknown as ParleyClient,
      { show: (e) => events.push(`#${e.seq}`), synced: (n) => events.push(`synced ${n}`) },
      'delivered',
    );
    const catchUp = () => {
      client.emit('event', {
        type: 'sync',
        conversations: [{ conv: CCONV, after: 3, last: 5, mine: { delivered: 3, deliveredAt: T1, read: 3, readAt: T1 }, peers: {} }],
      });
      for (const seq of [4, 5]) client.emit('event', fromAnn(seq));
      client.emit('event', { type: 'synced', messages: 2 });
    };
    // The session's catch-up as the server answers the login, then the one the SUBSCRIBE brings once it is over.
    catchUp();
    catchUp();
    await vi.waitFor(() => expect(events).toEqual(['#4', '#5', 'synced 2']));
    // A new connection's catch-up is news again.
    client.emit('offline');
    catchUp();
    await vi.waitFor(() => expect(events).toEqual(['#4', '#5', 'synced 2', 'synced 2']));
    await new Promise((resolve) => setImmediate(resolve));
    expect(events).toEqual(['#4', '#5', 'synced 2', 'synced 2']);
    await session.stop();
  });
});

describe('InboxSession, a catch-up the server says is delayed', () => {
  const delayed = (retryInMs: number): InboxEvent => ({
    type: 'sync_delayed',
    error: { code: 'unavailable', message: 'the receipts service did not answer in time' },
    retryInMs,
  });

  /** Ann's listen over a client that only carries events, printing as a person (or a script, with json) sees it. */
  function listening(json: boolean) {
    const client = Object.assign(new EventEmitter(), { user: 'ann', request: () => Promise.resolve({}) });
    const out: string[] = [];
    const printer = new Printer(json, (l) => out.push(l));
    const session = new InboxSession(client as unknown as ParleyClient, { show: () => undefined, ...reportCatchUp((h, r) => printer.emit(h, r)) }, 'none');
    return { session, out, emit: (e: InboxEvent) => client.emit('event', e), reconnect: () => client.emit('offline') };
  }
  const catchUp = (emit: (e: InboxEvent) => void, messages: number) => {
    emit({ type: 'sync', conversations: [] });
    emit({ type: 'synced', messages });
  };

  it('tells a person once that their missed messages are late, why and when the server tries again, and then that they came', async () => {
    const { session, out, emit, reconnect } = listening(false);
    emit(delayed(500));
    emit(delayed(1000));
    catchUp(emit, 3);
    await vi.waitFor(() => expect(out).toHaveLength(2));
    // A reconnection's catch-up that was not delayed says nothing; one that was, says it again.
    reconnect();
    catchUp(emit, 0);
    reconnect();
    emit(delayed(15_000));
    catchUp(emit, 0);
    await vi.waitFor(() => expect(out).toHaveLength(4));
    expect(out).toEqual([
      '* your missed messages have not come yet: the receipts service did not answer in time; the server tries again in 0.5 s, and they will come then',
      '* caught up: what you missed is shown above',
      '* your missed messages have not come yet: the receipts service did not answer in time; the server tries again in 15 s, and they will come then',
      '* caught up: you missed nothing',
    ]);
    await session.stop();
  });

  it('gives a script every sync_delayed as it came, and each synced', async () => {
    const { session, out, emit } = listening(true);
    emit(delayed(500));
    emit(delayed(1000));
    catchUp(emit, 2);
    await vi.waitFor(() => expect(out).toHaveLength(3));
    expect(out.map((l) => JSON.parse(l) as unknown)).toEqual([
      { type: 'sync_delayed', error: { code: 'unavailable', message: 'the receipts service did not answer in time' }, retryInMs: 500 },
      { type: 'sync_delayed', error: { code: 'unavailable', message: 'the receipts service did not answer in time' }, retryInMs: 1000 },
      { type: 'synced', messages: 2 },
    ]);
    await session.stop();
  });
});
