import { Global, Module } from '@nestjs/common';
import { loadConfig, type ParleyConfig } from './config.js';

export const PARLEY_CONFIG = Symbol('PARLEY_CONFIG');

/** Makes the validated configuration injectable. The config is loaded once, before the module is built, by the app's bootstrap. */
@Global()
@Module({})
export class ConfigModule {
  static forRoot(config: ParleyConfig = loadConfig()) {
    return { module: ConfigModule, providers: [{ provide: PARLEY_CONFIG, useValue: config }], exports: [PARLEY_CONFIG] };
  }
}
