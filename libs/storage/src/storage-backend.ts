import { EmbeddedDatabase } from './embedded-database.js';
import { RedisConnection } from './redis-connection.js';

/** Where state lives: the embedded store in a data directory (standalone) or a shared Redis (distributed). */
export type StorageBackend = { kind: 'embedded'; db: EmbeddedDatabase } | { kind: 'redis'; redis: RedisConnection };

export interface StorageOptions {
  dataDir: string;
  redisUrl?: string | undefined;
  redisPrefix: string;
  /** The embedded store's floor of free disk space (see EmbeddedDatabaseOptions). */
  minFreeBytes?: number;
}

/** The one place that chooses a backend: Redis when a URL is given, the embedded store otherwise. */
export function openStorageBackend(opts: StorageOptions): StorageBackend {
  if (opts.redisUrl) return { kind: 'redis', redis: new RedisConnection(opts.redisUrl, opts.redisPrefix) };
  return { kind: 'embedded', db: new EmbeddedDatabase(opts.dataDir, { minFreeBytes: opts.minFreeBytes }) };
}

export async function closeStorageBackend(backend: StorageBackend): Promise<void> {
  if (backend.kind === 'redis') await backend.redis.close();
  else await backend.db.close();
}

/** True while the backend can serve reads and writes: Redis answers, or the embedded store's writes commit. */
export async function storageIsReady(backend: StorageBackend): Promise<boolean> {
  return backend.kind === 'redis' ? backend.redis.ping() : backend.db.writable();
}

/**
 * On Redis, whether it takes writes now (see `RedisConnection.writable`); null for the embedded store, whose
 * `storageIsReady` already asks that. A check apart from readiness: every process shares the Redis, so a full one is
 * said (`degraded`), not a reason to take one gateway out of its load balancer, which helps no one.
 */
export function storageWritesCheck(backend: StorageBackend): (() => Promise<boolean>) | null {
  return backend.kind === 'redis' ? () => backend.redis.writable() : null;
}

/**
 * Picks the adapter of a port for the backend in use. Each domain module calls
 * this once with its two constructors; an unknown backend kind cannot compile.
 */
export function adapterFor<T>(backend: StorageBackend, adapters: { embedded: (db: EmbeddedDatabase) => T; redis: (redis: RedisConnection) => T }): T {
  switch (backend.kind) {
    case 'embedded':
      return adapters.embedded(backend.db);
    case 'redis':
      return adapters.redis(backend.redis);
  }
}
