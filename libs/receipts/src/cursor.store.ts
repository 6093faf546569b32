import type { Cursors } from '#libs/protocol';

export type ReceiptStatus = 'delivered' | 'read';

export const NO_CURSORS: Cursors = { delivered: 0, deliveredAt: null, read: 0, readAt: null };

/** What a receipt did to a member's cursors. */
export interface CursorMove {
  cursors: Cursors;
  moved: boolean;
  /** The cursor of the receipt's status before it. */
  from: number;
}

/** Storage port for members' cursors in conversations: one record per (conversation, member), not per message. */
export interface CursorStore {
  /**
   * Moves a member's cursor forward to `seq` at time `at`, atomically: a
   * `read` also moves `delivered` up to `seq`. A cursor already at or past
   * `seq` stays where it is. Resolves, once durable, with the cursors after
   * the change, whether anything moved, and where the cursor of `status`
   * stood before (read in the same atomic step).
   */
  advance(conv: string, user: string, status: ReceiptStatus, seq: number, at: number): Promise<CursorMove>;

  /**
   * When the member's cursor of that kind first reached `seq` or beyond: the
   * time of the receipt that covered message `seq`. Null when it has not yet.
   */
  reachedAt(conv: string, user: string, status: ReceiptStatus, seq: number): Promise<number | null>;

  /** The member's cursors; all zero when it has none yet. */
  get(conv: string, user: string): Promise<Cursors>;
}
