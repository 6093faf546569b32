import { Logger } from '@nestjs/common';
import type { Aedes, Client } from 'aedes';
import { LogThrottle } from '#libs/runtime';
import type { AccessPolicy } from './access-policy.js';

/** What of the broker this reads beyond its typings: its connected clients by id, and its session store. */
interface BrokerInternals {
  clients: Record<string, Client | undefined>;
  persistence: {
    cleanSubscriptions(client: { id: string }): Promise<unknown>;
    /** Inbound QoS 2 packets awaiting their PUBREL: session state too, which only a clean session otherwise clears. */
    cleanIncoming?(client: { id: string }): Promise<unknown>;
  };
}

/** What a gateway keeps of its users' persistent sessions. */
export interface SessionLimits {
  /** Sessions kept per user, connected or not. */
  maxPerUser: number;
  /** Topic filters a user's sessions that are not connected keep, all told. */
  maxIdleFiltersPerUser: number;
  /** How long a session that is not connected is kept. */
  expiryMs: number;
}

/** Forgotten sessions logged per user (anonymous connections: all together) in 10 s; the rest are counted. */
const FORGOTTEN_LOGGED_PER_USER = 50;

/** A persistent session that is not connected now. */
interface IdleSession {
  owner: string;
  /** The filters it keeps. */
  filters: number;
  /** When its connection ended (the keeper's clock). */
  since: number;
}

/** Why a session was forgotten, as logged. */
type ForgetReason = 'sessions' | 'filters' | 'expired';

/**
 * Bounds what persistent sessions (clean session off) keep in a gateway's
 * memory. The broker keeps such a session's subscriptions for as long as it
 * runs, whether or not the client ever comes back, and a client id names a
 * device (`user/<device>`), so one account could otherwise leave behind as many
 * sessions as it cares to invent device names, each with a full allowance of
 * filters. A session that is not connected is forgotten, as a clean session
 * would end it (its subscriptions and any QoS 2 packets awaiting a PUBREL):
 * - when a login would leave its user more than `maxPerUser` sessions, least
 *   recently used (logged in or out last) first;
 * - when its user's sessions that are not connected would keep more than
 *   `maxIdleFiltersPerUser` filters between them, least recently used first;
 * - `expiryMs` after its connection ended, as MQTT 5's session expiry would.
 *
 * A connected session is never forgotten. A client whose session was forgotten
 * gets CONNACK session present 0 and subscribes again, as after any session lost
 * with a gateway; nothing else is lost with it, because Parley keeps no messages
 * in sessions (every subscription is granted at QoS 0, and the inbox catch-up
 * comes from the conversation logs).
 *
 * Anonymous connections (they may only register) share one allowance.
 */
export class SessionKeeper {
  private readonly logger = new Logger('SessionKeeper');
  /** Each user's persistent sessions by client id, least recently used first. */
  private readonly byUser = new Map<string, Set<string>>();
  /** Sessions not connected now, by client id, in the order their connections ended (oldest first). */
  private readonly idle = new Map<string, IdleSession>();
  /** The filters each user's idle sessions keep, all told. */
  private readonly idleFilters = new Map<string, number>();
  private sweeper: NodeJS.Timeout | undefined;
  /**
   * Forgotten sessions logged per user in 10 s before the rest are only counted (`alikeLeftOut`): a user logging in
   * with a new device name each time has one of its sessions forgotten per login, and the log is not its to fill.
   */
  private readonly forgetLog: LogThrottle;

  constructor(
    private readonly aedes: Aedes,
    private readonly policy: AccessPolicy,
    private readonly limits: SessionLimits,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.forgetLog = new LogThrottle(10_000, now, FORGOTTEN_LOGGED_PER_USER, (owner, n) =>
      this.logger.log({ event: 'log_left_out', of: 'session_forgotten', user: owner || null, alikeLeftOut: n }),
    );
  }

  start(): this {
    this.aedes.on('clientReady', (client) => this.onReady(client));
    this.aedes.on('clientDisconnect', (client) => this.onDisconnect(client));
    // Expired sessions are looked for a few times within their expiry, and at least once a minute.
    this.sweeper = setInterval(() => this.sweep(), Math.min(60_000, Math.max(250, Math.floor(this.limits.expiryMs / 4))));
    this.sweeper.unref();
    return this;
  }

  stop(): void {
    clearInterval(this.sweeper);
  }

  /** Forgets the sessions whose connections ended `expiryMs` ago or longer. */
  sweep(): void {
    const before = this.now() - this.limits.expiryMs;
    for (const [id, session] of this.idle) {
      // In the order their connections ended: the first one still within its time ends the sweep.
      if (session.since > before) break;
      this.forget(id, session.owner, 'expired');
    }
  }

  private ownerOf(client: Client): string | undefined {
    const principal = this.policy.principalOf(client);
    if (!principal) return undefined;
    return principal.kind === 'user' ? principal.user : '';
  }

  private isConnected(id: string): boolean {
    return Boolean((this.aedes as unknown as BrokerInternals).clients[id]);
  }

  private onReady(client: Client): void {
    const owner = this.ownerOf(client);
    if (owner === undefined) return;
    this.wakeUp(client.id);
    const sessions = this.byUser.get(owner) ?? new Set<string>();
    sessions.delete(client.id);
    // A clean session ended whatever that client id kept (the broker cleaned it): nothing is kept for it now.
    if (!client.clean) sessions.add(client.id);
    if (sessions.size === 0) {
      this.byUser.delete(owner);
      return;
    }
    this.byUser.set(owner, sessions);
    if (sessions.size <= this.limits.maxPerUser) return;
    for (const id of sessions) {
      if (sessions.size <= this.limits.maxPerUser) break;
      // One that is connected is in use, and kept (see `forget`).
      this.forget(id, owner, 'sessions');
    }
  }

  private onDisconnect(client: Client): void {
    const owner = this.ownerOf(client);
    if (owner === undefined) return;
    const sessions = this.byUser.get(owner);
    // Kept only for a persistent session; and one taken over by a new connection of the same id is still in use.
    if (!sessions?.has(client.id) || this.isConnected(client.id)) return;
    // A login that got as far as the broker's registration but not to its CONNACK ends here without a `clientReady`:
    // the session's earlier idle record (and its filters) is replaced, not counted twice.
    this.wakeUp(client.id);
    // Used until now: a device that was connected all week and left a minute ago is not the least recently used.
    sessions.delete(client.id);
    sessions.add(client.id);
    const filters = this.policy.filtersHeld(client);
    this.idle.set(client.id, { owner, filters, since: this.now() });
    const kept = (this.idleFilters.get(owner) ?? 0) + filters;
    this.idleFilters.set(owner, kept);
    if (kept <= this.limits.maxIdleFiltersPerUser) return;
    for (const id of sessions) {
      if ((this.idleFilters.get(owner) ?? 0) <= this.limits.maxIdleFiltersPerUser) break;
      if (this.idle.has(id)) this.forget(id, owner, 'filters');
    }
  }

  /** The session is connected again: it no longer counts among its user's idle ones. */
  private wakeUp(id: string): void {
    const session = this.idle.get(id);
    if (!session) return;
    this.idle.delete(id);
    const kept = (this.idleFilters.get(session.owner) ?? 0) - session.filters;
    if (kept > 0) this.idleFilters.set(session.owner, kept);
    else this.idleFilters.delete(session.owner);
  }

  private forget(id: string, owner: string, reason: ForgetReason): void {
    // Connected again, the session is in use, though its login may not have reached `clientReady` yet: the broker has
    // restored its subscriptions, and cleaning the stored ones now would leave the store short of what the client holds
    // (and the next login would say "session present" with filters missing). Its `clientReady` wakes it up.
    if (this.isConnected(id)) return;
    this.wakeUp(id);
    const sessions = this.byUser.get(owner);
    sessions?.delete(id);
    if (sessions?.size === 0) this.byUser.delete(owner);
    void this.clean(id, owner, reason);
  }

  private async clean(id: string, owner: string, reason: ForgetReason): Promise<void> {
    try {
      const store = (this.aedes as unknown as BrokerInternals).persistence;
      await store.cleanSubscriptions({ id });
      await store.cleanIncoming?.({ id });
      const fields = this.forgetLog.logFields(owner);
      if (fields) this.logger.log({ event: 'session_forgotten', client: id, user: owner || null, reason, ...fields });
    } catch (e) {
      this.logger.warn({ event: 'session_forget_failed', client: id, error: String(e) });
    }
  }
}
