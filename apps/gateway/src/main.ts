import 'reflect-metadata';
import { Logger, type INestApplication } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { ListenError, MqttBroker } from '#libs/gateway';
import { Readiness } from '#libs/health';
import { fail, jsonLogger, listenHttp, loadConfigOrExit, routeConsoleToLog, stopOnSignals, warnOfUnknownSettings } from '#libs/runtime';
import { listenAddresses, listenerClash, type ParleyConfig } from '#libs/config';
import { DATA_DIR_FULL_EXIT, DataDirFullError, DataDirLock, START_ROOM_BYTES } from '#libs/storage';
import { AppModule } from './app.module.js';

/** The gateway: the MQTT broker and edge; with no PARLEY_REMOTE_SERVICES, the whole standalone server. */
async function bootstrap(): Promise<void> {
  const config = loadConfigOrExit();
  const clash = listenerClash(config, await listenAddresses(config));
  if (clash) fail(`invalid configuration: ${clash}`, 2);
  routeConsoleToLog(config);
  // Said in one line before start-up, rather than as a failed provider's stack trace (the store takes the lock itself).
  if (!config.REDIS_URL) {
    try {
      DataDirLock.check(config.PARLEY_DATA_DIR);
    } catch (e) {
      if (e instanceof DataDirFullError) failOnFullDisk(e, config);
      fail((e as Error).message, 1);
    }
  }
  let app: INestApplication;
  try {
    app = await NestFactory.create(AppModule.forRoot(config), { logger: jsonLogger(config), abortOnError: false });
  } catch (e) {
    // The disk filled between the check and the store's own take of the directory.
    if (e instanceof DataDirFullError) failOnFullDisk(e, config);
    throw e;
  }
  const httpPort = await listenHttp(app, config);
  let mqtt: { port: number; address: string };
  const extra: Partial<Record<'mqtts' | 'ws' | 'wss', { port: number }>> = {};
  try {
    const broker = app.get(MqttBroker);
    mqtt = await broker.listen(config.PARLEY_MQTT_HOST, config.PARLEY_MQTT_PORT);
    const tls = config.PARLEY_TLS_CERT && config.PARLEY_TLS_KEY ? { cert: config.PARLEY_TLS_CERT, key: config.PARLEY_TLS_KEY } : undefined;
    // Each optional listener is on its own port, on its own address if given, else on plain MQTT's.
    for (const [kind, port, host] of [
      ['mqtts', config.PARLEY_MQTTS_PORT, config.PARLEY_MQTTS_HOST],
      ['ws', config.PARLEY_WS_PORT, config.PARLEY_WS_HOST],
      ['wss', config.PARLEY_WSS_PORT, config.PARLEY_WSS_HOST],
    ] as const) {
      if (port !== undefined) extra[kind] = { port: (await broker.listenOn(kind, host ?? config.PARLEY_MQTT_HOST, port, tls)).port };
    }
  } catch (e) {
    await app.close();
    if (e instanceof ListenError) fail(e.message, 1);
    throw e;
  }
  const logger = new Logger('Parley');
  stopOnSignals(app, logger, () => app.get(Readiness).stopping());
  warnOfUnknownSettings(logger);
  // A certificate with no TLS listener to use it is most likely a listener forgotten: said, rather than ignored.
  if ((config.PARLEY_TLS_CERT || config.PARLEY_TLS_KEY) && config.PARLEY_MQTTS_PORT === undefined && config.PARLEY_WSS_PORT === undefined)
    logger.warn({
      event: 'tls_unused',
      message: 'PARLEY_TLS_CERT and PARLEY_TLS_KEY are set, but no TLS listener is: set PARLEY_MQTTS_PORT or PARLEY_WSS_PORT',
    });
  logger.log({
    event: 'listening',
    mqtt: { host: mqtt.address, port: mqtt.port },
    ...extra,
    http: { host: config.PARLEY_HTTP_HOST, port: httpPort },
    storage: config.REDIS_URL ? 'redis' : `embedded (${config.PARLEY_DATA_DIR})`,
    remoteServices: config.PARLEY_REMOTE_SERVICES,
  });
}

/**
 * The data directory's disk has no room to start on: said in one JSON log line, as the running server logs (a disk that
 * fills is a thing of production, read by whatever reads the logs), with its own exit status. Nothing was changed, so a
 * supervisor's restart, once there is room, starts the server as if it had never been refused.
 */
function failOnFullDisk(e: DataDirFullError, config: ParleyConfig): never {
  jsonLogger(config).fatal(
    {
      event: 'data_dir_full',
      dataDir: e.dataDir,
      availableBytes: e.availableBytes,
      totalBytes: e.totalBytes,
      neededBytes: START_ROOM_BYTES,
      error: e.message,
    },
    'Parley',
  );
  process.exit(DATA_DIR_FULL_EXIT);
}

bootstrap().catch((e: unknown) => fail(e instanceof Error ? e.message : String(e), 1));
