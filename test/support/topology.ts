import { randomBytes } from 'node:crypto';
import { startParley, type ParleyServer, type StartOptions } from './parley-server.js';
import { startRedis, type RedisServer } from './redis-server.js';

/**
 * How a spec runs Parley: standalone on the embedded store; standalone on a
 * private Redis; or distributed — Redis (AOF on), the gateway, and the
 * presence, receipts, group and file-offer services each as its own process.
 */
export type Mode = 'embedded' | 'redis' | 'distributed';

const SERVICES = ['presence', 'receipts', 'group', 'file-offer'] as const;

export interface Topology {
  mode: Mode;
  /** The server clients talk to (restartable: see `restart`). */
  server: ParleyServer;
  redis: RedisServer | undefined;
  /** The environment the server runs with. */
  env: Record<string, string>;
  urls(): string[];
  /** The service processes (distributed mode). */
  services: Map<string, ParleyServer>;
  /** kill -9 the server and start it again on the same data. */
  crashAndRestart(): Promise<void>;
  /** Stops the server cleanly (SIGTERM) and starts it again on the same data. */
  restart(): Promise<void>;
  /** kill -9 one service process and start it again (distributed mode). */
  restartService(name: (typeof SERVICES)[number], how?: 'kill9' | 'stop'): Promise<void>;
  /** Stops a service process without restarting it (distributed mode). */
  stopService(name: (typeof SERVICES)[number]): Promise<void>;
  /** Starts one more gateway on the same Redis and services (redis and distributed modes); disposed with the topology. */
  addGateway(id: string, env?: Record<string, string>): Promise<ParleyServer>;
  dispose(): Promise<void>;
}

export async function startTopology(mode: Mode, extraEnv: Record<string, string> = {}, opts: StartOptions = {}): Promise<Topology> {
  const redis = mode === 'embedded' ? undefined : await startRedis({ appendonly: mode === 'distributed' });
  const env = { ...extraEnv, ...(redis ? { REDIS_URL: redis.url, PARLEY_REDIS_PREFIX: `t${randomBytes(4).toString('hex')}:` } : {}) };
  const services = new Map<string, ParleyServer>();
  const startService = async (name: (typeof SERVICES)[number]) => services.set(name, await startParley({ app: name, env }));
  const gatewayEnv = mode === 'distributed' ? { ...env, PARLEY_REMOTE_SERVICES: SERVICES.join(','), PARLEY_GATEWAY_ID: 'gw-a' } : env;
  let server: ParleyServer;
  try {
    // Every start settles before a failure is reported, so that none is left running behind it.
    const started = mode === 'distributed' ? await Promise.allSettled(SERVICES.map(startService)) : [];
    const failed = started.find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;
    server = await startParley({ ...opts, env: gatewayEnv });
  } catch (e) {
    // A topology that could not start stops what it started: the caller has nothing to dispose.
    await Promise.all([...services.values()].map((s) => s.dispose()));
    await redis?.stop();
    throw e;
  }
  const extraGateways: ParleyServer[] = [];
  const topology: Topology = {
    mode,
    redis,
    env,
    services,
    server,
    urls: () => [topology.server.mqttUrl, topology.server.mqttUrl6],
    crashAndRestart: async () => {
      await topology.server.kill9();
      topology.server = await startParley({ ...opts, env: gatewayEnv, dataDir: topology.server.dataDir });
    },
    restart: async () => {
      await topology.server.stop();
      topology.server = await startParley({ ...opts, env: gatewayEnv, dataDir: topology.server.dataDir });
    },
    restartService: async (name, how = 'kill9') => {
      const s = services.get(name);
      if (how === 'kill9') await s?.kill9();
      await s?.dispose();
      await startService(name);
    },
    stopService: async (name) => {
      await services.get(name)?.dispose();
      services.delete(name);
    },
    addGateway: async (id, env = {}) => {
      if (!redis) throw new Error('more gateways need Redis');
      const gateway = await startParley({ ...opts, env: { ...gatewayEnv, ...env, PARLEY_GATEWAY_ID: id } });
      extraGateways.push(gateway);
      return gateway;
    },
    dispose: async () => {
      await Promise.all(extraGateways.map((g) => g.dispose()));
      await topology.server.dispose();
      await Promise.all([...services.values()].map((s) => s.dispose()));
      await redis?.stop();
    },
  };
  return topology;
}
