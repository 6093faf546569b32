import type { RedisConnection } from '#libs/storage';
import { NotAWriter, type AppendInput, type AppendOptions, type AppendResult, type ConversationLogStore, type LogEntry } from '../conversation-log.store.js';

/**
 * The append (see RedisConversationLogStore). ARGV: from\0id, the entry's JSON without its time, the sender, the seq
 * from which writers are checked ('' for no check), the entry's time, then, when the entry sets the writers, '=' and
 * each of them. The time stored is the later of the given one and the last entry's: gateways' clocks, and the moments
 * their appends reach Redis, differ, and a conversation's times must not go back as its seqs go up. Replies
 * {0, seq, ts} (with the writers, when checked), {1, seq, json} for a repeat, {2} when the sender is not a writer.
 */
const APPEND = `
local seen = redis.call('HGET', KEYS[3], ARGV[1])
if seen then
  return {1, tonumber(seen), redis.call('HGET', KEYS[2], seen)}
end
local checked = nil
if ARGV[4] ~= '' then
  local at = redis.call('HGET', KEYS[4], '@')
  if at and tonumber(at) >= tonumber(ARGV[4]) then
    if redis.call('HEXISTS', KEYS[4], '+' .. ARGV[3]) == 0 then return {2} end
    checked = redis.call('HKEYS', KEYS[4])
  end
end
local ts = ARGV[5]
local lastTs = redis.call('GET', KEYS[5])
if lastTs and tonumber(lastTs) > tonumber(ts) then ts = lastTs end
local seq = redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[2], seq, '{"ts":' .. ts .. ',' .. string.sub(ARGV[2], 2))
redis.call('HSET', KEYS[3], ARGV[1], seq)
redis.call('SET', KEYS[5], ts)
if ARGV[6] == '=' then
  redis.call('DEL', KEYS[4])
  redis.call('HSET', KEYS[4], '@', seq)
  for i = 7, #ARGV do redis.call('HSET', KEYS[4], '+' .. ARGV[i], 1) end
end
if checked then return {0, seq, ts, checked} end
return {0, seq, ts}
`;

/**
 * Reads entries seq in [from, to] that exist, clamped to the last seq; with a third argument `n`, only the newest `n` of
 * those (what `readBefore` asks for: a `before` past the end still reads the newest). Returns a flat list seq, json,
 * seq, json…
 */
const READ_RANGE = `
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
local from = tonumber(ARGV[1])
local to = math.min(tonumber(ARGV[2]), last)
if ARGV[3] then from = math.max(from, to - tonumber(ARGV[3]) + 1) end
if from < 1 then from = 1 end
if to < from then return {} end
local fields = {}
for s = from, to do fields[#fields + 1] = s end
local values = redis.call('HMGET', KEYS[2], unpack(fields))
local out = {}
for i, v in ipairs(values) do
  if v then out[#out + 1] = fields[i]; out[#out + 1] = v end
end
return out
`;

type StoredEntry = AppendInput;

/**
 * Keys per conversation: `{prefix}log:{conv}:last` (string, last seq),
 * `{prefix}log:{conv}:entries` (hash seq → JSON entry without seq),
 * `{prefix}log:{conv}:idem` (hash from\0id → seq),
 * `{prefix}log:{conv}:writers` (hash: `@` → the seq that set them, and a field per writer),
 * `{prefix}log:{conv}:ts` (string, the last entry's time).
 * The append is one Lua script (APPEND), so it is atomic and costs one round trip; the appends of one event-loop turn
 * go as one script call (`RedisConnection.batchedScript`), in the order they were made. It answers with the stored
 * entry only for a retry: a new entry is the caller's own, with the time it was stored at.
 */
export class RedisConversationLogStore implements ConversationLogStore {
  private readonly appendScript;
  private readonly readRangeScript;

  constructor(private readonly redis: RedisConnection) {
    this.appendScript = redis.batchedScript('parleyLogAppends', 5, APPEND);
    this.readRangeScript = redis.script('parleyLogReadRange', 2, READ_RANGE);
  }

  private keys(conv: string): [string, string, string] {
    return [this.redis.key('log', conv, 'last'), this.redis.key('log', conv, 'entries'), this.redis.key('log', conv, 'idem')];
  }

  private writersKey(conv: string): string {
    return this.redis.key('log', conv, 'writers');
  }

  async append(conv: string, input: AppendInput, options: AppendOptions = {}): Promise<AppendResult> {
    const { ts, ...untimed } = input;
    const args = [`${input.from}\0${input.id}`, JSON.stringify(untimed), input.from, options.writersSince ?? '', String(Math.trunc(ts))];
    if (options.writers) args.push('=', ...options.writers);
    const keys = [...this.keys(conv), this.writersKey(conv), this.redis.key('log', conv, 'ts')];
    const reply = (await this.appendScript(keys, args)) as [0, number, string, string[]?] | [1, number, string] | [2];
    if (reply[0] === 2) throw new NotAWriter(conv, input.from);
    if (reply[0] === 1) return { entry: { seq: reply[1], ...(JSON.parse(reply[2]) as StoredEntry) }, duplicate: true };
    const entry = { ...input, seq: reply[1], ts: Number(reply[2]) };
    const writers = reply[3]?.filter((f) => f !== '@').map((f) => f.slice(1));
    return writers ? { entry, duplicate: false, writers } : { entry, duplicate: false };
  }

  async readAfter(conv: string, after: number, limit: number): Promise<LogEntry[]> {
    return this.readRange(conv, [after + 1, after + limit]);
  }

  async readBefore(conv: string, before: number, limit: number): Promise<LogEntry[]> {
    return this.readRange(conv, [1, before - 1, limit]);
  }

  async findById(conv: string, from: string, id: string): Promise<LogEntry | undefined> {
    const [, entriesKey, idemKey] = this.keys(conv);
    const seq = await this.redis.client.hget(idemKey, `${from}\0${id}`);
    if (seq === null) return undefined;
    const json = await this.redis.client.hget(entriesKey, seq);
    return json === null ? undefined : { seq: Number(seq), ...(JSON.parse(json) as StoredEntry) };
  }

  async lastSeq(conv: string): Promise<number> {
    return Number((await this.redis.client.get(this.keys(conv)[0])) ?? 0);
  }

  /** Entries by READ_RANGE's arguments: from, to, and the newest how many. */
  private async readRange(conv: string, args: number[]): Promise<LogEntry[]> {
    const [lastKey, entriesKey] = this.keys(conv);
    const flat = (await this.readRangeScript([lastKey, entriesKey], args)) as (number | string)[];
    const out: LogEntry[] = [];
    for (let i = 0; i < flat.length; i += 2) out.push({ seq: Number(flat[i]), ...(JSON.parse(String(flat[i + 1])) as StoredEntry) });
    return out;
  }
}
