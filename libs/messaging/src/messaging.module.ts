import { Module } from '@nestjs/common';
import { AccountsModule, AccountsService } from '#libs/accounts';
import { PARLEY_CONFIG, type ParleyConfig } from '#libs/config';
import { adapterFor, STORAGE_BACKEND, type StorageBackend } from '#libs/storage';
import type { ConversationIndexStore } from './conversation-index.store.js';
import type { ConversationLogStore } from './conversation-log.store.js';
import { EmbeddedConversationIndexStore } from './embedded/embedded-conversation-index.store.js';
import { EmbeddedConversationLogStore } from './embedded/embedded-conversation-log.store.js';
import { MessagingService } from './messaging.service.js';
import { RedisConversationIndexStore } from './redis/redis-conversation-index.store.js';
import { RedisConversationLogStore } from './redis/redis-conversation-log.store.js';

export const CONVERSATION_LOG_STORE = Symbol('CONVERSATION_LOG_STORE');
export const CONVERSATION_INDEX_STORE = Symbol('CONVERSATION_INDEX_STORE');

@Module({
  imports: [AccountsModule],
  providers: [
    {
      provide: CONVERSATION_LOG_STORE,
      useFactory: (backend: StorageBackend) =>
        adapterFor<ConversationLogStore>(backend, {
          embedded: (db) => new EmbeddedConversationLogStore(db),
          redis: (redis) => new RedisConversationLogStore(redis),
        }),
      inject: [STORAGE_BACKEND],
    },
    {
      provide: CONVERSATION_INDEX_STORE,
      useFactory: (backend: StorageBackend) =>
        adapterFor<ConversationIndexStore>(backend, {
          embedded: (db) => new EmbeddedConversationIndexStore(db),
          redis: (redis) => new RedisConversationIndexStore(redis),
        }),
      inject: [STORAGE_BACKEND],
    },
    {
      provide: MessagingService,
      useFactory: (log: ConversationLogStore, index: ConversationIndexStore, accounts: AccountsService, config: ParleyConfig) =>
        new MessagingService(log, index, accounts, { maxTextLength: config.PARLEY_MAX_TEXT_LENGTH }),
      inject: [CONVERSATION_LOG_STORE, CONVERSATION_INDEX_STORE, AccountsService, PARLEY_CONFIG],
    },
  ],
  exports: [MessagingService, CONVERSATION_LOG_STORE, CONVERSATION_INDEX_STORE, AccountsModule],
})
export class MessagingModule {}
