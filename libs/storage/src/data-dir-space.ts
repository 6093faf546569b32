import { rmSync, statfsSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { formatBytes } from '#libs/protocol';

/**
 * Room the standalone server needs free on its data directory's disk to start: as much as the readiness probe of a
 * running server writes (`EmbeddedDatabase.writable`), so that a server does not start on a disk it would at once
 * call not ready. Below it, opening the store is not even safe: LMDB maps its lock file and, on a fresh directory, its
 * first pages into memory, and a page the file system has no room for ends the process with a signal (SIGBUS or
 * SIGSEGV) instead of an error.
 */
export const START_ROOM_BYTES = 256 * 1024;

/**
 * The exit status of a server refused for want of room (`DataDirFullError`): sysexits' EX_IOERR. Apart from 1 (a port
 * in use, a directory in use or not writable), 2 (a bad setting) and 75 (the directory's lock taken over while running).
 */
export const DATA_DIR_FULL_EXIT = 74;

/** The error codes of a write refused for want of room: the disk is full, or this user's quota is used up. */
export function isOutOfRoom(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException | null)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT';
}

/**
 * The data directory's disk (or the quota on it) has no room for what the server must write to start: its lock, and
 * `START_ROOM_BYTES`. The store was not opened, and a lock found there was left as it was. A start-up refusal of its own (`DATA_DIR_FULL_EXIT`), so that an
 * operator, or a supervisor, tells it apart from a bad setting or a directory in use.
 */
export class DataDirFullError extends Error {
  /** Bytes the file system has free for this process, and its size, as `statfs` says; null when it does not. */
  readonly availableBytes: number | null;
  readonly totalBytes: number | null;

  constructor(
    readonly dataDir: string,
    cause: unknown,
  ) {
    const space = spaceOf(dataDir);
    const quota = (cause as NodeJS.ErrnoException | null)?.code === 'EDQUOT';
    const free = space ? `${formatBytes(space.availableBytes)} free of ${formatBytes(space.totalBytes)}` : 'free space unknown';
    super(
      `${quota ? 'the disk quota on the data directory' : 'the disk holding the data directory'} ${dataDir} is full (${free}; the server needs ${formatBytes(START_ROOM_BYTES)} to start): ` +
        'the data was left as it was; free some space there, or give this server another PARLEY_DATA_DIR, and start it again',
      { cause },
    );
    this.availableBytes = space?.availableBytes ?? null;
    this.totalBytes = space?.totalBytes ?? null;
  }
}

/**
 * Writes `START_ROOM_BYTES` into a file in the directory and removes it again; throws `DataDirFullError` when the disk
 * (or the quota) has no room for them, and any other error of the write as it is. A write, rather than `statfs`'s
 * count alone, because a quota or a file system's reserve is only told by a write.
 */
export function checkStartRoom(dataDir: string): void {
  const probe = join(dataDir, `.parley-write-test.${process.pid}`);
  try {
    writeFileSync(probe, Buffer.alloc(START_ROOM_BYTES));
  } catch (e) {
    // Removed first, so that the free space the error reports is the disk's, not what the probe left of it.
    rmSync(probe, { force: true });
    if (isOutOfRoom(e)) throw new DataDirFullError(dataDir, e);
    throw e;
  }
  rmSync(probe, { force: true });
}

/** The file system's room, of the directory or (when it could not be made) of its nearest existing parent. */
function spaceOf(dir: string): { availableBytes: number; totalBytes: number } | null {
  for (let d = resolve(dir); ; d = dirname(d)) {
    try {
      const s = statfsSync(d);
      return { availableBytes: s.bavail * s.bsize, totalBytes: s.blocks * s.bsize };
    } catch {
      if (dirname(d) === d) return null;
    }
  }
}
