export * from './access-policy.js';
export * from './inbox-publisher.js';
export * from './inbox-sync.js';
export * from './mqtt-broker.js';
export * from './presence-tracker.js';
export * from './request-dispatcher.js';
export * from './file-requests.js';
export * from './gateway.module.js';
