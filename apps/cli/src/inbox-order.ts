import type { GroupEvent, MessageEvent, SyncEvent } from '#libs/protocol';

export type LogEvent = MessageEvent | GroupEvent;

/**
 * A server's answer for a stretch of a conversation: the entries the user may see in `(after, through]`, oldest first,
 * all of them; a seq of that stretch it does not hold is not the user's (said while they were out of a group).
 */
export interface FilledStretch {
  entries: LogEvent[];
  through: number;
}

/**
 * Puts what arrives on the inbox back in order and drops repeats, so each
 * message is shown exactly once, in seq order per conversation — although live
 * messages may overtake the backlog, and a reconnect replays what was not yet
 * acknowledged.
 *
 * Until a connection's `sync` arrives, events are held: the sync says where
 * each conversation's backlog starts. A gap that makes no progress for
 * `gapTimeoutMs` (a slow catch-up that is still filling it counts as progress)
 * is asked of the server (`fill`, a `history` page), which fills it or says
 * there is nothing there for this user.
 *
 * Without a sync (or without a server to ask), a gap is given up on after the
 * timeout, so nothing is held forever: what comes after it is shown, but the
 * gap is remembered as missing. What belongs to it is shown when it comes
 * (late, out of order: better than never) instead of being dropped as a
 * repeat, and what may be acknowledged stops below it (`acknowledgeableUpTo`)
 * until it is filled, or a sync, a `hidden` stretch or a `fill` says there is
 * nothing there for this user.
 */
export class InboxOrder {
  private readonly shown = new Map<string, number>();
  private readonly held = new Map<string, Map<number, LogEvent>>();
  /** Stretches of a conversation that are not the user's (a group's, from while they were out of it): never waited for. */
  private readonly hidden = new Map<string, { after: number; upTo: number }[]>();
  /**
   * Stretches passed without being seen filled or confirmed empty, `[from, to]`, lowest first; `from` undefined: from
   * wherever the user's part of the conversation begins, not known until a sync says.
   */
  private readonly missing = new Map<string, { from: number | undefined; to: number }[]>();
  private synced = false;
  private gapTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly show: (e: LogEvent) => void,
    private readonly gapTimeoutMs = 3000,
    /** Asks the server for a conversation's entries after `after`, up to `before` at most (a page of them from `after`). */
    private readonly fill?: (conv: string, after: number, before: number) => Promise<FilledStretch>,
    /** Whether an event lets the user back into a conversation (added back to a group): what came just before it is not theirs. */
    private readonly letsBackIn: (e: LogEvent) => boolean = () => false,
    /** What may be acknowledged in a conversation moved on without anything shown (a missing stretch found empty). */
    private readonly settled: (conv: string) => void = () => undefined,
  ) {}

  /** A new connection: hold events until its sync arrives. */
  reconnecting(): void {
    this.synced = false;
    this.syncedHere = false;
    this.connection++;
  }

  /** Counts connections, so that an answer asked for on one is not acted on after the next one began. */
  private connection = 0;
  /** A round of asking the server for gaps is under way: no other starts until it ends. */
  private filling = false;

  /**
   * The server's account of where each conversation stands. `startAt` may
   * move a conversation's starting point back, to show again what was
   * delivered but not read: `fetchUnread` asks the server for it, and the
   * backlog waits behind it.
   */
  sync(event: SyncEvent, startAt: (c: SyncEvent['conversations'][number]) => number = (c) => c.after): void {
    for (const c of event.conversations) {
      const start = startAt(c);
      this.shown.set(c.conv, Math.max(this.shown.get(c.conv) ?? 0, start));
      if (this.shownUpTo(c.conv) < c.after) this.unfetched.set(c.conv, c.after);
      // Up to the cursor, someone (another device) has had it all: nothing is missing there. After it, the backlog follows.
      // Moved back, only up to where it starts: what was passed over after that is still to be shown.
      this.settle(c.conv, undefined, Math.min(start, c.after));
      for (const h of c.hidden ?? []) this.hide(c.conv, h.after, h.upTo);
    }
    this.synced = true;
    this.syncedHere = true;
    for (const conv of [...this.held.keys()]) this.flush(conv);
    if (this.hasMissing()) this.armGapTimer();
  }

  /** Conversations whose stretch `(shown, upTo]`, before the backlog, is to be asked of the server (see `sync`). */
  private readonly unfetched = new Map<string, number>();

  /**
   * Asks the server for the stretches `sync` moved back to (page after page) and shows them, in place, before the
   * backlog held behind them. One the server cannot answer is given up on as a gap is (shown when it comes, and never
   * acknowledged past until then), so the backlog is not held for it. Resolves once each is shown or given up on.
   */
  async fetchUnread(fetch: (conv: string, after: number, upTo: number) => Promise<FilledStretch>): Promise<void> {
    const connection = this.connection;
    const pending = [...this.unfetched];
    const run = ++this.unreadRuns;
    this.unfetched.clear();
    for (const [conv] of pending) this.fetchingUnread.set(conv, run);
    // Only this run's marks go: a later sync's run (a reconnect's) may have marked the same conversation meanwhile.
    const done = (conv: string) => {
      if (this.fetchingUnread.get(conv) === run) this.fetchingUnread.delete(conv);
    };
    try {
      for (const [conv, upTo] of pending) {
        const after = this.shownUpTo(conv);
        if (after < upTo) {
          const answer = await fetch(conv, after, upTo).catch(() => undefined);
          if (this.stopped || connection !== this.connection) return;
          if (!answer || !this.filled(conv, after, answer) || this.shownUpTo(conv) < answer.through) {
            const from = this.shownUpTo(conv) + 1;
            this.missing.set(conv, [...(this.missing.get(conv) ?? []), { from, to: upTo }]);
            this.shown.set(conv, upTo);
            this.flush(conv);
          }
        }
        done(conv);
      }
    } finally {
      for (const [conv] of pending) done(conv);
    }
  }

  /**
   * Conversations whose unread stretch `fetchUnread` has still to ask for, or is asking for: the backlog held behind it
   * is no gap of its own, and a round of gaps leaves them be (it would ask the server for the same stretch again).
   */
  private readonly fetchingUnread = new Map<string, number>();
  /** Counts `fetchUnread` runs, so that each takes back only its own marks in `fetchingUnread`. */
  private unreadRuns = 0;

  /** The highest seq shown in a conversation, or passed over (0 if none). */
  shownUpTo(conv: string): number {
    return this.shown.get(conv) ?? 0;
  }

  /**
   * How far the user may acknowledge a conversation: what was shown, but never past a stretch given up on that has not
   * been filled, or found to hold nothing for this user, since (0: nothing).
   */
  acknowledgeableUpTo(conv: string): number {
    const first = this.missing.get(conv)?.[0];
    const shown = this.shownUpTo(conv);
    if (!first) return shown;
    return first.from === undefined ? 0 : Math.min(shown, first.from - 1);
  }

  accept(e: LogEvent): void {
    const last = this.shown.get(e.conv);
    if (last !== undefined && e.seq <= last) {
      // Passed over when it was given up on: shown now, late, rather than never.
      if (this.settle(e.conv, e.seq, e.seq)) this.show(e);
      return;
    }
    // Added back to a group: what was said while the user was out is not theirs, so there is nothing to wait for.
    if (last !== undefined && e.seq - 1 > last && this.letsBackIn(e)) this.hide(e.conv, last, e.seq - 1);
    let held = this.held.get(e.conv);
    if (!held) this.held.set(e.conv, (held = new Map<number, LogEvent>()));
    held.set(e.seq, e);
    if (this.synced) this.flush(e.conv);
    else this.armGapTimer();
  }

  private hide(conv: string, after: number, upTo: number): void {
    if (upTo <= after) return;
    const known = this.hidden.get(conv) ?? [];
    if (!known.some((h) => h.after === after && h.upTo === upTo)) this.hidden.set(conv, [...known, { after, upTo }]);
    if (this.settle(conv, after + 1, upTo)) this.settled(conv);
  }

  /**
   * Takes `[from, to]` out of the stretches missing in a conversation (`from` undefined: everything up to `to`): it was
   * shown, or found not to be the user's. True if any of it was missing.
   */
  private settle(conv: string, from: number | undefined, to: number): boolean {
    const known = this.missing.get(conv);
    if (!known) return false;
    const lo = from ?? Number.NEGATIVE_INFINITY;
    const left: { from: number | undefined; to: number }[] = [];
    let took = false;
    for (const m of known) {
      const mFrom = m.from ?? Number.NEGATIVE_INFINITY;
      if (m.to < lo || mFrom > to) {
        left.push(m);
        continue;
      }
      took = true;
      if (mFrom < lo) left.push({ from: m.from, to: lo - 1 });
      if (m.to > to) left.push({ from: to + 1, to: m.to });
    }
    if (left.length > 0) this.missing.set(conv, left);
    else this.missing.delete(conv);
    return took;
  }

  /** Stretches given up on that the server can be asked for (where they begin is known). */
  private hasMissing(): boolean {
    return [...this.missing.values()].some((list) => list.some((m) => m.from !== undefined));
  }

  /** Stops the gap timer (the command is ending). */
  stop(): void {
    this.stopped = true;
    clearTimeout(this.gapTimer);
  }

  private flush(conv: string): void {
    const held = this.held.get(conv) ?? new Map<number, LogEvent>();
    // A conversation the sync did not mention began after it: its first event is where it starts.
    const start = this.shown.get(conv) ?? (held.size > 0 ? Math.min(...held.keys()) - 1 : undefined);
    if (start === undefined) return;
    // With nothing held, only what is not the user's is passed over (a stretch a fill found hidden).
    let last: number = start;
    const before = last;
    for (;;) {
      const at = last;
      const skip = this.hidden.get(conv)?.find((h) => h.after <= at && at < h.upTo);
      if (skip) {
        last = skip.upTo;
        continue;
      }
      const next = held.get(last + 1);
      if (!next) break;
      held.delete(last + 1);
      last += 1;
      this.show(next);
    }
    this.shown.set(conv, last);
    for (const seq of held.keys()) if (seq <= last) held.delete(seq);
    if (held.size === 0) {
      this.held.delete(conv);
      return;
    }
    // A gap that is filling (a catch-up still arriving) gets its full time again.
    this.armGapTimer(last > before);
  }

  /** A sync came on this connection: where the user's part of each conversation begins is known. */
  private syncedHere = false;

  private armGapTimer(restart = false): void {
    if (this.stopped || this.filling || (this.gapTimer && !restart)) return;
    clearTimeout(this.gapTimer);
    this.gapTimer = setTimeout(() => {
      this.gapTimer = undefined;
      void this.gapTimedOut();
    }, this.gapTimeoutMs);
    this.gapTimer.unref();
  }

  private stopped = false;

  /**
   * No progress for a while. Without a sync (or without a server to ask), what is held is shown from its lowest seq, and
   * the gaps it passes are remembered as missing. Then the stretches given up on (now or before) are asked of the
   * server, where they begin is known; should that fail, the next round (a new gap) or the next sync tries again, not a
   * timer of their own: a request the server keeps refusing is not repeated every few seconds. Then each gap still held
   * is asked for, page after page; an answer fills it, or says which of its seqs are not the user's (skipped like a
   * `hidden` stretch). A failed request gives nothing up: the next round, or the next connection's sync, tries again.
   * A round whose connection was replaced meanwhile stops.
   */
  private async gapTimedOut(): Promise<void> {
    if (this.stopped) return;
    if (!this.synced || !this.fill) this.giveUp([...this.held.keys()]);
    const fill = this.fill;
    if (!fill) return;
    const connection = this.connection;
    this.filling = true;
    try {
      // Older first: what was passed over before, then what is held now.
      for (const [conv, list] of [...this.missing]) {
        if (this.fetchingUnread.has(conv)) continue;
        for (const m of list) {
          if (m.from === undefined) continue;
          for (let after = m.from - 1; after < m.to;) {
            const answer = await fill(conv, after, m.to + 1).catch(() => undefined);
            if (this.stopped || connection !== this.connection) return;
            if (!answer || !this.filled(conv, after, answer)) break;
            after = answer.through;
          }
        }
      }
      for (const conv of [...this.held.keys()]) {
        if (this.fetchingUnread.has(conv)) continue;
        for (;;) {
          const held = this.held.get(conv);
          const after = this.shown.get(conv);
          if (!held || after === undefined) break;
          const answer = await fill(conv, after, Math.min(...held.keys())).catch(() => undefined);
          if (this.stopped || connection !== this.connection) return;
          if (!answer || !this.filled(conv, after, answer)) break;
        }
      }
    } finally {
      this.filling = false;
      // A new connection's sync may have come while this round was under way: its missing stretches are asked for too.
      if (this.held.size > 0 || (connection !== this.connection && this.syncedHere && this.hasMissing())) this.armGapTimer(true);
    }
  }

  /**
   * Takes a server's answer for `(after, through]`: the seqs it does not hold are not the user's, and are skipped; its
   * entries are shown (in place, or late). False if it covered nothing.
   */
  private filled(conv: string, after: number, answer: FilledStretch): boolean {
    if (answer.through <= after) return false;
    const seqs = answer.entries.map((e) => e.seq).filter((seq) => seq > after && seq <= answer.through);
    let from = after;
    for (const seq of [...seqs.sort((a, b) => a - b), answer.through + 1]) {
      this.hide(conv, from, seq - 1);
      from = seq;
    }
    for (const e of answer.entries) this.accept(e);
    this.flush(conv);
    return true;
  }

  /**
   * Shows what is held in these conversations, in order, from the lowest seq, past any gap before it; the gap is
   * remembered as missing (see the class comment).
   */
  private giveUp(convs: string[]): void {
    this.synced = true;
    for (const conv of convs) {
      const held = this.held.get(conv);
      if (!held) continue;
      const lowest = Math.min(...held.keys());
      const last = this.shown.get(conv);
      if (lowest > (last ?? 0) + 1) {
        const list = this.missing.get(conv) ?? [];
        this.missing.set(conv, [...list, { from: last === undefined ? undefined : last + 1, to: lowest - 1 }]);
        this.shown.set(conv, lowest - 1);
      }
      this.flush(conv);
    }
  }
}
