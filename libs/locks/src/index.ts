import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';

/**
 * Locks. What a lock file says about who holds it, and whether that holder is still there: shared by the server's lock
 * on its data directory and the CLI's lock on a download. And `KeyedQueue`, one at a time per key within a process. No
 * dependencies beyond Node, so the CLI loads nothing it does not use.
 */

/** How often a holder marks its lock alive. */
export const LOCK_HEARTBEAT_MS = 5_000;
/** A lock from another host not marked alive for this long is stale (its holder is gone). */
export const LOCK_STALE_MS = 30_000;

export interface LockHolder {
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

/** The record this process writes into a lock it takes. */
export function holderRecord(token: string): string {
  return JSON.stringify({ pid: process.pid, host: hostname(), token, boot: BOOT_ID } satisfies LockHolder);
}

/** A lock file's content as a holder; null when it is not one (damaged by hand, or a draft cut short). */
export function parseHolder(content: string): LockHolder | null {
  try {
    const h = JSON.parse(content) as Partial<LockHolder>;
    const valid =
      typeof h.pid === 'number' && typeof h.host === 'string' && typeof h.token === 'string' && (h.boot === undefined || typeof h.boot === 'string');
    return valid ? (h as LockHolder) : null;
  } catch {
    return null;
  }
}

/**
 * Whether a lock's holder is still there. On another host: while the lock was marked alive (`modifiedAtMs`, its file's
 * mtime) within LOCK_STALE_MS. On this host: while its process runs (a pid from before the last boot is not it);
 * `own` decides for a lock naming this very process (one it holds, or one a previous process with this pid left).
 */
export function holderAlive(holder: LockHolder, modifiedAtMs: number, own: (holder: LockHolder) => boolean): boolean {
  if (holder.host !== hostname()) return Date.now() - modifiedAtMs < LOCK_STALE_MS;
  if (holder.pid === process.pid) return own(holder);
  if (holder.boot !== undefined && BOOT_ID !== undefined && holder.boot !== BOOT_ID) return false;
  try {
    process.kill(holder.pid, 0);
  } catch (e) {
    // EPERM: a process of another user has that pid, so it exists.
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
  return !exited(holder.pid);
}

/**
 * Whether a process that still has its pid has exited and waits for its parent to collect it (a zombie, Linux): it
 * holds nothing any more, but signals still reach its pid. A server killed with -9 stays one until whatever started it
 * reaps it, and a restart in between must not be refused.
 */
function exited(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The state follows the command name, which is in parentheses and may itself hold any character.
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state === 'Z' || state === 'X';
  } catch {
    return false;
  }
}

/** Runs the calls for one key one after another, in call order, within this process. */
export class KeyedQueue {
  private readonly tails = new Map<string, Promise<unknown>>();

  run<T>(key: string, work: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(key) ?? Promise.resolve();
    const run = prev.then(work, work);
    const tail = run.catch(() => undefined);
    this.tails.set(key, tail);
    void tail.then(() => {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    });
    return run;
  }
}
