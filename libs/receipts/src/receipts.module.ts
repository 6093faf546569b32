import { Module } from '@nestjs/common';
import { Conversations, GroupModule } from '#libs/group';
import { adapterFor, STORAGE_BACKEND, type StorageBackend } from '#libs/storage';
import { PARLEY_CONFIG, type ParleyConfig } from '#libs/config';
import type { CursorStore } from './cursor.store.js';
import type { DeviceCursorStore } from './device-cursor.store.js';
import { EmbeddedCursorStore } from './embedded/embedded-cursor.store.js';
import { EmbeddedDeviceCursorStore } from './embedded/embedded-device-cursor.store.js';
import { RECEIPTS_API, ReceiptsService } from './receipts.service.js';
import { RedisCursorStore } from './redis/redis-cursor.store.js';
import { RedisDeviceCursorStore } from './redis/redis-device-cursor.store.js';

export const CURSOR_STORE = Symbol('CURSOR_STORE');
export const DEVICE_CURSOR_STORE = Symbol('DEVICE_CURSOR_STORE');

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
      provide: DEVICE_CURSOR_STORE,
      useFactory: (backend: StorageBackend) =>
        adapterFor<DeviceCursorStore>(backend, {
          embedded: (db) => new EmbeddedDeviceCursorStore(db),
          redis: (redis) => new RedisDeviceCursorStore(redis),
        }),
      inject: [STORAGE_BACKEND],
    },
    {
      provide: ReceiptsService,
      useFactory: (cursors: CursorStore, conversations: Conversations, devices: DeviceCursorStore, config: ParleyConfig) =>
        // A user keeps as many devices' positions as a gateway keeps their sessions.
        new ReceiptsService(cursors, conversations, Date.now, { store: devices, keepPerUser: config.PARLEY_MAX_SESSIONS_PER_USER }),
      inject: [CURSOR_STORE, Conversations, DEVICE_CURSOR_STORE, PARLEY_CONFIG],
    },
    { provide: RECEIPTS_API, useExisting: ReceiptsService },
  ],
  exports: [ReceiptsService, RECEIPTS_API],
})
export class ReceiptsModule {}
