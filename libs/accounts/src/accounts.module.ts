import { Module, type BeforeApplicationShutdown } from '@nestjs/common';
import { PARLEY_CONFIG, type ParleyConfig } from '#libs/config';
import { adapterFor, STORAGE_BACKEND, type StorageBackend } from '#libs/storage';
import type { AccountStore } from './account.store.js';
import { AccountsService } from './accounts.service.js';
import { EmbeddedAccountStore } from './embedded/embedded-account.store.js';
import { PasswordHasher, scryptCostOf } from './password-hasher.js';
import { RedisAccountStore } from './redis/redis-account.store.js';

export const ACCOUNT_STORE = Symbol('ACCOUNT_STORE');

@Module({
  providers: [
    {
      provide: ACCOUNT_STORE,
      useFactory: (backend: StorageBackend) =>
        adapterFor<AccountStore>(backend, { embedded: (db) => new EmbeddedAccountStore(db), redis: (redis) => new RedisAccountStore(redis) }),
      inject: [STORAGE_BACKEND],
    },
    {
      provide: AccountsService,
      useFactory: (store: AccountStore, config: ParleyConfig) =>
        new AccountsService(store, new PasswordHasher(scryptCostOf(config.PARLEY_PASSWORD_COST)), {
          minPasswordLength: config.PARLEY_MIN_PASSWORD_LENGTH,
          verifiedCacheMs: config.PARLEY_LOGIN_CACHE_MS,
        }),
      inject: [ACCOUNT_STORE, PARLEY_CONFIG],
    },
  ],
  exports: [AccountsService],
})
export class AccountsModule implements BeforeApplicationShutdown {
  constructor(private readonly accounts: AccountsService) {}

  /** A password being hashed again at a login is kept before the store closes (see `AccountsService.rehash`). */
  async beforeApplicationShutdown(): Promise<void> {
    await this.accounts.stopRehashing();
  }
}
