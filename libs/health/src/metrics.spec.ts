import { describe, expect, it } from 'vitest';
import { Metrics } from './metrics.js';

const depthLines = (text: string) => text.split('\n').filter((l) => l.startsWith('parley_rpc_queue_depth{'));

describe('Metrics queue depths', () => {
  it('reads every source at each scrape, and drops what a source no longer reports', async () => {
    const metrics = new Metrics();
    let waiting: number | null = 3;
    metrics.watchQueues(() => Promise.resolve([{ service: 'receipts', waiting, pending: 1 }]));
    expect(depthLines(await metrics.registry.metrics())).toEqual([
      'parley_rpc_queue_depth{service="receipts",state="waiting"} 3',
      'parley_rpc_queue_depth{service="receipts",state="pending"} 1',
    ]);
    // A queue that cannot tell its lag shows only what it knows.
    waiting = null;
    expect(depthLines(await metrics.registry.metrics())).toEqual(['parley_rpc_queue_depth{service="receipts",state="pending"} 1']);
  });

  it('leaves out a source that fails or does not answer in time, instead of failing or stalling the scrape', async () => {
    const metrics = new Metrics();
    metrics.watchQueues(() => Promise.reject(new Error('redis away')));
    metrics.watchQueues(() => new Promise(() => undefined));
    metrics.watchQueues(() => Promise.resolve([{ service: 'group', waiting: 0, pending: 0 }]));
    const started = Date.now();
    expect(depthLines(await metrics.registry.metrics())).toEqual([
      'parley_rpc_queue_depth{service="group",state="waiting"} 0',
      'parley_rpc_queue_depth{service="group",state="pending"} 0',
    ]);
    expect(Date.now() - started).toBeLessThan(5000);
  });
});
