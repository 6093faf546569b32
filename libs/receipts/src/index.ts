export * from './cursor.store.js';
export * from './cursor-moves.js';
export * from './receipts.service.js';
export * from './receipts.module.js';
export * from './embedded/embedded-cursor.store.js';
export * from './redis/redis-cursor.store.js';
