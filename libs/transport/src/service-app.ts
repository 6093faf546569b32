import 'reflect-metadata';
import { Logger, Module, type DynamicModule, type Type } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { ConfigModule } from '#libs/config';
import { HealthModule, Metrics, Readiness } from '#libs/health';
import { fail, jsonLogger, listenHttp, loadConfigOrExit, stopOnSignals, warnOfUnknownSettings } from '#libs/runtime';
import { STORAGE_BACKEND, StorageModule, storageIsReady, storageWritesCheck, type StorageBackend } from '#libs/storage';
import { RedisStreamsServer } from './redis-streams.server.js';
import { observeInto } from './rpc-metrics.js';
import { exposeService } from './rpc-proxy.js';

export interface ServiceSpec<T extends object> {
  /** The service name: its stream, consumer group and call prefix (`presence` → `presence.who`). */
  name: string;
  /** The domain module providing the API. */
  module: Type;
  /** The token of the API object to serve, and the methods to serve. */
  api: symbol;
  methods: readonly (keyof T & string)[];
}

@Module({})
class ServiceAppModule {
  static forRoot(config: ReturnType<typeof loadConfigOrExit>, domain: Type): DynamicModule {
    return { module: ServiceAppModule, imports: [ConfigModule.forRoot(config), StorageModule, HealthModule, domain] };
  }
}

/**
 * Runs one domain service as its own process: its module on Redis storage,
 * its API served over Redis Streams, and /healthz, /readyz (its streams and
 * its storage reachable), /metrics (call latencies, queue depth) over HTTP.
 * The same module runs inside the standalone server; only this wiring differs.
 */
export async function runService<T extends object>(spec: ServiceSpec<T>): Promise<void> {
  const config = loadConfigOrExit();
  if (!config.REDIS_URL) fail(`the ${spec.name} service needs REDIS_URL: it is reached over Redis`, 2);
  const app = await NestFactory.create(ServiceAppModule.forRoot(config, spec.module), { logger: jsonLogger(config), abortOnError: false });
  const metrics = app.get(Metrics);
  const server = new RedisStreamsServer({ url: config.REDIS_URL, prefix: config.PARLEY_REDIS_PREFIX, observe: observeInto(metrics.rpcHandleSeconds) });
  exposeService(server, spec.name, app.get<T>(spec.api), spec.methods);
  app.connectMicroservice({ strategy: server });
  const readiness = app.get(Readiness);
  readiness.register('rpc', () => server.healthy());
  const storage = app.get<StorageBackend>(STORAGE_BACKEND);
  readiness.register('storage', () => storageIsReady(storage));
  const writes = storageWritesCheck(storage);
  if (writes) readiness.register('storage:writes', writes, { required: false });
  metrics.watchQueues(() => server.queueDepths());
  const httpPort = await listenHttp(app, config);
  await app.startAllMicroservices();
  const logger = new Logger(`Parley:${spec.name}`);
  stopOnSignals(app, logger, () => readiness.stopping());
  warnOfUnknownSettings(logger);
  logger.log({ event: 'listening', service: spec.name, http: { host: config.PARLEY_HTTP_HOST, port: httpPort } });
}
