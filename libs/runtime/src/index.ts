export * from './runtime.js';
export * from './log-throttle.js';
