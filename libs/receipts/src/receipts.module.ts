import { Module } from '@nestjs/common';
import { Conversations, GroupModule } from '#libs/group';
import { adapterFor, STORAGE_BACKEND, type StorageBackend } from '#libs/storage';
import type { CursorStore } from './cursor.store.js';
import { EmbeddedCursorStore } from './embedded/embedded-cursor.store.js';
import { RECEIPTS_API, ReceiptsService } from './receipts.service.js';
import { RedisCursorStore } from './redis/redis-cursor.store.js';

export const CURSOR_STORE = Symbol('CURSOR_STORE');

@Module({
  imports: [GroupModule],
  providers: [
    {
      provide: CURSOR_STORE,
      useFactory: (backend: StorageBackend) =>
        adapterFor<CursorStore>(backend, { embedded: (db) => new EmbeddedCursorStore(db), redis: (redis) => new RedisCursorStore(redis) }),
      inject: [STORAGE_BACKEND],
    },
    {
      provide: ReceiptsService,
      useFactory: (cursors: CursorStore, conversations: Conversations) => new ReceiptsService(cursors, conversations),
      inject: [CURSOR_STORE, Conversations],
    },
    { provide: RECEIPTS_API, useExisting: ReceiptsService },
  ],
  exports: [ReceiptsService, RECEIPTS_API],
})
export class ReceiptsModule {}
