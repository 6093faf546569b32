import { Logger } from '@nestjs/common';
import type { Aedes, Client } from 'aedes';
import { withDeadline } from '#libs/health';
import type { ConnectionRef, PresenceApi } from '#libs/presence';
import { LogThrottle } from '#libs/runtime';
import { DELIVERY_QOS, isQuietDevice, topics, type PresenceEvent } from '#libs/protocol';
import type { AccessPolicy } from './access-policy.js';
import { guardOf } from './connection-guard.js';

/** A connection this gateway reports: its ref, and the promise of its `connected` report, which its `disconnected` report waits for. */
interface Tracked {
  ref: ConnectionRef;
  reported: Promise<void>;
  /** When the connection came up: its report may wait, and presence records the start at this time. */
  startedAt: number;
  /** When the connection ended, once it has: its end's report may wait, and presence records the end at this time. */
  endedAt?: number;
  /** When a connection that fell silent was last heard from: its end, for its last seen, rather than when that was noticed. */
  silentSince?: number;
}

/** Waits between attempts to bring this gateway's presence records in line: from the first to the longest. */
const REALIGN_FIRST_DELAY_MS = 500;
const REALIGN_MAX_DELAY_MS = 10_000;

/**
 * Reports every logged-in connection's start and end to the presence service,
 * as the broker sees them: a clean DISCONNECT, a dropped socket and a
 * keep-alive timeout all end in 'clientDisconnect', so presence never rests on
 * a client's Last Will. Presence changes are published retained, so a new
 * subscriber sees the current state at once.
 *
 * A report can fail (Redis restarting, the presence service away), and one
 * that failed may still have been carried out (an RPC that timed out while it
 * waited in the stream). So a failed start is not retried on its own (a failed
 * end is, with its own time, first thing in the realignment: ends are
 * idempotent): the gateway brings its records in line (`realign`): it states every
 * connection it holds now, and presence records exactly those under its
 * gateway id, closing the rest. That covers the failed report whatever became
 * of it, the end of a connection whose start failed (it is reported all the
 * same, a no-op if the start was not carried out), and records another gateway closed while this one could not beat (see
 * GatewayLiveness). It is tried again, with backoff, until it succeeds or the
 * broker closes; reports wait for it, so none overtakes it, and a connection's
 * end is reported only after its start.
 */
export class PresenceTracker {
  private readonly logger = new Logger('PresenceTracker');
  /**
   * Redis restarting fails the report of every connection the gateway holds at once (they all end together): one line
   * per kind of failure every 10 s says as much, with how many were left out; the realignment makes them all good.
   */
  private readonly failureLog = new LogThrottle();
  private counter = 0;
  /** The connections this gateway holds and reports, in the order they came up. */
  private readonly live = new Map<Client, Tracked>();
  /** Reports not finished yet; shutdown waits for them, so the connections the closing broker ends are recorded as gone. */
  private readonly inFlight = new Set<Promise<void>>();
  /** Set while the records are being brought in line (or are due to be): reports wait for `aligned`. */
  private aligning = false;
  private aligned: Promise<void> = Promise.resolve();
  private alignAgain = false;
  /** Cleared when a realignment is asked for, set once one has succeeded (see `inLine`). */
  private recordsInLine = true;
  /**
   * Connections whose end could not be reported, by connection id: the next realignment reports each again first, with
   * the time it ended (an end is idempotent per connection id: one that was carried out after all changes nothing), so
   * the user is last seen when they left, not when presence came back.
   */
  private readonly unreportedEnds = new Map<string, Tracked>();

  constructor(
    private readonly aedes: Aedes,
    private readonly policy: AccessPolicy,
    private readonly presence: PresenceApi,
    private readonly gatewayId: string,
  ) {}

  /**
   * Starts tracking. It first brings this gateway's records in line — it holds no connection yet, so this clears what
   * a previous run left behind (a crash) — in the background, retrying while presence is unreachable, so the gateway
   * starts without it. `previousRunAliveAt` resolves with when that previous run was last alive, if the gateway can
   * tell (else undefined): the connections it left behind are closed then, so their users' last seen is when they were
   * last online, not when this run started.
   */
  start(previousRunAliveAt: Promise<number | undefined> = Promise.resolve(undefined)): void {
    this.realign(previousRunAliveAt);
    this.aedes.on('clientReady', (client) => this.onConnect(client));
    this.aedes.on('clientDisconnect', (client) => this.onDisconnect(client));
    this.aedes.on('keepaliveTimeout', (client) => this.onSilent(client));
  }

  /**
   * Whether this gateway's presence records match its connections, as far as it knows: false while a realignment is
   * due or under way (a report failed), or a report is unanswered. A gateway that stops while this is false leaves
   * records behind, for another gateway to close once it stops beating (see GatewayLiveness.stop).
   */
  get inLine(): boolean {
    return this.recordsInLine && this.inFlight.size === 0;
  }

  /**
   * Brings this gateway's presence records in line with the connections it holds, unless that is under way already;
   * reports wait until it is done. Called when a report failed, and by GatewayLiveness when another gateway took this
   * one for dead and closed its connections in presence.
   */
  realign(endedBy?: Promise<number | undefined>): void {
    // Asked for while one is under way: what failed may postdate the list that one sent, so another follows it.
    if (this.aligning) {
      this.alignAgain = true;
      return;
    }
    this.aligning = true;
    this.recordsInLine = false;
    // Not among the reports a shutdown waits for: reports held back by it are, and with none there is nothing to wait for.
    this.aligned = this.alignRecords(endedBy);
  }

  private async alignRecords(endedByAnswer?: Promise<number | undefined>): Promise<void> {
    // Given at start only: when the previous run was last alive.
    const previousRun = await endedByAnswer?.catch(() => undefined);
    let first = true;
    for (let delay = REALIGN_FIRST_DELAY_MS; !this.aedes.closed; delay = Math.min(delay * 2, REALIGN_MAX_DELAY_MS)) {
      this.alignAgain = false;
      try {
        for (const [connId, tracked] of this.unreportedEnds) {
          const event = await this.presence.disconnected(tracked.ref, tracked.endedAt);
          this.unreportedEnds.delete(connId);
          if (event) await this.publish(event).catch((e: unknown) => this.publishFailed(e));
        }
        // Reports under way now agree with this list (a start of a connection in it, an end of one left out); reports
        // asked for from now on wait for the answer.
        const held = [...this.live.values()].map(({ ref }) => ({ user: ref.user, connId: ref.connId }));
        // Connections left out had ended by now (the call may wait for presence); at first, what a killed previous run
        // left had ended by its last sign of life.
        const endedBy = first && previousRun !== undefined ? previousRun : Date.now();
        const events = await this.presence.gatewayHolds(this.gatewayId, held, endedBy);
        first = false;
        this.logger.log({ event: 'presence_realigned', connections: held.length, changed: events.length });
        for (const event of events) await this.publish(event).catch((e: unknown) => this.publishFailed(e));
        if (this.alignAgain) continue;
        this.aligning = false;
        this.recordsInLine = true;
        return;
      } catch (e) {
        this.logger.warn({ event: 'presence_realign_retry', error: String(e), retryInMs: delay });
        await new Promise((resolve) => setTimeout(resolve, delay).unref());
      }
    }
    this.aligning = false;
  }

  private onConnect(client: Client): void {
    // The broker reports a connection ready even when its socket failed since it was registered, after its
    // 'clientDisconnect': recorded now, it would never be ended, and its user would stay online.
    if (client.closed) return;
    const principal = this.policy.principalOf(client);
    // A quiet connection (`user/.name`: a one-shot command) would only make its user flicker online and offline.
    if (principal?.kind !== 'user' || isQuietDevice(principal.device)) return;
    const ref: ConnectionRef = { user: principal.user, connId: `${this.gatewayId}/${client.id}/${++this.counter}`, gatewayId: this.gatewayId };
    const tracked: Tracked = { ref, reported: Promise.resolve(), startedAt: Date.now() };
    this.live.set(client, tracked);
    tracked.reported = this.track(this.report(tracked, 'connected'));
  }

  private onDisconnect(client: Client): void {
    const tracked = this.live.get(client);
    if (!tracked) return;
    this.live.delete(client);
    const heardLast = tracked.silentSince ?? guardOf(client.conn)?.heardLastAt;
    // Never before it came up: a connection silent from its CONNECT on was online from then.
    tracked.endedAt = heardLast === undefined ? Date.now() : Math.max(tracked.startedAt, heardLast);
    void this.track(tracked.reported.then(() => this.report(tracked, 'disconnected')));
  }

  /**
   * The broker drops a client silent for 1.5 times its keep-alive (the guard, one that asked for none or too long: up to
   * 450 s): it was last online at its last packet, when the timer was last refreshed, not when the timer fired, which
   * would make its last seen up to minutes late.
   */
  private onSilent(client: Client): void {
    const tracked = this.live.get(client);
    const silentFor = (client as Client & { _keepaliveInterval?: number })._keepaliveInterval ?? 0;
    if (tracked && silentFor > 0) tracked.silentSince = Date.now() - silentFor;
  }

  private async report(tracked: Tracked, change: 'connected' | 'disconnected'): Promise<void> {
    // A start held back is still made when its connection has ended meanwhile, its end right after it: the user was
    // online, and is last seen then.
    while (this.aligning) await this.aligned;
    let event: PresenceEvent | null;
    try {
      event = await (change === 'connected'
        ? this.presence.connected(tracked.ref, tracked.startedAt)
        : this.presence.disconnected(tracked.ref, tracked.endedAt));
    } catch (e) {
      const error = String(e);
      const fields = this.failureLog.logFields(`${change}\0${error}`);
      if (fields) this.logger.error({ event: 'presence_report_failed', change, error, ...fields });
      if (change === 'disconnected') this.unreportedEnds.set(tracked.ref.connId, tracked);
      this.realign();
      return;
    }
    if (event) await this.publish(event).catch((e: unknown) => this.publishFailed(e));
  }

  private publishFailed(e: unknown): void {
    this.logger.warn({ event: 'presence_publish_failed', error: String(e) });
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
