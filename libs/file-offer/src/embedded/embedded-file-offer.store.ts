import type { Database } from 'lmdb';
import type { FileRecipientState } from '#libs/protocol';
import type { EmbeddedDatabase } from '#libs/storage';
import type { CreateOutcome, FileOfferStore, StoredOffer } from '../file-offer.store.js';

interface OpenTotals {
  count: number;
  bytes: number;
}

/**
 * Sub-databases: `file-offers` id → offer; `file-offers-by-user` keyed
 * [user, createdAt, id] for senders and receivers; `file-offers-open` user →
 * its open offers' count and bytes; `file-offers-due` keyed [expiresAt, id].
 * Every change is one LMDB transaction.
 */
export class EmbeddedFileOfferStore implements FileOfferStore {
  private readonly offers: Database<StoredOffer, string>;
  private readonly byUser: Database<true, [string, number, string]>;
  private readonly open: Database<OpenTotals, string>;
  private readonly due: Database<true, [number, string]>;

  constructor(db: EmbeddedDatabase) {
    this.offers = db.open('file-offers');
    this.byUser = db.open('file-offers-by-user');
    this.open = db.open('file-offers-open');
    this.due = db.open('file-offers-due');
  }

  create(offer: StoredOffer, limits: { maxOpen: number; quotaBytes: number }): Promise<CreateOutcome> {
    return this.offers.transaction(() => {
      if (this.offers.get(offer.id) !== undefined) return 'exists';
      const totals = this.open.get(offer.from) ?? { count: 0, bytes: 0 };
      if (totals.count + 1 > limits.maxOpen) return 'too_many_offers';
      if (totals.bytes + offer.size > limits.quotaBytes) return 'quota_exceeded';
      void this.offers.put(offer.id, { ...offer, open: true });
      void this.open.put(offer.from, { count: totals.count + 1, bytes: totals.bytes + offer.size });
      for (const user of [offer.from, ...Object.keys(offer.recipients)]) void this.byUser.put([user, offer.createdAt, offer.id], true);
      void this.due.put([offer.expiresAt, offer.id], true);
      return 'created';
    });
  }

  get(id: string): Promise<StoredOffer | null> {
    return Promise.resolve(this.offers.get(id) ?? null);
  }

  advance(id: string, count: number): Promise<{ uploaded: number; moved: boolean } | null> {
    return this.offers.transaction(() => {
      const offer = this.offers.get(id);
      if (!offer) return null;
      if (count <= offer.uploaded) return { uploaded: offer.uploaded, moved: false };
      void this.offers.put(id, { ...offer, uploaded: count });
      return { uploaded: count, moved: true };
    });
  }

  setRecipient(id: string, user: string, state: FileRecipientState, from: readonly FileRecipientState[]): Promise<StoredOffer | null> {
    return this.offers.transaction(() => {
      const offer = this.offers.get(id);
      if (!offer || !Object.hasOwn(offer.recipients, user)) return null;
      if (!from.includes(offer.recipients[user]!)) return offer;
      const next = { ...offer, recipients: { ...offer.recipients, [user]: state } };
      void this.offers.put(id, next);
      return next;
    });
  }

  async markAnnounced(id: string): Promise<void> {
    await this.offers.transaction(() => {
      const offer = this.offers.get(id);
      if (offer && !offer.announced) void this.offers.put(id, { ...offer, announced: true });
    });
  }

  markSeen(id: string, states: Record<string, FileRecipientState>): Promise<StoredOffer | null> {
    return this.offers.transaction(() => {
      const offer = this.offers.get(id);
      if (!offer) return null;
      const named = Object.entries(states).filter(([user, state]) => Object.hasOwn(offer.recipients, user) && offer.recipients[user] === state);
      if (named.length === 0) return offer;
      const next = { ...offer, seen: { ...offer.seen, ...Object.fromEntries(named) } };
      void this.offers.put(id, next);
      return next;
    });
  }

  close(id: string): Promise<void> {
    return this.offers.transaction(() => {
      const offer = this.offers.get(id);
      if (!offer?.open) return;
      void this.offers.put(id, { ...offer, open: false });
      this.release(offer);
    });
  }

  remove(id: string): Promise<StoredOffer | null> {
    return this.offers.transaction(() => {
      const offer = this.offers.get(id);
      if (!offer) return null;
      if (offer.open) this.release(offer);
      void this.offers.remove(id);
      for (const user of [offer.from, ...Object.keys(offer.recipients)]) void this.byUser.remove([user, offer.createdAt, offer.id]);
      void this.due.remove([offer.expiresAt, offer.id]);
      return offer;
    });
  }

  /** Inside a write transaction: takes an open offer off its sender's totals. */
  private release(offer: StoredOffer): void {
    const totals = this.open.get(offer.from) ?? { count: 0, bytes: 0 };
    const next = { count: Math.max(0, totals.count - 1), bytes: Math.max(0, totals.bytes - offer.size) };
    void (next.count === 0 ? this.open.remove(offer.from) : this.open.put(offer.from, next));
  }

  listOf(user: string): Promise<StoredOffer[]> {
    const out: StoredOffer[] = [];
    for (const [, , id] of this.byUser.getKeys({ start: [user, 0, ''], end: [user, Number.MAX_SAFE_INTEGER, '\uffff'] })) {
      const offer = this.offers.get(id);
      if (offer) out.push(offer);
    }
    return Promise.resolve(out);
  }

  dueBy(now: number, limit: number): Promise<string[]> {
    const ids: string[] = [];
    for (const [, id] of this.due.getKeys({ start: [0, ''], end: [now, '\uffff'], limit })) ids.push(id);
    return Promise.resolve(ids);
  }
}
