export * from './presence.store.js';
export * from './presence.service.js';
export * from './presence.module.js';
export * from './shared-reads.js';
export * from './embedded/embedded-presence.store.js';
export * from './redis/redis-presence.store.js';
