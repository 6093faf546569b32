import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EmbeddedDatabase, RedisConnection, type StorageBackend } from '#libs/storage';
import { startRedis, type RedisServer } from '../support/redis-server.js';

/**
 * The two backends every storage port is tested on: LMDB in a fresh temp dir,
 * and a private redis-server (one per spec file) with a fresh key prefix per
 * store, so tests never see each other's data.
 */
export interface BackendFixture {
  name: 'embedded' | 'redis';
  /** A fresh, empty backend; `reopen` gives a new handle on the same data. */
  open: () => Promise<{ backend: StorageBackend; reopen: () => Promise<StorageBackend>; close: () => Promise<void> }>;
  teardown(): Promise<void>;
}

export function embeddedFixture(): BackendFixture {
  const dirs: string[] = [];
  const handles: EmbeddedDatabase[] = [];
  return {
    name: 'embedded',
    open: () => {
      const dir = mkdtempSync(join(tmpdir(), 'parley-contract-'));
      dirs.push(dir);
      const db = new EmbeddedDatabase(dir);
      handles.push(db);
      return Promise.resolve({
        backend: { kind: 'embedded', db },
        reopen: async () => {
          await db.close();
          const again = new EmbeddedDatabase(dir);
          handles.push(again);
          return { kind: 'embedded', db: again };
        },
        close: () => Promise.resolve(),
      });
    },
    teardown: async () => {
      for (const h of handles) await h.close().catch(() => undefined);
      for (const d of dirs) rmSync(d, { recursive: true, force: true });
    },
  };
}

export function redisFixture(): BackendFixture {
  let server: RedisServer | undefined;
  const conns: RedisConnection[] = [];
  return {
    name: 'redis',
    open: async () => {
      server ??= await startRedis();
      const prefix = `c${randomBytes(4).toString('hex')}:`;
      const redis = new RedisConnection(server.url, prefix);
      conns.push(redis);
      return {
        backend: { kind: 'redis', redis },
        reopen: () => {
          const again = new RedisConnection(server!.url, prefix);
          conns.push(again);
          return Promise.resolve({ kind: 'redis', redis: again });
        },
        close: () => Promise.resolve(),
      };
    },
    teardown: async () => {
      for (const c of conns) await c.close();
      await server?.stop();
    },
  };
}
