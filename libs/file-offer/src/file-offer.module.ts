import { Inject, Logger, Module, type OnApplicationBootstrap, type OnApplicationShutdown } from '@nestjs/common';
import { AccountsModule, AccountsService } from '#libs/accounts';
import { PARLEY_CONFIG, type ParleyConfig } from '#libs/config';
import { adapterFor, STORAGE_BACKEND, type StorageBackend } from '#libs/storage';
import { EmbeddedFileBlobStore } from './embedded/embedded-file-blob.store.js';
import { EmbeddedFileOfferStore } from './embedded/embedded-file-offer.store.js';
import { FILE_OFFER_API, FileOfferService } from './file-offer.service.js';
import type { FileBlobStore, FileOfferStore } from './file-offer.store.js';
import { RedisFileBlobStore } from './redis/redis-file-blob.store.js';
import { RedisFileOfferStore } from './redis/redis-file-offer.store.js';

export const FILE_OFFER_STORE = Symbol('FILE_OFFER_STORE');
export const FILE_BLOB_STORE = Symbol('FILE_BLOB_STORE');

/** Chunks a sender may have unacknowledged at once. */
export const FILE_WINDOW = 8;

/** Deletes expired offers now and then, wherever the file-offer service runs. */
class FileOfferSweeper {
  private readonly logger = new Logger('FileOfferSweeper');
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly service: FileOfferService,
    private readonly everyMs: number,
  ) {}

  start(): void {
    this.timer = setInterval(() => {
      this.running = this.service.sweep().catch((e: unknown) => this.logger.warn({ event: 'sweep_failed', error: String(e) }));
    }, this.everyMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.running;
  }
}

@Module({
  imports: [AccountsModule],
  providers: [
    {
      provide: FILE_OFFER_STORE,
      useFactory: (backend: StorageBackend) =>
        adapterFor<FileOfferStore>(backend, { embedded: (db) => new EmbeddedFileOfferStore(db), redis: (redis) => new RedisFileOfferStore(redis) }),
      inject: [STORAGE_BACKEND],
    },
    {
      provide: FILE_BLOB_STORE,
      useFactory: (backend: StorageBackend) =>
        adapterFor<FileBlobStore>(backend, { embedded: (db) => new EmbeddedFileBlobStore(db), redis: (redis) => new RedisFileBlobStore(redis) }),
      inject: [STORAGE_BACKEND],
    },
    {
      provide: FileOfferService,
      useFactory: (offers: FileOfferStore, blobs: FileBlobStore, accounts: AccountsService, config: ParleyConfig) =>
        new FileOfferService(offers, blobs, accounts, {
          maxFileBytes: config.PARLEY_MAX_FILE_BYTES,
          maxPendingOffers: config.PARLEY_MAX_PENDING_OFFERS,
          quotaBytes: config.PARLEY_FILE_QUOTA_BYTES,
          ttlMs: config.PARLEY_FILE_OFFER_TTL_MS,
          chunkBytes: config.PARLEY_FILE_CHUNK_BYTES,
          window: FILE_WINDOW,
        }),
      inject: [FILE_OFFER_STORE, FILE_BLOB_STORE, AccountsService, PARLEY_CONFIG],
    },
    {
      provide: FileOfferSweeper,
      // Often enough that an offer outlives its time by a fraction of it at most; at least once a minute.
      useFactory: (service: FileOfferService, config: ParleyConfig) =>
        new FileOfferSweeper(service, Math.max(200, Math.min(60_000, Math.floor(config.PARLEY_FILE_OFFER_TTL_MS / 4)))),
      inject: [FileOfferService, PARLEY_CONFIG],
    },
    { provide: FILE_OFFER_API, useExisting: FileOfferService },
  ],
  exports: [FileOfferService, FILE_OFFER_API],
})
export class FileOfferModule implements OnApplicationBootstrap, OnApplicationShutdown {
  constructor(@Inject(FileOfferSweeper) private readonly sweeper: FileOfferSweeper) {}

  onApplicationBootstrap(): void {
    this.sweeper.start();
  }

  async onApplicationShutdown(): Promise<void> {
    await this.sweeper.stop();
  }
}
