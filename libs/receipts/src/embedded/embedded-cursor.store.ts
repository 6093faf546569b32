import type { Database } from 'lmdb';
import type { Cursors } from '#libs/protocol';
import type { EmbeddedDatabase } from '#libs/storage';
import { moveCursors } from '../cursor-moves.js';
import { NO_CURSORS, type CursorStore, type ReceiptStatus } from '../cursor.store.js';

/** Sub-database `cursors` keyed [conv, user]. */
export class EmbeddedCursorStore implements CursorStore {
  private readonly cursors: Database<Cursors, [string, string]>;

  constructor(db: EmbeddedDatabase) {
    this.cursors = db.open('cursors');
  }

  advance(conv: string, user: string, status: ReceiptStatus, seq: number, at: number): Promise<{ cursors: Cursors; moved: boolean }> {
    return this.cursors.transaction(() => {
      const result = moveCursors(this.cursors.get([conv, user]) ?? NO_CURSORS, status, seq, at);
      if (result.moved) void this.cursors.put([conv, user], result.cursors);
      return result;
    });
  }

  get(conv: string, user: string): Promise<Cursors> {
    return Promise.resolve(this.cursors.get([conv, user]) ?? NO_CURSORS);
  }
}
