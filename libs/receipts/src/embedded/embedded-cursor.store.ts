import type { Database } from 'lmdb';
import type { Cursors } from '#libs/protocol';
import type { EmbeddedDatabase } from '#libs/storage';
import { moveCursors } from '../cursor-moves.js';
import { NO_CURSORS, type CursorMove, type CursorStore, type ReceiptStatus } from '../cursor.store.js';

/**
 * Sub-databases: `cursors` keyed [conv, user]; `cursor-moves` keyed
 * [conv, user, status, seq] → time, one entry per receipt that moved a cursor.
 */
export class EmbeddedCursorStore implements CursorStore {
  private readonly cursors: Database<Cursors, [string, string]>;
  private readonly moves: Database<number, [string, string, ReceiptStatus, number]>;

  constructor(db: EmbeddedDatabase) {
    this.cursors = db.open('cursors');
    this.moves = db.open('cursor-moves');
  }

  advance(conv: string, user: string, status: ReceiptStatus, seq: number, at: number): Promise<CursorMove> {
    return this.cursors.transaction(() => {
      const before = this.cursors.get([conv, user]) ?? NO_CURSORS;
      const result = moveCursors(before, status, seq, at);
      if (!result.moved) return result;
      void this.cursors.put([conv, user], result.cursors);
      if (result.cursors.delivered > before.delivered) void this.moves.put([conv, user, 'delivered', result.cursors.delivered], at);
      if (result.cursors.read > before.read) void this.moves.put([conv, user, 'read', result.cursors.read], at);
      return result;
    });
  }

  reachedAt(conv: string, user: string, status: ReceiptStatus, seq: number): Promise<number | null> {
    for (const { value } of this.moves.getRange({ start: [conv, user, status, seq], end: [conv, user, status, Number.MAX_SAFE_INTEGER], limit: 1 })) {
      return Promise.resolve(value);
    }
    return Promise.resolve(null);
  }

  get(conv: string, user: string): Promise<Cursors> {
    return Promise.resolve(this.cursors.get([conv, user]) ?? NO_CURSORS);
  }
}
