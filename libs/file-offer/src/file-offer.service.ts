import { createHash } from 'node:crypto';
import {
  DomainError,
  formatBytes,
  formatBytesAgainst,
  isWithdrawn,
  isSafeContentType,
  isSafeFileName,
  offerIdOf,
  type FileChunkResult,
  type FileEvent,
  type FileFetchResult,
  type FileOffer,
  type FileOfferResult,
  type FileRecipientState,
  type FileStateResult,
  type FilesEvent,
  type GroupLabel,
} from '#libs/protocol';
import { KeyedQueue } from '#libs/locks';
import type { FileBlobStore, FileOfferStore, StoredOffer } from './file-offer.store.js';

export interface UserDirectory {
  exists(user: string): Promise<boolean>;
}

export interface FileLimits {
  maxFileBytes: number;
  maxPendingOffers: number;
  quotaBytes: number;
  ttlMs: number;
  chunkBytes: number;
  /** How many chunks a sender may have unacknowledged at once (told to clients). */
  window: number;
}

/** Whom an offer goes to, as the gateway resolved it: one user, or the other members of a group. */
export type OfferTarget = { to: string } | { group: GroupLabel; members: string[] };

export interface FileDescription {
  name: string;
  size: number;
  type?: string | undefined;
  sha256: string;
}

/**
 * A result, and the event to publish to `notify.to` (every device of each), if any. `announces` names the offer when
 * that event announces its complete upload: the publisher says `announced` once the event has left for its receivers.
 */
export interface FileOutcome<R> {
  result: R;
  notify: { to: string[]; event: FileEvent } | null;
  announces?: string;
}

const DEFAULT_TYPE = 'application/octet-stream';
const SWEEP_BATCH = 100;
/** Chunks read at once to check a completed upload's SHA-256. */
const HASH_BATCH = 32;

/**
 * File offers, consent first and store-and-forward: the sender describes the
 * file and uploads it in chunks at once; when the server holds all of it (and
 * its SHA-256 checks out) the receivers are told; each accepts (then
 * downloads) or declines; the sender hears of each decision. The data goes
 * when every receiver has received or declined it, or when the offer expires.
 *
 * Every method is idempotent (calls may arrive twice over the RPC transport).
 */
export class FileOfferService {
  /** Chunk uploads in flight, one at a time per offer (within this process). */
  private readonly uploads = new KeyedQueue();

  constructor(
    private readonly offers: FileOfferStore,
    private readonly blobs: FileBlobStore,
    private readonly users: UserDirectory,
    private readonly limits: FileLimits,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * Makes an offer (or, for a request id already used by the sender, returns
   * that offer with its upload progress, to resume). Throws
   * invalid_file_name, file_too_large, unknown_user, too_many_offers,
   * quota_exceeded or bad_request, changing nothing.
   */
  async offer(sender: string, requestId: string, target: OfferTarget, file: FileDescription): Promise<FileOutcome<FileOfferResult>> {
    const id = offerIdOf(sender, requestId);
    // A retry, or an offer to resume, gets that offer as it stands, withdrawn included: offering the file again is a new
    // request (a new id), so receivers see a new offer, never one they were told is withdrawn.
    const existing = await this.live(id);
    if (existing) {
      const result = { offer: viewOf(existing, sender), window: this.limits.window };
      // An empty file is announced by its offer: a retry of it, before that announcement is known to have left, is
      // announced again (as the last chunk again is for others; see `storeChunk`).
      return existing.chunks === 0 ? { result, ...(await this.announcedAgain(existing)) } : { result, notify: null };
    }
    // One name however the sender's system spells it (macOS decomposes accents), without spaces at its ends.
    const name = file.name.normalize('NFC').trim();
    if (!isSafeFileName(name))
      throw new DomainError(
        'invalid_file_name',
        'a file name needs visible characters, and may not hold a path separator, "..", control characters, bidirectional controls (U+202A–U+202E, U+2066–U+2069), half of a surrogate pair or a leading dot, nor be over 255 bytes',
      );
    // Shown to receivers and their programs as it is: what would act on a terminal or reorder text is no content type.
    if (file.type !== undefined && !isSafeContentType(file.type))
      throw new DomainError(
        'bad_request',
        'a content type may not hold control characters, bidirectional controls (U+202A–U+202E, U+2066–U+2069) or half of a surrogate pair',
      );
    if (file.size > this.limits.maxFileBytes) {
      const [size, limit] = formatBytesAgainst(file.size, this.limits.maxFileBytes);
      throw new DomainError('file_too_large', `the file is ${size}; the largest allowed is ${limit}`);
    }
    const receivers = 'to' in target ? [target.to] : target.members.filter((m) => m !== sender);
    if ('to' in target) {
      if (target.to === sender) throw new DomainError('bad_request', 'you cannot offer a file to yourself');
      if (!(await this.users.exists(target.to))) throw new DomainError('unknown_user', `there is no user "${target.to}"`);
    }
    if (receivers.length === 0) throw new DomainError('bad_request', 'there is no one else in that group to offer the file to');
    const createdAt = this.now();
    const chunks = Math.ceil(file.size / this.limits.chunkBytes);
    const offer: StoredOffer = {
      id,
      from: sender,
      ...('group' in target ? { group: target.group } : {}),
      name,
      size: file.size,
      type: file.type ?? DEFAULT_TYPE,
      sha256: file.sha256,
      chunkSize: this.limits.chunkBytes,
      chunks,
      uploaded: 0,
      createdAt,
      expiresAt: createdAt + this.limits.ttlMs,
      recipients: Object.fromEntries(receivers.map((r) => [r, 'pending' as const])),
      request: requestId,
      open: true,
    };
    const created = await this.offers.create(offer, { maxOpen: this.limits.maxPendingOffers, quotaBytes: this.limits.quotaBytes });
    switch (created) {
      // Said for every client alike: how to list and withdraw offers is each client's own (the protocol's file.list and
      // file.cancel, the CLI's commands), and it adds them.
      case 'too_many_offers':
        throw new DomainError(
          'too_many_offers',
          `you have ${this.limits.maxPendingOffers} file offers not yet taken or declined, the most allowed; wait for them, let them expire, or withdraw one`,
        );
      case 'quota_exceeded':
        throw new DomainError(
          'quota_exceeded',
          `this file (${formatBytes(file.size)}) would take your open file offers over the ${formatBytes(this.limits.quotaBytes)} the server holds for you; wait for them to be taken, let them expire, or withdraw one`,
        );
      case 'exists':
        return this.offer(sender, requestId, target, file);
      case 'created':
        break;
    }
    // An empty file is complete as it is.
    if (chunks === 0) return { result: { offer: viewOf(offer, sender), window: this.limits.window }, notify: await this.completed(offer), announces: id };
    return { result: { offer: viewOf(offer, sender), window: this.limits.window }, notify: null };
  }

  /**
   * Stores chunk `index` (base64 `data`) of the sender's offer. Chunks go in
   * order; one already stored is acknowledged again and changes nothing (and
   * tells no one, but for the last one before the announcement is known to have
   * left: see `announced`). The last one completes the upload: the SHA-256 is
   * checked and the receivers are told. Throws unknown_file, chunk_out_of_range,
   * bad_chunk or checksum_mismatch (which deletes the offer).
   */
  putChunk(sender: string, offerId: string, index: number, data: string): Promise<FileOutcome<FileChunkResult>> {
    // One chunk of an offer at a time, in arrival order: two uploads of one offer at once (a resume started while the
    // first still runs) then each find the other's chunk stored, and answer it as a repeat, instead of both writing it.
    return this.uploads.run(offerId, () => this.storeChunk(sender, offerId, index, data));
  }

  private async storeChunk(sender: string, offerId: string, index: number, data: string): Promise<FileOutcome<FileChunkResult>> {
    const offer = await this.live(offerId);
    if (!offer || offer.from !== sender) throw notTheSender(offer, sender, offerId, 'uploads it');
    // Said as such: the upload still running when the sender withdrew the offer (on another device, say) ends with why.
    if (isWithdrawn(offer)) throw new DomainError('unknown_file', `you withdrew file offer ${offerId} (${offer.name})`);
    if (index >= offer.chunks) throw outOfRange(offer, index);
    // A chunk stored already (a retry, with its request id or a new one) is answered as the first time. Receivers are
    // told of an offer once, by the chunk that completed it: otherwise every repeat of the last chunk would be an
    // `offered` event to each receiver, as many as the sender cared to send. But the gateway that had that
    // announcement may have died before it left (its sender then had no answer, and sends the last chunk again):
    // until the announcement is known to have left (`announced`), the last chunk again announces it again.
    if (index < offer.uploaded) {
      const complete = offer.uploaded === offer.chunks;
      const result = { offer: offerId, index, uploaded: offer.uploaded, complete };
      return complete && index === offer.chunks - 1 ? { result, ...(await this.announcedAgain(offer)) } : { result, notify: null };
    }
    if (index > offer.uploaded) throw new DomainError('bad_chunk', `chunks go in order: the next one is ${offer.uploaded}, not ${index}`);
    const bytes = Buffer.from(data, 'base64');
    const expected = chunkLength(offer, index);
    if (bytes.length !== expected) throw new DomainError('bad_chunk', `chunk ${index} must be ${expected} bytes, not ${bytes.length}`);
    await this.blobs.put(offerId, index, bytes, offer.expiresAt);
    const advanced = await this.offers.advance(offerId, index + 1);
    if (advanced === null) throw unknownFile(offerId);
    const { uploaded, moved } = advanced;
    const complete = uploaded === offer.chunks;
    // Only the call that made it complete announces it: another upload of the same chunk at once (a resume on another
    // gateway) finds it moved already, and is answered like any repeat.
    const notify = complete && moved ? await this.completed({ ...offer, uploaded }) : null;
    return { result: { offer: offerId, index, uploaded, complete }, notify, ...(notify ? { announces: offerId } : {}) };
  }

  /**
   * Says that the announcement of an offer's complete upload (an outcome's `announces`) has left for its receivers:
   * from then on, the last chunk sent again announces nothing.
   */
  async announced(offerId: string): Promise<void> {
    await this.offers.markAnnounced(offerId);
  }

  /**
   * The announcement of a complete upload once more, to the receivers yet to decide, while it is not known to have
   * left: what it took the first time (its SHA-256 checked over what is stored, which a crash may have cut short).
   */
  private async announcedAgain(offer: StoredOffer): Promise<Pick<FileOutcome<unknown>, 'notify' | 'announces'>> {
    const pending = Object.keys(offer.recipients).filter((r) => offer.recipients[r] === 'pending');
    if (offer.announced || isWithdrawn(offer) || pending.length === 0) return { notify: null };
    const notify = await this.completed(offer).catch(async (e: unknown) => {
      // Its data gone meanwhile: the last receiver yet to decide did so (or the sender withdrew it), and the data went
      // with that. No one is left to tell, and the request is answered as any repeat; otherwise the offer is gone.
      if (!(e instanceof DomainError && e.code === 'unknown_file')) throw e;
      const now = await this.offers.get(offer.id);
      if (now && !Object.values(now.recipients).includes('pending')) return null;
      throw e;
    });
    return notify ? { notify: { ...notify, to: pending }, announces: offer.id } : { notify: null };
  }

  /** The receiver takes the offer; it may then fetch the chunks. Throws unknown_file, file_not_ready or not_allowed (declined already). */
  async accept(user: string, offerId: string): Promise<FileOutcome<FileStateResult>> {
    const offer = await this.received(user, offerId, 'accept');
    const state = offer.recipients[user]!;
    if (state === 'declined') throw new DomainError('not_allowed', 'you declined this file');
    if (state === 'received') throw receivedAlready();
    if (state !== 'pending') return { result: { offer: viewOf(offer) }, notify: null };
    return (await this.decide(offer, user, 'accepted', ['pending'])) ?? this.accept(user, offerId);
  }

  /** The receiver refuses the offer (or gives up on one accepted); the data goes once no one needs it. Throws unknown_file or not_allowed (received already). */
  async decline(user: string, offerId: string): Promise<FileOutcome<FileStateResult>> {
    const offer = await this.received(user, offerId, 'decline');
    const state = offer.recipients[user]!;
    if (state === 'received') throw receivedAlready();
    if (state === 'declined') return { result: { offer: viewOf(offer) }, notify: null };
    return (await this.decide(offer, user, 'declined', ['pending', 'accepted'])) ?? this.decline(user, offerId);
  }

  /** Chunk `index` of an offer the receiver accepted, base64. Throws unknown_file, file_not_ready or chunk_out_of_range. */
  async fetch(user: string, offerId: string, index: number): Promise<FileFetchResult> {
    const offer = await this.received(user, offerId, 'fetch');
    if (offer.recipients[user] === 'received') throw receivedAlready();
    if (offer.recipients[user] !== 'accepted') throw new DomainError('file_not_ready', 'accept the file before you fetch it');
    if (index >= offer.chunks) throw outOfRange(offer, index);
    const data = await this.blobs.get(offerId, index);
    if (!data) {
      // Withdrawn (or expired) since the check above: say so, with the reason, as the next fetch would.
      await this.received(user, offerId, 'fetch');
      throw unknownFile(offerId);
    }
    return { offer: offerId, index, data: data.toString('base64') };
  }

  /**
   * The receiver has the whole file and verified it; the sender hears of it. Throws unknown_file (withdrawn, with the
   * reason, or expired) or file_not_ready (not accepted). Of this and a withdrawal at the same moment, exactly one
   * happens: the receiver is told the file is its own, or that it was withdrawn, and the sender hears the same. A
   * client saves the file under its name only after this answer.
   */
  async confirm(user: string, offerId: string): Promise<FileOutcome<FileStateResult>> {
    const offer = await this.received(user, offerId, 'confirm receiving');
    const state = offer.recipients[user]!;
    if (state === 'received') return { result: { offer: viewOf(offer) }, notify: null };
    if (state !== 'accepted') throw new DomainError('file_not_ready', 'accept the file first');
    return (await this.decide(offer, user, 'received', ['accepted'])) ?? this.confirm(user, offerId);
  }

  /**
   * The sender has been shown these receivers' states (its client prints a
   * decision once, then says so), so the inbox sync stops presenting them as
   * news. A state that is no longer the receiver's current one is ignored
   * (the newer one is still news). Throws unknown_file (not the sender's
   * offer) or bad_request (someone who is not a receiver), changing nothing.
   */
  async seen(user: string, offerId: string, states: Record<string, FileRecipientState>): Promise<FileOutcome<FileStateResult>> {
    const offer = await this.live(offerId);
    if (!offer || offer.from !== user) throw notTheSender(offer, user, offerId, 'says what it was shown of it');
    const strangers = Object.keys(states).filter((u) => !isReceiver(offer, u));
    if (strangers.length > 0) throw new DomainError('bad_request', `not a receiver of this offer: ${strangers.join(', ')}`);
    const current = Object.entries(states).filter(([u, state]) => offer.recipients[u] === state && offer.seen?.[u] !== state);
    if (current.length === 0) return { result: { offer: viewOf(offer, user) }, notify: null };
    const after = await this.offers.markSeen(offerId, Object.fromEntries(current));
    if (!after) throw unknownFile(offerId);
    return { result: { offer: viewOf(after, user) }, notify: null };
  }

  /**
   * The sender withdraws its offer: it and its data are deleted at once, and the receivers who had not received or
   * declined it (and the sender's other devices) are told. Throws unknown_file (not the sender's offer, or gone).
   */
  async cancel(user: string, offerId: string): Promise<FileOutcome<FileStateResult>> {
    let offer = await this.live(offerId);
    if (!offer || offer.from !== user) throw notTheSender(offer, user, offerId, 'withdraws it; decline it instead');
    // Each receiver still waiting is marked withdrawn (a tombstone until the offer expires, so a retried call gets the
    // same answer); then no one needs the data, and it goes.
    // Only from a waiting state, in one atomic step: a receiver who has just received or declined it keeps that.
    for (const [u, s] of Object.entries(offer.recipients)) {
      if (s === 'pending' || s === 'accepted') offer = (await this.offers.setRecipient(offerId, u, 'withdrawn', ['pending', 'accepted'])) ?? offer;
    }
    await this.releaseIfDone(offer);
    // Receivers never heard of an offer whose upload was not complete.
    const told = offer.uploaded === offer.chunks ? Object.keys(offer.recipients).filter((u) => offer.recipients[u] === 'withdrawn') : [];
    const event: FileEvent = { type: 'file', event: 'withdrawn', offer: viewOf(offer), ts: this.now() };
    return { result: { offer: viewOf(offer, user) }, notify: { to: [user, ...told], event } };
  }

  /** Offers the user made, and those made to it that it can still see (complete, not declined), oldest first. */
  async list(user: string): Promise<FileOffer[]> {
    const now = this.now();
    return (await this.offers.listOf(user)).filter((o) => o.expiresAt > now && this.visibleTo(o, user)).map((o) => viewOf(o, user));
  }

  /**
   * The `files` event for a connection's inbox sync: null when there is nothing in it. The user's own offers that have
   * nothing more to tell it are left out (`file.list` still has them): each of at most a week's offers would otherwise
   * ride along with every login.
   */
  async syncEvent(user: string): Promise<FilesEvent | null> {
    const offers = (await this.list(user)).filter((o) => o.from !== user || !toldAll(o));
    return offers.length === 0 ? null : { type: 'files', offers };
  }

  /** Deletes offers (and their data) that have expired. Resolves with how many went. */
  async sweep(): Promise<number> {
    let gone = 0;
    for (;;) {
      const due = await this.offers.dueBy(this.now(), SWEEP_BATCH);
      for (const id of due) if (await this.drop(id)) gone += 1;
      if (due.length < SWEEP_BATCH) return gone;
    }
  }

  private visibleTo(o: StoredOffer, user: string): boolean {
    if (o.from === user) return true;
    const state = o.recipients[user];
    return o.uploaded === o.chunks && (state === 'pending' || state === 'accepted');
  }

  /** An offer not expired; an expired one is deleted on sight. */
  private async live(id: string): Promise<StoredOffer | null> {
    const offer = await this.offers.get(id);
    if (!offer) return null;
    if (offer.expiresAt <= this.now()) {
      await this.drop(id);
      return null;
    }
    return offer;
  }

  /**
   * An offer made to `user` and complete (receivers never see a half-uploaded one). Its sender, who knows it exists,
   * is told that only its receivers `action` it (not_allowed); anyone else gets unknown_file.
   */
  private async received(user: string, offerId: string, action: string): Promise<StoredOffer> {
    const offer = await this.live(offerId);
    if (offer?.from === user) throw new DomainError('not_allowed', `you sent file offer ${offerId} (${offer.name}); only its receivers ${action} it`);
    if (!offer || !isReceiver(offer, user) || offer.uploaded < offer.chunks) throw unknownFile(offerId);
    // Gone for this receiver as for any other, with the reason: someone downloading it learns why it stopped.
    if (offer.recipients[user] === 'withdrawn') throw new DomainError('unknown_file', `${offer.from} withdrew file offer ${offerId} (${offer.name})`);
    return offer;
  }

  /**
   * Moves the receiver to `state` from one of `from`, and tells the sender. Null when the receiver's state moved on
   * meanwhile (a withdrawal, the user on another device): the caller asks again, and answers from the state as it is.
   */
  private async decide(
    offer: StoredOffer,
    user: string,
    state: FileRecipientState,
    from: readonly FileRecipientState[],
  ): Promise<FileOutcome<FileStateResult> | null> {
    const after = await this.offers.setRecipient(offer.id, user, state, from);
    if (!after) throw unknownFile(offer.id);
    if (after.recipients[user] !== state) return null;
    await this.releaseIfDone(after);
    const event: FileEvent = { type: 'file', event: state as FileEvent['event'], user, offer: viewOf(after), ts: this.now() };
    return { result: { offer: viewOf(after) }, notify: { to: [offer.from, user], event } };
  }

  /** Once every receiver has received or declined, the data goes and the offer stops counting against its sender (it stays listed until it expires). */
  private async releaseIfDone(offer: StoredOffer): Promise<void> {
    if (!Object.values(offer.recipients).every((s) => s === 'received' || s === 'declined' || s === 'withdrawn')) return;
    await this.blobs.delete(offer.id, offer.chunks);
    await this.offers.close(offer.id);
  }

  /** The upload is complete: checks the SHA-256 over what is stored, then announces the offer to its receivers. */
  private async completed(offer: StoredOffer): Promise<FileOutcome<unknown>['notify']> {
    const hash = createHash('sha256');
    for (let start = 0; start < offer.chunks; start += HASH_BATCH) {
      const indexes = Array.from({ length: Math.min(HASH_BATCH, offer.chunks - start) }, (_, i) => start + i);
      for (const chunk of await Promise.all(indexes.map((i) => this.blobs.get(offer.id, i)))) {
        if (!chunk) throw unknownFile(offer.id);
        hash.update(chunk);
      }
    }
    if (hash.digest('hex') !== offer.sha256) {
      await this.drop(offer.id);
      throw new DomainError('checksum_mismatch', 'the uploaded bytes do not have the SHA-256 the offer announced; the offer is deleted, offer the file again');
    }
    return this.announcement(offer);
  }

  private announcement(offer: StoredOffer): { to: string[]; event: FileEvent } {
    return { to: Object.keys(offer.recipients), event: { type: 'file', event: 'offered', offer: viewOf(offer), ts: this.now() } };
  }

  private async drop(id: string): Promise<boolean> {
    const offer = await this.offers.remove(id);
    if (offer) await this.blobs.delete(id, offer.chunks);
    return offer !== null;
  }
}

function chunkLength(offer: FileOffer, index: number): number {
  return index === offer.chunks - 1 ? offer.size - index * offer.chunkSize : offer.chunkSize;
}

/** The offer as `viewer` sees it: what its sender has been shown (`seen`), and the request that made it, are the sender's alone. */
function viewOf(offer: StoredOffer, viewer?: string): FileOffer {
  const { open: _open, announced: _announced, seen, request, ...view } = offer;
  if (viewer !== offer.from) return view;
  return { ...view, ...(seen !== undefined ? { seen } : {}), ...(request !== undefined ? { request } : {}) };
}

/**
 * Whether an offer (in its sender's view) has nothing more to tell its sender: each receiver has received it or declined
 * it, and the sender has been shown that (`seen`), or it was withdrawn from them.
 */
function toldAll(offer: FileOffer): boolean {
  return Object.entries(offer.recipients).every(([u, s]) => s === 'withdrawn' || ((s === 'received' || s === 'declined') && offer.seen?.[u] === s));
}

/** Whether `user` is one of the offer's receivers (an own key: a user may be called `constructor`). */
function isReceiver(offer: FileOffer, user: string): boolean {
  return Object.hasOwn(offer.recipients, user);
}

/**
 * What someone other than an offer's sender is told when asking what only its sender may: a receiver, who knows the
 * offer exists (complete, and not withdrawn for it), is told who may (not_allowed, `what` the sender does); anyone
 * else, or a receiver of a half-uploaded offer it was never shown, gets unknown_file, as for an offer that does not exist.
 */
function notTheSender(offer: StoredOffer | null, user: string, id: string, what: string): DomainError {
  const known = offer !== null && isReceiver(offer, user) && offer.uploaded === offer.chunks && offer.recipients[user] !== 'withdrawn';
  return known ? new DomainError('not_allowed', `${offer.from} sent file offer ${id} (${offer.name}); only its sender ${what}`) : unknownFile(id);
}

/** Chunk `index` is not in the offer's file: an empty file has none at all. */
function outOfRange(offer: FileOffer, index: number): DomainError {
  if (offer.chunks === 0)
    return new DomainError('chunk_out_of_range', `file offer ${offer.id} (${offer.name}) is an empty file: it has no chunks, and is complete as offered`);
  return new DomainError('chunk_out_of_range', `chunk ${index} is outside the file: it has chunks 0–${offer.chunks - 1}`);
}

function unknownFile(id: string): DomainError {
  return new DomainError('unknown_file', `there is no file offer ${id} for you (it may have expired)`);
}

/** What the gateway calls: the service in process, or the same methods over RPC to the file-offer app. */
export const FILE_OFFER_API_METHODS = [
  'offer',
  'putChunk',
  'announced',
  'accept',
  'decline',
  'fetch',
  'confirm',
  'seen',
  'cancel',
  'list',
  'syncEvent',
] as const;
export type FileOfferApi = Pick<FileOfferService, (typeof FILE_OFFER_API_METHODS)[number]>;
export const FILE_OFFER_API = Symbol('FILE_OFFER_API');

function receivedAlready(): DomainError {
  return new DomainError('not_allowed', 'you have received this file already (on one of your devices: a file is kept for one download per receiver)');
}
