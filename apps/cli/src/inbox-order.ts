import type { GroupEvent, MessageEvent, SyncEvent } from '#libs/protocol';

export type LogEvent = MessageEvent | GroupEvent;

/**
 * Puts what arrives on the inbox back in order and drops repeats, so each
 * message is shown exactly once, in seq order per conversation — although live
 * messages may overtake the backlog, and a reconnect replays what was not yet
 * acknowledged.
 *
 * Until a connection's `sync` arrives, events are held: the sync says where
 * each conversation's backlog starts. A gap that makes no progress for
 * `gapTimeoutMs` (a slow catch-up that is still filling it counts as progress)
 * is asked of the server (`fill`, a `history` page); what is still missing
 * after that is given up on, so nothing is held forever.
 */
export class InboxOrder {
  private readonly shown = new Map<string, number>();
  private readonly held = new Map<string, Map<number, LogEvent>>();
  /** Stretches of a conversation that are not the user's (a group's, from while they were out of it): never waited for. */
  private readonly hidden = new Map<string, { after: number; upTo: number }[]>();
  private synced = false;
  private gapTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly show: (e: LogEvent) => void,
    private readonly gapTimeoutMs = 3000,
    /** Fetches the entries of a conversation after `after` and before `before` (some of them, oldest first). */
    private readonly fill?: (conv: string, after: number, before: number) => Promise<LogEvent[]>,
    /** Whether an event lets the user back into a conversation (added back to a group): what came just before it is not theirs. */
    private readonly letsBackIn: (e: LogEvent) => boolean = () => false,
  ) {}

  /** A new connection: hold events until its sync arrives. */
  reconnecting(): void {
    this.synced = false;
    this.connection++;
  }

  /** Counts connections, so that an answer asked for on one is not acted on after the next one began. */
  private connection = 0;
  /** A round of asking the server for gaps is under way: no other starts until it ends. */
  private filling = false;

  /**
   * The server's account of where each conversation stands. `startAt` may
   * move a conversation's starting point back (to show unread messages again,
   * which the caller then feeds in).
   */
  sync(event: SyncEvent, startAt: (c: SyncEvent['conversations'][number]) => number = (c) => c.after): void {
    for (const c of event.conversations) {
      this.shown.set(c.conv, Math.max(this.shown.get(c.conv) ?? 0, startAt(c)));
      for (const h of c.hidden ?? []) this.hide(c.conv, h.after, h.upTo);
    }
    this.synced = true;
    for (const conv of [...this.held.keys()]) this.flush(conv);
  }

  /** The highest seq shown in a conversation (0 if none). */
  shownUpTo(conv: string): number {
    return this.shown.get(conv) ?? 0;
  }

  accept(e: LogEvent): void {
    const last = this.shown.get(e.conv);
    if (last !== undefined && e.seq <= last) return;
    // Added back to a group: what was said while the user was out is not theirs, so there is nothing to wait for.
    if (last !== undefined && e.seq - 1 > last && this.letsBackIn(e)) this.hide(e.conv, last, e.seq - 1);
    let held = this.held.get(e.conv);
    if (!held) this.held.set(e.conv, (held = new Map<number, LogEvent>()));
    held.set(e.seq, e);
    if (this.synced) this.flush(e.conv);
    else this.armGapTimer();
  }

  private hide(conv: string, after: number, upTo: number): void {
    const known = this.hidden.get(conv) ?? [];
    if (!known.some((h) => h.after === after && h.upTo === upTo)) this.hidden.set(conv, [...known, { after, upTo }]);
  }

  /** Stops the gap timer (the command is ending). */
  stop(): void {
    this.stopped = true;
    clearTimeout(this.gapTimer);
  }

  private flush(conv: string): void {
    const held = this.held.get(conv);
    if (!held) return;
    // A conversation the sync did not mention began after it: its first event is where it starts.
    let last: number = this.shown.get(conv) ?? Math.min(...held.keys()) - 1;
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
    if (held.size === 0) this.held.delete(conv);
    // A gap that is filling (a catch-up still arriving) gets its full time again.
    else this.armGapTimer(last > before);
  }

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
   * No progress for a while. Without a sync (or without a server to ask), what is held is shown from its lowest seq, as
   * before. Otherwise each gap is asked of the server, page after page while the answers fill it; a gap the server
   * answers with nothing for (entries the user may not see) is given up on. A failed request gives nothing up: the
   * next round, or the next connection's sync, tries again. A round whose connection was replaced meanwhile stops.
   */
  private async gapTimedOut(): Promise<void> {
    if (this.stopped) return;
    if (!this.synced || !this.fill) return this.giveUp([...this.held.keys()]);
    const connection = this.connection;
    this.filling = true;
    try {
      for (const conv of [...this.held.keys()]) {
        for (;;) {
          const held = this.held.get(conv);
          const after = this.shown.get(conv);
          if (!held || after === undefined) break;
          const lowest = Math.min(...held.keys());
          let page: LogEvent[];
          try {
            page = await this.fill(conv, after, lowest);
          } catch {
            break;
          }
          if (this.stopped || connection !== this.connection) return;
          for (const e of page) this.accept(e);
          if ((this.shown.get(conv) ?? 0) === after) {
            this.giveUp([conv]);
            break;
          }
        }
      }
    } finally {
      this.filling = false;
      if (this.held.size > 0) this.armGapTimer(true);
    }
  }

  /** Shows what is held in these conversations, in order, from the lowest seq, past any gap before it. */
  private giveUp(convs: string[]): void {
    this.synced = true;
    for (const conv of convs) {
      const held = this.held.get(conv);
      if (!held) continue;
      const lowest = Math.min(...held.keys());
      if (lowest > (this.shown.get(conv) ?? 0) + 1) this.shown.set(conv, lowest - 1);
      this.flush(conv);
    }
  }
}
