export * from './metrics.js';
export * from './readiness.js';
export * from './health.controller.js';
export * from './health.module.js';
export * from './deadline.js';
