import type { Redis } from 'ioredis';
import type { Histogram } from 'prom-client';
import type { QueueDepth } from '#libs/health';
import { fieldsOf, rpcKeys } from './rpc-keys.js';

/** Told of every call made or handled: `service.method`, its outcome (`ok` or an error code) and how long it took. */
export type RpcObserver = (service: string, method: string, outcome: string, seconds: number) => void;

/** An observer that records calls in a latency histogram labelled by service, method and outcome. */
export function observeInto(histogram: Histogram<'service' | 'method' | 'outcome'>): RpcObserver {
  return (service, method, outcome, seconds) => histogram.observe({ service, method, outcome }, seconds);
}

/**
 * How many calls each service's stream holds, from XINFO GROUPS for the
 * consumer group named after the service: `waiting` is its lag (entries no
 * replica has read), `pending` what replicas have read and not acknowledged.
 * A stream no one has written holds nothing; before any replica made the
 * group, every entry waits.
 */
export async function rpcQueueDepths(redis: Redis, prefix: string, services: readonly string[]): Promise<QueueDepth[]> {
  return Promise.all(
    services.map(async (service): Promise<QueueDepth> => {
      const stream = rpcKeys.stream(prefix, service);
      let groups: unknown[][];
      try {
        groups = (await redis.xinfo('GROUPS', stream)) as unknown[][];
      } catch (e) {
        if (String(e).includes('no such key')) return { service, waiting: 0, pending: 0 };
        throw e;
      }
      const group = groups.map((g) => fieldsOf(g)).find((g) => g.name === service);
      if (!group) return { service, waiting: await redis.xlen(stream), pending: 0 };
      const pending = Number(group.pending ?? 0);
      if (typeof group.lag === 'number') return { service, waiting: group.lag, pending };
      // Redis cannot tell the lag once entries were deleted from the middle (answered calls are): what is left of the
      // stream is then the calls no replica took, and those taken and not answered.
      return { service, waiting: Math.max(0, (await redis.xlen(stream)) - pending), pending };
    }),
  );
}
