import { describe, expect, it } from 'vitest';
import { tempDatabases } from '../../../test/support/temp-databases.js';
import { EmbeddedPresenceStore } from './embedded/embedded-presence.store.js';
import { PresenceService } from './presence.service.js';

const freshDatabase = tempDatabases('parley-presence-unit-');

function setup() {
  const db = freshDatabase();
  const clock = { now: 10_000 };
  const service = new PresenceService(new EmbeddedPresenceStore(db), { exists: () => Promise.resolve(true) }, () => clock.now);
  return { service, clock };
}

const conn = (user: string, connId: string, gatewayId = 'gw1') => ({ user, connId, gatewayId });

describe('PresenceService', () => {
  it('records a change at the time the gateway gives, in whole milliseconds, and at its own time for one it cannot believe', async () => {
    const { service } = setup();
    await service.connected(conn('ann', 'c1'), 2_000.7);
    expect(await service.stateOf('ann')).toEqual({ state: 'online', lastSeen: 2_000 });
    // A time in the future, not a number, or none at all (a caller of an older version): now.
    for (const [i, at] of [20_000, Number.NaN, 'soon' as unknown as number, -5, undefined].entries()) {
      const user = `u${i}`;
      await service.connected(conn(user, 'c'), 1_000);
      expect(await service.disconnected(conn(user, 'c'), at)).toMatchObject({ state: 'offline', lastSeen: 10_000 });
    }
  });

  it('closes a gone gateway’s connections at its last sign of life, and a realignment’s at the time given', async () => {
    const { service } = setup();
    await service.connected(conn('bo', 'c1', 'dead'), 1_000);
    await service.connected(conn('cy', 'c2', 'gw2'), 1_000);
    expect(await service.gatewayGone('dead', 4_000.9)).toEqual([{ type: 'presence', user: 'bo', state: 'offline', lastSeen: 4_000 }]);
    expect(await service.gatewayHolds('gw2', [], 6_000)).toEqual([{ type: 'presence', user: 'cy', state: 'offline', lastSeen: 6_000 }]);
  });
});
