export * from './rpc-keys.js';
export * from './redis-streams.server.js';
export * from './redis-streams.client.js';
export * from './rpc-proxy.js';
export * from './rpc-metrics.js';
export * from './remote-services.module.js';
export * from './service-app.js';
