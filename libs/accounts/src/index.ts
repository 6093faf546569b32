export * from './account.store.js';
export * from './accounts.service.js';
export * from './accounts.module.js';
export * from './password-hasher.js';
export * from './embedded/embedded-account.store.js';
export * from './redis/redis-account.store.js';
