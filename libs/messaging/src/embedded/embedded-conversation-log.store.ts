import type { Database } from 'lmdb';
import type { EmbeddedDatabase } from '#libs/storage';
import { NotAWriter, type AppendInput, type AppendOptions, type AppendResult, type ConversationLogStore, type LogEntry } from '../conversation-log.store.js';

type StoredEntry = AppendInput;

/** A conversation's writers (AppendOptions), and the seq of the entry that set them. */
interface Writers {
  at: number;
  users: string[];
}

/** A conversation's appends that have been handed to LMDB and are not committed yet. */
interface Unsettled {
  /** The seq of the newest of them: the next append follows it, whatever the last commit says. */
  last: number;
  /** How many of them there are; the conversation is forgotten when none is left. */
  count: number;
  /** Each of them by `from\0id`, so a retry that arrives before its original is committed is still a duplicate. */
  byId: Map<string, { entry: LogEntry; written: Promise<unknown> }>;
  /** The writers set by the newest of them that set any: later appends are checked against these, not the committed. */
  writers?: Writers;
  /** The time of the newest of them: the next append's is never earlier. */
  lastTs: number;
}

/**
 * Sub-databases: `log` keyed [conv, seq] (LMDB keeps keys ordered, so a range
 * read is one cursor walk), `log-last` keyed conv → last seq, `log-idem` keyed
 * [conv, from, id] → seq, `log-writers` keyed conv → the writers and the seq that set them.
 *
 * An append numbers its entry on the spot and hands three puts to the
 * database's end-of-turn commit (`atTurnEnd`): every append of one event-loop
 * turn is committed (and synced) in one transaction, and an entry, its seq and
 * its id are stored together or not at all. Until the commit, the numbering
 * continues from memory (`unsettled`), because reads see only what is
 * committed. This process is
 * the store's only writer (the embedded store is standalone), so memory and
 * disk cannot disagree about the next seq.
 */
export class EmbeddedConversationLogStore implements ConversationLogStore {
  private readonly log: Database<StoredEntry, [string, number]>;
  private readonly last: Database<number, string>;
  private readonly idem: Database<number, [string, string, string]>;
  private readonly writers: Database<Writers, string>;
  private readonly unsettled = new Map<string, Unsettled>();

  constructor(private readonly db: EmbeddedDatabase) {
    this.log = db.open('log');
    this.last = db.open('log-last');
    this.idem = db.open('log-idem');
    this.writers = db.open('log-writers');
  }

  append(conv: string, input: AppendInput, options: AppendOptions = {}): Promise<AppendResult> {
    const pending = this.unsettled.get(conv);
    const idKey = `${input.from}\0${input.id}`;
    const twin = pending?.byId.get(idKey);
    if (twin) return twin.written.then(() => ({ entry: twin.entry, duplicate: true }));
    const seen = this.idem.get([conv, input.from, input.id]);
    if (seen !== undefined) {
      const original = this.log.get([conv, seen]);
      if (original) return Promise.resolve({ entry: { seq: seen, ...original }, duplicate: true });
    }
    // The writers the sender is checked against, if any (see AppendOptions); the sender must be one of them.
    const checkedBy = (writers: Writers | undefined): string[] | undefined =>
      options.writersSince !== undefined && writers && writers.at >= options.writersSince ? writers.users : undefined;
    let checked = options.writersSince === undefined ? undefined : checkedBy(pending?.writers ?? this.writers.get(conv));
    if (checked && !checked.includes(input.from)) return Promise.reject(new NotAWriter(conv, input.from));
    const lastSeq = pending ? pending.last : (this.last.get(conv) ?? 0);
    const seq = lastSeq + 1;
    // Times never go back along a conversation's seqs, whatever the clock did (see ConversationLogStore.append).
    const lastTs = pending ? pending.lastTs : lastSeq > 0 ? (this.log.get([conv, lastSeq])?.ts ?? 0) : 0;
    if (input.ts < lastTs) input = { ...input, ts: lastTs };
    const entry: LogEntry = { seq, ...input };
    const setWriters = options.writers && { at: seq, users: [...options.writers] };
    // Committed with the rest of this turn's appends, in call order: an entry, its seq and its id together or not at all.
    const written = this.db.atTurnEnd(() => {
      // Checked again against what the transaction sees: the writers checked against above may be an append of this
      // turn whose write failed since (each write of a failed turn is then tried alone), a change that never was.
      if (options.writersSince !== undefined) {
        checked = checkedBy(this.writers.get(conv));
        if (checked && !checked.includes(input.from)) throw new NotAWriter(conv, input.from);
      }
      this.log.putSync([conv, seq], input);
      this.last.putSync(conv, seq);
      this.idem.putSync([conv, input.from, input.id], seq);
      if (setWriters) this.writers.putSync(conv, setWriters);
    });
    const state: Unsettled = pending ?? { last: 0, count: 0, byId: new Map(), lastTs: 0 };
    state.last = seq;
    state.lastTs = input.ts;
    if (setWriters) state.writers = setWriters;
    state.count++;
    state.byId.set(idKey, { entry, written });
    if (!pending) this.unsettled.set(conv, state);
    const settle = (): void => {
      state.byId.delete(idKey);
      // Once nothing is in flight, the next seq comes from the committed `log-last` again. (A commit that failed leaves
      // its seqs unused; later appends issued while it was in flight keep theirs, so the log then has a gap there.)
      if (--state.count === 0) this.unsettled.delete(conv);
    };
    return written.then(
      () => {
        settle();
        return checked ? { entry, duplicate: false, writers: [...checked] } : { entry, duplicate: false };
      },
      (e: unknown) => {
        settle();
        throw e;
      },
    );
  }

  readAfter(conv: string, after: number, limit: number): Promise<LogEntry[]> {
    const out: LogEntry[] = [];
    for (const { key, value } of this.log.getRange({ start: [conv, after + 1], end: [conv, Number.MAX_SAFE_INTEGER], limit })) {
      out.push({ seq: key[1], ...value });
    }
    return Promise.resolve(out);
  }

  readBefore(conv: string, before: number, limit: number): Promise<LogEntry[]> {
    const out: LogEntry[] = [];
    for (const { key, value } of this.log.getRange({ start: [conv, before - 1], end: [conv, 0], reverse: true, limit })) {
      out.push({ seq: key[1], ...value });
    }
    return Promise.resolve(out.reverse());
  }

  findById(conv: string, from: string, id: string): Promise<LogEntry | undefined> {
    const seq = this.idem.get([conv, from, id]);
    const entry = seq === undefined ? undefined : this.log.get([conv, seq]);
    return Promise.resolve(seq !== undefined && entry ? { seq, ...entry } : undefined);
  }

  lastSeq(conv: string): Promise<number> {
    return Promise.resolve(this.last.get(conv) ?? 0);
  }
}
