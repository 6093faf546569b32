import { constants } from 'node:fs';
import { access, stat } from 'node:fs/promises';
import { OfferId, type FileOffer } from '#libs/protocol';
import { DownloadLock } from './process-lock.js';
import { fileLabel, type SeenReporter } from './file-output.js';
import { TransferProgress, type BarOptions } from './file-progress.js';
import { discardPart, downloadFile, downloadsOf, saveReceived, TransferError, uploadFile, type FileTarget } from './file-transfer.js';
import { displayLabel, offlineNotice, type Printer } from './output.js';
import { RequestError, type ParleyClient } from './parley-client.js';

/**
 * Refusals whose way out is to withdraw one of the sender's offers: the server says so for every client alike, and the
 * CLI adds its own commands for it.
 */
const MAKE_ROOM: ReadonlySet<string> = new Set(['too_many_offers', 'quota_exceeded']);
const MAKE_ROOM_HOW = 'parley file list shows them, parley file cancel ID withdraws one';
/** The same in `parley chat`, where /cancel withdraws one. */
export const CHAT_MAKE_ROOM = 'parley file list shows them, /cancel ID withdraws one';

/** A refusal of an offer, in the CLI's words (see MAKE_ROOM, or `how` for another place); any other error as it is. */
export function inCliWords(e: unknown, how = MAKE_ROOM_HOW): unknown {
  if (!(e instanceof RequestError) || !MAKE_ROOM.has(e.code) || e.message.includes('parley file cancel')) return e;
  return new RequestError(e.code, `${e.message} (${how})`);
}

/**
 * A refused withdrawal in the CLI's words: a receiver asking to withdraw an offer (`not_allowed`, only its sender
 * may) is told the command that declines it, `decline` (`parley file decline ID`, or `/decline ID` in chat).
 */
export function cancelInCliWords(e: unknown, decline: string): unknown {
  if (!(e instanceof RequestError) || e.code !== 'not_allowed' || e.message.includes(decline)) return e;
  return new RequestError(e.code, `${e.message} (${decline})`);
}

/** A file sent: its offer, and that offer as an earlier send had left it, when this one took it up (see `offerFile`). */
export interface SentFile {
  offer: FileOffer;
  earlier: FileOffer | null;
}

/**
 * Offers and uploads a file, with progress; resolves once the server holds it all. Sending a file again while its
 * last offer to the same receivers is not settled takes that offer up (an upload cut short goes on), rather than making
 * another: `earlier` then says how that offer stood.
 */
export async function offerFile(
  client: ParleyClient,
  printer: Printer,
  target: FileTarget,
  path: string,
  bar?: BarOptions,
  makeRoom?: string,
): Promise<SentFile> {
  let progress: TransferProgress | undefined;
  let earlier: FileOffer | null = null;
  try {
    const offer = await uploadFile(
      client,
      target,
      path,
      (offer, bytes) => {
        progress ??= new TransferProgress(printer, 'upload', offer.id, offer.name, offer.size, bar);
        progress.update(bytes);
      },
      (unfinished) => {
        const to = 'to' in target ? target.to : displayLabel(unfinished[0]!.group?.name ?? target.group);
        for (const o of unfinished)
          printer.note(
            `* your upload of another ${o.name} to ${to} is unfinished (${o.id}, ${o.uploaded} of ${o.chunks} chunks); parley file cancel ${o.id} withdraws it`,
          );
      },
      (offer) => (earlier = offer),
    );
    return { offer, earlier };
  } catch (e) {
    throw inCliWords(e, makeRoom);
  } finally {
    progress?.done();
  }
}

/**
 * Accepts an offer and downloads it into `dir`, with progress; resolves with the offer and where the file is. One
 * download of an offer into a directory runs at a time (a second one is refused: `download_in_progress`). Accepting
 * an offer received before but not saved here (see `saveReceived`) saves it.
 */
export async function acceptFile(
  client: ParleyClient,
  printer: Printer,
  id: string,
  dir: string,
  bar?: BarOptions,
  /** The command that goes on with this download, for a person to run again (a full disk says so). */
  again = `parley file accept ${id} --to ${shellWord(dir)}`,
): Promise<{ offer: FileOffer; path: string }> {
  // Checked before accepting: the sender is told of the acceptance, which must not come to nothing here.
  await writableDirectory(dir);
  // Not an offer id: no file is named after it, and the server says what is wrong with it.
  const lock = OfferId.safeParse(id).success ? await DownloadLock.take(dir, id) : null;
  let downloading = false;
  try {
    let offer: FileOffer;
    try {
      ({ offer } = await client.request('file.accept', { offer: id }));
    } catch (e) {
      const saved = e instanceof RequestError && e.code === 'not_allowed' && lock ? await savedAgain(client, id, dir) : null;
      if (saved) return saved;
      throw e;
    }
    const progress = new TransferProgress(printer, 'download', offer.id, offer.name, offer.size, bar);
    downloading = true;
    try {
      return await downloadFile(client, offer, dir, DOWNLOAD_WINDOW, (bytes) => progress.update(bytes), again);
    } finally {
      progress.done();
    }
  } catch (e) {
    // The offer is gone (withdrawn, expired), before or during the download: what was downloaded can never be resumed.
    if (e instanceof RequestError && e.code === 'unknown_file') await discardPart(dir, id);
    // Refused part way (declined or received on another device of the user: the server keeps a file for one download
    // per receiver): what this one downloaded can never be finished either. (Refused at the accept, a part here may be
    // a whole file whose save was cut short: `savedAgain` saves it, or discards what can never be finished.)
    if (e instanceof RequestError && e.code === 'not_allowed' && lock && downloading) await discardPart(dir, id);
    throw e;
  } finally {
    await lock?.release();
  }
}

/**
 * After `not_allowed` (declined, or received already): when the server counts the file received and `dir` keeps it
 * unsaved, saves it. `file.received` changes nothing here; it answers with the offer (to know the file's name and
 * hash) only when this user has received it. Null otherwise: the refusal stands, and a part file that can never be
 * finished (the offer declined, or received on another device while this download was cut short) goes.
 */
async function savedAgain(client: ParleyClient, id: string, dir: string): Promise<{ offer: FileOffer; path: string } | null> {
  if ((await downloadsOf(dir, id)).length === 0) return null;
  let offer: FileOffer;
  try {
    ({ offer } = await client.request('file.received', { offer: id }));
  } catch (e) {
    // Declined (the accept's refusal was for that or a receipt, both final, and only a declined file is not ready):
    // none of it will ever come. Any other failure tells nothing, and the part stays for the next run.
    if (e instanceof RequestError && e.code === 'file_not_ready') await discardPart(dir, id);
    return null;
  }
  if (offer.recipients[client.user!] !== 'received') return null;
  const path = await saveReceived(offer, dir);
  // Received on another device, and nothing here is the whole file: no more of it will come.
  if (path === null) await discardPart(dir, id);
  return path === null ? null : { offer, path };
}

/** A path as a shell takes it, quoted only when it must be. */
function shellWord(path: string): string {
  return /^[\w@%+=:,./-]+$/.test(path) ? path : `'${path.replace(/'/g, `'\\''`)}'`;
}

/** Fetch requests a receiver keeps outstanding at once. */
const DOWNLOAD_WINDOW = 8;

/**
 * What `file send` says once the server holds the file: that it was offered, or, sent again while its offer was still
 * open, that it had been offered already (and who has yet to decide), or that its upload was cut short and went on.
 */
export function offeredText(sent: SentFile): string {
  const { offer } = sent;
  const to = offer.group ? displayLabel(offer.group.name) : Object.keys(offer.recipients).join(', ');
  const again = againOf(sent);
  if (again === null) return `offered ${fileLabel(offer)} to ${to}: ${offer.id}`;
  if (again === 'resumed') return `offered ${fileLabel(offer)} to ${to}: ${offer.id} (its upload went on from where it stopped)`;
  const waiting = Object.keys(offer.recipients).filter((r) => offer.recipients[r] === 'pending');
  const who = offer.group ? `${waiting.length} of ${Object.keys(offer.recipients).length} members` : waiting.join(', ');
  return `already offered ${fileLabel(offer)} to ${to}: ${offer.id}${waiting.length > 0 ? `, waiting for ${who} to decide` : ''}`;
}

/** The `--json` line of a file sent: `offered`, with `again` when an earlier send's offer was taken up. */
export function offeredRecord(sent: SentFile): Record<string, unknown> & { type: 'offered' } {
  const again = againOf(sent);
  return again === null ? { type: 'offered', offer: sent.offer } : { type: 'offered', offer: sent.offer, again };
}

/** How a send took up an earlier offer: its upload had been cut short (`resumed`), or was complete (`already`); null for a new offer. */
function againOf({ earlier }: SentFile): 'resumed' | 'already' | null {
  if (earlier === null) return null;
  return earlier.uploaded < earlier.chunks ? 'resumed' : 'already';
}

/**
 * What the sender of a direct offer is told when its receiver, who has yet to decide, is offline as the upload ends (as
 * `send` tells of a message): the offer waits for them. Null for a group, a note to self, a receiver online or who
 * decided already, or when the server cannot say (the offer stands all the same).
 */
export async function offlineReceiver(
  client: ParleyClient,
  offer: FileOffer,
): Promise<{ text: string; record: { type: 'offline'; user: string; lastSeen: number | null } } | null> {
  const [user] = Object.keys(offer.recipients);
  if (offer.group || !user || user === client.user || offer.recipients[user] !== 'pending') return null;
  const who = await client.request('who', { user }).catch(() => null);
  if (who?.state !== 'offline') return null;
  return { text: `${offlineNotice(user, who)}: they will see the offer when they next connect`, record: { type: 'offline', user, lastSeen: who.lastSeen } };
}

/**
 * Reports shown decisions to the server in the background. Nothing waits on
 * it: should it fail, the decision is shown once more in a later session.
 */
export function seenReporter(client: ParleyClient): SeenReporter {
  return (offer, states) => {
    const entries = Object.entries(states);
    // A request names at most SEEN_BATCH receivers (a group offer may have more).
    for (let i = 0; i < entries.length; i += SEEN_BATCH) {
      void client.request('file.seen', { offer, states: Object.fromEntries(entries.slice(i, i + SEEN_BATCH)) }).catch(() => undefined);
    }
  };
}

const SEEN_BATCH = 500;

/** Throws a usage error unless `dir` is a directory this process may write into. */
async function writableDirectory(dir: string): Promise<void> {
  const info = await stat(dir).catch(() => null);
  if (!info?.isDirectory()) throw new TransferError('usage', `${dir} is not a directory`);
  await access(dir, constants.W_OK).catch(() => {
    throw new TransferError('usage', `cannot write into ${dir}`);
  });
}
