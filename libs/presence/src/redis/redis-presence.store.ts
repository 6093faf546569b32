import type { PresenceState } from '#libs/protocol';
import type { RedisConnection } from '#libs/storage';
import { DROPPED_KEPT_MS, stillOffline, type ConnectionRef, type HeldConnection, type PresenceStore } from '../presence.store.js';
import { SharedReads } from '../shared-reads.js';

/**
 * Keys: `{prefix}presence:conns:{user}` (set of connIds),
 * `{prefix}presence:gateway:{gatewayId}` (set of `user|connId`),
 * `{prefix}presence:seen` (hash user → last time online).
 * Each change is one Lua script: atomic, one round trip. No change moves the
 * last-seen time back (reports carry the time of the change, and a dead
 * gateway's connections close at its last heartbeat, either of which may be
 * older than a time recorded since).
 */
/** Records the user (ARGV[2]) as seen at ARGV[3] in the hash KEYS[3], unless a later time is recorded already. */
const SEEN_AT = `
local seen = tonumber(redis.call('HGET', KEYS[3], ARGV[2]))
if seen == nil or seen < tonumber(ARGV[3]) then redis.call('HSET', KEYS[3], ARGV[2], ARGV[3]) end
`;

const CONNECT = `
local added = redis.call('SADD', KEYS[1], ARGV[1])
if added == 0 then return 0 end
redis.call('SADD', KEYS[2], ARGV[2] .. '|' .. ARGV[1])
${SEEN_AT}
if redis.call('SCARD', KEYS[1]) == 1 then return 1 end
return 0
`;

const DISCONNECT = `
local removed = redis.call('SREM', KEYS[1], ARGV[1])
if removed == 0 then return 0 end
redis.call('SREM', KEYS[2], ARGV[2] .. '|' .. ARGV[1])
${SEEN_AT}
if redis.call('SCARD', KEYS[1]) == 0 then return 1 end
return 0
`;

/** A user's connection count and last-seen time in one command: every 1:1 send asks it. (`false` is a nil in the reply.) */
const GET = `
return {redis.call('SCARD', KEYS[1]), redis.call('HGET', KEYS[2], ARGV[1]) or false}
`;

export class RedisPresenceStore implements PresenceStore {
  /**
   * Reads of a user's presence under way: a read asked for meanwhile shares it (a burst of messages to one user costs
   * one command, not one each). A change made through this store ends the sharing first, so a read asked for after it
   * is issued after it too, on the same connection, and sees it.
   */
  private readonly reads = new SharedReads<PresenceState>();
  private readonly connectScript;
  private readonly disconnectScript;
  private readonly getScript;

  constructor(private readonly redis: RedisConnection) {
    this.connectScript = redis.script('parleyPresenceConnect', 3, CONNECT);
    this.disconnectScript = redis.script('parleyPresenceDisconnect', 3, DISCONNECT);
    this.getScript = redis.script('parleyPresenceGet', 2, GET);
  }

  private connsKey(user: string): string {
    return this.redis.key('presence', 'conns', user);
  }
  private gatewayKey(gatewayId: string): string {
    return this.redis.key('presence', 'gateway', gatewayId);
  }
  private get seenKey(): string {
    return this.redis.key('presence', 'seen');
  }

  async connect(conn: ConnectionRef, at: number): Promise<{ wentOnline: boolean }> {
    this.reads.forget(conn.user);
    const r = await this.connectScript([this.connsKey(conn.user), this.gatewayKey(conn.gatewayId), this.seenKey], [conn.connId, conn.user, at]);
    return { wentOnline: r === 1 };
  }

  async disconnect(conn: ConnectionRef, at: number): Promise<{ wentOffline: boolean }> {
    this.reads.forget(conn.user);
    const r = await this.disconnectScript([this.connsKey(conn.user), this.gatewayKey(conn.gatewayId), this.seenKey], [conn.connId, conn.user, at]);
    return { wentOffline: r === 1 };
  }

  get(user: string): Promise<PresenceState> {
    return this.reads.read(user, () => this.read(user));
  }

  private async read(user: string): Promise<PresenceState> {
    const [count, seen] = (await this.getScript([this.connsKey(user), this.seenKey], [user])) as [number, string | null];
    return { state: count > 0 ? 'online' : 'offline', lastSeen: seen === null ? null : Number(seen) };
  }

  /**
   * As the port says, and also the users an earlier drop of the same gateway at the same time (within DROPPED_KEPT_MS)
   * took offline: the
   * call that did the work may have waited in the service's stream until the gateways that asked had given up on its
   * answer, and their retries then find nothing left to drop; without this, no one would publish those users' offline
   * presence, and watchers would see them online until they came back.
   */
  async dropGateway(gatewayId: string, at: number): Promise<string[]> {
    // Per sweep: a retry carries the same last sign of life; a later crash of a gateway of that id is a sweep of its own.
    const droppedKey = this.redis.key('presence', 'dropped', gatewayId, at);
    const members = await this.redis.client.smembers(this.gatewayKey(gatewayId));
    const wentOffline = new Set<string>();
    for (const member of members) {
      const held = heldOf(member);
      const { wentOffline: off } = await this.disconnect({ ...held, gatewayId }, at);
      if (off) wentOffline.add(held.user);
    }
    if (wentOffline.size > 0)
      await this.redis.client
        .multi()
        .sadd(droppedKey, ...wentOffline)
        .pexpire(droppedKey, DROPPED_KEPT_MS)
        .exec();
    const earlier = (await this.redis.client.smembers(droppedKey)).filter((u) => !wentOffline.has(u));
    return [...wentOffline, ...(await stillOffline(earlier, (u) => this.get(u)))];
  }

  async setGateway(gatewayId: string, held: HeldConnection[], at: number, closedAt = at): Promise<string[]> {
    const recorded = new Set(await this.redis.client.smembers(this.gatewayKey(gatewayId)));
    const wanted = new Set(held.map(memberOf));
    const changed = new Set<string>();
    // One script per connection, issued together (one connection runs them in call order); the gateway reports nothing
    // else meanwhile, and each script is idempotent, so being cut short leaves nothing a second run does not mend.
    const added = await Promise.all(
      held.filter((c) => !recorded.has(memberOf(c))).map(async (c) => ({ user: c.user, ...(await this.connect({ ...c, gatewayId }, at)) })),
    );
    for (const { user, wentOnline } of added) if (wentOnline) changed.add(user);
    const stale = [...recorded].filter((member) => !wanted.has(member));
    const removed = await Promise.all(
      stale.map(async (member) => {
        const c = heldOf(member);
        return { user: c.user, ...(await this.disconnect({ ...c, gatewayId }, closedAt)) };
      }),
    );
    for (const { user, wentOffline } of removed) if (wentOffline) changed.add(user);
    return [...changed];
  }
}

/** A connection as the gateway's set holds it, `user|connId` (the scripts build the same). */
function memberOf(c: HeldConnection): string {
  return `${c.user}|${c.connId}`;
}

/** The connection a member of the gateway's set names. */
function heldOf(member: string): HeldConnection {
  const sep = member.indexOf('|');
  return { user: member.slice(0, sep), connId: member.slice(sep + 1) };
}
