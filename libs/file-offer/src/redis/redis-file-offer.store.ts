import type { FileRecipientState } from '#libs/protocol';
import type { RedisConnection } from '#libs/storage';
import type { CreateOutcome, FileOfferStore, StoredOffer } from '../file-offer.store.js';

/**
 * Keys: `{prefix}file:offer:{id}` (hash: `meta` JSON of what never changes,
 * `from`, `size`, `uploaded`, `open`, `r:{user}` per receiver, and
 * `s:{user}` per receiver whose state its sender has seen, `announced` once
 * its announcement has left),
 * `{prefix}file:user:{user}` (sorted set of the user's offer ids by creation
 * time), `{prefix}file:open:{user}` (hash: `count`, `bytes` of its open
 * offers), `{prefix}file:due` (sorted set of ids by expiry). Each change is
 * one Lua script: atomic, one round trip.
 */
const CREATE = `
if redis.call('EXISTS', KEYS[1]) == 1 then return 'exists' end
local count = tonumber(redis.call('HGET', KEYS[2], 'count') or '0')
local bytes = tonumber(redis.call('HGET', KEYS[2], 'bytes') or '0')
if count + 1 > tonumber(ARGV[5]) then return 'too_many_offers' end
if bytes + tonumber(ARGV[3]) > tonumber(ARGV[6]) then return 'quota_exceeded' end
redis.call('HSET', KEYS[1], 'meta', ARGV[1], 'from', ARGV[2], 'size', ARGV[3], 'uploaded', ARGV[7], 'open', 1)
for i = 10, #ARGV do redis.call('HSET', KEYS[1], 'r:' .. ARGV[i], 'pending') end
redis.call('HINCRBY', KEYS[2], 'count', 1)
redis.call('HINCRBY', KEYS[2], 'bytes', ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[8], ARGV[4])
for i = 4, #KEYS do redis.call('ZADD', KEYS[i], ARGV[9], ARGV[4]) end
return 'created'
`;

/** Returns {uploaded afterwards, 1 when this call moved it}, or -1 when there is no such offer. */
const ADVANCE = `
local cur = redis.call('HGET', KEYS[1], 'uploaded')
if not cur then return -1 end
if tonumber(ARGV[1]) > tonumber(cur) then
  redis.call('HSET', KEYS[1], 'uploaded', ARGV[1])
  return {tonumber(ARGV[1]), 1}
end
return {tonumber(cur), 0}
`;

/** ARGV: user, state, then the states it may be set from. 0: no such receiver. */
const SET_RECIPIENT = `
local cur = redis.call('HGET', KEYS[1], 'r:' .. ARGV[1])
if not cur then return 0 end
for i = 3, #ARGV do
  if cur == ARGV[i] then
    redis.call('HSET', KEYS[1], 'r:' .. ARGV[1], ARGV[2])
    return 1
  end
end
return 1
`;

/** ARGV: user, state, user, state, …; set only for receivers whose state it still is. */
const MARK_SEEN = `
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], 'r:' .. ARGV[i]) == ARGV[i + 1] then redis.call('HSET', KEYS[1], 's:' .. ARGV[i], ARGV[i + 1]) end
end
return 1
`;

/** Only on an offer still there: a plain HSET would bring back one deleted meanwhile, as a hash without its `meta`. */
const MARK_ANNOUNCED = `
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'announced', 1) end
return 1
`;

/** KEYS: offer, the sender's open totals. Releases the offer once; ARGV[1] = 1 deletes it too. */
const RELEASE = `
if redis.call('HGET', KEYS[1], 'open') == '1' then
  local size = tonumber(redis.call('HGET', KEYS[1], 'size'))
  redis.call('HSET', KEYS[1], 'open', 0)
  if tonumber(redis.call('HINCRBY', KEYS[2], 'count', -1)) <= 0 then
    redis.call('DEL', KEYS[2])
  else
    redis.call('HINCRBY', KEYS[2], 'bytes', -size)
  end
end
if ARGV[1] == '1' then redis.call('DEL', KEYS[1]) end
return 1
`;

type Meta = Omit<StoredOffer, 'uploaded' | 'open' | 'recipients' | 'seen' | 'announced'> & { receivers: string[] };

export class RedisFileOfferStore implements FileOfferStore {
  private readonly advanceScript;
  private readonly setRecipientScript;
  private readonly releaseScript;
  private readonly markSeenScript;
  private readonly markAnnouncedScript;

  constructor(private readonly redis: RedisConnection) {
    this.advanceScript = redis.script('parleyFileOfferAdvance', 1, ADVANCE);
    this.setRecipientScript = redis.script('parleyFileOfferSetRecipientFrom', 1, SET_RECIPIENT);
    this.releaseScript = redis.script('parleyFileOfferRelease', 2, RELEASE);
    this.markSeenScript = redis.script('parleyFileOfferMarkSeen', 1, MARK_SEEN);
    this.markAnnouncedScript = redis.script('parleyFileOfferMarkAnnounced', 1, MARK_ANNOUNCED);
  }

  private offerKey(id: string): string {
    return this.redis.key('file', 'offer', id);
  }
  private userKey(user: string): string {
    return this.redis.key('file', 'user', user);
  }
  private openKey(user: string): string {
    return this.redis.key('file', 'open', user);
  }
  private get dueKey(): string {
    return this.redis.key('file', 'due');
  }

  async create(offer: StoredOffer, limits: { maxOpen: number; quotaBytes: number }): Promise<CreateOutcome> {
    const receivers = Object.keys(offer.recipients);
    const { uploaded: _u, open: _o, recipients: _r, seen: _s, announced: _a, ...fixed } = offer;
    const meta: Meta = { ...fixed, receivers };
    const users = [offer.from, ...receivers];
    // The number of keys varies (the three fixed ones, then each user's list): EVAL, offers are rare.
    const keys = [this.offerKey(offer.id), this.openKey(offer.from), this.dueKey, ...users.map((u) => this.userKey(u))];
    const args = [
      JSON.stringify(meta),
      offer.from,
      offer.size,
      offer.id,
      limits.maxOpen,
      limits.quotaBytes,
      offer.uploaded,
      offer.expiresAt,
      offer.createdAt,
      ...receivers,
    ];
    return (await this.redis.client.eval(CREATE, keys.length, ...keys, ...args)) as CreateOutcome;
  }

  async get(id: string): Promise<StoredOffer | null> {
    const h = await this.redis.client.hgetall(this.offerKey(id));
    if (!h.meta) return null;
    const { receivers, ...meta } = JSON.parse(h.meta) as Meta;
    const recipients: StoredOffer['recipients'] = {};
    const seen: NonNullable<StoredOffer['seen']> = {};
    for (const user of receivers) {
      recipients[user] = (h[`r:${user}`] ?? 'pending') as FileRecipientState;
      if (h[`s:${user}`] !== undefined) seen[user] = h[`s:${user}`] as FileRecipientState;
    }
    const offer: StoredOffer = {
      ...meta,
      uploaded: Number(h.uploaded ?? 0),
      open: h.open === '1',
      recipients,
      ...(h.announced === '1' ? { announced: true } : {}),
    };
    return Object.keys(seen).length > 0 ? { ...offer, seen } : offer;
  }

  async advance(id: string, count: number): Promise<{ uploaded: number; moved: boolean } | null> {
    const r = (await this.advanceScript([this.offerKey(id)], [count])) as [number, number] | number;
    if (!Array.isArray(r)) return null;
    return { uploaded: Number(r[0]), moved: Number(r[1]) === 1 };
  }

  async setRecipient(id: string, user: string, state: FileRecipientState, from: readonly FileRecipientState[]): Promise<StoredOffer | null> {
    const r = await this.setRecipientScript([this.offerKey(id)], [user, state, ...from]);
    return r === 1 ? this.get(id) : null;
  }

  async markSeen(id: string, states: Record<string, FileRecipientState>): Promise<StoredOffer | null> {
    const r = await this.markSeenScript([this.offerKey(id)], Object.entries(states).flat());
    return r === 1 ? this.get(id) : null;
  }

  async markAnnounced(id: string): Promise<void> {
    await this.markAnnouncedScript([this.offerKey(id)], []);
  }

  async close(id: string): Promise<void> {
    const from = await this.redis.client.hget(this.offerKey(id), 'from');
    if (from !== null) await this.releaseScript([this.offerKey(id), this.openKey(from)], [0]);
  }

  async remove(id: string): Promise<StoredOffer | null> {
    const offer = await this.get(id);
    if (!offer) return null;
    await this.releaseScript([this.offerKey(id), this.openKey(offer.from)], [1]);
    const tx = this.redis.client.multi().zrem(this.dueKey, id);
    for (const user of [offer.from, ...Object.keys(offer.recipients)]) tx.zrem(this.userKey(user), id);
    await tx.exec();
    return offer;
  }

  async listOf(user: string): Promise<StoredOffer[]> {
    const ids = await this.redis.client.zrange(this.userKey(user), '0', '-1');
    const offers = await Promise.all(ids.map((id) => this.get(id)));
    return offers.filter((o): o is StoredOffer => o !== null);
  }

  dueBy(now: number, limit: number): Promise<string[]> {
    return this.redis.client.zrangebyscore(this.dueKey, '-inf', String(now), 'LIMIT', 0, limit);
  }
}
