export * from './conversation-log.store.js';
export * from './messaging.service.js';
export * from './messaging.module.js';
export * from './embedded/embedded-conversation-log.store.js';
export * from './redis/redis-conversation-log.store.js';
export * from './conversation-index.store.js';
export * from './embedded/embedded-conversation-index.store.js';
export * from './redis/redis-conversation-index.store.js';
