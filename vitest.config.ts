import { defineConfig } from 'vitest/config';

export default defineConfig({
  resolve: {
    // Resolve `#libs/*` to the TypeScript sources (see "imports" in package.json).
    conditions: ['source'],
  },
  ssr: { resolve: { conditions: ['source'] } },
  test: {
    include: ['libs/**/*.spec.ts', 'apps/**/*.spec.ts', 'test/**/*.spec.ts'],
    // End-to-end specs start real processes; on 2 cores a few files at a time is the reliable pace.
    maxWorkers: 2,
    testTimeout: 30_000,
    hookTimeout: 60_000,
    teardownTimeout: 20_000,
  },
});
