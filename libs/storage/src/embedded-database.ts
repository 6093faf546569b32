import { statfsSync } from 'node:fs';
import { join } from 'node:path';
import { open, type Database, type RootDatabase } from 'lmdb';
import { DataDirLock } from './data-dir-lock.js';
import { checkStartRoom, START_ROOM_BYTES } from './data-dir-space.js';

/** How often, at most, `writable` tries a write while commits fail. */
const PROBE_INTERVAL_MS = 1000;
/** What that write stores: room for some hundreds of messages, so that a disk with a few pages left is not taken as writable. */
const PROBE_VALUE = Buffer.alloc(START_ROOM_BYTES);

/**
 * lmdb-js, when a commit fails (a full disk), rejects promises of its own that no one can handle: the one its write
 * batch starts with, and the `commitError` it hangs on each write's error, rejected later with the system's error.
 * Node ends a process on a rejection left unhandled, so one failed commit of a receipt or a file offer ended the
 * server. The process ignores those two, as the writes whose callers hear of the failure (every write's own promise
 * rejects, and is handled where it is awaited) make them redundant; any other rejection left unhandled still ends it.
 */
function guardAgainstLmdbCommitRejections(): void {
  if (lmdbGuardInstalled) return;
  lmdbGuardInstalled = true;
  process.on('unhandledRejection', (reason: unknown, promise: Promise<unknown>) => {
    // The failed batch's own promise is rejected with the error each write gets; `commitError` carries lmdb-js's second
    // promise, which has `reject` of its own (no promise of Node's has).
    if (reason instanceof Error && 'commitError' in reason) return;
    if (typeof (promise as { reject?: unknown }).reject === 'function') return;
    throw reason;
  });
}
let lmdbGuardInstalled = false;

/** The asynchronous writes of lmdb-js's databases that commit on its write thread (see `EmbeddedDatabase.open`). */
const WATCHED_WRITES = ['put', 'remove', 'transaction', 'ifNoExists', 'ifVersion', 'batch', 'childTransaction'] as const;

/**
 * Free space the store keeps on its disk by default (`PARLEY_MIN_FREE_DISK_BYTES`): below it, writes are refused before
 * LMDB is asked to make them. LMDB must never meet a full disk: lmdb-js (3.5) formats the report of a failed page write
 * into a heap buffer too small for it, which corrupts the heap and ends the process (free(): invalid size), and a short
 * write comes back as EIO. The floor keeps its writes clear of that, and leaves the disk room for everything else.
 */
export const DEFAULT_MIN_FREE_BYTES = 64 * 1024 * 1024;

export interface EmbeddedDatabaseOptions {
  /** Free bytes below which writes are refused (see DEFAULT_MIN_FREE_BYTES). */
  minFreeBytes?: number;
}

/** A write refused because the disk holding the data directory has less free than the store keeps (ENOSPC, for callers). */
export class StoreFullError extends Error {
  readonly code = 'ENOSPC';
  constructor(dataDir: string, freeBytes: number, minFreeBytes: number) {
    super(`the disk holding ${dataDir} has ${freeBytes} bytes free, under the ${minFreeBytes} the store keeps: writes are refused until there is room`);
    this.name = 'StoreFullError';
  }
}

/** A write waiting for the end of the event-loop turn, with the promise its caller holds. */
interface TurnWrite {
  write: () => void;
  resolve: () => void;
  reject: (e: unknown) => void;
}

/**
 * The embedded durable store: one LMDB environment in the data directory.
 * A write's promise resolves only after its transaction is committed and
 * synced to the disk, so it survives `kill -9` of the process and a power
 * loss alike. Writes issued while a commit is under way are committed together
 * in the next one (group commit), so the sync is paid once per batch, not per
 * message. Domain adapters each open their own named sub-database.
 *
 * Two ways to write: lmdb-js's own (`put`, `transaction`), committed on its
 * write thread; and `atTurnEnd`, for the hot path, where every write issued in
 * one event-loop turn is committed in one synchronous transaction once the
 * turn's I/O is handled. The second costs no hop to another thread and back,
 * which on a busy machine is where most of a commit's wait went (see
 * docs/architecture.md, "Accepted means durable").
 */
export class EmbeddedDatabase {
  readonly root: RootDatabase;
  private readonly lock: DataDirLock;
  /** Writes handed over in this turn; the first schedules their commit. */
  private turnWrites: TurnWrite[] = [];
  /** Told how long each synced commit of `atTurnEnd` held the event loop (see `observeCommits`). */
  private commitObserver: ((seconds: number) => void) | undefined;
  /** Whether the last commit of `atTurnEnd` failed (a full or failing disk), until one succeeds (see `writable`). */
  private lastCommitFailed = false;
  /** The last probe `writable` made while commits failed: when, and whether it committed. */
  private probe: { at: number; ok: boolean } | undefined;
  private health: Database<Buffer, string> | undefined;

  private readonly minFreeBytes: number;
  /** How deep the main thread is in callbacks of watched writes (see `open`). */
  private insideWrite = 0;

  constructor(
    readonly dataDir: string,
    opts: EmbeddedDatabaseOptions = {},
  ) {
    this.minFreeBytes = opts.minFreeBytes ?? DEFAULT_MIN_FREE_BYTES;
    // A live holder is refused first, then a disk without room to start on, before the lock is taken: taking it would
    // replace a killed server's stale lock (and the time it was last alive, which the next start reads) only to give
    // the directory up again at once.
    DataDirLock.check(dataDir);
    // Refuses (throws) when another live server holds the directory, or when the disk has no room for the lock.
    this.lock = new DataDirLock(dataDir);
    try {
      // LMDB, short of room while it maps its files, ends the process with a signal rather than an error (see
      // START_ROOM_BYTES): a disk without that room is refused here, in words.
      checkStartRoom(dataDir);
    } catch (e) {
      this.lock.release();
      throw e;
    }
    guardAgainstLmdbCommitRejections();
    // overlappingSync (lmdb-js's default on Linux) would let a commit resolve before its sync: durable against a crash of
    // the process but not of the machine. Parley answers `accepted` on this promise, so the sync stays inside the commit.
    this.root = open({ path: join(dataDir, 'parley.lmdb'), compression: false, maxDbs: 64, overlappingSync: false });
  }

  /**
   * A named sub-database whose values are stored as structured (msgpack) data. Its asynchronous writes (lmdb-js's own
   * commits) are watched: a failed commit counts for `writable`, as one of `atTurnEnd` does; and the promise of each put
   * made inside a `transaction` callback, which only the transaction's own promise reports, is not left unhandled.
   */
  open<V = unknown, K extends import('lmdb').Key = import('lmdb').Key>(name: string): Database<V, K> {
    const db = this.root.openDB<V, K>({ name });
    const methods = db as unknown as Record<string, unknown>;
    for (const method of WATCHED_WRITES) {
      const write = methods[method];
      if (typeof write !== 'function') continue;
      methods[method] = (...args: unknown[]): unknown => {
        // The floor is checked once per write as its caller makes it: not again for each write inside a transaction's
        // callback, which lmdb-js runs later, when the transaction's turn comes. Refused there, a write would be left out
        // of a transaction that still commits the rest and reports success.
        const full = this.insideWrite === 0 ? this.short() : null;
        if (full) {
          this.lastCommitFailed = true;
          const refused = Promise.reject(full);
          // Heard by a caller who awaits it; one who does not (`void put`, as lmdb-js's own failed writes) must not
          // end the process with an unhandled rejection: the failure is on record for `writable`.
          refused.catch(() => undefined);
          return refused;
        }
        const inside = args.map((a) => (typeof a === 'function' ? this.asInsideWrite(a as (...x: unknown[]) => unknown) : a));
        const result: unknown = (write as (...a: unknown[]) => unknown).apply(db, inside);
        // lmdb-js's promises are not all of the built-in class: any thenable is watched.
        if (typeof (result as PromiseLike<unknown> | null)?.then === 'function') (result as PromiseLike<unknown>).then(undefined, this.commitFailed);
        return result;
      };
    }
    return db;
  }

  /** A write's callback (a transaction's, say), run as part of that write: writes it makes are not checked again. */
  private asInsideWrite(callback: (...x: unknown[]) => unknown): (...x: unknown[]) => unknown {
    return (...x) => {
      this.insideWrite++;
      try {
        return callback(...x);
      } finally {
        this.insideWrite--;
      }
    };
  }

  /** An asynchronous write failed: the store may be full (see `writable`). */
  private readonly commitFailed = (): void => {
    this.lastCommitFailed = true;
  };

  /**
   * Runs `write` (synchronous puts and removes, e.g. `putSync`) in the one
   * transaction committed at the end of this event-loop turn; resolves once
   * that transaction is committed and synced. Writes run in call order. When
   * the shared transaction fails, each write is tried again in its own, so one
   * write that throws fails only its own promise and stores nothing.
   */
  atTurnEnd(write: () => void): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (this.turnWrites.push({ write, resolve, reject }) === 1) setImmediate(() => this.commitTurn());
    });
  }

  /**
   * Reports the duration, in seconds, of every synced commit `atTurnEnd` makes (one per event-loop turn with writes):
   * time the event loop spent waiting for the disk. One observer; a later call replaces it.
   */
  observeCommits(observer: (seconds: number) => void): void {
    this.commitObserver = observer;
  }

  private commitTurn(): void {
    const writes = this.turnWrites;
    // Nothing left when `close` committed the turn's writes first.
    if (writes.length === 0) return;
    this.turnWrites = [];
    const full = this.short();
    if (full) {
      this.lastCommitFailed = true;
      for (const w of writes) w.reject(full);
      return;
    }
    try {
      this.timedCommit(() => {
        for (const w of writes) w.write();
      });
    } catch {
      for (const w of writes) this.commitAlone(w);
      return;
    }
    for (const w of writes) w.resolve();
  }

  private commitAlone(w: TurnWrite): void {
    try {
      this.timedCommit(w.write);
    } catch (e) {
      w.reject(e);
      return;
    }
    w.resolve();
  }

  /** One synchronous, synced transaction; its duration goes to the observer whether it commits or throws. */
  private timedCommit(write: () => void): void {
    const started = performance.now();
    try {
      this.root.transactionSync(write);
      this.lastCommitFailed = false;
    } catch (e) {
      this.lastCommitFailed = true;
      throw e;
    } finally {
      this.commitObserver?.((performance.now() - started) / 1000);
    }
  }

  /**
   * Whether the store takes writes: true unless the last commit failed (the disk full, say): one of messages
   * (`atTurnEnd`), or one of lmdb-js's own (groups, cursors, offers: see `open`), in which case a 256 KiB synced write
   * is tried (at most once a second, and removed again) and its outcome is the answer. For readiness: a server whose
   * writes are refused is not ready, and is again once the disk has room.
   */
  writable(now = performance.now()): boolean {
    if (this.short()) return false;
    if (!this.lastCommitFailed) return true;
    if (this.probe && now - this.probe.at < PROBE_INTERVAL_MS) return this.probe.ok;
    let ok = true;
    try {
      this.health ??= this.open<Buffer, string>('health');
      const health = this.health;
      this.root.transactionSync(() => health.putSync('probe', PROBE_VALUE));
      // Its pages go back to the store's free list: a nearly full disk keeps room for messages.
      this.root.transactionSync(() => health.removeSync('probe'));
    } catch {
      ok = false;
    }
    this.probe = { at: now, ok };
    if (ok) this.lastCommitFailed = false;
    return ok;
  }

  /**
   * Throws StoreFullError when writing `bytes` more to the data directory's disk (outside LMDB: an uploaded file's
   * chunk) would leave it under the floor of free space the store keeps: files never take the room kept for messages.
   */
  checkRoomFor(bytes: number): void {
    const full = this.short(bytes);
    if (full) throw full;
  }

  /** The refusal for a write of `bytes` that would leave the disk under the floor; null when it has room (or cannot say). */
  private short(bytes = 0): StoreFullError | null {
    let free: number;
    try {
      const fs = statfsSync(this.dataDir);
      free = fs.bavail * fs.bsize;
    } catch {
      return null;
    }
    return free - bytes < this.minFreeBytes ? new StoreFullError(this.dataDir, free, this.minFreeBytes) : null;
  }

  /** When the server that used this directory before was last alive, if it was killed rather than stopped; else null. */
  get previousRunAliveAt(): number | null {
    return this.lock.previousHolderAliveAt;
  }

  async close(): Promise<void> {
    // Writes handed over in this turn are committed before the environment goes.
    this.commitTurn();
    try {
      await this.root.close();
    } finally {
      this.lock.release();
    }
  }
}
