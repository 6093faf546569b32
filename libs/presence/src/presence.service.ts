import { DomainError, type PresenceEvent, type PresenceState, type WhoResult } from '#libs/protocol';
import type { ConnectionRef, HeldConnection, PresenceStore } from './presence.store.js';

export interface UserDirectory {
  exists(user: string): Promise<boolean>;
}

/** Online/offline and last seen, from the connections the gateways report. */
export class PresenceService {
  constructor(
    private readonly store: PresenceStore,
    private readonly users: UserDirectory,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * A connection came up, at `at` when the gateway says (its report may have waited), else now. Resolves with the
   * presence event to publish when the user went online, else null.
   */
  async connected(conn: ConnectionRef, at?: number): Promise<PresenceEvent | null> {
    const { wentOnline } = await this.store.connect(conn, this.timeOf(at));
    return wentOnline ? this.event(conn.user) : null;
  }

  /**
   * A connection closed, cleanly or not, at `at` when the gateway says (a report can arrive late: it waited for the
   * service), else now. Resolves with the event to publish when the user went offline, else null.
   */
  async disconnected(conn: ConnectionRef, at?: number): Promise<PresenceEvent | null> {
    const { wentOffline } = await this.store.disconnect(conn, this.timeOf(at));
    return wentOffline ? this.event(conn.user) : null;
  }

  /**
   * Closes all connections of a gateway that is gone; resolves with the events to publish. `lastAlive` is its last sign
   * of life (its last heartbeat), when known: its users were online until then, not until someone noticed.
   */
  async gatewayGone(gatewayId: string, lastAlive?: number): Promise<PresenceEvent[]> {
    const users = await this.store.dropGateway(gatewayId, this.timeOf(lastAlive));
    return Promise.all(users.map((u) => this.event(u)));
  }

  /**
   * A gateway states every connection it holds now: its records are brought in line with them (see
   * PresenceStore.setGateway). Resolves with the events to publish. Idempotent. `endedBy`, when the gateway says, is
   * when the connections it no longer holds had ended at the latest: the time it took the list (the call may wait for
   * the service), or, for a gateway starting after a crash, its previous run's last sign of life.
   */
  async gatewayHolds(gatewayId: string, held: HeldConnection[], endedBy?: number): Promise<PresenceEvent[]> {
    const now = this.now();
    const users = await this.store.setGateway(gatewayId, held, now, this.timeOf(endedBy));
    return Promise.all(users.map((u) => this.event(u)));
  }

  /** When a reported change happened: at the time the gateway gives, if it is a plausible past time, else now. */
  private timeOf(given: number | undefined): number {
    const now = this.now();
    // Whole milliseconds, as every time in the protocol.
    return typeof given === 'number' && Number.isFinite(given) && given > 0 && given < now ? Math.floor(given) : now;
  }

  /** A user's presence, for anyone who asks. Throws unknown_user. */
  async who(user: string): Promise<WhoResult> {
    if (!(await this.users.exists(user))) throw new DomainError('unknown_user', `there is no user "${user}"`);
    return { user, ...(await this.store.get(user)) };
  }

  /** Presence of a user already known to exist. */
  stateOf(user: string): Promise<PresenceState> {
    return this.store.get(user);
  }

  private async event(user: string): Promise<PresenceEvent> {
    return { type: 'presence', user, ...(await this.store.get(user)) };
  }
}

/** What the gateway calls: the service in process, or the same methods over RPC to the presence app. */
export const PRESENCE_API_METHODS = ['connected', 'disconnected', 'gatewayGone', 'gatewayHolds', 'who', 'stateOf'] as const;
export type PresenceApi = Pick<PresenceService, (typeof PRESENCE_API_METHODS)[number]>;
export const PRESENCE_API = Symbol('PRESENCE_API');
