import type { Cursors } from '#libs/protocol';
import type { RedisConnection } from '#libs/storage';
import { NO_CURSORS, type CursorMove, type CursorStore, type ReceiptStatus } from '../cursor.store.js';

/** The forward-only move (see RedisCursorStore). ARGV: user, status, seq, time; replies {moved, from, d, dt, r, rt}. */
const ADVANCE = `
local d = tonumber(redis.call('HGET', KEYS[1], ARGV[1] .. ':d') or '0')
local r = tonumber(redis.call('HGET', KEYS[1], ARGV[1] .. ':r') or '0')
local seq = tonumber(ARGV[3])
local moved = 0
if seq > d then
  redis.call('HSET', KEYS[1], ARGV[1] .. ':d', seq, ARGV[1] .. ':dt', ARGV[4])
  redis.call('ZADD', KEYS[2], seq, seq .. ':' .. ARGV[4])
  moved = 1
end
if ARGV[2] == 'read' and seq > r then
  redis.call('HSET', KEYS[1], ARGV[1] .. ':r', seq, ARGV[1] .. ':rt', ARGV[4])
  redis.call('ZADD', KEYS[3], seq, seq .. ':' .. ARGV[4])
  moved = 1
end
local from = d
if ARGV[2] == 'read' then from = r end
return {moved, from, unpack(redis.call('HMGET', KEYS[1], ARGV[1] .. ':d', ARGV[1] .. ':dt', ARGV[1] .. ':r', ARGV[1] .. ':rt'))}
`;

type Raw = (string | null)[];

function toCursors([d, dt, r, rt]: Raw): Cursors {
  if (d === null || d === undefined) return NO_CURSORS;
  return { delivered: Number(d), deliveredAt: dt ? Number(dt) : null, read: Number(r ?? 0), readAt: rt ? Number(rt) : null };
}

/**
 * Key `{prefix}cursors:{conv}`: a hash with fields `{user}:d`, `{user}:dt`,
 * `{user}:r`, `{user}:rt`. Keys `{prefix}cursor-moves:{conv}:{user}:{status}`:
 * sorted sets of `seq:time` scored by seq, one member per receipt that moved
 * the cursor. The forward-only move is one Lua script (ADVANCE), so two
 * receipts racing can never move a cursor back.
 */
export class RedisCursorStore implements CursorStore {
  private readonly advanceScript;

  constructor(private readonly redis: RedisConnection) {
    this.advanceScript = redis.script('parleyCursorAdvance', 3, ADVANCE);
  }

  private cursorsKey(conv: string): string {
    return this.redis.key('cursors', conv);
  }

  private movesKey(conv: string, user: string, status: ReceiptStatus): string {
    return this.redis.key('cursor-moves', conv, user, status);
  }

  async advance(conv: string, user: string, status: ReceiptStatus, seq: number, at: number): Promise<CursorMove> {
    const [moved, from, ...raw] = (await this.advanceScript(
      [this.cursorsKey(conv), this.movesKey(conv, user, 'delivered'), this.movesKey(conv, user, 'read')],
      [user, status, seq, at],
    )) as [number, number, ...Raw];
    return { cursors: toCursors(raw), moved: moved === 1, from };
  }

  async reachedAt(conv: string, user: string, status: ReceiptStatus, seq: number): Promise<number | null> {
    const [first] = await this.redis.client.zrangebyscore(this.movesKey(conv, user, status), seq, '+inf', 'LIMIT', 0, 1);
    return first === undefined ? null : Number(first.slice(first.indexOf(':') + 1));
  }

  async get(conv: string, user: string): Promise<Cursors> {
    return toCursors(await this.redis.client.hmget(this.cursorsKey(conv), `${user}:d`, `${user}:dt`, `${user}:r`, `${user}:rt`));
  }
}
