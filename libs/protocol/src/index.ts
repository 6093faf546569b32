export * from './topics.js';
export * from './errors.js';
export * from './payloads.js';
export * from './asyncapi.js';
export * from './file-names.js';
export * from './visible-text.js';
export * from './lenient.js';
export * from './byte-sizes.js';
