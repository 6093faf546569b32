import 'reflect-metadata';
import { Logger } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { ListenError, MqttBroker } from '#libs/gateway';
import { fail, jsonLogger, listenHttp, loadConfigOrExit, stopOnSignals } from '#libs/runtime';
import { AppModule } from './app.module.js';

/** The gateway: the MQTT broker and edge; with no PARLEY_REMOTE_SERVICES, the whole standalone server. */
async function bootstrap(): Promise<void> {
  const config = loadConfigOrExit();
  const app = await NestFactory.create(AppModule.forRoot(config), { logger: jsonLogger(config), abortOnError: false });
  const httpPort = await listenHttp(app, config);
  let mqtt: { port: number; address: string };
  try {
    mqtt = await app.get(MqttBroker).listen(config.PARLEY_MQTT_HOST, config.PARLEY_MQTT_PORT);
  } catch (e) {
    await app.close();
    if (e instanceof ListenError) fail(e.message, 1);
    throw e;
  }
  const logger = new Logger('Parley');
  stopOnSignals(app, logger);
  logger.log({
    event: 'listening',
    mqtt: { host: mqtt.address, port: mqtt.port },
    http: { port: httpPort },
    storage: config.REDIS_URL ? 'redis' : `embedded (${config.PARLEY_DATA_DIR})`,
    remoteServices: config.PARLEY_REMOTE_SERVICES,
  });
}

bootstrap().catch((e: unknown) => fail(e instanceof Error ? e.message : String(e), 1));
