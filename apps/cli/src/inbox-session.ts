import {
  directPeer,
  MAX_HISTORY_LIMIT,
  type Cursors,
  type MessageEvent,
  type PeerCursors,
  type PresenceEvent,
  type ReceiptEvent,
  type ServerEvent,
  type SyncDelayedEvent,
} from '#libs/protocol';
import { InboxOrder, type FilledStretch, type LogEvent } from './inbox-order.js';
import { GroupNames, markFor, type Mark } from './output.js';
import type { ParleyClient } from './parley-client.js';

export interface SessionHandlers {
  /** A message or group event, in order, once. */
  show(e: LogEvent): void;
  /** The mark of one of my messages changed. */
  mark?(message: MessageEvent, mark: Mark): void;
  presence?(p: PresenceEvent): void;
  /**
   * Another member's receipt that moved their cursor (of its status), once. `passed`: my messages known to this session
   * (shown or tracked in it) that it moved that cursor past, oldest first; in a group, those sent after the member joined.
   */
  receipt?(r: ReceiptEvent, passed: MessageEvent[]): void;
  /**
   * The backlog announced at (re)connect has been received; `late`: it had been delayed (the server had said so), so a
   * person may be told it has come.
   */
  synced?(count: number, late: boolean): void;
  /**
   * The server could not start the catch-up yet, and tries again: `first` for the first such word since the last
   * catch-up came (a person needs telling once; a script gets every one).
   */
  delayed?(e: SyncDelayedEvent, first: boolean): void;
}

const NO_CURSORS: Cursors = { delivered: 0, deliveredAt: null, read: 0, readAt: null };
const ACK_DELAY_MS = 50;

/**
 * The client side of delivery: shows the inbox in order and once (InboxOrder),
 * acknowledges what it showed (delivered, or read when a person is looking),
 * and keeps the other members' cursors to mark my messages ✓, ✓✓ or read.
 */
/** How many of my latest messages per conversation keep following the receipts. */
export const TRACKED_PER_CONVERSATION = 1000;

export class InboxSession {
  private readonly order: InboxOrder;
  /** Other members' cursors per conversation (in a group, with the seq each joined at, when known). */
  private readonly peers = new Map<string, Record<string, PeerCursors>>();
  /** My messages seen in this session, per conversation, to re-mark on receipts. */
  private readonly mine = new Map<string, Map<number, MessageEvent>>();
  private readonly acked = new Map<string, number>();
  /** The highest seq of an entry shown per conversation: a receipt names one of them (see sendAck). */
  private readonly highestShown = new Map<string, number>();
  /** Names of the user's groups, to tell apart two that share a name. */
  readonly groups = new GroupNames();
  private readonly ackTimers = new Map<string, NodeJS.Timeout>();
  /** The server has said the catch-up is delayed, and it has not come since. */
  private delayed = false;
  /** Settles once the unread stretches of the last sync are shown (see `InboxOrder.fetchUnread`). */
  private unreadShown: Promise<void> = Promise.resolve();
  /**
   * Whether this connection's catch-up has been reported `synced`. A device's session is caught up by the server as it
   * answers the login, and the client's own SUBSCRIBE, should it come once that catch-up is over, brings a second one
   * (the same entries, shown once): one catch-up per connection is news.
   */
  private syncedTold = false;

  constructor(
    private readonly client: ParleyClient,
    private readonly handlers: SessionHandlers,
    /** Chat (a person reads the screen) acknowledges `read`; listen acknowledges `delivered`. */
    private readonly ackAs: 'delivered' | 'read' | 'none',
  ) {
    this.order = new InboxOrder(
      (e) => this.shown(e),
      undefined,
      (conv, after, before) => this.entriesBetween(conv, after, before),
      (e) => e.type === 'group' && e.change.kind === 'member_added' && e.change.members.includes(this.me),
      (conv) => this.scheduleAck(conv),
    );
    client.on('event', (e) => this.onEvent(e));
    client.on('presence', (p) => handlers.presence?.(p));
    client.on('offline', () => {
      this.order.reconnecting();
      this.syncedTold = false;
    });
  }

  get me(): string {
    return this.client.user ?? '';
  }

  /** Records one of my messages (just accepted) so its mark follows the receipts. */
  track(message: MessageEvent): Mark {
    let byConv = this.mine.get(message.conv);
    if (!byConv) this.mine.set(message.conv, (byConv = new Map<number, MessageEvent>()));
    byConv.set(message.seq, message);
    // A long session keeps the marks of its latest messages only: older ones have long scrolled away.
    if (byConv.size > TRACKED_PER_CONVERSATION) {
      const oldest = byConv.values().next().value!;
      byConv.delete(oldest.seq);
      this.readTimes.delete(`${oldest.conv}#${oldest.seq}`);
    }
    return this.markOf(message);
  }

  /**
   * Sets who the other members of a conversation are, when the sync did not say (a conversation begun since); with
   * `joined`, they were added by the group change at that seq (and count only for the messages after it). One who had
   * left before keeps that time in the group as an earlier one.
   */
  knowMembers(conv: string, others: string[], joined?: number): void {
    const peers = this.peers.get(conv) ?? {};
    let moved = false;
    for (const u of others) {
      const known = (peers[u] ??= { ...NO_CURSORS });
      // The latest join holds: a change replayed from the backlog never moves it back.
      if (joined !== undefined && joined > (known.joined ?? 0)) {
        const { left, ...rest } = known;
        const earlier = left !== undefined && known.joined !== undefined ? [...(known.earlier ?? []), { joined: known.joined, left }] : known.earlier;
        peers[u] = { ...rest, joined, ...(earlier ? { earlier } : {}) };
        moved = true;
      }
    }
    this.peers.set(conv, peers);
    // A member's receipt may have come before the change that added them was shown: my older messages counted them.
    if (moved) this.remark(conv);
  }

  hasPeers(conv: string): boolean {
    return this.peers.has(conv);
  }

  markOf(message: MessageEvent): Mark {
    const mark = markFor(message.seq, this.peers.get(message.conv) ?? {}, message.group !== undefined);
    if (mark.kind !== 'direct' || !mark.read) return mark;
    const key = `${message.conv}#${message.seq}`;
    // A time learnt once (the cursor stood at this message) stays: the cursor moves on, the message's read time does not.
    if (mark.readAt !== null && !this.readTimes.has(key)) this.readTimes.set(key, mark.readAt);
    const readAt = this.readTimes.get(key);
    return readAt !== undefined ? { ...mark, readAt } : mark;
  }

  /** When each of my direct messages was seen read in this session (a receipt reads up to a seq, at a time). */
  private readonly readTimes = new Map<string, number>();

  /** Stops timers; sends the acknowledgements still due. */
  async stop(): Promise<void> {
    this.order.stop();
    const due = [...this.ackTimers.keys()];
    for (const t of this.ackTimers.values()) clearTimeout(t);
    this.ackTimers.clear();
    await Promise.allSettled(due.map((conv) => this.sendAck(conv)));
  }

  private onEvent(e: ServerEvent): void {
    // Noted before anything is shown, so a line about a group can always name it.
    this.groups.note(e);
    switch (e.type) {
      case 'sync':
        for (const c of e.conversations) this.peers.set(c.conv, mergePeers(this.peers.get(c.conv), { ...c.peers, ...c.formerPeers }));
        // Chat shows what was delivered (to listen, say) but not read before the backlog: a person reads it there first.
        this.order.sync(e, this.ackAs === 'read' ? (c) => Math.min(c.after, c.mine.read) : undefined);
        this.unreadShown = this.order.fetchUnread((conv, after, upTo) => this.unreadBetween(conv, after, upTo));
        // A stretch given up on before (no sync came then) may be settled by this one: what it held back goes out.
        for (const c of e.conversations) this.scheduleAck(c.conv);
        this.remarkAll();
        return;
      case 'synced': {
        if (this.syncedTold) return;
        this.syncedTold = true;
        const late = this.delayed;
        this.delayed = false;
        // The catch-up is over once what was unread before it has been shown too.
        void this.unreadShown.then(() => this.handlers.synced?.(e.messages, late)).catch(() => undefined);
        return;
      }
      case 'sync_delayed':
        this.handlers.delayed?.(e, !this.delayed);
        this.delayed = true;
        return;
      case 'message':
      case 'group':
        this.order.accept(e);
        return;
      case 'receipt':
        this.onReceipt(e);
        return;
      case 'presence':
        this.handlers.presence?.(e);
        return;
      // File offers are shown by the commands (FileNotices), outside the conversations' order.
      case 'file':
      case 'files':
        return;
    }
  }

  /**
   * The entries of a conversation after `after` and before `before` that the user may see, oldest first: a page of the
   * stretch, from its start, and how far the page went. What a gap in the inbox is filled from when it does not fill by
   * itself (a live event lost on the way, a catch-up that never came).
   */
  /**
   * All the entries of a conversation after `after` up to `upTo` that the user may see: what was delivered but not read,
   * shown again in chat. Paged back from `upTo`, so that a stretch mostly not the user's (a group they joined late, whose
   * read cursor is still 0) costs a request per page of what they may see, not per page of the log.
   */
  private async unreadBetween(conv: string, after: number, upTo: number): Promise<FilledStretch> {
    const entries: LogEvent[] = [];
    for (let before = upTo + 1; ;) {
      const page = await this.client.request('history', { ...this.whereOf(conv), before, limit: MAX_HISTORY_LIMIT });
      const inStretch = page.messages.filter((e) => e.seq > after && e.seq < before);
      entries.unshift(...inStretch);
      // A short page reached the start of what the user may see; one that went below `after` reached the stretch's.
      if (page.messages.length < MAX_HISTORY_LIMIT || inStretch.length < page.messages.length || inStretch.length === 0) break;
      before = inStretch[0]!.seq;
    }
    return { entries, through: upTo };
  }

  private whereOf(conv: string): { with: string } | { group: string } {
    const peer = directPeer(conv, this.me);
    return peer !== null ? { with: peer } : { group: conv.replace(/^grp:/, '') };
  }

  private async entriesBetween(conv: string, after: number, before: number): Promise<FilledStretch> {
    const where = this.whereOf(conv);
    // A longer gap is filled a page at a time. A page as long as the stretch holds all of it that the user may see.
    const end = Math.min(before, after + 1 + MAX_HISTORY_LIMIT);
    const page = await this.client.request('history', { ...where, before: end, limit: end - after - 1 });
    return { entries: page.messages.filter((e) => e.seq > after && e.seq < end), through: end - 1 };
  }

  private shown(e: LogEvent): void {
    if (e.type === 'message' && e.from === this.me) this.track(e);
    if (e.type === 'group') this.followMembership(e);
    this.handlers.show(e);
    if (e.seq > (this.highestShown.get(e.conv) ?? 0)) this.highestShown.set(e.conv, e.seq);
    this.scheduleAck(e.conv);
  }

  private followMembership(e: Extract<LogEvent, { type: 'group' }>): void {
    const c = e.change;
    if (c.kind === 'created')
      this.knowMembers(
        e.conv,
        [c.owner, ...c.members].filter((u) => u !== this.me),
        e.seq,
      );
    else if (c.kind === 'member_added')
      this.knowMembers(
        e.conv,
        c.members.filter((u) => u !== this.me),
        e.seq,
      );
    else if (c.kind === 'member_removed' || c.kind === 'member_left' || c.kind === 'deleted') {
      // Out of the group from here: they still count for what was said before, which they had.
      const peers = this.peers.get(e.conv) ?? {};
      const out = c.kind === 'member_left' ? [c.user] : c.kind === 'member_removed' ? c.members : Object.keys(peers);
      for (const u of out) {
        const known = peers[u];
        if (known && known.left === undefined && (known.joined ?? 0) < e.seq) peers[u] = { ...known, left: e.seq };
      }
    }
  }

  private onReceipt(r: ReceiptEvent): void {
    // One's own read, made on another device (or this one): news to whoever keeps unread counts, and to no mark.
    if (r.user === this.me) return void this.handlers.receipt?.(r, []);
    const peers = this.peers.get(r.conv) ?? {};
    const prev = peers[r.user] ?? { ...NO_CURSORS };
    // A receipt may come more than once: the server announces a retried one again (its first announcement may have
    // been lost), and two devices of one reader may acknowledge the same message. One that moves no cursor known here
    // is not news.
    if (r.seq <= (r.status === 'read' ? prev.read : prev.delivered)) return;
    const next = { ...prev };
    if (r.seq > next.delivered) Object.assign(next, { delivered: r.seq, deliveredAt: r.ts });
    if (r.status === 'read' && r.seq > next.read) Object.assign(next, { read: r.seq, readAt: r.ts });
    peers[r.user] = next;
    this.peers.set(r.conv, peers);
    // Only the messages this receipt moved change their mark: those it reads were read by now, the others keep theirs.
    // A member who joined after a message never had it: their cursor passes it without news.
    const movedFrom = Math.max(r.status === 'read' ? prev.read : prev.delivered, prev.joined ?? 0);
    const passed = [...(this.mine.get(r.conv)?.values() ?? [])].filter((m) => m.seq > movedFrom && m.seq <= r.seq).sort((a, b) => a.seq - b.seq);
    this.handlers.receipt?.(r, passed);
    for (const m of passed) {
      if (r.status === 'read' && m.group === undefined) this.readTimes.set(`${m.conv}#${m.seq}`, r.ts);
      this.handlers.mark?.(m, this.markOf(m));
    }
  }

  private remarkAll(): void {
    for (const conv of this.mine.keys()) this.remark(conv);
  }

  /** Marks my messages of a conversation again. */
  private remark(conv: string): void {
    for (const m of this.mine.get(conv)?.values() ?? []) this.handlers.mark?.(m, this.markOf(m));
  }

  private scheduleAck(conv: string): void {
    if (this.ackAs === 'none' || this.ackTimers.has(conv)) return;
    this.ackTimers.set(
      conv,
      setTimeout(() => {
        this.ackTimers.delete(conv);
        void this.sendAck(conv).catch(() => undefined);
      }, ACK_DELAY_MS),
    );
  }

  private async sendAck(conv: string): Promise<void> {
    if (this.ackAs === 'none') return;
    // Never past a stretch it gave up on without seeing it filled: the next catch-up would not send it again. Nor at a
    // seq it passed over without an entry (where a sync started it, before the user joined a group, or one said while
    // they were out of it): that is not theirs, and the server refuses it; what it had is acknowledged by its last entry.
    const seq = Math.min(this.order.acknowledgeableUpTo(conv), this.highestShown.get(conv) ?? 0);
    if (seq <= (this.acked.get(conv) ?? 0)) return;
    this.acked.set(conv, seq);
    await this.client.request('receipt', { conv, seq, status: this.ackAs });
  }
}

/**
 * The members a sync names, each with the further of the cursors known here and those the sync read: a receipt that
 * arrived just before the sync was read may be newer than the sync's own figure. Cursors only move forward.
 */
function mergePeers(known: Record<string, PeerCursors> | undefined, synced: Record<string, PeerCursors>): Record<string, PeerCursors> {
  const out: Record<string, PeerCursors> = {};
  for (const [user, c] of Object.entries(synced)) {
    const k = known?.[user];
    // The later of two joins is the one that holds (a member added again after the sync was read), and with it when that
    // time in the group ended, if it has (a removal shown here may be newer than the sync).
    const joined = Math.max(k?.joined ?? 0, c.joined ?? 0);
    const left = (k?.joined ?? 0) > (c.joined ?? 0) ? k?.left : (c.joined ?? 0) > (k?.joined ?? 0) ? c.left : (k?.left ?? c.left);
    out[user] = {
      ...(k && k.delivered > c.delivered ? { delivered: k.delivered, deliveredAt: k.deliveredAt } : { delivered: c.delivered, deliveredAt: c.deliveredAt }),
      ...(k && k.read > c.read ? { read: k.read, readAt: k.readAt } : { read: c.read, readAt: c.readAt }),
      ...(joined > 0 ? { joined } : {}),
      ...(left !== undefined ? { left } : {}),
      // Earlier times in the group only grow; the sync read later knows them all.
      ...((c.earlier ?? k?.earlier) ? { earlier: c.earlier ?? k?.earlier } : {}),
    };
  }
  return out;
}
