import { styleText } from 'node:util';
import {
  nameLooks,
  type GroupChange,
  type GroupEvent,
  type GroupInfo,
  type GroupLabel,
  type InboxEvent,
  type InfoResult,
  type MessageEvent,
  type PeerCursors,
  type PresenceState,
  type ReceiptEvent,
  type SyncDelayedEvent,
} from '#libs/protocol';
import type { ParleyClient } from './parley-client.js';
import { shortened, terminalWidth } from './terminal-width.js';

/** `HH:MM:SS` in local time. */
export function clock(ts: number): string {
  const d = new Date(ts);
  return [d.getHours(), d.getMinutes(), d.getSeconds()].map((n) => String(n).padStart(2, '0')).join(':');
}

/** `YYYY-MM-DD HH:MM:SS` in local time. */
export function dateTime(ts: number): string {
  const d = new Date(ts);
  const date = [d.getFullYear(), d.getMonth() + 1, d.getDate()].map((n, i) => String(n).padStart(i === 0 ? 4 : 2, '0')).join('-');
  return `${date} ${clock(ts)}`;
}

/**
 * A time as a line shows it: `HH:MM:SS` when it is today (local time), `YYYY-MM-DD HH:MM:SS` when not, so that a
 * catch-up after a day away, or a read receipt from last week, does not pass for today.
 */
export function stamp(ts: number, now: number = Date.now()): string {
  const [d, today] = [new Date(ts), new Date(now)];
  const sameDay = d.getFullYear() === today.getFullYear() && d.getMonth() === today.getMonth() && d.getDate() === today.getDate();
  return sameDay ? clock(ts) : dateTime(ts);
}

/**
 * What the sender sees of its own message: ✓ accepted, ✓✓ delivered, ✓✓ read (with time); in a group, counts.
 * A direct message's `readAt` is when it was read, when that is known (not every message up to a read cursor was read
 * when the cursor got there); else `readBy`, when known, a time it had been read by (at the latest: `✓✓ read by …`).
 */
export type Mark =
  | { kind: 'direct'; delivered: boolean; read: boolean; readAt: number | null; readBy?: number }
  | { kind: 'group'; delivered: number; read: number; of: number };

export function markText(mark: Mark | null): string {
  if (mark === null) return '✓';
  if (mark.kind === 'direct') {
    if (mark.read) return mark.readAt !== null ? `✓✓ read ${stamp(mark.readAt)}` : mark.readBy !== undefined ? `✓✓ read by ${stamp(mark.readBy)}` : '✓✓ read';
    return mark.delivered ? '✓✓' : '✓';
  }
  if (mark.read > 0 && mark.read === mark.of) return `✓✓ ${mark.read}/${mark.of} read`;
  // Some have read it: how far it got among the rest still shows.
  if (mark.read > 0) return `✓✓ ${mark.delivered}/${mark.of} delivered, ${mark.read} read`;
  if (mark.delivered > 0) return `✓✓ ${mark.delivered}/${mark.of} delivered`;
  return '✓';
}

/**
 * A message's state for `--json` (`history`, and `chat`'s `mark` lines): its status, and in a group how many of the
 * others have it and have read it.
 */
export function statusFields(mark: Mark): { status: 'accepted' | 'delivered' | 'read'; delivered?: number; read?: number; of?: number } {
  if (mark.kind === 'direct') return { status: mark.read ? 'read' : mark.delivered ? 'delivered' : 'accepted' };
  const status = mark.read === mark.of && mark.of > 0 ? 'read' : mark.delivered > 0 ? 'delivered' : 'accepted';
  return { status, delivered: mark.delivered, read: mark.read, of: mark.of };
}

/**
 * The mark of message `seq` given the other members' cursors. A cursor says when it reached its seq, so only the
 * message at a read cursor has its read time; those before it were read at that time or before (`readBy`: it may be
 * long before, so it is not passed for their read time). In a group, a member
 * who joined after the message counts neither way: they never had it — unless it was said in an earlier time of theirs
 * in the group (removed, then added back), when they had it.
 */
export function markFor(seq: number, peers: Record<string, PeerCursors>, group: boolean): Mark {
  const cursors = Object.values(peers);
  if (!group) {
    const peer = cursors[0];
    const read = (peer?.read ?? 0) >= seq;
    const delivered = (peer?.delivered ?? 0) >= seq;
    if (!read || peer!.readAt === null) return { kind: 'direct', delivered, read, readAt: null };
    return peer!.read === seq
      ? { kind: 'direct', delivered, read, readAt: peer!.readAt }
      : { kind: 'direct', delivered, read, readAt: null, readBy: peer!.readAt };
  }
  const had = cursors.filter(
    (c) => ((c.joined ?? 0) <= seq && (c.left === undefined || seq <= c.left)) || (c.earlier ?? []).some((s) => s.joined <= seq && seq <= s.left),
  );
  return { kind: 'group', delivered: had.filter((c) => c.delivered >= seq).length, read: had.filter((c) => c.read >= seq).length, of: had.length };
}

/** Characters a terminal acts on or that reorder what it shows: controls (but new line), and direction overrides and isolates. */
// eslint-disable-next-line no-control-regex
const UNSAFE_ON_SCREEN = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g;
// eslint-disable-next-line no-control-regex
const UNSAFE_LABEL = /[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g;

const escapeChar = (c: string): string => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`;

/**
 * A name from others (a group's) as a terminal should show it, on one line: every control, new line included, and
 * every direction override as a visible `\u….` escape. The server refuses these in new names; this covers older ones.
 */
export function displayLabel(name: string): string {
  return name.replace(UNSAFE_LABEL, escapeChar);
}

/**
 * Text from others as a terminal should show it: a tab as spaces, other controls and direction overrides as visible
 * `\u….` escapes (never acted on), and each later line indented behind `| `, so no line of a message can pass for a
 * message of its own. (The server refuses controls other than tab and new line; this also covers what came before.)
 */
export function displayText(text: string): string {
  return text.replace(/\r?\n/g, '\n').replace(/\t/g, '    ').replace(UNSAFE_ON_SCREEN, escapeChar).replace(/\n/g, '\n  | ');
}

/** How a line about a conversation's entry starts: its time, long or short, and with `seq`, the entry's `#N`. */
export interface EntryLineOptions {
  /** The date too (`history`, whose lines span days). */
  long?: boolean;
  /**
   * The entry's seq after the time (`listen`, `history`): what receipts (`read up to #3`) and `history --before SEQ`
   * refer to. `chat` leaves it out: it marks each message ✓/✓✓ in place instead of printing receipts.
   */
  seq?: boolean;
}

function entryStart(e: { ts: number; seq: number }, opts: EntryLineOptions): string {
  const when = `[${opts.long ? dateTime(e.ts) : stamp(e.ts)}]`;
  return opts.seq ? `${when} #${e.seq}` : when;
}

/**
 * One line for a message: `[10:32:05] alice → you: hello`, `[10:32:05] you → bob: hello ✓✓`,
 * `[10:32:05] [class 5b] alice: hello`; with `seq`, `[10:32:05] #12 alice → you: hello`.
 */
export function messageLine(m: MessageEvent, me: string, opts: EntryLineOptions & { mark?: Mark | null } = {}): string {
  const start = entryStart(m, opts);
  const mine = m.from === me;
  const suffix = mine && opts.mark !== undefined ? ` ${markText(opts.mark)}` : '';
  const text = displayText(m.text);
  if (m.group) return `${start} [${displayLabel(m.group.name)}] ${mine ? 'you' : m.from}: ${text}${suffix}`;
  const to = m.to === me ? 'you' : (m.to ?? '?');
  return `${start} ${mine ? 'you' : m.from} → ${to}: ${text}${suffix}`;
}

/** Names the device a client connected as (`--device`), for the line that says who is logged in; '' for none. */
export function asDevice(device: string | null): string {
  return device === null ? '' : ` (device ${device})`;
}

/**
 * Someone else's receipt, as a person reads it: `[HH:MM:SS] bob read up to #3`, in a group `[HH:MM:SS] [lunch] bob read
 * up to #3`. Null for the user's own receipts (sent by its other devices): news to no one here.
 */
export function receiptLine(r: ReceiptEvent, me: string, group: GroupLabel | undefined): string | null {
  if (r.user === me) return null;
  return `[${stamp(r.ts)}] ${group ? `[${displayLabel(group.name)}] ` : ''}${r.user} ${r.status === 'read' ? 'read' : 'received'} up to #${r.seq}`;
}

/** The names of the groups seen so far (in the sync, in messages and group events), by conversation. */
export class GroupNames {
  private readonly byConv = new Map<string, GroupLabel>();

  note(e: InboxEvent): void {
    if (e.type === 'sync') for (const c of e.conversations) if (c.group) this.byConv.set(c.conv, c.group);
    if ((e.type === 'message' || e.type === 'group') && e.group) this.byConv.set(e.conv, e.group);
  }

  /** A group's label as a person should see it (see `display`). */
  of(conv: string): GroupLabel | undefined {
    const group = this.byConv.get(conv);
    return group && this.display({ group }).group;
  }

  /**
   * The event as a person should see it: a group's name carries its id when another of the user's groups has that name,
   * or one that looks the same (`nameLooks`: the same but for a zero-width space, say).
   */
  display<T extends { group?: GroupLabel | undefined }>(e: T): T {
    const group = e.group;
    if (!group) return e;
    const looks = nameLooks(group.name);
    for (const other of this.byConv.values()) {
      if (other.id !== group.id && nameLooks(other.name) === looks) return { ...e, group: { ...group, name: `${group.name} (${group.id})` } };
    }
    return e;
  }
}

export function groupChangeText(change: GroupChange, actor: string, me: string): string {
  const who = (u: string) => (u === me ? 'you' : u);
  switch (change.kind) {
    case 'created': {
      // The creator is named once, as who did it; alone in it, with no one.
      const others = change.members.filter((m) => m !== change.owner);
      return others.length === 0 ? `${who(actor)} created the group` : `${who(actor)} created the group with ${others.map(who).join(', ')}`;
    }
    case 'renamed':
      return `${who(actor)} renamed the group from "${displayLabel(change.oldName)}" to "${displayLabel(change.name)}"`;
    case 'member_added':
      return `${who(actor)} added ${change.members.map(who).join(', ')}`;
    case 'member_removed':
      return `${who(actor)} removed ${change.members.map(who).join(', ')}`;
    case 'member_left':
      return `${who(change.user)} left${change.newOwner ? `; ${who(change.newOwner)} now ${change.newOwner === me ? 'own' : 'owns'} the group` : ''}`;
    case 'owner_changed':
      return `${who(change.previous)} handed the group to ${who(change.owner)}`;
    case 'deleted':
      return change.lastMemberLeft ? `${who(actor)} left, the last member: the group is deleted` : `${who(actor)} deleted the group`;
  }
}

/** One line for a group change: `[10:32:05] [lunch] * alice added bob`; with `seq`, `[10:32:05] #7 [lunch] * …`. */
export function groupEventLine(e: GroupEvent, me: string, opts: EntryLineOptions = {}): string {
  return `${entryStart(e, opts)} [${displayLabel(e.group.name)}] * ${groupChangeText(e.change, e.from, me)}`;
}

export function presenceText(user: string, p: PresenceState): string {
  if (p.state === 'online') return `${user}: online`;
  return p.lastSeen === null ? `${user}: offline, never seen online` : `${user}: offline, last seen ${dateTime(p.lastSeen)}`;
}

/**
 * Which presence events of the users a chat follows are news to a person. The retained presence comes again with each
 * subscription (the first message to a peer, just after its offline notice; every reconnect): the same state again is
 * not news. And that retained copy can come after a newer change, published while the broker was reading it for the
 * subscription (users reconnecting together after a server restart): one older, by its lastSeen, than one already
 * seen is stale. (A user's lastSeen never goes back: a close never moves it back, a connection only forward.)
 */
export class PresenceNews {
  private readonly seen = new Map<string, PresenceState>();

  /** Records `p` as what the screen says of `user` now, and tells whether it said otherwise before. */
  isNews(user: string, p: PresenceState): boolean {
    const before = this.seen.get(user);
    if (before && (p.lastSeen ?? 0) < (before.lastSeen ?? 0)) return false;
    this.seen.set(user, { state: p.state, lastSeen: p.lastSeen });
    // Online is one state whatever its lastSeen (it moves with each device); offline since when is news each time.
    return !before || before.state !== p.state || (p.state === 'offline' && before.lastSeen !== p.lastSeen);
  }
}

export function offlineNotice(user: string, p: PresenceState): string {
  return p.lastSeen === null ? `${user} is offline (never seen online)` : `${user} is offline (last seen ${dateTime(p.lastSeen)})`;
}

/**
 * What a person is told of their catch-up (listen, chat): the first word that it is delayed, and its coming once it
 * was; a script (--json) gets each `sync_delayed` and `synced` as it came.
 */
export function reportCatchUp(print: (human: string | null, record: Record<string, unknown> & { type: string }) => void): {
  delayed: (e: SyncDelayedEvent, first: boolean) => void;
  synced: (count: number, late: boolean) => void;
} {
  return {
    delayed: (e, first) =>
      print(
        first
          ? `* your missed messages have not come yet: ${e.error.message}; the server tries again in ${+(e.retryInMs / 1000).toFixed(1)} s, and they will come then`
          : null,
        { ...e },
      ),
    synced: (count, late) =>
      print(late ? (count === 0 ? '* caught up: you missed nothing' : '* caught up: what you missed is shown above') : null, {
        type: 'synced',
        messages: count,
      }),
  };
}

export function groupLine(g: GroupInfo): string {
  // A retry's answer for a group deleted since: it has no members to count.
  if (g.deleted) return `${displayLabel(g.name)} (${g.id}), deleted since`;
  return `${displayLabel(g.name)} (${g.id}) owner ${g.owner}, ${g.members.length} member${g.members.length === 1 ? '' : 's'}: ${g.members.join(', ')}`;
}

export function infoLines(info: InfoResult): string[] {
  const width = Math.max(4, ...info.members.map((m) => m.user.length));
  const rows = info.members.map((m) => ({
    user: m.user,
    delivered: m.deliveredAt !== null ? `delivered ${stamp(m.deliveredAt)}` : 'not delivered',
    read: m.readAt !== null ? `read ${stamp(m.readAt)}` : 'not read',
  }));
  // As wide as "delivered HH:MM:SS", or as the widest of them (one of another day carries its date).
  const column = Math.max(18, ...rows.map((r) => r.delivered.length));
  return [
    `message ${info.seq} in ${displayLabel(info.group.name)}, from ${info.from}:`,
    ...rows.map(({ user, delivered, read }) => `  ${user.padEnd(width)}  ${delivered.padEnd(column)}  ${read}`),
  ];
}

/**
 * Tells, through `print`, when the client's connection drops (`lost`: `chat` and `listen` keep trying) and when it is
 * back (`back`: its catch-up follows): the text for people, and the `--json` record.
 */
export function reportConnection(client: ParleyClient, print: (text: string, record: { type: 'connection'; state: 'lost' | 'back' }) => void): void {
  client.on('offline', () => print('* connection lost; reconnecting…', { type: 'connection', state: 'lost' }));
  client.on('online', () => print('* connected', { type: 'connection', state: 'back' }));
}

/**
 * Where lines go: human text, or one JSON object per line with a `type`.
 * Errors go to stderr in human mode, to stdout as `{"type":"error"}` in JSON mode.
 */
export class Printer {
  constructor(
    readonly json: boolean,
    private readonly out: (line: string) => void = (l) => process.stdout.write(l + '\n'),
    private readonly err: (line: string) => void = (l) => process.stderr.write(l + '\n'),
  ) {}

  /** Prints `human` in human mode, `record` in JSON mode. */
  emit(human: string | null, record: Record<string, unknown> & { type: string }): void {
    if (this.json) this.out(JSON.stringify(record));
    else if (human !== null) this.out(human);
  }

  /** `fields`: more for a script (a send's `id`), after `code` and `message`; a person reads them in the message. */
  error(code: string, message: string, fields: Record<string, unknown> = {}): void {
    if (this.json) this.out(JSON.stringify({ type: 'error', code, message, ...fields }));
    // A message that names its kind already ("usage: parley send USER text") is not prefixed twice.
    else this.err(`error: ${code === 'failed' || message.startsWith(`${code}: `) ? '' : `${code}: `}${message}`);
  }

  /** A dim hint for people (never in JSON mode). */
  note(text: string): void {
    if (!this.json) this.err(process.stderr.isTTY ? styleText('dim', text) : text);
  }
}

/**
 * A message's line with its new mark, printed again below on a terminal, in one row: a long message (which wraps, or has
 * several lines) is cut short, enough to tell which it was, so that each change of its mark adds one row, not its
 * whole text again.
 */
export function markedInOneRow(base: string, mark: string, columns: number): string {
  // The last column is left free: some terminals wrap a line that fills it.
  const room = columns - 1 - terminalWidth(mark) - 1;
  const firstLine = base.split('\n', 1)[0]!;
  // A terminal narrower than the mark itself gets what fits of it.
  return shortened(`${shortened(firstLine === base ? base : `${firstLine} …`, Math.max(1, room))} ${mark}`, columns - 1);
}
