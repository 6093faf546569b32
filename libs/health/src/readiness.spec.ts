import { describe, expect, it } from 'vitest';
import { Readiness } from './readiness.js';

describe('Readiness', () => {
  it('is ready when every required check passes, degraded by the others, and not ready once stopping', async () => {
    const readiness = new Readiness();
    readiness.register('storage', () => true);
    readiness.register('group', () => Promise.resolve(false), { required: false });
    expect(await readiness.report()).toEqual({ ready: true, checks: { storage: true, group: false }, degraded: ['group'] });
    readiness.stopping();
    expect(await readiness.report()).toEqual({ ready: false, checks: { storage: true, group: false, running: false }, degraded: ['group'] });
  });
});
