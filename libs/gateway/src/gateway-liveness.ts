import { randomUUID } from 'node:crypto';
import { Logger } from '@nestjs/common';
import { withDeadline } from '#libs/health';
import type { PresenceApi } from '#libs/presence';
import type { RedisConnection } from '#libs/storage';
import type { PresenceTracker } from './presence-tracker.js';

/** How long a starting gateway waits for Redis to say when its previous run last beat, and a stopping one to leave. */
const LAST_BEAT_WAIT_MS = 2_000;

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
  /** Which process beats for this gateway id: this one's token, written at every beat (see `checkAlone`). */
  private readonly instanceKey: string;
  private readonly token = randomUUID();
  private beats = 0;

  constructor(
    private readonly redis: RedisConnection,
    private readonly gatewayId: string,
    private readonly presence: PresenceApi,
    private readonly tracker: PresenceTracker,
    private readonly opts: LivenessOptions,
  ) {
    this.key = redis.key('gateways');
    this.instanceKey = redis.key('gateways', 'instance', gatewayId);
  }

  start(): void {
    const tick = () => void this.beatAndSweep().catch((e: unknown) => this.logger.warn({ event: 'liveness_failed', error: String(e) }));
    tick();
    this.timer = setInterval(tick, this.opts.beatMs);
    this.timer.unref();
  }

  /**
   * When this gateway last beat before it started: its previous run's last sign of life, if that run was killed before
   * another gateway noticed (a clean stop leaves the roster). Undefined when there is none, or Redis does not answer
   * within `ms`. Asked before `start`, whose first beat replaces it.
   */
  async lastBeat(ms = LAST_BEAT_WAIT_MS): Promise<number | undefined> {
    const score = await withDeadline(this.redis.client.zscore(this.key, this.gatewayId), ms).catch(() => null);
    return score === null ? undefined : Number(score);
  }

  /**
   * Called last in a clean stop, once the connections the shutdown ended have been reported. When presence has them all
   * (`recordsInLine`), the gateway leaves the roster. Otherwise (presence was unreachable) it beats a last time and
   * stays: another gateway takes it for dead after `deadAfterMs` and closes its connections, at this last beat, as it
   * would after a crash. (A gateway alone in the cluster leaves them until it starts again.)
   */
  async stop(recordsInLine: boolean): Promise<void> {
    clearInterval(this.timer);
    const leaving = recordsInLine ? this.redis.client.zrem(this.key, this.gatewayId) : this.redis.client.zadd(this.key, Date.now(), this.gatewayId);
    // Bounded, so a Redis that does not answer cannot hold up the stop: not leaving leaves the last beat, as a crash would.
    await withDeadline(leaving, LAST_BEAT_WAIT_MS).catch(() => undefined);
    if (!recordsInLine) this.logger.warn({ event: 'presence_left_to_sweep', gateway: this.gatewayId, afterMs: this.opts.deadAfterMs });
  }

  /**
   * Two live processes with one PARLEY_GATEWAY_ID would each take the other's connections for its own: presence would
   * flap, and a realignment by one would close the other's users. Each beat writes this process's token and reads the
   * one it replaces: another token, after the first beat (which replaces a previous run's, killed or stopped), means
   * another process beat for this id since. Said as an error at every such beat, until one of them goes.
   */
  private async checkAlone(): Promise<void> {
    const previous = await this.redis.client.set(this.instanceKey, this.token, 'PX', this.opts.deadAfterMs * 3, 'GET');
    if (this.beats++ > 0 && previous !== null && previous !== this.token)
      this.logger.error({
        event: 'gateway_id_in_use',
        gateway: this.gatewayId,
        message: `another gateway process beats as ${this.gatewayId}: give each gateway its own PARLEY_GATEWAY_ID`,
      });
  }

  private async beatAndSweep(): Promise<void> {
    await this.checkAlone();
    const now = Date.now();
    // Added rather than updated: another gateway took this one for dead (it could not beat: Redis was away, say) and
    // closed its connections in presence, or Redis lost the roster. Either way the records of the connections this
    // gateway still holds are to be restored. (At start this is the realignment under way already.)
    if ((await this.redis.client.zadd(this.key, now, this.gatewayId)) === 1) this.tracker.realign();
    const roster = await this.redis.client.zrangebyscore(this.key, '-inf', now - this.opts.deadAfterMs, 'WITHSCORES');
    for (let i = 0; i < roster.length; i += 2) {
      const [id, lastBeat] = [roster[i]!, Number(roster[i + 1])];
      if (id === this.gatewayId) continue;
      // Its users were online until it last beat, not until now.
      const events = await this.presence.gatewayGone(id, lastBeat);
      for (const event of events) await this.tracker.publish(event);
      await this.redis.client.zrem(this.key, id);
      this.logger.log({ event: 'gateway_gone', gateway: id, wentOffline: events.length });
    }
  }
}
