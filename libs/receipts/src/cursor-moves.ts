import type { Cursors } from '#libs/protocol';
import type { CursorMove, ReceiptStatus } from './cursor.store.js';

/** The one rule both adapters apply: cursors only move forward, and reading implies delivery. */
export function moveCursors(current: Cursors, status: ReceiptStatus, seq: number, at: number): CursorMove {
  const next = { ...current };
  if (seq > next.delivered) {
    next.delivered = seq;
    next.deliveredAt = at;
  }
  if (status === 'read' && seq > next.read) {
    next.read = seq;
    next.readAt = at;
  }
  return {
    cursors: next,
    moved: next.delivered !== current.delivered || next.read !== current.read,
    from: status === 'read' ? current.read : current.delivered,
  };
}
