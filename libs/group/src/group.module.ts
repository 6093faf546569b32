import { Module } from '@nestjs/common';
import { AccountsService } from '#libs/accounts';
import { PARLEY_CONFIG, type ParleyConfig } from '#libs/config';
import {
  CONVERSATION_INDEX_STORE,
  CONVERSATION_LOG_STORE,
  MessagingModule,
  MessagingService,
  type ConversationIndexStore,
  type ConversationLogStore,
} from '#libs/messaging';
import { adapterFor, STORAGE_BACKEND, type StorageBackend } from '#libs/storage';
import { Conversations } from './conversations.js';
import { EmbeddedGroupLocks } from './embedded/embedded-group-locks.js';
import { EmbeddedGroupStore } from './embedded/embedded-group.store.js';
import type { GroupLocks } from './group-locks.js';
import { GROUP_API, GroupService } from './group.service.js';
import type { GroupStore } from './group.store.js';
import { RedisGroupLocks } from './redis/redis-group-locks.js';
import { RedisGroupStore } from './redis/redis-group.store.js';

export const GROUP_STORE = Symbol('GROUP_STORE');
export const GROUP_LOCKS = Symbol('GROUP_LOCKS');

@Module({
  imports: [MessagingModule],
  providers: [
    {
      provide: GROUP_STORE,
      useFactory: (backend: StorageBackend) =>
        adapterFor<GroupStore>(backend, { embedded: (db) => new EmbeddedGroupStore(db), redis: (redis) => new RedisGroupStore(redis) }),
      inject: [STORAGE_BACKEND],
    },
    {
      provide: GROUP_LOCKS,
      useFactory: (backend: StorageBackend) =>
        adapterFor<GroupLocks>(backend, { embedded: () => new EmbeddedGroupLocks(), redis: (redis) => new RedisGroupLocks(redis) }),
      inject: [STORAGE_BACKEND],
    },
    {
      provide: GroupService,
      useFactory: (
        store: GroupStore,
        locks: GroupLocks,
        log: ConversationLogStore,
        index: ConversationIndexStore,
        accounts: AccountsService,
        config: ParleyConfig,
      ) =>
        new GroupService(store, locks, log, index, accounts, {
          maxMembers: config.PARLEY_MAX_GROUP_SIZE,
          maxNameLength: config.PARLEY_MAX_GROUP_NAME_LENGTH,
          maxTextLength: config.PARLEY_MAX_TEXT_LENGTH,
        }),
      inject: [GROUP_STORE, GROUP_LOCKS, CONVERSATION_LOG_STORE, CONVERSATION_INDEX_STORE, AccountsService, PARLEY_CONFIG],
    },
    {
      provide: Conversations,
      useFactory: (messaging: MessagingService, groups: GroupService) => new Conversations(messaging, groups),
      inject: [MessagingService, GroupService],
    },
  ],
  exports: [GroupService, Conversations, MessagingModule],
})
export class GroupModule {}

/** GROUP_API served by the group service in this process (the other wiring is an RPC client). */
@Module({
  imports: [GroupModule],
  providers: [{ provide: GROUP_API, useExisting: GroupService }],
  exports: [GROUP_API],
})
export class GroupApiModule {}
