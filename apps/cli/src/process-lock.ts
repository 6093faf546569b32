import { createHash, randomUUID } from 'node:crypto';
import { link, readFile, rename, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { holderAlive, holderRecord, LOCK_HEARTBEAT_MS, LOCK_STALE_MS, parseHolder, type LockHolder } from '#libs/locks';
import { checkedOfferId, TransferError } from './file-transfer.js';
import { ConnectError } from './parley-client.js';
import { UsageError } from './settings.js';

/** Tokens of the locks this process holds: a lock naming this pid and another token is a previous process's (a container's pid 1). */
const HELD = new Set<string>();

/** The lock of an offer's download into a directory: hidden, beside its part file, at most 77 bytes long (120 for its drafts). */
export function lockPathOf(dir: string, offerId: string): string {
  return join(dir, `.${checkedOfferId(offerId)}.parley-lock`);
}

/**
 * A lock file naming the process that holds it, so that a second process doing the same thing is refused, saying
 * who holds it, before it changes anything. A lock whose holder is gone (killed, or the machine restarted; on another
 * host sharing the directory, not marked alive for 30 s) is taken over. The holder marks it alive while it runs.
 */
export class ProcessLock {
  private constructor(
    private readonly path: string,
    private readonly token: string,
    private readonly heartbeat: NodeJS.Timeout,
  ) {}

  /** Takes the lock at `path`, or throws what `refuse` makes of its live holder (null: a lock it cannot read). */
  static async take(path: string, refuse: (holder: LockHolder | null) => Error): Promise<ProcessLock> {
    const token = randomUUID();
    const record = holderRecord(token);
    for (let attempt = 0; attempt < 5; attempt++) {
      if (await place(path, record, token)) {
        HELD.add(token);
        const heartbeat = setInterval(() => void touch(path), LOCK_HEARTBEAT_MS);
        heartbeat.unref();
        return new ProcessLock(path, token, heartbeat);
      }
      const seen = await contentOf(path);
      // Released meanwhile: try again.
      if (seen === null) continue;
      const holder = parseHolder(seen);
      if (holder && (await isAlive(holder, path))) throw refuse(holder);
      // Unreadable: only a hand could have damaged it (locks appear whole); stale once old.
      if (!holder && Date.now() - (await modifiedAt(path)) < LOCK_STALE_MS) throw refuse(null);
      await takeOver(path, seen, token);
    }
    throw refuse(null);
  }

  /** Gives the lock up (if it is still this one's). */
  async release(): Promise<void> {
    clearInterval(this.heartbeat);
    HELD.delete(this.token);
    const content = await contentOf(this.path).catch(() => null);
    if (content !== null && parseHolder(content)?.token === this.token) await rm(this.path, { force: true });
  }
}

/**
 * One download of an offer into a directory at a time. A download writes its part file at chunk offsets, truncates it
 * to resume, and moves it into place once verified: two at once would undo each other's work, and the slower one
 * would find the file gone from under it. So a download holds a lock beside its part file (`.ID.parley-lock`), and a
 * second one is refused with `download_in_progress`.
 */
export const DownloadLock = {
  take: (dir: string, offerId: string): Promise<ProcessLock> => ProcessLock.take(lockPathOf(dir, offerId), (holder) => inProgress(offerId, dir, holder)),
};

/**
 * One process per device at a time on this machine. Two connections with one client id take the session from each
 * other, over and over, as each reconnects; so `chat` or `listen` as a device holds a lock (in the temporary
 * directory, named after user and device), and a second one is refused, naming the first. Not after the server too:
 * one server has many names (`localhost` and `127.0.0.1`, a port given or not, a load balancer's and a gateway's),
 * and the same device on two servers at once is rare enough to be refused.
 */
export const DeviceLock = {
  take: (user: string, device: string): Promise<ProcessLock> => {
    const key = createHash('sha256')
      .update(JSON.stringify([user, device]))
      .digest('hex')
      .slice(0, 32);
    const dir = tmpdir();
    return ProcessLock.take(join(dir, `parley-device-${key}.lock`), (holder) => deviceInUse(device, holder)).catch((e: unknown) => {
      // The temporary directory cannot hold the lock (gone, not writable, or someone else's stale lock in it): a raw
      // ENOENT naming a draft file would not tell a person what to do.
      if (typeof (e as NodeJS.ErrnoException).code !== 'string') throw e;
      throw new UsageError(
        `--device keeps a lock file in the temporary directory ${dir}, which failed (${(e as Error).message}); set TMPDIR to a directory of your own`,
      );
    });
  },
};

/** Writes the record at `path` unless a file is there (false). Written aside and linked into place: never seen half-written. */
async function place(path: string, record: string, token: string): Promise<boolean> {
  const draft = `${path}.${token}`;
  await writeFile(draft, record);
  try {
    await link(draft, path);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw e;
  } finally {
    await rm(draft, { force: true });
  }
}

/**
 * Removes the lock read as `stale`, if it is still that one: it is moved aside first and read again there, and one
 * that turns out to be another's new lock is linked back. (Two takeovers of one stale lock at the very same moment
 * may still both go on; then both write the same bytes, and the SHA-256 check and the never-overwriting link keep
 * the result whole.)
 */
async function takeOver(path: string, stale: string, token: string): Promise<void> {
  const aside = `${path}.${token}.stale`;
  try {
    await rename(path, aside);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw e;
  }
  try {
    if ((await contentOf(aside)) !== stale) await link(aside, path).catch(() => undefined);
  } finally {
    await rm(aside, { force: true });
  }
}

async function isAlive(holder: LockHolder, path: string): Promise<boolean> {
  // A lock naming this process is one of its own, or a previous process's with the same pid (a container's pid 1).
  return holderAlive(holder, await modifiedAt(path), (h) => HELD.has(h.token));
}

function holderName(holder: LockHolder | null): string {
  return holder === null ? '' : ` (process ${holder.pid}${holder.host === hostname() ? '' : ` on ${holder.host}`})`;
}

function deviceInUse(device: string, holder: LockHolder | null): ConnectError {
  return new ConnectError(`device ${device} is in use by another parley here${holderName(holder)}; stop it, or pick another --device`);
}

function inProgress(offerId: string, dir: string, holder: LockHolder | null): TransferError {
  const who = holderName(holder);
  return new TransferError(
    'download_in_progress',
    `another download of ${offerId} into ${dir} is under way${who}; wait for it to end (it saves the file), or accept it into another directory`,
  );
}

async function contentOf(path: string): Promise<string | null> {
  try {
    return await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
}

async function modifiedAt(path: string): Promise<number> {
  return stat(path).then(
    (s) => s.mtimeMs,
    () => 0,
  );
}

async function touch(path: string): Promise<void> {
  const now = new Date();
  await utimes(path, now, now).catch(() => undefined);
}
