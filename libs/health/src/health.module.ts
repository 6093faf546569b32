import { Global, Module } from '@nestjs/common';
import { HealthController } from './health.controller.js';
import { Metrics } from './metrics.js';
import { Readiness } from './readiness.js';

@Global()
@Module({
  controllers: [HealthController],
  providers: [
    { provide: Metrics, useFactory: () => new Metrics() },
    { provide: Readiness, useFactory: () => new Readiness() },
  ],
  exports: [Metrics, Readiness],
})
export class HealthModule {}
