import type { Database } from 'lmdb';
import type { PresenceState } from '#libs/protocol';
import type { EmbeddedDatabase } from '#libs/storage';
import { DROPPED_KEPT_MS, stillOffline, type ConnectionRef, type HeldConnection, type PresenceStore } from '../presence.store.js';

/** Users whose presence is cached at most. */
const MAX_CACHED = 100_000;

/**
 * Sub-databases: `presence-conns` keyed [user, connId] → gatewayId;
 * `presence-by-gateway` keyed [gatewayId, user, connId]; `presence-seen`
 * keyed user → last time online.
 */
export class EmbeddedPresenceStore implements PresenceStore {
  private readonly conns: Database<string, [string, string]>;
  private readonly byGateway: Database<true, [string, string, string]>;
  private readonly seen: Database<number, string>;
  /**
   * Each user's presence as last read. It is read for every message sent and changes only when a connection opens or
   * closes, so reads come from here; an entry goes once a change to that user is committed (this process is the store's
   * only writer).
   */
  private readonly cached = new Map<string, PresenceState>();
  /** The users each drop of a gateway took offline, and until when they are kept (see `dropGateway`). */
  private readonly dropped = new Map<string, { users: Set<string>; until: number }>();

  constructor(db: EmbeddedDatabase) {
    this.conns = db.open('presence-conns');
    this.byGateway = db.open('presence-by-gateway');
    this.seen = db.open('presence-seen');
  }

  private countOf(user: string): number {
    return this.conns.getKeysCount({ start: [user, ''], end: [user, '\uffff'] });
  }

  connect(conn: ConnectionRef, at: number): Promise<{ wentOnline: boolean }> {
    return this.changing(conn.user, () => ({ wentOnline: this.add(conn.user, conn.connId, conn.gatewayId, at) }));
  }

  disconnect(conn: ConnectionRef, at: number): Promise<{ wentOffline: boolean }> {
    return this.changing(conn.user, () => ({ wentOffline: this.remove(conn.user, conn.connId, conn.gatewayId, at) }));
  }

  /** A write transaction changing one user's presence; its cached presence goes once the change is committed (or failed). */
  private changing<T>(user: string, change: () => T): Promise<T> {
    return this.conns.transaction(change).finally(() => this.cached.delete(user));
  }

  /** Inside a write transaction: records one connection, unless it is recorded already; true when it is the user's first. */
  private add(user: string, connId: string, gatewayId: string, at: number): boolean {
    if (this.conns.get([user, connId]) !== undefined) return false;
    const first = this.countOf(user) === 0;
    void this.conns.put([user, connId], gatewayId);
    void this.byGateway.put([gatewayId, user, connId], true);
    this.seenAt(user, at);
    return first;
  }

  /** Inside a write transaction: removes one connection; true when it was the user's last. */
  private remove(user: string, connId: string, gatewayId: string, at: number): boolean {
    if (this.conns.get([user, connId]) === undefined) return false;
    void this.conns.remove([user, connId]);
    void this.byGateway.remove([gatewayId, user, connId]);
    this.seenAt(user, at);
    return this.countOf(user) === 0;
  }

  /**
   * Inside a write transaction: the user was online at `at`. Never back: reports carry the time of the change, and a
   * dead gateway's connections close at its last sign of life, either of which may be older than one recorded since.
   */
  private seenAt(user: string, at: number): void {
    if ((this.seen.get(user) ?? 0) < at) void this.seen.put(user, at);
  }

  get(user: string): Promise<PresenceState> {
    let presence = this.cached.get(user);
    if (!presence) {
      presence = { state: this.countOf(user) > 0 ? 'online' : 'offline', lastSeen: this.seen.get(user) ?? null };
      // Bounded: past that many users, start over rather than grow without end.
      if (this.cached.size >= MAX_CACHED) this.cached.clear();
      this.cached.set(user, presence);
    }
    return Promise.resolve({ ...presence });
  }

  /** As the port says: with the users an earlier drop of the gateway at `at` (within DROPPED_KEPT_MS) took offline, still offline. */
  async dropGateway(gatewayId: string, at: number): Promise<string[]> {
    // Rare (a gateway gone) and touching many users: every cached presence goes.
    const wentOffline = await this.conns
      .transaction(() => {
        const users = new Set<string>();
        for (const [, user, connId] of this.byGateway.getKeys({ start: [gatewayId, '', ''], end: [gatewayId, '\uffff', ''] })) {
          if (this.remove(user, connId, gatewayId, at)) users.add(user);
        }
        return users;
      })
      .finally(() => this.cached.clear());
    const now = Date.now();
    for (const [id, d] of this.dropped) if (d.until <= now) this.dropped.delete(id);
    // Per sweep: a retry carries the same last sign of life; a later crash of a gateway of that id is a sweep of its own.
    const sweep = `${gatewayId}\0${at}`;
    const earlier = [...(this.dropped.get(sweep)?.users ?? [])].filter((u) => !wentOffline.has(u));
    if (wentOffline.size > 0) this.dropped.set(sweep, { users: new Set([...earlier, ...wentOffline]), until: now + DROPPED_KEPT_MS });
    return [...wentOffline, ...(await stillOffline(earlier, (u) => this.get(u)))];
  }

  setGateway(gatewayId: string, held: HeldConnection[], at: number, closedAt = at): Promise<string[]> {
    return this.conns
      .transaction(() => {
        const changed = new Set<string>();
        const wanted = new Set<string>();
        for (const { user, connId } of held) {
          wanted.add(`${user}|${connId}`);
          if (this.add(user, connId, gatewayId, at)) changed.add(user);
        }
        for (const [, user, connId] of this.byGateway.getKeys({ start: [gatewayId, '', ''], end: [gatewayId, '\uffff', ''] })) {
          if (!wanted.has(`${user}|${connId}`) && this.remove(user, connId, gatewayId, closedAt)) changed.add(user);
        }
        return [...changed];
      })
      .finally(() => this.cached.clear());
  }
}
