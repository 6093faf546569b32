import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { open, type Database, type RootDatabase } from 'lmdb';

/**
 * The embedded durable store: one LMDB environment in the data directory.
 * A committed write transaction is in the file before its promise resolves, so
 * it survives `kill -9` of the process. Domain adapters each open their own
 * named sub-database.
 */
export class EmbeddedDatabase {
  readonly root: RootDatabase;

  constructor(readonly dataDir: string) {
    mkdirSync(dataDir, { recursive: true });
    this.root = open({ path: join(dataDir, 'parley.lmdb'), compression: false, maxDbs: 64 });
  }

  /** A named sub-database whose values are stored as structured (msgpack) data. */
  open<V = unknown, K extends import('lmdb').Key = import('lmdb').Key>(name: string): Database<V, K> {
    return this.root.openDB<V, K>({ name });
  }

  async close(): Promise<void> {
    await this.root.close();
  }
}
