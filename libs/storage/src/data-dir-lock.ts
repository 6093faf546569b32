import { randomUUID } from 'node:crypto';
import { existsSync, linkSync, readFileSync, renameSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';

/** How often the holder marks its lock as alive. */
const HEARTBEAT_MS = 5_000;
/** A lock from another host not marked alive for this long is taken over (its holder is gone). */
const STALE_MS = 30_000;

export interface Holder {
  pid: number;
  host: string;
  token: string;
  /** The kernel's boot id when the lock was taken (Linux): a pid from before a reboot names no process of now. */
  boot?: string;
}

/** This boot of the machine (Linux), or undefined where the kernel does not say. */
const BOOT_ID = (() => {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
})();

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
export interface DataDirLockOptions {
  heartbeatMs?: number;
  /**
   * Called when a heartbeat finds the lock held by another server (this host was paused long enough for another host
   * to judge it gone). Both would now write to the directory, so the default stops this process at once.
   */
  onLost?: (holder: Holder) => void;
}

export class DataDirLock {
  private readonly path: string;
  private readonly token = randomUUID();
  private readonly heartbeat: NodeJS.Timeout;
  private readonly onLost: (holder: Holder) => void;

  constructor(
    private readonly dataDir: string,
    opts: DataDirLockOptions = {},
  ) {
    this.path = lockPath(dataDir);
    this.onLost = opts.onLost ?? ((holder) => stopOnLoss(dataDir, holder));
    this.take();
    this.heartbeat = setInterval(() => this.beat(), opts.heartbeatMs ?? HEARTBEAT_MS);
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

  /** Throws, as taking the directory would, when another live server holds it; takes nothing (a check before start-up). */
  static check(dataDir: string): void {
    const holder = holderOf(lockPath(dataDir));
    if (holder && isAlive(holder, lockPath(dataDir))) throw inUse(dataDir, holder);
  }

  /** Gives the directory up (when the lock is still this process's). */
  release(): void {
    clearInterval(this.heartbeat);
    if (holderOf(this.path)?.token === this.token) rmSync(this.path, { force: true });
  }

  private take(): void {
    for (let attempt = 0; attempt < 5; attempt++) {
      if (this.create()) return;
      const holder = holderOf(this.path);
      if (holder === null) {
        // Unreadable (damaged by hand, or gone meanwhile): stale only once it is old.
        if (Date.now() - modifiedAt(this.path) < STALE_MS)
          throw new Error(`the data directory ${this.dataDir} is in use (its lock ${this.path} is unreadable)`);
      } else if (isAlive(holder, this.path)) {
        throw inUse(this.dataDir, holder);
      }
      // Taken over by moving it aside, which only one process can do; then it must be the lock judged stale.
      const aside = `${this.path}.stale-${this.token}`;
      try {
        renameSync(this.path, aside);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw e;
      }
      const moved = holderOf(aside);
      if (moved?.token !== holder?.token) {
        // Another server took the directory between the look and the move: give its lock back, and yield.
        try {
          linkSync(aside, this.path);
        } finally {
          rmSync(aside, { force: true });
        }
        throw inUse(this.dataDir, moved!);
      }
      rmSync(aside, { force: true });
    }
    throw new Error(`could not take the lock ${this.path}: other processes keep taking it`);
  }

  /** Creates the lock, whole, or finds one there (false). Written aside and linked into place, so it is never seen half-written. */
  private create(): boolean {
    const draft = `${this.path}.${this.token}`;
    writeFileSync(draft, JSON.stringify({ pid: process.pid, host: hostname(), token: this.token, boot: BOOT_ID } satisfies Holder));
    try {
      linkSync(draft, this.path);
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

function stopOnLoss(dataDir: string, holder: Holder): void {
  process.stderr.write(
    `fatal: the data directory ${dataDir} was taken over by process ${holder.pid} on ${holder.host}; stopping, so that only one server writes to it\n`,
  );
  process.exit(75);
}

function inUse(dataDir: string, holder: Holder): Error {
  // From another host only the lock's age tells whether its holder still runs.
  const elsewhere = holder.host === hostname() ? '' : ` (if that server is gone, the directory is free ${STALE_MS / 1000} s after it was last active)`;
  return new Error(
    `the data directory ${dataDir} is in use by process ${holder.pid} on ${holder.host}: stop that server, or give this one another PARLEY_DATA_DIR${elsewhere}`,
  );
}

/** Who holds the lock, or null when there is none or it is unreadable (a holder that died while writing it). */
function holderOf(path: string): Holder | null {
  try {
    const h = JSON.parse(readFileSync(path, 'utf8')) as Partial<Holder>;
    const valid =
      typeof h.pid === 'number' && typeof h.host === 'string' && typeof h.token === 'string' && (h.boot === undefined || typeof h.boot === 'string');
    return valid ? (h as Holder) : null;
  } catch {
    return null;
  }
}

function isAlive(holder: Holder, path: string): boolean {
  if (holder.host !== hostname()) return Date.now() - modifiedAt(path) < STALE_MS;
  if (holder.pid === process.pid) return false;
  // Taken before the machine last booted: whatever has that pid now is not the holder.
  if (holder.boot !== undefined && BOOT_ID !== undefined && holder.boot !== BOOT_ID) return false;
  try {
    process.kill(holder.pid, 0);
    return true;
  } catch (e) {
    // EPERM: a process of another user has that pid, so it exists.
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
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
