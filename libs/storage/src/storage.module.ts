import { Global, Inject, Module, type OnApplicationShutdown } from '@nestjs/common';
import { PARLEY_CONFIG, type ParleyConfig } from '#libs/config';
import { closeStorageBackend, openStorageBackend, type StorageBackend } from './storage-backend.js';

export const STORAGE_BACKEND = Symbol('STORAGE_BACKEND');

/** Opens the process's storage backend once, from the configuration, and closes it at shutdown. */
@Global()
@Module({
  providers: [
    {
      provide: STORAGE_BACKEND,
      useFactory: (config: ParleyConfig) =>
        openStorageBackend({ dataDir: config.PARLEY_DATA_DIR, redisUrl: config.REDIS_URL, redisPrefix: config.PARLEY_REDIS_PREFIX }),
      inject: [PARLEY_CONFIG],
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
