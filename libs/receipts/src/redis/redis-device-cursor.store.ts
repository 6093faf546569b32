import type { RedisConnection } from '#libs/storage';
import type { DeviceCursors, DeviceCursorStore } from '../device-cursor.store.js';

/**
 * Keys: `{prefix}devices:{user}`, a sorted set of the user's known devices scored by when each was last used;
 * `{prefix}device-cursors:{user}:{device}`, a hash conv → seq. Each change is one Lua script. `start` names the hashes
 * of the devices it forgets from the prefix it is given (ARGV), so the deployment must be one Redis, not a cluster (as
 * every other part of Parley assumes).
 */
const GET = `
local used = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not used then return false end
return {used, redis.call('HGETALL', KEYS[2])}
`;

const START = `
redis.call('DEL', KEYS[2])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
for i = 5, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
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

const ADVANCE = `
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], 'XX', ARGV[2], ARGV[1])
local seq = tonumber(ARGV[4])
if tonumber(redis.call('HGET', KEYS[2], ARGV[3]) or '0') >= seq then return 0 end
redis.call('HSET', KEYS[2], ARGV[3], seq)
return 1
`;

export class RedisDeviceCursorStore implements DeviceCursorStore {
  private readonly getScript;
  private readonly startScript;
  private readonly advanceScript;

  constructor(private readonly redis: RedisConnection) {
    this.getScript = redis.script('parleyDeviceGet', 2, GET);
    this.startScript = redis.script('parleyDeviceStart', 2, START);
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
    for (let i = 0; i < flat.length; i += 2) cursors[flat[i]!] = Number(flat[i + 1]);
    return { cursors, usedAt: Number(usedAt) };
  }

  async start(user: string, device: string, cursors: Record<string, number>, at: number, keep: number): Promise<string[]> {
    const pairs = Object.entries(cursors).flatMap(([conv, seq]) => [conv, seq]);
    return (await this.startScript(
      [this.devicesKey(user), this.cursorsKey(user, device)],
      [device, at, keep, this.cursorsKey(user, ''), ...pairs],
    )) as string[];
  }

  async advance(user: string, device: string, conv: string, seq: number, at: number): Promise<{ moved: boolean }> {
    return { moved: (await this.advanceScript([this.devicesKey(user), this.cursorsKey(user, device)], [device, at, conv, seq])) === 1 };
  }

  async touch(user: string, device: string, at: number): Promise<void> {
    await this.redis.client.zadd(this.devicesKey(user), 'XX', at, device);
  }
}
