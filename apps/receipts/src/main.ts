import { RECEIPTS_API, RECEIPTS_API_METHODS, ReceiptsModule, type ReceiptsApi } from '#libs/receipts';
import { fail } from '#libs/runtime';
import { runService } from '#libs/transport';

/** The receipts service as its own process, reached by gateways over Redis. */
runService<ReceiptsApi>({ name: 'receipts', module: ReceiptsModule, api: RECEIPTS_API, methods: RECEIPTS_API_METHODS }).catch((e: unknown) =>
  fail(e instanceof Error ? e.message : String(e), 1),
);
