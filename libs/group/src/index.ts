export * from './group-state.js';
export * from './group.store.js';
export * from './group.service.js';
export * from './conversations.js';
export * from './group.module.js';
export * from './embedded/embedded-group.store.js';
export * from './redis/redis-group.store.js';
