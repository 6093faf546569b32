import { PRESENCE_API, PRESENCE_API_METHODS, PresenceModule, type PresenceApi } from '#libs/presence';
import { fail } from '#libs/runtime';
import { runService } from '#libs/transport';

/** The presence service as its own process, reached by gateways over Redis. */
runService<PresenceApi>({ name: 'presence', module: PresenceModule, api: PRESENCE_API, methods: PRESENCE_API_METHODS }).catch((e: unknown) =>
  fail(e instanceof Error ? e.message : String(e), 1),
);
