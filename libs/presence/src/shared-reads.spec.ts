import { describe, expect, it } from 'vitest';
import type { PresenceState } from '#libs/protocol';
import type { PresenceApi } from './presence.service.js';
import { sharingReads } from './shared-reads.js';

/** A presence API as seen over RPC: each read is a call that answers when the test says, with the state at that time. */
function remoteApi() {
  let state: PresenceState = { state: 'offline', lastSeen: null };
  const calls: string[] = [];
  const pending: (() => void)[] = [];
  const answer = <T>(value: () => T): Promise<T> => new Promise((resolve) => pending.push(() => resolve(value())));
  const api: PresenceApi = {
    connected: (conn) => {
      calls.push(`connected ${conn.user}`);
      state = { state: 'online', lastSeen: 5 };
      return answer(() => null);
    },
    disconnected: (conn) => {
      calls.push(`disconnected ${conn.user}`);
      return answer(() => null);
    },
    gatewayGone: (id) => {
      calls.push(`gatewayGone ${id}`);
      return answer(() => []);
    },
    gatewayHolds: (id) => {
      calls.push(`gatewayHolds ${id}`);
      return answer(() => []);
    },
    who: (user) => {
      calls.push(`who ${user}`);
      return answer(() => ({ user, ...state }));
    },
    stateOf: (user) => {
      calls.push(`stateOf ${user}`);
      const asked = state;
      return answer(() => asked);
    },
  };
  const answerAll = () => pending.splice(0).forEach((go) => go());
  return { api, calls, answerAll };
}

describe('sharingReads', () => {
  it('makes one call for reads of one user under way at once, and a new one once it has answered', async () => {
    const { api, calls, answerAll } = remoteApi();
    const shared = sharingReads(api);
    const burst = [shared.stateOf('ann'), shared.stateOf('ann'), shared.stateOf('bob'), shared.stateOf('ann')];
    expect(calls).toEqual(['stateOf ann', 'stateOf bob']);
    answerAll();
    expect(await Promise.all(burst)).toEqual(Array(4).fill({ state: 'offline', lastSeen: null }));
    const later = shared.stateOf('ann');
    expect(calls).toEqual(['stateOf ann', 'stateOf bob', 'stateOf ann']);
    answerAll();
    await later;
  });

  it('does not share a read under way with one asked for after this gateway reported a change', async () => {
    const { api, calls, answerAll } = remoteApi();
    const shared = sharingReads(api);
    const before = shared.stateOf('ann');
    const up = shared.connected({ user: 'ann', connId: 'c1', gatewayId: 'gw1' });
    const after = shared.stateOf('ann');
    expect(calls).toEqual(['stateOf ann', 'connected ann', 'stateOf ann']);
    answerAll();
    expect(await before).toEqual({ state: 'offline', lastSeen: null });
    expect(await after).toEqual({ state: 'online', lastSeen: 5 });
    await up;
    // A gone gateway may change anyone's: every read after it is a call of its own.
    const pending = shared.stateOf('bob');
    const gone = shared.gatewayGone('gw2');
    const again = shared.stateOf('bob');
    expect(calls.slice(3)).toEqual(['stateOf bob', 'gatewayGone gw2', 'stateOf bob']);
    answerAll();
    await Promise.all([pending, gone, again]);
  });

  it('shares a failure only with the reads that were waiting for it', async () => {
    let calls = 0;
    const failing: PresenceApi = {
      ...remoteApi().api,
      stateOf: () => (++calls === 1 ? Promise.reject(new Error('unavailable')) : Promise.resolve({ state: 'online', lastSeen: 7 })),
    };
    const shared = sharingReads(failing);
    const results = await Promise.allSettled([shared.stateOf('ann'), shared.stateOf('ann')]);
    expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected']);
    // The failed call is not kept: the next read is a call of its own, which succeeds.
    expect(await shared.stateOf('ann')).toEqual({ state: 'online', lastSeen: 7 });
    expect(calls).toBe(2);
  });
});
