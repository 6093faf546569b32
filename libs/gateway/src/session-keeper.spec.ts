import { EventEmitter } from 'node:events';
import { Logger } from '@nestjs/common';
import type { Aedes, Client } from 'aedes';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { AccessPolicy } from './access-policy.js';
import { SessionKeeper } from './session-keeper.js';

/**
 * The broker as the keeper reads it: its events, its connected clients by id, and its session store. (The whole path,
 * with the real broker and clients, is in test/e2e/hostile-mqtt.spec.ts.)
 */
function broker(): { aedes: Aedes; clients: Record<string, Client | undefined>; cleaned: string[] } {
  const clients: Record<string, Client | undefined> = {};
  const cleaned: string[] = [];
  const persistence = {
    cleanSubscriptions: (client: { id: string }) => Promise.resolve(void cleaned.push(client.id)),
    cleanIncoming: () => Promise.resolve(),
  };
  return { aedes: Object.assign(new EventEmitter(), { clients, persistence }) as unknown as Aedes, clients, cleaned };
}

/** Every client is one of `user`'s devices, each holding `filters` filters. */
const policyOf = (user: string, filters = 0) =>
  ({ principalOf: () => ({ kind: 'user', user, device: 'd' }), filtersHeld: () => filters }) as unknown as AccessPolicy;

/** One persistent device of ann's, holding three filters, as the broker reports its logins and their ends. */
function annsPhone(limits: { maxIdleFiltersPerUser?: number } = {}) {
  let now = 0;
  const { aedes, clients, cleaned } = broker();
  const keeper = new SessionKeeper(aedes, policyOf('ann', 3), { maxPerUser: 50, maxIdleFiltersPerUser: 100, expiryMs: 1000, ...limits }, () => now).start();
  const device = { id: 'ann/phone', clean: false } as Client;
  return {
    keeper,
    cleaned,
    advance: (ms: number) => (now += ms),
    /** The broker registered the login (it is among its clients): its CONNACK is still on the way. */
    registered: () => (clients[device.id] = device),
    ready: () => aedes.emit('clientReady', device),
    gone: () => {
      delete clients[device.id];
      aedes.emit('clientDisconnect', device);
    },
  };
}

afterEach(() => vi.restoreAllMocks());

describe('SessionKeeper', () => {
  it('forgets an idle session once expired, but not one whose new login the broker has registered and not yet answered', () => {
    const t = annsPhone();
    t.registered();
    t.ready();
    t.gone();
    t.advance(2000);
    // The device is logging in again: the broker has restored its subscriptions and is sending its CONNACK.
    t.registered();
    t.keeper.sweep();
    expect(t.cleaned).toEqual([]);
    t.ready();
    t.keeper.sweep();
    expect(t.cleaned).toEqual([]);
    t.gone();
    t.advance(999);
    t.keeper.sweep();
    expect(t.cleaned).toEqual([]);
    t.advance(1);
    t.keeper.sweep();
    expect(t.cleaned).toEqual(['ann/phone']);
    t.keeper.stop();
  });

  it('counts the filters of a session once when a login of it ended before its CONNACK', () => {
    // Three filters per session: a second count would pass the allowance of five.
    const t = annsPhone({ maxIdleFiltersPerUser: 5 });
    t.registered();
    t.ready();
    t.gone();
    t.registered();
    t.gone();
    expect(t.cleaned).toEqual([]);
    t.keeper.stop();
  });

  it('logs at most 50 forgotten sessions per user in 10 s, then one line with how many were left out', async () => {
    const logged = vi.spyOn(Logger.prototype, 'log').mockImplementation(() => undefined);
    let now = 0;
    const { aedes, clients, cleaned } = broker();
    const keeper = new SessionKeeper(aedes, policyOf('alice'), { maxPerUser: 1, maxIdleFiltersPerUser: 10, expiryMs: 60_000 }, () => now).start();
    // A user logging in with a new device name each time, as fast as it can: each login forgets the session before.
    const login = (id: string) => {
      const client = { id, clean: false } as unknown as Client;
      clients[id] = client;
      aedes.emit('clientReady', client);
      delete clients[id];
      aedes.emit('clientDisconnect', client);
    };
    for (let i = 0; i <= 200; i++) login(`alice/d${i}`);
    await vi.waitFor(() => expect(cleaned).toHaveLength(200));
    // Each is logged once its store calls have settled: a turn of the event loop later.
    await new Promise((resolve) => setImmediate(resolve));
    const lines = () => logged.mock.calls.map(([m]) => m as { event?: string; alikeLeftOut?: number }).filter((m) => m.event === 'session_forgotten');
    // Every session beyond the first was forgotten, but the log has 50 lines of it, not 200.
    expect(lines()).toHaveLength(50);
    now += 10_000;
    login('alice/later');
    await vi.waitFor(() => expect(lines()).toHaveLength(51));
    expect(lines()[50]).toMatchObject({ client: 'alice/d200', alikeLeftOut: 150 });
    keeper.stop();
  });
});
