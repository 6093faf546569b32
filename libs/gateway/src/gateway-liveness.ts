import { Logger } from '@nestjs/common';
import type { PresenceApi } from '#libs/presence';
import type { RedisConnection } from '#libs/storage';
import type { PresenceTracker } from './presence-tracker.js';

export interface LivenessOptions {
  beatMs: number;
  /** A gateway silent for this long is taken for dead: its connections are closed in presence. */
  deadAfterMs: number;
}

/**
 * Gateways on one Redis watch each other: each records a heartbeat, and each
 * in turn closes, in presence, the connections of a gateway that stopped
 * beating (killed, or cut off), so its users go offline within a bounded time
 * instead of staying online forever. Closing is idempotent, so two gateways
 * sweeping the same dead one do no harm.
 */
export class GatewayLiveness {
  private readonly logger = new Logger('GatewayLiveness');
  private timer: NodeJS.Timeout | undefined;
  private readonly key: string;

  constructor(
    private readonly redis: RedisConnection,
    private readonly gatewayId: string,
    private readonly presence: PresenceApi,
    private readonly tracker: PresenceTracker,
    private readonly opts: LivenessOptions,
  ) {
    this.key = redis.key('gateways');
  }

  start(): void {
    const tick = () => void this.beatAndSweep().catch((e: unknown) => this.logger.warn({ event: 'liveness_failed', error: String(e) }));
    tick();
    this.timer = setInterval(tick, this.opts.beatMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    // A clean stop: this gateway's connections are closed one by one as it shuts down; it leaves the roster now.
    await this.redis.client.zrem(this.key, this.gatewayId).catch(() => undefined);
  }

  private async beatAndSweep(): Promise<void> {
    const now = Date.now();
    // Added rather than updated: another gateway took this one for dead (it could not beat: Redis was away, say) and
    // closed its connections in presence, or Redis lost the roster. Either way the records of the connections this
    // gateway still holds are to be restored. (At start this is the realignment under way already.)
    if ((await this.redis.client.zadd(this.key, now, this.gatewayId)) === 1) this.tracker.realign();
    const dead = (await this.redis.client.zrangebyscore(this.key, '-inf', now - this.opts.deadAfterMs)).filter((id) => id !== this.gatewayId);
    for (const id of dead) {
      const events = await this.presence.gatewayGone(id);
      for (const event of events) await this.tracker.publish(event);
      await this.redis.client.zrem(this.key, id);
      this.logger.log({ event: 'gateway_gone', gateway: id, wentOffline: events.length });
    }
  }
}
