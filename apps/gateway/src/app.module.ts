import { Module, type DynamicModule } from '@nestjs/common';
import { ConfigModule, type ParleyConfig } from '#libs/config';
import { GatewayModule } from '#libs/gateway';
import { HealthModule } from '#libs/health';
import { PresenceModule } from '#libs/presence';
import { ReceiptsModule } from '#libs/receipts';
import { StorageModule } from '#libs/storage';

/** The standalone server: the gateway with every domain in one process. */
@Module({})
export class AppModule {
  static forRoot(config: ParleyConfig): DynamicModule {
    return {
      module: AppModule,
      imports: [ConfigModule.forRoot(config), StorageModule, HealthModule, GatewayModule.register([PresenceModule, ReceiptsModule])],
    };
  }
}
