export * from './access-policy.js';
export * from './inbox-publisher.js';
export * from './mqtt-broker.js';
export * from './request-dispatcher.js';
export * from './gateway.module.js';
