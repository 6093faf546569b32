import { createHash, randomUUID } from 'node:crypto';
import { accessSync, constants, existsSync, linkSync, mkdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { holderAlive, holderRecord, LOCK_HEARTBEAT_MS, LOCK_STALE_MS, parseHolder, type LockHolder } from '#libs/locks';
import { checkStartRoom, DataDirFullError, isOutOfRoom } from './data-dir-space.js';

/** Takeovers of one stale lock in a row whose takers may all die before the directory counts as wedged. */
const MAX_CLAIMS = 8;

/** How a `DataDirLock` keeps the directory once it holds it. */
export interface DataDirLockOptions {
  /** How often the lock is checked and marked alive; LOCK_HEARTBEAT_MS when absent. */
  heartbeatMs?: number;
  /**
   * Called when a heartbeat finds the lock held by another server (this host was paused long enough for another host
   * to judge it gone). Both would now write to the directory, so the default stops this process at once.
   */
  onLost?: (holder: LockHolder) => void;
}

/**
 * One server process per data directory. The embedded store numbers appends
 * from memory and caches presence, both relying on being the directory's only
 * writer; two processes on one directory would reuse sequence numbers and
 * overwrite each other's messages. So the directory holds a lock file naming
 * its holder, refreshed while it runs and removed on a clean close. A lock whose
 * holder is gone is taken over: on the same host, when its process no longer
 * exists (or is this process, as after a container restart, or was taken before
 * the machine last booted); from another host (a shared volume), when it has not
 * been refreshed for 30 s. Each refresh checks that the lock is still this
 * process's (see `onLost`).
 */
export class DataDirLock {
  private readonly path: string;
  private readonly token = randomUUID();
  private readonly heartbeat: NodeJS.Timeout;
  private readonly onLost: (holder: LockHolder) => void;
  /**
   * When the server that held the directory before this one was last known alive (its lock's last heartbeat), if it
   * ended without giving the directory up (killed, or its machine went down); null after a clean stop or on a new
   * directory. What it had recorded as going on then (users online) ended by that time, give or take a heartbeat.
   */
  previousHolderAliveAt: number | null = null;

  constructor(
    private readonly dataDir: string,
    opts: DataDirLockOptions = {},
  ) {
    this.path = lockPath(dataDir);
    this.onLost = opts.onLost ?? ((holder) => stopOnLoss(dataDir, holder));
    this.take();
    this.heartbeat = setInterval(() => this.beat(), opts.heartbeatMs ?? LOCK_HEARTBEAT_MS);
    this.heartbeat.unref();
  }

  /**
   * Marks the lock alive, after checking that it is still this process's. Only a lock that names another holder counts
   * as lost; one removed by hand is put back, and a look that fails (out of file descriptors, an I/O error, a lock
   * caught half-written) is tried again at the next beat.
   */
  private beat(): void {
    try {
      const holder = holderOf(this.path);
      if (holder?.token === this.token) return touch(this.path);
      if (holder !== null) {
        clearInterval(this.heartbeat);
        return this.onLost(holder);
      }
      // Should another server create one first, the next beat finds it and reports it.
      if (!existsSync(this.path)) this.create();
    } catch {
      // Tried again at the next beat.
    }
  }

  /**
   * Throws, as taking the directory would, when another live server holds it, or when the directory cannot be written or
   * its disk has no room to start on (`DataDirFullError`); takes nothing (a check before start-up).
   */
  static check(dataDir: string): void {
    const holder = holderOf(lockPath(dataDir));
    if (holder && isAlive(holder, lockPath(dataDir))) throw inUse(dataDir, holder);
    checkWritable(dataDir);
  }

  /** Gives the directory up (when the lock is still this process's). */
  release(): void {
    clearInterval(this.heartbeat);
    if (holderOf(this.path)?.token === this.token) rmSync(this.path, { force: true });
  }

  /**
   * Takes the directory, or throws naming whoever holds it. Why exactly one of any number of processes starting at once
   * succeeds, whatever the interleaving:
   * - The lock only ever appears whole and by an exclusive link, so of the processes finding the path empty one creates it.
   * - A lock is removed only by its holder or by a takeover; a takeover removes it only while holding a claim on that very
   *   lock (its bytes, which carry the holder's unique token), and only after reading it again under the claim and
   *   finding it the same and still stale. Only a takeover of that lock could have removed it meanwhile, and no other
   *   one runs: so what goes is the stale lock, never a lock some live process just created. (Moving the lock aside and
   *   giving back one that turned out fresh was not enough: another process could create its own in the gap.)
   * - Claims are created exclusively, numbered, and given up by their holders when done. One left by a process that died
   *   holding it is passed over by creating the next number, and not removed while the stale lock is there, so a claim's
   *   holder had found the holder of each earlier claim dead: two live processes never hold claims on the same lock. A
   *   live claim refuses the newcomer, naming the process about to hold the directory.
   * - A process doing its first plain create() while a claim is held either finds the stale lock (and is refused by the
   *   claim, or finds it changed) or finds the path empty after the removal and races the claim's holder to create it:
   *   one wins, and the other finds a live holder and is refused.
   * - Claims go once the stale lock is gone (a takeover by a late comer then finds it changed and does nothing).
   * A holder on another host is judged gone by the lock's age; should it be merely paused, its next heartbeat finds the
   * lock another's and stops it (`onLost`).
   */
  private take(): void {
    try {
      this.tryToTake();
    } catch (e) {
      if (!isOutOfRoom(e)) throw e;
      // No room for this holder's record (or a claim). Whoever holds the directory is still refused as such: a full disk
      // neither hides a live holder nor lets one be taken for gone. Nothing was removed: a lock is only ever removed
      // after a claim on it was written.
      const holder = holderOf(this.path);
      if (holder && isAlive(holder, this.path)) throw inUse(this.dataDir, holder);
      throw new DataDirFullError(this.dataDir, e);
    }
  }

  private tryToTake(): void {
    for (let attempt = 0; attempt < 5; attempt++) {
      if (this.create()) return;
      const seen = contentOf(this.path);
      // Gone meanwhile: try again to create it.
      if (seen === null) continue;
      const refused = refusal(this.dataDir, this.path, seen);
      if (refused) throw refused;
      this.takeOver(seen);
    }
    throw new Error(`could not take the lock ${this.path}: other processes keep taking it`);
  }

  /** Removes the lock if it is still the one read as `stale`, and still stale, holding a claim on it meanwhile. */
  private takeOver(stale: string): void {
    const claims = `${this.path}.takeover-${createHash('sha256').update(stale).digest('hex').slice(0, 16)}`;
    const mine = this.claim(claims);
    if (mine === null) return;
    let gone = false;
    try {
      gone = contentOf(this.path) !== stale;
      if (!gone && refusal(this.dataDir, this.path, stale) === null) {
        const aliveAt = modifiedAt(this.path);
        rmSync(this.path, { force: true });
        if (aliveAt > 0) this.previousHolderAliveAt = Math.floor(aliveAt);
        gone = true;
      }
    } finally {
      // Dead claimants' claims may only go once the lock they were after is gone: then a takeover of it does nothing.
      if (gone) for (let n = 0; n < mine; n++) rmSync(`${claims}-${n}`, { force: true });
      rmSync(`${claims}-${mine}`, { force: true });
    }
  }

  /**
   * Creates the first claim in `claims` whose predecessors' holders are all gone, and says which; throws when a live
   * process holds one. Null when a claim was given up meanwhile: its holder's takeover is over, so the lock has changed.
   */
  private claim(claims: string): number | null {
    for (let n = 0; n < MAX_CLAIMS; n++) {
      if (this.place(`${claims}-${n}`)) return n;
      const content = contentOf(`${claims}-${n}`);
      if (content === null) return null;
      const refused = refusal(this.dataDir, `${claims}-${n}`, content);
      if (refused) throw refused;
    }
    throw new Error(`could not take the lock ${this.path}: the processes taking it over keep dying (see ${claims}-*)`);
  }

  /** Creates the lock, whole, or finds one there (false). */
  private create(): boolean {
    return this.place(this.path);
  }

  /** Writes this holder's record at `path` unless a file is there (false). Written aside and linked into place, so it is never seen half-written. */
  private place(path: string): boolean {
    const draft = `${this.path}.${this.token}`;
    try {
      // Inside the try: a write cut short (a full disk) leaves no draft behind.
      writeFileSync(draft, holderRecord(this.token));
      linkSync(draft, path);
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
      throw e;
    } finally {
      rmSync(draft, { force: true });
    }
  }
}

const lockPath = (dataDir: string) => join(dataDir, 'parley.lock');

function stopOnLoss(dataDir: string, holder: LockHolder): void {
  process.stderr.write(
    `fatal: the data directory ${dataDir} was taken over by process ${holder.pid} on ${holder.host}; stopping, so that only one server writes to it\n`,
  );
  process.exit(75);
}

function inUse(dataDir: string, holder: LockHolder): Error {
  // From another host only the lock's age tells whether its holder still runs.
  const elsewhere = holder.host === hostname() ? '' : ` (if that server is gone, the directory is free ${LOCK_STALE_MS / 1000} s after it was last active)`;
  return new Error(
    `the data directory ${dataDir} is in use by process ${holder.pid} on ${holder.host}: stop that server, or give this one another PARLEY_DATA_DIR${elsewhere}`,
  );
}

/** Who holds the lock, or null when there is none or it is unreadable (a holder that died while writing it). */
function holderOf(path: string): LockHolder | null {
  try {
    const content = contentOf(path);
    return content === null ? null : parseHolder(content);
  } catch {
    return null;
  }
}

/** The file's content, or null when it is not there. */
function contentOf(path: string): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
}

/** Why the lock (or takeover claim) at `path`, read as `content`, must be left alone; null when its holder is gone. */
function refusal(dataDir: string, path: string, content: string): Error | null {
  const holder = parseHolder(content);
  if (holder !== null) return isAlive(holder, path) ? inUse(dataDir, holder) : null;
  // Damaged by hand: stale only once it is old.
  return Date.now() - modifiedAt(path) < LOCK_STALE_MS ? new Error(`the data directory ${dataDir} is in use (its lock ${path} is unreadable)`) : null;
}

function isAlive(holder: LockHolder, path: string): boolean {
  return holderAlive(holder, modifiedAt(path), () => false);
}

function modifiedAt(path: string): number {
  try {
    return statSync(path).mtimeMs;
  } catch {
    return 0;
  }
}

function touch(path: string): void {
  const now = new Date();
  try {
    utimesSync(path, now, now);
  } catch {
    // Gone (removed by hand): nothing to refresh.
  }
}

/** Why a directory cannot be written, as a person would say it, by the error's code. */
const CANNOT_WRITE: Record<string, string> = {
  EACCES: 'permission denied',
  EPERM: 'permission denied',
  EROFS: 'it is on a read-only file system',
  ENOTDIR: 'a part of its path is a file, not a directory',
  // mkdir of a path that is there already, as something else than a directory.
  EEXIST: 'it is a file, not a directory',
  // mkdir under a directory that is there but holds no directories of ours (/proc, /sys).
  ENOENT: 'no directory can be made there',
};

/**
 * Makes the directory (and its parents) when missing, and writes and removes a file in it: a directory that cannot be
 * used is refused in one line that names it and says why, before anything starts on it; one whose disk has no room to
 * start on, with `DataDirFullError` (see `checkStartRoom`).
 */
function checkWritable(dataDir: string): void {
  try {
    makeDir(dataDir);
    checkStartRoom(dataDir);
    // The store's files, when there: in a directory first run by another user (root, say), the directory may be writable
    // and they not, and LMDB would then stop the start with a bare "Permission denied: Attempting to setup locks".
    for (const name of STORE_FILES) {
      const file = join(dataDir, name);
      if (existsSync(file)) accessSync(file, constants.R_OK | constants.W_OK);
    }
  } catch (e) {
    if (e instanceof DataDirFullError) throw e;
    if (isOutOfRoom(e)) throw new DataDirFullError(dataDir, e);
    const { code = '', path } = e as NodeJS.ErrnoException;
    const why = CANNOT_WRITE[code] ?? (e as Error).message;
    const file = STORE_FILES.find((name) => path === join(dataDir, name));
    throw new Error(
      `cannot write to the data directory ${dataDir}: ${file ? `its file ${file}: ${why} (another user's?)` : why}; give this server a directory it may write to (PARLEY_DATA_DIR)`,
      { cause: e },
    );
  }
}

/** The files the embedded store keeps in the data directory (see EmbeddedDatabase). */
const STORE_FILES = ['parley.lmdb', 'parley.lmdb-lock'];

/**
 * Makes the directory and its missing parents, a level at a time from the first that is there. Not by
 * `mkdirSync(dir, { recursive: true })`: Node's retries a level for ever when making it fails with ENOENT though its
 * parent is there (under /proc, say), so the server would hang without a word.
 */
function makeDir(dir: string): void {
  const missing: string[] = [];
  for (let at = resolve(dir); !existsSync(at) && dirname(at) !== at; at = dirname(at)) missing.unshift(at);
  // When nothing is missing, still made: mkdir names a path that is there as something else (EEXIST).
  for (const level of missing.length > 0 ? missing : [resolve(dir)]) {
    try {
      mkdirSync(level);
    } catch (e) {
      // Made meanwhile (by another server starting on it), or there already: fine if it is a directory.
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || !statSync(level).isDirectory()) throw e;
    }
  }
}
