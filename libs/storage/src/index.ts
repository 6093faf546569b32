export * from './embedded-database.js';
export * from './redis-connection.js';
export * from './storage-backend.js';
export * from './storage.module.js';
export * from './data-dir-lock.js';
export * from './data-dir-space.js';
