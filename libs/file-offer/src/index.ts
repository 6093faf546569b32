export * from './file-offer.store.js';
export * from './file-offer.service.js';
export * from './file-offer.module.js';
export * from './embedded/embedded-file-offer.store.js';
export * from './embedded/embedded-file-blob.store.js';
export * from './redis/redis-file-offer.store.js';
export * from './redis/redis-file-blob.store.js';
