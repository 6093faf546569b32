import { Module, type DynamicModule } from '@nestjs/common';
import { ConfigModule, type ParleyConfig } from '#libs/config';
import { FileOfferModule } from '#libs/file-offer';
import { GatewayModule } from '#libs/gateway';
import { GroupApiModule } from '#libs/group';
import { HealthModule } from '#libs/health';
import { PresenceModule } from '#libs/presence';
import { ReceiptsModule } from '#libs/receipts';
import { StorageModule } from '#libs/storage';
import { RemoteServicesModule } from '#libs/transport';

/**
 * The gateway process. Each of presence, receipts, group and file-offer runs in this
 * process (the standalone server) unless PARLEY_REMOTE_SERVICES names it;
 * then the gateway reaches it over Redis. The domain modules are the same.
 */
@Module({})
export class AppModule {
  static forRoot(config: ParleyConfig): DynamicModule {
    const remote = config.PARLEY_REMOTE_SERVICES;
    const local = [
      ...(remote.includes('presence') ? [] : [PresenceModule]),
      ...(remote.includes('receipts') ? [] : [ReceiptsModule]),
      ...(remote.includes('group') ? [] : [GroupApiModule]),
      ...(remote.includes('file-offer') ? [] : [FileOfferModule]),
    ];
    const services = remote.length > 0 ? [...local, RemoteServicesModule.register(remote)] : local;
    return { module: AppModule, imports: [ConfigModule.forRoot(config), StorageModule, HealthModule, GatewayModule.register(services)] };
  }
}
