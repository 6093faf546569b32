import { randomBytes } from 'node:crypto';
import { startParley, type ParleyServer, type StartOptions } from './parley-server.js';
import { startRedis, type RedisServer } from './redis-server.js';

/** How a spec runs Parley: standalone on the embedded store, or standalone on a private Redis. */
export type Mode = 'embedded' | 'redis';

export interface Topology {
  mode: Mode;
  /** The server clients talk to (restartable: see `restart`). */
  server: ParleyServer;
  redis: RedisServer | undefined;
  /** The environment the server runs with. */
  env: Record<string, string>;
  urls(): string[];
  /** kill -9 the server and start it again on the same data. */
  crashAndRestart(): Promise<void>;
  dispose(): Promise<void>;
}

export async function startTopology(mode: Mode, extraEnv: Record<string, string> = {}, opts: StartOptions = {}): Promise<Topology> {
  const redis = mode === 'redis' ? await startRedis() : undefined;
  const env = { ...extraEnv, ...(redis ? { REDIS_URL: redis.url, PARLEY_REDIS_PREFIX: `t${randomBytes(4).toString('hex')}:` } : {}) };
  const topology: Topology = {
    mode,
    redis,
    env,
    server: await startParley({ ...opts, env }),
    urls: () => [topology.server.mqttUrl, topology.server.mqttUrl6],
    crashAndRestart: async () => {
      await topology.server.kill9();
      topology.server = await startParley({ ...opts, env, dataDir: topology.server.dataDir });
    },
    dispose: async () => {
      await topology.server.dispose();
      await redis?.stop();
    },
  };
  return topology;
}
