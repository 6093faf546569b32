import 'reflect-metadata';
import type { Server } from 'node:http';
import { ConsoleLogger, Logger, type LogLevel } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { ConfigError, loadConfig, type ParleyConfig } from '#libs/config';
import { describeListenError, ListenError, MqttBroker } from '#libs/gateway';
import { AppModule } from './app.module.js';

const LEVELS: LogLevel[] = ['fatal', 'error', 'warn', 'log', 'debug', 'verbose'];

function fail(message: string, code: number): never {
  process.stderr.write(`parley: ${message}\n`);
  process.exit(code);
}

async function bootstrap(): Promise<void> {
  let config: ParleyConfig;
  try {
    config = loadConfig();
  } catch (e) {
    if (e instanceof ConfigError) fail(e.message, 2);
    throw e;
  }
  const logLevels = LEVELS.slice(0, LEVELS.indexOf(config.PARLEY_LOG_LEVEL) + 1);
  const app = await NestFactory.create(AppModule.forRoot(config), { logger: new ConsoleLogger({ json: true, logLevels }), abortOnError: false });
  await app.init();
  const httpServer = app.getHttpServer() as Server;
  try {
    // Listen here rather than with app.listen(), so a busy port is our one-line error, not Nest's logged stack.
    await new Promise<void>((resolve, reject) => {
      httpServer.once('error', reject);
      httpServer.listen({ host: config.PARLEY_HTTP_HOST, port: config.PARLEY_HTTP_PORT, ipv6Only: false }, () => {
        httpServer.off('error', reject);
        resolve();
      });
    });
  } catch (e) {
    await app.close();
    fail(describeListenError(e as NodeJS.ErrnoException, config.PARLEY_HTTP_HOST, config.PARLEY_HTTP_PORT, 'HTTP'), 1);
  }
  const http = httpServer.address() as { port: number };
  let mqtt: { port: number; address: string };
  try {
    mqtt = await app.get(MqttBroker).listen(config.PARLEY_MQTT_HOST, config.PARLEY_MQTT_PORT);
  } catch (e) {
    await app.close();
    if (e instanceof ListenError) fail(e.message, 1);
    throw e;
  }
  const logger = new Logger('Parley');
  let stopping = false;
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    logger.log({ event: 'stopping', signal });
    // Shutdown hooks close the listeners, the broker and the store, in that order.
    app.close().then(
      () => process.exit(0),
      (e: unknown) => fail(`shutdown failed: ${String(e)}`, 1),
    );
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  logger.log({
    event: 'listening',
    mqtt: { host: mqtt.address, port: mqtt.port },
    http: { port: http.port },
    storage: config.REDIS_URL ? 'redis' : `embedded (${config.PARLEY_DATA_DIR})`,
  });
}

bootstrap().catch((e: unknown) => fail(e instanceof Error ? e.message : String(e), 1));
