import type { RedisConnection } from '#libs/storage';
import type { DeviceCursors, DeviceCursorStore } from '../device-cursor.store.js';

const GET = `
local used = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not used then return false end
return {used, redis.call('HGETALL', KEYS[2])}
`;

const START = `
if ARGV[5] == '1' then redis.call('DEL', KEYS[2]) else redis.call('HDEL', KEYS[2], '') end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local keep = tonumber(ARGV[3])
local forgotten = {}
local count = redis.call('ZCARD', KEYS[1])
if count > keep then
  for _, device in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    if count <= keep then break end
    if device ~= ARGV[1] then
      redis.call('ZREM', KEYS[1], device)
      redis.call('DEL', ARGV[4] .. device)
      forgotten[#forgotten + 1] = device
      count = count - 1
    end
  end
end
return forgotten
`;

const FILL = `
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return false end
local now = {}
for i = 2, #ARGV, 2 do
  local had = tonumber(redis.call('HGET', KEYS[2], ARGV[i]) or '0')
  local seq = tonumber(ARGV[i + 1])
  if seq > had then
    redis.call('HSET', KEYS[2], ARGV[i], seq)
    had = seq
  end
  now[#now + 1] = ARGV[i]
  now[#now + 1] = had
end
redis.call('HSET', KEYS[2], '', 1)
return now
`;

const ADVANCE = `
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], 'XX', ARGV[2], ARGV[1])
local seq = tonumber(ARGV[4])
if tonumber(redis.call('HGET', KEYS[2], ARGV[3]) or '0') >= seq then return 0 end
redis.call('HSET', KEYS[2], ARGV[3], seq)
return 1
`;

/**
 * Keys: `{prefix}devices:{user}`, a sorted set of the user's known devices scored by when each was last used;
 * `{prefix}device-cursors:{user}:{device}`, a hash conv → seq, with the field `''` once the device is complete. Each
 * change is one Lua script. `start` names the hashes of the devices it forgets from the prefix it is given (ARGV), so
 * the deployment must be one Redis, not a cluster (as every other part of Parley assumes).
 */
export class RedisDeviceCursorStore implements DeviceCursorStore {
  private readonly getScript;
  private readonly startScript;
  private readonly advanceScript;
  private readonly fillScript;

  constructor(private readonly redis: RedisConnection) {
    this.getScript = redis.script('parleyDeviceGet', 2, GET);
    this.startScript = redis.script('parleyDeviceStart', 2, START);
    this.fillScript = redis.script('parleyDeviceFill', 2, FILL);
    this.advanceScript = redis.script('parleyDeviceAdvance', 2, ADVANCE);
  }

  private devicesKey(user: string): string {
    return this.redis.key('devices', user);
  }

  private cursorsKey(user: string, device: string): string {
    return this.redis.key('device-cursors', user, device);
  }

  async get(user: string, device: string): Promise<DeviceCursors | null> {
    const raw = (await this.getScript([this.devicesKey(user), this.cursorsKey(user, device)], [device])) as [string, string[]] | null;
    if (!raw) return null;
    const [usedAt, flat] = raw;
    const cursors: Record<string, number> = {};
    let complete = false;
    for (let i = 0; i < flat.length; i += 2) {
      if (flat[i] === '') complete = true;
      else cursors[flat[i]!] = Number(flat[i + 1]);
    }
    return { cursors, usedAt: Number(usedAt), complete };
  }

  async start(user: string, device: string, at: number, keep: number, fresh: boolean): Promise<string[]> {
    return (await this.startScript(
      [this.devicesKey(user), this.cursorsKey(user, device)],
      [device, at, keep, this.cursorsKey(user, ''), fresh ? '1' : '0'],
    )) as string[];
  }

  async fill(user: string, device: string, positions: Record<string, number>): Promise<Record<string, number> | null> {
    const pairs = Object.entries(positions).flatMap(([conv, seq]) => [conv, seq]);
    const flat = (await this.fillScript([this.devicesKey(user), this.cursorsKey(user, device)], [device, ...pairs])) as (string | number)[] | null;
    if (!flat) return null;
    const now: Record<string, number> = {};
    for (let i = 0; i < flat.length; i += 2) now[String(flat[i])] = Number(flat[i + 1]);
    return now;
  }

  async advance(user: string, device: string, conv: string, seq: number, at: number): Promise<{ moved: boolean }> {
    return { moved: (await this.advanceScript([this.devicesKey(user), this.cursorsKey(user, device)], [device, at, conv, seq])) === 1 };
  }

  async touch(user: string, device: string, at: number): Promise<void> {
    await this.redis.client.zadd(this.devicesKey(user), 'XX', at, device);
  }
}
