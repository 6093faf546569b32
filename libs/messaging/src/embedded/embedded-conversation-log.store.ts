import type { Database } from 'lmdb';
import type { EmbeddedDatabase } from '#libs/storage';
import type { AppendInput, AppendResult, ConversationLogStore, LogEntry } from '../conversation-log.store.js';

type StoredEntry = AppendInput;

/**
 * Sub-databases: `log` keyed [conv, seq] (LMDB keeps keys ordered, so a range
 * read is one cursor walk), `log-last` keyed conv → last seq, `log-idem` keyed
 * [conv, from, id] → seq.
 */
export class EmbeddedConversationLogStore implements ConversationLogStore {
  private readonly log: Database<StoredEntry, [string, number]>;
  private readonly last: Database<number, string>;
  private readonly idem: Database<number, [string, string, string]>;

  constructor(db: EmbeddedDatabase) {
    this.log = db.open('log');
    this.last = db.open('log-last');
    this.idem = db.open('log-idem');
  }

  append(conv: string, input: AppendInput): Promise<AppendResult> {
    // LMDB runs write transactions one at a time, in call order.
    return this.log.transaction(() => {
      const seen = this.idem.get([conv, input.from, input.id]);
      if (seen !== undefined) {
        const original = this.log.get([conv, seen]);
        if (original) return { entry: { seq: seen, ...original }, duplicate: true };
      }
      const seq = (this.last.get(conv) ?? 0) + 1;
      void this.log.put([conv, seq], input);
      void this.last.put(conv, seq);
      void this.idem.put([conv, input.from, input.id], seq);
      return { entry: { seq, ...input }, duplicate: false };
    });
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
