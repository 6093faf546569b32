import { GROUP_API, GROUP_API_METHODS, GroupApiModule, type GroupApi } from '#libs/group';
import { fail } from '#libs/runtime';
import { runService } from '#libs/transport';

/** The group service as its own process, reached by gateways over Redis. */
runService<GroupApi>({ name: 'group', module: GroupApiModule, api: GROUP_API, methods: GROUP_API_METHODS }).catch((e: unknown) =>
  fail(e instanceof Error ? e.message : String(e), 1),
);
