import { Module } from '@nestjs/common';
import { AccountsModule, AccountsService } from '#libs/accounts';
import { adapterFor, STORAGE_BACKEND, type StorageBackend } from '#libs/storage';
import { EmbeddedPresenceStore } from './embedded/embedded-presence.store.js';
import { PRESENCE_API, PresenceService } from './presence.service.js';
import type { PresenceStore } from './presence.store.js';
import { RedisPresenceStore } from './redis/redis-presence.store.js';

export const PRESENCE_STORE = Symbol('PRESENCE_STORE');

@Module({
  imports: [AccountsModule],
  providers: [
    {
      provide: PRESENCE_STORE,
      useFactory: (backend: StorageBackend) =>
        adapterFor<PresenceStore>(backend, { embedded: (db) => new EmbeddedPresenceStore(db), redis: (redis) => new RedisPresenceStore(redis) }),
      inject: [STORAGE_BACKEND],
    },
    {
      provide: PresenceService,
      useFactory: (store: PresenceStore, accounts: AccountsService) => new PresenceService(store, accounts),
      inject: [PRESENCE_STORE, AccountsService],
    },
    { provide: PRESENCE_API, useExisting: PresenceService },
  ],
  exports: [PresenceService, PRESENCE_API],
})
export class PresenceModule {}
