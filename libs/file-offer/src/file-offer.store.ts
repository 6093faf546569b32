import type { FileOffer, FileRecipientState } from '#libs/protocol';

/** A file offer as stored: what every side sees, and whether it still counts against its sender's limits. */
export interface StoredOffer extends FileOffer {
  /** True until every receiver has received or declined it (then it no longer counts against the sender's limits). */
  open: boolean;
  /**
   * True once the announcement of the complete upload has left for its receivers (see `FileOfferService.announced`):
   * until then, the last chunk sent again announces it again.
   */
  announced?: boolean;
}

export type CreateOutcome = 'created' | 'exists' | 'too_many_offers' | 'quota_exceeded';

/** Storage port for file offers: their description, upload progress and each receiver's decision. */
export interface FileOfferStore {
  /**
   * Records a new offer, open, with `uploaded` as given, atomically checking
   * its sender's limits: with it, the sender may have at most `maxOpen` open
   * offers holding at most `quotaBytes` together. An id already present
   * changes nothing and resolves `exists`; a refusal changes nothing.
   */
  create(offer: StoredOffer, limits: { maxOpen: number; quotaBytes: number }): Promise<CreateOutcome>;

  /** The offer, or null when there is none of that id. */
  get(id: string): Promise<StoredOffer | null>;

  /**
   * Moves `uploaded` forward to `count` (never back), in one atomic step. Resolves with its value afterwards and
   * whether this call moved it (of calls racing to the same count, exactly one did), or null when there is no such offer.
   */
  advance(id: string, count: number): Promise<{ uploaded: number; moved: boolean } | null>;

  /**
   * Sets one receiver's state, if its state now is one of `from`, checked in the same atomic step: of two changes
   * racing (a withdrawal and a receipt, say), one is made and the other finds the state moved on and changes nothing.
   * Resolves with the offer afterwards, changed or not (the caller compares the receiver's state), or null, changing
   * nothing, when there is no such offer or receiver.
   */
  setRecipient(id: string, user: string, state: FileRecipientState, from: readonly FileRecipientState[]): Promise<StoredOffer | null>;

  /**
   * Records, for each receiver named, the state its sender has been shown
   * (`seen`), merged into what was recorded before, but only where that is
   * still the receiver's state (checked in the same atomic step, so a report
   * racing a newer decision cannot hide it). Names that are not receivers are
   * ignored. Resolves with the offer afterwards, or null when there is no such
   * offer.
   */
  markSeen(id: string, states: Record<string, FileRecipientState>): Promise<StoredOffer | null>;

  /** Records that the offer's announcement has left for its receivers (`announced`); nothing when there is no such offer. */
  markAnnounced(id: string): Promise<void>;

  /** Releases the offer from its sender's limits, once: later calls change nothing. The offer itself stays until removed. */
  close(id: string): Promise<void>;

  /** Deletes the offer, releasing its sender's limits if it was open. Resolves with what it was, or null when there was none. */
  remove(id: string): Promise<StoredOffer | null>;

  /** Every offer the user made or was made, oldest first. */
  listOf(user: string): Promise<StoredOffer[]>;

  /** Ids of up to `limit` offers that expire at or before `now`, soonest first. */
  dueBy(now: number, limit: number): Promise<string[]>;
}

/** Storage port for the bytes of offered files, in chunks. */
export interface FileBlobStore {
  /** Stores chunk `index` of offer `id` durably (replacing one of that index) before resolving. The adapter may drop it by itself after `expiresAt`. */
  put(id: string, index: number, data: Buffer, expiresAt: number): Promise<void>;

  /** Chunk `index` of offer `id`, or null when it is not held. */
  get(id: string, index: number): Promise<Buffer | null>;

  /** Deletes every chunk of offer `id` (which has `chunks` of them). Idempotent. */
  delete(id: string, chunks: number): Promise<void>;
}
