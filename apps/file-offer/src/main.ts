import { FILE_OFFER_API, FILE_OFFER_API_METHODS, FileOfferModule, type FileOfferApi } from '#libs/file-offer';
import { fail } from '#libs/runtime';
import { runService } from '#libs/transport';

/** The file-offer service as its own process, reached by gateways over Redis. */
runService<FileOfferApi>({ name: 'file-offer', module: FileOfferModule, api: FILE_OFFER_API, methods: FILE_OFFER_API_METHODS }).catch((e: unknown) =>
  fail(e instanceof Error ? e.message : String(e), 1),
);
