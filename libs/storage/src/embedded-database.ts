import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { open, type Database, type RootDatabase } from 'lmdb';
import { DataDirLock } from './data-dir-lock.js';

/**
 * The embedded durable store: one LMDB environment in the data directory.
 * A write's promise resolves only after its transaction is committed and
 * synced to the disk, so it survives `kill -9` of the process and a power
 * loss alike. Writes issued while a commit is under way are committed together
 * in the next one (group commit), so the sync is paid once per batch, not per
 * message. Domain adapters each open their own named sub-database.
 */
export class EmbeddedDatabase {
  readonly root: RootDatabase;
  private readonly lock: DataDirLock;

  constructor(readonly dataDir: string) {
    mkdirSync(dataDir, { recursive: true });
    // Refuses (throws) when another live server holds the directory.
    this.lock = new DataDirLock(dataDir);
    // overlappingSync (lmdb-js's default on Linux) would let a commit resolve before its sync: durable against a crash of
    // the process but not of the machine. Parley answers `accepted` on this promise, so the sync stays inside the commit.
    this.root = open({ path: join(dataDir, 'parley.lmdb'), compression: false, maxDbs: 64, overlappingSync: false });
  }

  /** A named sub-database whose values are stored as structured (msgpack) data. */
  open<V = unknown, K extends import('lmdb').Key = import('lmdb').Key>(name: string): Database<V, K> {
    return this.root.openDB<V, K>({ name });
  }

  async close(): Promise<void> {
    try {
      await this.root.close();
    } finally {
      this.lock.release();
    }
  }
}
