import { createHash, randomBytes } from 'node:crypto';
import { constants, type Stats } from 'node:fs';
import { link, lstat, open, rename, stat, unlink, type FileHandle } from 'node:fs/promises';
import { basename, extname, join } from 'node:path';
import { formatBytes, isWithdrawn, numberedFileName, OfferId, offerIdOf, sanitizeFileName, type FileOffer } from '#libs/protocol';
import { fileLabel } from './file-output.js';
import { RequestError, RequestTimeout, type ParleyClient } from './parley-client.js';

/** Where an offer goes: a user or a group. */
export type FileTarget = { to: string } | { group: string };

export class TransferError extends Error {
  override readonly name = 'TransferError';
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

const CONTENT_TYPES: Record<string, string> = {
  '.txt': 'text/plain',
  '.md': 'text/markdown',
  '.csv': 'text/csv',
  '.json': 'application/json',
  '.pdf': 'application/pdf',
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
  '.jpeg': 'image/jpeg',
  '.gif': 'image/gif',
  '.zip': 'application/zip',
  '.gz': 'application/gzip',
  '.tar': 'application/x-tar',
};

export async function sha256Of(path: string): Promise<string> {
  const handle = await open(path, 'r');
  try {
    return await sha256Through(handle);
  } finally {
    await handle.close();
  }
}

/**
 * Offers a file and uploads it: chunk after chunk, with at most the server's
 * window unacknowledged. Offering the same file (name and hash) to the same
 * receiver again, from any device, while that offer is still under way (its
 * upload cut short, or not yet decided on) resumes it from the last
 * acknowledged chunk rather than making another; once it is settled, sending
 * the file again is a new offer. Resolves with the offer once the server
 * holds all of it.
 */
export async function uploadFile(
  client: ParleyClient,
  target: FileTarget,
  path: string,
  onProgress: (offer: FileOffer, bytes: number) => void,
  /** Told of unfinished uploads of other files of the same name to the same receivers (see below). */
  onUnfinished?: (offers: FileOffer[]) => void,
  /** Told, before the upload goes on, of an offer of this file made before (by an earlier run) that this one takes up. */
  onEarlier?: (offer: FileOffer) => void,
): Promise<FileOffer> {
  const info = await stat(path).catch(() => null);
  if (!info) throw new TransferError('usage', `${path}: no such file`);
  if (!info.isFile()) throw new TransferError('usage', `${path} is not a file`);
  const name = sanitizeFileName(basename(path));
  const sha256 = await sha256Of(path);
  const file = { name, size: info.size, type: CONTENT_TYPES[extname(name).toLowerCase()] ?? 'application/octet-stream', sha256 };
  const key = createHash('sha256')
    .update(JSON.stringify([target, name, sha256]))
    .digest('hex')
    .slice(0, 40);
  // Each offer of this file to this receiver is made by a request id of its own, `file-KEY-NONCE`, which the sender's
  // list names: one look finds the offer to resume, however many were made before.
  const { offers } = await client.request('file.list');
  const mine = offers.filter((o) => o.from === client.user && !settled(o));
  const going =
    mine.filter((o) => o.request !== undefined && isRequestOf(o.request, key)).at(-1) ??
    (client.user !== null ? legacyOfferOf(mine, client.user, key) : undefined);
  let offered = going ? await client.request('file.offer', { ...target, ...file }, going.request) : null;
  // None, or settled (a receiver declined it) since the list was read: this is a new offer.
  if (!offered || settled(offered.offer)) offered = await client.request('file.offer', { ...target, ...file }, `file-${key}-${randomBytes(8).toString('hex')}`);
  const offer = offered.offer;
  if (going !== undefined && offer.id === going.id) onEarlier?.(offer);
  // An unfinished upload of another file of this name to the same receivers (an earlier version cut short, most
  // likely) holds a place against the sender's limits until it expires. It may as well be running right now, or be
  // another file that happens to share the name: said, not withdrawn.
  const unfinished = offers.filter(
    (o) =>
      o.from === client.user && o.id !== offer.id && o.name === name && o.sha256 !== sha256 && o.uploaded < o.chunks && !settled(o) && sameTarget(o, target),
  );
  if (unfinished.length > 0) onUnfinished?.(unfinished);
  const handle = await open(path, 'r');
  try {
    // The offer's own request again answers with how far its upload has got (one found by its id keeps none: see legacyOfferOf).
    const request = offered.offer.request ?? (offer.id === going?.id ? going.request : undefined);
    const uploadedNow = async () =>
      request === undefined ? offer.uploaded : (await client.request('file.offer', { ...target, ...file }, request)).offer.uploaded;
    await sendChunks(client, handle, offer, offered.window, (bytes) => onProgress(offer, bytes), uploadedNow);
  } finally {
    await handle.close();
  }
  return { ...offer, uploaded: offer.chunks };
}

/** Whether an offer went to this target: the group, or the one receiver of a direct offer. */
function sameTarget(offer: FileOffer, target: FileTarget): boolean {
  if ('group' in target) return offer.group?.id === target.group;
  return offer.group === undefined && Object.keys(offer.recipients).join() === target.to;
}

/** Whether a request id made an offer of the file whose key this is (`file-KEY` and `file-KEY-N` are earlier CLIs' ids). */
function isRequestOf(request: string, key: string): boolean {
  return request === `file-${key}` || request.startsWith(`file-${key}-`);
}

/** The request ids CLIs before `file-KEY-NONCE` gave their offers of a file: `file-KEY`, then `file-KEY-2` up to `-99`. */
const LEGACY_SUFFIXES = ['', ...Array.from({ length: 98 }, (_, i) => `-${i + 2}`)];

/**
 * An offer of the file whose key this is that a server from before 2026-12-06 stored: it keeps no request id to list
 * (`request`), so it is found by its id, which the server made from the sender and one of the request ids the CLI used
 * then (see offerIdOf); returned with that id as its `request`. Without it, an upload cut short before an upgrade was
 * not resumed but started over as a new offer, and the old one, not counted as unfinished (it is of this very file),
 * held its place against the sender's limits unseen until it expired.
 */
function legacyOfferOf(offers: FileOffer[], user: string, key: string): (FileOffer & { request: string }) | undefined {
  const unknown = offers.filter((o) => o.request === undefined);
  if (unknown.length === 0) return undefined;
  const requests = new Map(LEGACY_SUFFIXES.map((n) => [offerIdOf(user, `file-${key}${n}`), `file-${key}${n}`]));
  // The newest, as for offers that keep their request id (the list is oldest first).
  const found = unknown.findLast((o) => requests.has(o.id));
  return found && { ...found, request: requests.get(found.id)! };
}

/** Nothing more will come of the offer: every receiver declined or has the file, or the sender withdrew it. */
function settled(offer: FileOffer): boolean {
  return isWithdrawn(offer) || (offer.uploaded === offer.chunks && Object.values(offer.recipients).every((s) => s === 'declined' || s === 'received'));
}

/** Refusals after which an upload starts again from where the server stands (see `sendChunks`). */
const AGAIN_FROM_WHERE_IT_STANDS: ReadonlySet<string> = new Set(['bad_chunk', 'unavailable', 'rate_limited']);

/** A failure after which a transfer starts again from where it stands: one of those refusals, or no answer in time. */
function startsAgain(e: unknown): boolean {
  return (e instanceof RequestError && AGAIN_FROM_WHERE_IT_STANDS.has(e.code)) || e instanceof RequestTimeout;
}

/**
 * Runs `start` from chunk `from`, and again from where the transfer then stands (`whereNow`) while it fails in a way a
 * new start may get past (`startsAgain`; no answer in time, a connection down longer than a request waits, is one): for
 * as long as each start gets further than the one before, or for three starts that do not (a chunk of the wrong length,
 * say, is refused again however often it is sent). Then the failure is thrown: the last one.
 */
async function startAgainWhileFurther(from: number, start: (from: number) => Promise<void>, whereNow: () => Promise<number>): Promise<void> {
  for (let fruitless = 0; ;) {
    try {
      await start(from);
      return;
    } catch (e) {
      if (!startsAgain(e)) throw e;
      const now = await whereNow();
      fruitless = now > from ? 0 : fruitless + 1;
      if (fruitless >= 3) throw e;
      from = now;
    }
  }
}

/**
 * Uploads the chunks the server does not have yet, with at most `window` unacknowledged. A chunk answered `unavailable`
 * is retried by the client while the ones after it are already on their way; the server then refuses those as out of
 * order (`bad_chunk`). Such a refusal, a chunk still `unavailable` (or `rate_limited`) after the client's retries, or no
 * answer in time (a server restarting, a failover) is no reason to give up at once: the upload goes on from where the
 * server stands (`uploadedNow`; when that cannot be asked either, from the last chunk it acknowledged), for as long as
 * each new start gets further than the one before, or for three starts that do not; it then fails with the error of the
 * first chunk that failed (the cause).
 */
export async function sendChunks(
  client: Pick<ParleyClient, 'request'>,
  handle: FileHandle,
  offer: FileOffer,
  window: number,
  progress: (bytes: number) => void,
  uploadedNow: () => Promise<number>,
): Promise<void> {
  // The most chunks the server has said it holds: the server never loses a chunk it acknowledged.
  const reached = { chunks: offer.uploaded };
  await startAgainWhileFurther(
    offer.uploaded,
    (from) => sendFrom(client, handle, offer, from, window, progress, reached),
    // Asking may fail the same way, for a while: then it stands where the server last said, not where the start before
    // began (going back there would show the progress fall and send again what the server has).
    () =>
      uploadedNow().catch((asked: unknown) => {
        if (startsAgain(asked)) return reached.chunks;
        throw asked;
      }),
  );
}

async function sendFrom(
  client: Pick<ParleyClient, 'request'>,
  handle: FileHandle,
  offer: FileOffer,
  uploaded: number,
  window: number,
  progress: (bytes: number) => void,
  reached: { chunks: number },
): Promise<void> {
  let acked = uploaded;
  progress(Math.min(offer.size, acked * offer.chunkSize));
  // Uploaded before (this is a retry): the last chunk again makes sure the receivers were told.
  const first = uploaded === offer.chunks ? Math.max(0, offer.chunks - 1) : uploaded;
  const inflight = new Set<Promise<void>>();
  /**
   * The failure of the first chunk that failed: the chunks behind one the server could not store are refused as out of
   * order (`bad_chunk`), often before its own answer comes (it is retried meanwhile), but say nothing of the cause.
   */
  let failure = null as Error | null;
  let failedAt = Infinity;
  for (let index = first; index < offer.chunks && failure === null; index++) {
    while (inflight.size >= window) await Promise.race(inflight);
    if (failure !== null) break;
    // A chunk the server says it holds already (it answered for more than was sent in this start) is not sent again;
    // the last one is, should the server hold them all, as after any start that finds the upload done.
    index = Math.max(index, Math.min(acked, offer.chunks - 1));
    const length = Math.min(offer.chunkSize, offer.size - index * offer.chunkSize);
    const buffer = Buffer.alloc(length);
    await handle.read(buffer, 0, length, index * offer.chunkSize);
    // Requests are published in the order made, so chunks reach the server in order.
    const sent: Promise<void> = client
      .request('file.chunk', { offer: offer.id, index, data: buffer.toString('base64') })
      .then((r) => {
        acked = Math.max(acked, r.uploaded);
        reached.chunks = Math.max(reached.chunks, acked);
        progress(Math.min(offer.size, acked * offer.chunkSize));
      })
      .catch((e: unknown) => {
        if (index > failedAt) return;
        failedAt = index;
        failure = e instanceof Error ? e : new Error(String(e));
      })
      .finally(() => inflight.delete(sent));
    inflight.add(sent);
  }
  await Promise.all(inflight);
  if (failure !== null) throw failure;
}

/** The partial download of an offer in a directory: hidden, named by offer id, never the final name (at most 77 bytes). */
export function partPathOf(dir: string, offerId: string): string {
  return join(dir, `.${checkedOfferId(offerId)}.parley-part`);
}

/**
 * A download the server was told is received, waiting for its final name: what a failure to save it leaves behind.
 * Unlike a part file, parley never deletes it (the server's copy may be gone): it is saved by accepting the offer
 * again, or moved by hand.
 */
export function keptPathOf(dir: string, offerId: string): string {
  return join(dir, `.${checkedOfferId(offerId)}.parley-received`);
}

/** An offer id, checked before it becomes part of a path: the server's answer is trusted with no file name. */
export function checkedOfferId(offerId: string): string {
  if (!OfferId.safeParse(offerId).success) throw new TransferError('failed', `not a file offer id: ${JSON.stringify(offerId)}`);
  return offerId;
}

/** Removes what an interrupted download of an offer left in `dir`, once the offer is gone for good (withdrawn, expired). */
export async function discardPart(dir: string, offerId: string): Promise<void> {
  if (!OfferId.safeParse(offerId).success) return;
  await unlink(partPathOf(dir, offerId)).catch(() => undefined);
}

/**
 * Downloads an accepted offer into `dir`: chunks go to a hidden part file
 * (an interrupted download resumes from its last whole chunk), the SHA-256
 * is checked, the server is told it is received, and only then does the file
 * appear under its (sanitised) name, never over an existing file (`name (1).ext`
 * then). Told first, the server settles a withdrawal racing the download's end
 * one way for both sides: refused (unknown_file, with the reason), the file is
 * not saved and the caller discards the part file; confirmed, the file is the
 * receiver's, and a failure to save it (TransferError `not_saved`) leaves it
 * kept, named by the error, never lost. Resolves with the final path and the
 * offer as it is now (received).
 */
export async function downloadFile(
  client: ParleyClient,
  offer: FileOffer,
  dir: string,
  window: number,
  onProgress: (bytes: number) => void,
  /** What the person runs to go on with the download (`parley file accept ID`), named when the disk is full. */
  again = 'accept it again',
): Promise<{ path: string; offer: FileOffer }> {
  const part = partPathOf(dir, offer.id);
  // Only a part file this download made is written to: in a directory others may write into (/tmp), the name could be
  // a symbolic link, or a file of whoever knows the offer's id (they could read what comes, and change it once
  // checked), or a second name of another file of this user's, which writing would overwrite.
  const notOurs = () => new TransferError('failed', `${part} is not a file parley made; remove it, then ${again}`);
  const found = await openOwn(part, constants.O_RDWR);
  if (found === 'foreign') throw notOurs();
  // Private while it is written: it is no one else's until it is verified and received.
  const handle =
    found ??
    (await open(part, NEW_PART, 0o600).catch((e: unknown) => {
      // Planted between the look and the making.
      throw ['EEXIST', 'ELOOP'].includes((e as NodeJS.ErrnoException).code ?? '') ? notOurs() : e;
    }));
  try {
    // One an earlier version made readable by all is made private too.
    if (found !== null) await handle.chmod(0o600);
    let next = found === null ? 0 : Math.min(offer.chunks, Math.floor((await handle.stat()).size / offer.chunkSize));
    try {
      // A service restarting, or no answer in time, is no reason to give up at once: as an upload does, the download
      // goes on from its last whole chunk (`next`).
      try {
        await startAgainWhileFurther(next, fetchInto, () => Promise.resolve(next));
      } catch (e) {
        if (!startsAgain(e)) throw e;
        // Given up after starts that got no further. The part file keeps what came: said, with how to go on from there.
        const saved = `${formatBytes(Math.min(offer.size, next * offer.chunkSize))} of ${fileLabel(offer)} is saved in ${dir}; run ${again} to go on from there`;
        throw e instanceof RequestError ? new RequestError(e.code, `${e.message}; ${saved}`) : new RequestTimeout(true, `${(e as Error).message}; ${saved}`);
      }
    } catch (e) {
      // The part file keeps every whole chunk written: the next run goes on from there, once there is room. What a chunk
      // that did not fit left behind is of no use, and takes room.
      if (!isDiskFull(e)) throw e;
      const saved = Math.min(offer.size, next * offer.chunkSize);
      await handle.truncate(next * offer.chunkSize).catch(() => undefined);
      throw new TransferError(
        'disk_full',
        `the disk holding ${dir} is full: ${formatBytes(saved)} of ${fileLabel(offer)} from ${offer.from} is saved there; ` +
          `make room and run ${again} to go on from there`,
      );
    }
    // Read through the handle written to, not by name.
    if ((await sha256Through(handle)) !== offer.sha256) {
      await unlink(part);
      throw new TransferError('checksum_mismatch', `${offer.name} did not arrive intact (SHA-256 differs); nothing was kept, accept it again to retry`);
    }
    const received = await client.request('file.received', { offer: offer.id });
    // From here on the file is the receiver's: readable as any file they make, and moved aside from part files (which
    // are deleted once an offer is gone) before it takes its name.
    await asMadeByUser(handle);
    const kept = keptPathOf(dir, offer.id);
    try {
      await rename(part, kept);
    } catch (e) {
      throw notSaved(offer, dir, part, e);
    }
    return { path: await placeFile(handle, kept, dir, offer), offer: received.offer };

    /** Fetches the chunks from `next` on into the part file, each written whole, in order. */
    async function fetchInto(): Promise<void> {
      // A chunk written only in part (a download cut short) is fetched again.
      await handle.truncate(next * offer.chunkSize);
      onProgress(Math.min(offer.size, next * offer.chunkSize));
      // Only what extends the whole prefix is written, so the part file is always one: answers come in the order asked,
      // but not a chunk's answered after a retry (`unavailable` once), which those after it overtake. Those wait here
      // (a window of chunks at most), and are dropped, to be fetched again, should the one before them fail.
      let writing = Promise.resolve();
      const early = new Map<number, Buffer>();
      const inflight = new Set<Promise<void>>();
      let failure = null as Error | null;
      for (let index = next; index < offer.chunks && failure === null; index++) {
        while (inflight.size >= window) await Promise.race(inflight);
        if (failure !== null) break;
        const fetched: Promise<void> = client
          .request('file.fetch', { offer: offer.id, index })
          .then((r) => {
            early.set(r.index, Buffer.from(r.data, 'base64'));
            writing = writing.then(async () => {
              for (let data = early.get(next); data !== undefined; data = early.get(next)) {
                early.delete(next);
                await writeWhole(handle, data, next * offer.chunkSize);
                next += 1;
                onProgress(Math.min(offer.size, next * offer.chunkSize));
              }
            });
            return writing;
          })
          .catch((e: unknown) => {
            failure ??= e instanceof Error ? e : new Error(String(e));
          })
          .finally(() => inflight.delete(fetched));
        inflight.add(fetched);
      }
      await Promise.all(inflight);
      await writing;
      if (failure !== null) throw failure;
      await handle.sync();
    }
  } finally {
    await handle.close();
  }
}

/** Opening a new part file: never one already there, nor through a symbolic link. */
const NEW_PART = constants.O_RDWR | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;

/**
 * Opens the part or kept file of a download at `path` (`flags` and O_NOFOLLOW, and O_NONBLOCK: a FIFO swapped in
 * never blocks the open) if it is one this user's parley made: a regular file of this user's, with no other name.
 * 'foreign' when something else is there: a symbolic link (to wherever), a file of someone else's (in a directory
 * others may write into, such as /tmp, whoever knows the offer's id can make one; they could read what is written into
 * it, and change it once checked), or a second name of a file (a hard link to another file of the user's, which writing
 * would overwrite). Null when nothing is. The handle is what was looked at: its file and the one under the name are
 * one and the same when opened (in a sticky directory no one else can move the name away from it later).
 */
async function openOwn(path: string, flags: number): Promise<FileHandle | 'foreign' | null> {
  const seen = await lstat(path).catch((e: unknown) => {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  });
  if (seen === null) return null;
  if (!isOwnFile(seen)) return 'foreign';
  let handle: FileHandle;
  try {
    handle = await open(path, flags | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (e) {
    // Swapped for a link since the look; or taken away, and nothing is there.
    if ((e as NodeJS.ErrnoException).code === 'ELOOP') return 'foreign';
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
  const opened = await handle.stat().catch(async (e: unknown) => {
    await handle.close();
    throw e;
  });
  if (opened.dev === seen.dev && opened.ino === seen.ino && isOwnFile(opened)) return handle;
  await handle.close();
  return 'foreign';
}

/** A regular file of this user's (where users have ids) with one name. */
function isOwnFile(s: Stats): boolean {
  return s.isFile() && s.nlink === 1 && (process.getuid === undefined || s.uid === process.getuid());
}

/** The SHA-256 of what the handle's file holds, from its start. */
async function sha256Through(handle: FileHandle): Promise<string> {
  const hash = createHash('sha256');
  for await (const stretch of stretchesOf(handle)) hash.update(stretch);
  return hash.digest('hex');
}

/** What the handle's file holds, from its start, a stretch at a time, in one buffer: each is used before the next is read. */
async function* stretchesOf(handle: FileHandle): AsyncGenerator<Buffer> {
  const buffer = Buffer.allocUnsafe(1 << 20);
  for (let position = 0; ;) {
    const { bytesRead } = await handle.read(buffer, 0, buffer.length, position);
    if (bytesRead === 0) return;
    yield buffer.subarray(0, bytesRead);
    position += bytesRead;
  }
}

/** Writes all of `data` at `position`. A disk that fills writes part of it without an error: the rest is written (and fails) again. */
async function writeWhole(handle: FileHandle, data: Buffer, position: number): Promise<void> {
  for (let done = 0; done < data.length;) {
    const { bytesWritten } = await handle.write(data, done, data.length - done, position + done);
    if (bytesWritten === 0) throw Object.assign(new Error('nothing written'), { code: 'ENOSPC' });
    done += bytesWritten;
  }
}

/**
 * Gives a received file the permissions of a file the user makes (0666 less the umask: with the usual 022, readable by
 * all, writable by the user), as any program that saves a file does; its part file was the user's alone.
 */
async function asMadeByUser(handle: FileHandle): Promise<void> {
  // Reading the umask is allowed in worker threads too (only setting it is not).
  await handle.chmod(0o666 & ~process.umask());
}

/** A write refused for want of room: the disk (ENOSPC) or the user's quota on it (EDQUOT) is full. */
function isDiskFull(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT';
}

/**
 * Saves a download the server already counts as received but that was not saved here (the answer to `file.received`
 * was lost, or saving failed): from its kept file, or from a part file that holds the whole file (checked again).
 * Resolves with the final path, or null when `dir` holds no such file. Only files parley made are saved (see
 * `openOwn`): anything else under those names is left alone.
 */
export async function saveReceived(offer: FileOffer, dir: string): Promise<string | null> {
  for (const path of [keptPathOf(dir, offer.id), partPathOf(dir, offer.id)]) {
    const handle = await openOwn(path, constants.O_RDONLY);
    if (handle === null || handle === 'foreign') continue;
    try {
      // Checked and saved through one handle: what was checked is what takes the name.
      if ((await sha256Through(handle)) !== offer.sha256) continue;
      await asMadeByUser(handle);
      return await placeFile(handle, path, dir, offer);
    } finally {
      await handle.close();
    }
  }
  return null;
}

/**
 * The kept file and part file of an offer's download in `dir`, those that are there and parley made (see `openOwn`):
 * one planted under such a name (a symbolic link to wherever, someone else's file) is never saved as the received file.
 */
export async function downloadsOf(dir: string, offerId: string): Promise<string[]> {
  const paths = [keptPathOf(dir, offerId), partPathOf(dir, offerId)];
  const there = await Promise.all(
    paths.map((p) =>
      lstat(p).then(
        (s) => isOwnFile(s),
        () => false,
      ),
    ),
  );
  return paths.filter((_, i) => there[i]);
}

/**
 * Gives the verified file open as `handle`, named `from`, its final name, taking `name (1).ext`, `name (2).ext`, … when
 * a name is taken: never overwrites. A failure (a full disk, a file system that refuses the name) throws `not_saved`,
 * naming where the file is kept.
 */
export async function placeFile(handle: FileHandle, from: string, dir: string, offer: FileOffer, linkFile = link): Promise<string> {
  // The name is linked, not the handle: it must still be the file checked.
  const [named, checked] = await Promise.all([lstat(from).catch(() => null), handle.stat()]);
  if (named && (named.dev !== checked.dev || named.ino !== checked.ino || !isOwnFile(named)))
    throw new TransferError('failed', `${from} changed while ${offer.name} was saved; remove it, then accept the file again`);
  const name = sanitizeFileName(offer.name);
  for (let n = 0; n < 10_000; n++) {
    const candidate = join(dir, n === 0 ? name : numberedFileName(name, n));
    try {
      // link() fails on an existing name, atomically: no window in which another file could be overwritten.
      await linkFile(from, candidate);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EEXIST') continue;
      if (!NO_HARD_LINKS.has(code ?? '')) throw notSaved(offer, dir, from, e);
      // A file system without hard links (FAT and exFAT, on a memory stick; some network shares): the file is copied
      // to a name made for it (O_EXCL, so never over another file), and the kept one goes once the copy is whole.
      if (!(await copyInto(handle, candidate, offer, dir, from))) continue;
    }
    // Saved: the other name is only a second link to it now (or the original of a copy).
    await unlink(from).catch(() => undefined);
    return candidate;
  }
  throw notSaved(offer, dir, from, new Error(`no free name for ${name}`));
}

/** What link() answers on a file system that has no hard links (FAT says EPERM). */
const NO_HARD_LINKS: ReadonlySet<string> = new Set(['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS']);

/**
 * Copies the checked file into a new file `candidate`, with its permissions; false when that name is taken. A copy that
 * fails (the disk is full) is removed, and the kept file stays for the next try.
 */
async function copyInto(handle: FileHandle, candidate: string, offer: FileOffer, dir: string, kept: string): Promise<boolean> {
  const mode = (await handle.stat()).mode & 0o777;
  const out = await open(candidate, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, mode).catch((e: unknown) => {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return null;
    throw notSaved(offer, dir, kept, e);
  });
  if (!out) return false;
  try {
    let at = 0;
    for await (const stretch of stretchesOf(handle)) {
      await writeWhole(out, stretch, at);
      at += stretch.length;
    }
    await out.sync();
  } catch (e) {
    await out.close().catch(() => undefined);
    await unlink(candidate).catch(() => undefined);
    throw notSaved(offer, dir, kept, e);
  }
  await out.close();
  return true;
}

function notSaved(offer: FileOffer, dir: string, kept: string, cause: unknown): TransferError {
  const code = (cause as NodeJS.ErrnoException).code;
  // Gone from under this download: only another one of the same offer into the same directory moves it.
  if (code === 'ENOENT') return new TransferError('download_in_progress', `another download of ${offer.id} into ${dir} saved ${offer.name} (or is saving it)`);
  const reason = cause instanceof Error ? cause.message : String(cause);
  return new TransferError(
    'not_saved',
    `${offer.name} from ${offer.from} is received and verified, but could not be saved in ${dir} (${reason}); ` +
      `it is kept as ${kept}: accept it again to save it, or move that file yourself`,
  );
}
