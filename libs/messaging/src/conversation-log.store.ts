import type { GroupChange } from '#libs/protocol';

/** What an entry holds: a text message, or a change to a group. */
export type LogBody = { kind: 'text'; text: string } | { kind: 'event'; event: GroupChange };

/** One entry of a conversation's append-only log. */
export type LogEntry = LogHeader & LogBody;

interface LogHeader {
  /**
   * Position in the conversation, 1 for the first entry, each next one higher by one; a seq is left unused only where a
   * commit failed while later appends of the conversation were already under way (the embedded store: a failing disk),
   * and a client then finds no entry there in `history`.
   */
  seq: number;
  /** Server time of the append, epoch milliseconds. */
  ts: number;
  /** The user who wrote it, as the server authenticated it. */
  from: string;
  /** The client's id for it; (from, id) is unique within a conversation. */
  id: string;
}

export type AppendInput = Omit<LogHeader, 'seq'> & LogBody;

export interface AppendResult {
  entry: LogEntry;
  /** True when (from, id) had been appended before: `entry` is that original and nothing was written. */
  duplicate: boolean;
  /** With `writersSince`, when the sender was checked: the writers at the new entry's seq (a group's members then). */
  writers?: string[];
}

/**
 * Who may write to a conversation, kept by the log with its entries, so that checking a sender and appending their
 * entry are one step: a group's members, set by each change to the group, and checked by each post. A post checked
 * against the group's state and appended after a change that removed its sender would otherwise be stored after it.
 */
export interface AppendOptions {
  /** The conversation's writers from this entry on (a group's members after the change it records), stored with it. */
  writers?: readonly string[];
  /**
   * Appends only if `input.from` is one of the writers, when the writers were set by an entry at or after this seq (the
   * last change the caller checked the sender against); otherwise rejects with NotAWriter and writes nothing. Writers
   * set before that seq, or never, are not checked: a change made by a version that kept none left them behind.
   */
  writersSince?: number;
}

/** An append refused because its sender is not one of the conversation's writers (see AppendOptions). */
export class NotAWriter extends Error {
  constructor(
    readonly conv: string,
    readonly from: string,
  ) {
    super(`${from} may not write to ${conv}`);
    this.name = 'NotAWriter';
  }
}

/** Storage port for conversation logs. */
export interface ConversationLogStore {
  /**
   * Appends an entry with seq = last seq + 1 and resolves once it is durable.
   * Idempotent by (from, id): a repeat resolves to the original entry with
   * `duplicate: true` and writes nothing. Appends to one conversation are
   * applied in the order of the calls; so are their checks and changes of the writers (AppendOptions). A repeat is
   * a duplicate whatever the writers are now. An entry's `ts` is never earlier than the entry before it: one given an
   * earlier time (another process's clock, a store reached later) is stored, and answered, with the previous one's.
   */
  append(conv: string, input: AppendInput, options?: AppendOptions): Promise<AppendResult>;

  /** Entries with seq > after, ascending, at most `limit` of them. */
  readAfter(conv: string, after: number, limit: number): Promise<LogEntry[]>;

  /** The newest `limit` entries with seq < before, ascending. */
  readBefore(conv: string, before: number, limit: number): Promise<LogEntry[]>;

  /** The entry that (from, id) appended, if any. */
  findById(conv: string, from: string, id: string): Promise<LogEntry | undefined>;

  /** The seq of the last entry, 0 for an empty or unknown conversation. */
  lastSeq(conv: string): Promise<number>;
}
