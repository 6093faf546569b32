import type { PresenceState } from '#libs/protocol';

/** A live connection of a user, as one gateway knows it. */
export interface ConnectionRef {
  user: string;
  /** Unique per connection, across gateways and restarts. */
  connId: string;
  /** The gateway holding the connection. */
  gatewayId: string;
}

/** A connection as the gateway holding it states it: the gateway is named once for all of them. */
export type HeldConnection = Omit<ConnectionRef, 'gatewayId'>;

/** Storage port for presence: which connections each user has up, and when each user was last online. */
export interface PresenceStore {
  /**
   * Records a connection as up at `at` (last seen then, unless a later time is
   * recorded already). Resolves, once durable, with whether the user went from
   * offline to online. Idempotent per connId.
   */
  connect(conn: ConnectionRef, at: number): Promise<{ wentOnline: boolean }>;

  /**
   * Records a connection as closed at `at`. When it was the user's last, the
   * user is offline from then on, last seen at `at` or at a later time already
   * recorded (a close never moves last seen back). An unknown connId changes
   * nothing.
   */
  disconnect(conn: ConnectionRef, at: number): Promise<{ wentOffline: boolean }>;

  /** The user's presence; offline with lastSeen null when it was never online. */
  get(user: string): Promise<PresenceState>;

  /**
   * Closes every connection recorded under a gateway that is gone (restarted
   * or dead), at `at` (its last sign of life, when known). Resolves with the
   * users that went offline, and those an earlier drop of the same gateway at
   * the same `at` (within the hour) took offline and still are: a retry whose
   * first call was carried out after its caller gave up announces them again.
   */
  dropGateway(gatewayId: string, at: number): Promise<string[]>;

  /**
   * Makes the connections recorded under a gateway exactly `held`: records
   * each missing one as up at `at` and closes every other one at `closedAt`
   * (default `at`; earlier when the gateway knows when they ended, e.g. the
   * last sign of life of its previous run) (the
   * missing ones first, so a user who keeps a connection never passes through
   * offline). Resolves with the users whose state (online or offline) changed.
   * Idempotent. Meant for the gateway itself, bringing its records back in line
   * with the connections it holds after reports of them were lost; it is not
   * atomic against reports of that gateway made meanwhile, so the gateway
   * makes none while it waits for this.
   */
  setGateway(gatewayId: string, held: HeldConnection[], at: number, closedAt?: number): Promise<string[]>;
}

/** How long the users a drop of a gateway took offline are kept, for a retried drop to announce again (see `dropGateway`). */
export const DROPPED_KEPT_MS = 3_600_000;

/** Of `users`, those offline now, in order: one who came back since was announced online then. */
export async function stillOffline(users: string[], presenceOf: (user: string) => Promise<PresenceState>): Promise<string[]> {
  const offline = await Promise.all(users.map(async (u) => ((await presenceOf(u)).state === 'offline' ? u : null)));
  return offline.filter((u) => u !== null);
}
