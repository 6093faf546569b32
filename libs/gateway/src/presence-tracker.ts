import { Logger } from '@nestjs/common';
import type { Aedes, Client } from 'aedes';
import { withDeadline } from '#libs/health';
import type { ConnectionRef, PresenceApi } from '#libs/presence';
import { DELIVERY_QOS, isQuietDevice, topics, type PresenceEvent } from '#libs/protocol';
import type { AccessPolicy } from './access-policy.js';

/**
 * Reports every logged-in connection's start and end to the presence service,
 * as the broker sees them: a clean DISCONNECT, a dropped socket and a
 * keep-alive timeout all end in 'clientDisconnect', so presence never rests on
 * a client's Last Will. Presence changes are published retained, so a new
 * subscriber sees the current state at once.
 */
export class PresenceTracker {
  private readonly logger = new Logger('PresenceTracker');
  private counter = 0;
  /** Each connection's ref and the promise of its `connected` report, which its `disconnected` report waits for. */
  private readonly live = new WeakMap<Client, { ref: ConnectionRef; reported: Promise<unknown> }>();
  /** Reports not finished yet; shutdown waits for them, so the connections the closing broker ends are recorded as gone. */
  private readonly inFlight = new Set<Promise<void>>();

  constructor(
    private readonly aedes: Aedes,
    private readonly policy: AccessPolicy,
    private readonly presence: PresenceApi,
    private readonly gatewayId: string,
  ) {}

  /**
   * Starts tracking, and clears the connections a previous run of this
   * gateway left behind (a crash) — in the background, retrying while the
   * presence store is unreachable, so the gateway starts without it.
   */
  start(): void {
    this.recovered = this.clearPreviousRun();
    this.aedes.on('clientReady', (client) => this.onConnect(client));
    this.aedes.on('clientDisconnect', (client) => this.onDisconnect(client));
  }

  /** Connection reports wait for this, so clearing the previous run can never drop a connection of this run. */
  private recovered: Promise<void> = Promise.resolve();

  private async clearPreviousRun(): Promise<void> {
    for (let delay = 500; !this.aedes.closed; delay = Math.min(delay * 2, 30_000)) {
      try {
        for (const event of await this.presence.gatewayGone(this.gatewayId)) await this.publish(event);
        return;
      } catch (e) {
        this.logger.warn({ event: 'presence_recovery_retry', error: String(e), retryInMs: delay });
        await new Promise((resolve) => setTimeout(resolve, delay).unref());
      }
    }
  }

  private onConnect(client: Client): void {
    // The broker reports a connection ready even when its socket failed since it was registered, after its
    // 'clientDisconnect': recorded now, it would never be ended, and its user would stay online.
    if (client.closed) return;
    const principal = this.policy.principalOf(client);
    // A quiet connection (`user/.name`: a one-shot command) would only make its user flicker online and offline.
    if (principal?.kind !== 'user' || isQuietDevice(principal.device)) return;
    const ref: ConnectionRef = { user: principal.user, connId: `${this.gatewayId}/${client.id}/${++this.counter}`, gatewayId: this.gatewayId };
    const reported = this.track(this.recovered.then(() => this.report(() => this.presence.connected(ref))));
    this.live.set(client, { ref, reported });
  }

  private onDisconnect(client: Client): void {
    const entry = this.live.get(client);
    if (!entry) return;
    this.live.delete(client);
    void this.track(entry.reported.then(() => this.report(() => this.presence.disconnected(entry.ref))));
  }

  /**
   * Waits, at most `ms`, for the reports under way: called at shutdown once every connection has ended, while the
   * broker can still publish and before the stores close, so that a clean stop records its users as offline.
   */
  async settle(ms: number): Promise<void> {
    try {
      await withDeadline(Promise.all(this.inFlight), ms);
    } catch (e) {
      this.logger.warn({ event: 'presence_reports_unfinished', count: this.inFlight.size, error: String(e) });
    }
  }

  private track(report: Promise<void>): Promise<void> {
    this.inFlight.add(report);
    void report.finally(() => this.inFlight.delete(report));
    return report;
  }

  private async report(call: () => Promise<PresenceEvent | null>): Promise<void> {
    try {
      const event = await call();
      if (event) await this.publish(event);
    } catch (e) {
      this.logger.error({ event: 'presence_report_failed', error: String(e) });
    }
  }

  /** Publishes a presence change, retained, for every subscriber on every gateway. */
  publish(event: PresenceEvent): Promise<void> {
    const { user, state, lastSeen } = event;
    return new Promise((resolve, reject) =>
      this.aedes.publish(
        {
          cmd: 'publish',
          topic: topics.presence(user),
          payload: Buffer.from(JSON.stringify({ type: 'presence', user, state, lastSeen })),
          qos: DELIVERY_QOS,
          retain: true,
          dup: false,
        },
        (err?: Error) => (err ? reject(err) : resolve()),
      ),
    );
  }
}
