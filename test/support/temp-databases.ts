import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach } from 'vitest';
import { EmbeddedDatabase } from '#libs/storage';

/**
 * Embedded databases for a spec's tests: the function returned opens a fresh one in a temp dir (named from `prefix`),
 * and each is closed and its dir removed after the test that opened it. Call once, at the top of the spec.
 */
export function tempDatabases(prefix: string): () => EmbeddedDatabase {
  const open: EmbeddedDatabase[] = [];
  afterEach(async () => {
    for (const db of open.splice(0)) {
      await db.close();
      rmSync(db.dataDir, { recursive: true, force: true });
    }
  });
  return () => {
    const db = new EmbeddedDatabase(mkdtempSync(join(tmpdir(), prefix)));
    open.push(db);
    return db;
  };
}
