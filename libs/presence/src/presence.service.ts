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

  /** A connection came up. Resolves with the presence event to publish when the user went online, else null. */
  async connected(conn: ConnectionRef): Promise<PresenceEvent | null> {
    const { wentOnline } = await this.store.connect(conn, this.now());
    return wentOnline ? this.event(conn.user) : null;
  }

  /** A connection closed, cleanly or not. Resolves with the event to publish when the user went offline, else null. */
  async disconnected(conn: ConnectionRef): Promise<PresenceEvent | null> {
    const { wentOffline } = await this.store.disconnect(conn, this.now());
    return wentOffline ? this.event(conn.user) : null;
  }

  /** Closes all connections of a gateway that is gone; resolves with the events to publish. */
  async gatewayGone(gatewayId: string): Promise<PresenceEvent[]> {
    const users = await this.store.dropGateway(gatewayId, this.now());
    return Promise.all(users.map((u) => this.event(u)));
  }

  /**
   * A gateway states every connection it holds now: its records are brought in line with them (see
   * PresenceStore.setGateway). Resolves with the events to publish. Idempotent.
   */
  async gatewayHolds(gatewayId: string, held: HeldConnection[]): Promise<PresenceEvent[]> {
    const users = await this.store.setGateway(gatewayId, held, this.now());
    return Promise.all(users.map((u) => this.event(u)));
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
