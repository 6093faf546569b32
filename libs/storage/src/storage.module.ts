import { Global, Inject, Module, type OnApplicationShutdown } from '@nestjs/common';
import { PARLEY_CONFIG, type ParleyConfig } from '#libs/config';
import { Metrics } from '#libs/health';
import { closeStorageBackend, openStorageBackend, type StorageBackend } from './storage-backend.js';

export const STORAGE_BACKEND = Symbol('STORAGE_BACKEND');

/** Opens the process's storage backend once, from the configuration, and closes it at shutdown. */
@Global()
@Module({
  providers: [
    {
      provide: STORAGE_BACKEND,
      useFactory: (config: ParleyConfig, metrics?: Metrics) => {
        const backend = openStorageBackend({
          dataDir: config.PARLEY_DATA_DIR,
          redisUrl: config.REDIS_URL,
          redisPrefix: config.PARLEY_REDIS_PREFIX,
          minFreeBytes: config.PARLEY_MIN_FREE_DISK_BYTES,
        });
        // The disk's sync is what a message's `accepted` waits for on the embedded store: operators see it on /metrics.
        if (backend.kind === 'embedded' && metrics) backend.db.observeCommits((seconds) => metrics.storeCommitSeconds.observe(seconds));
        return backend;
      },
      inject: [PARLEY_CONFIG, { token: Metrics, optional: true }],
    },
  ],
  exports: [STORAGE_BACKEND],
})
export class StorageModule implements OnApplicationShutdown {
  constructor(@Inject(STORAGE_BACKEND) private readonly backend: StorageBackend) {}

  async onApplicationShutdown(): Promise<void> {
    await closeStorageBackend(this.backend);
  }
}
