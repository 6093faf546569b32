import type { GroupChange } from '#libs/protocol';

/** What an entry holds: a text message, or a change to a group. */
export type LogBody = { kind: 'text'; text: string } | { kind: 'event'; event: GroupChange };

/** One entry of a conversation's append-only log. */
export type LogEntry = LogHeader & LogBody;

interface LogHeader {
  /** Position in the conversation, 1 for the first entry, no gaps. */
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
}

/** Storage port for conversation logs. */
export interface ConversationLogStore {
  /**
   * Appends an entry with seq = last seq + 1 and resolves once it is durable.
   * Idempotent by (from, id): a repeat resolves to the original entry with
   * `duplicate: true` and writes nothing. Appends to one conversation are
   * applied in the order of the calls.
   */
  append(conv: string, input: AppendInput): Promise<AppendResult>;

  /** Entries with seq > after, ascending, at most `limit` of them. */
  readAfter(conv: string, after: number, limit: number): Promise<LogEntry[]>;

  /** The newest `limit` entries with seq < before, ascending. */
  readBefore(conv: string, before: number, limit: number): Promise<LogEntry[]>;

  /** The entry that (from, id) appended, if any. */
  findById(conv: string, from: string, id: string): Promise<LogEntry | undefined>;

  /** The seq of the last entry, 0 for an empty or unknown conversation. */
  lastSeq(conv: string): Promise<number>;
}
