import { EventEmitter } from 'node:events';
import type { Aedes, Client } from 'aedes';
import { describe, expect, it } from 'vitest';
import type { AccessPolicy } from './access-policy.js';
import { SessionKeeper } from './session-keeper.js';

/**
 * The keeper against the part of the broker it uses: its events, its connected clients by id, and its session store's
 * clean-up. (The whole path, with the real broker and clients, is in test/e2e/hostile-mqtt.spec.ts.)
 */
function setUp(limits: { maxPerUser?: number; maxIdleFiltersPerUser?: number; expiryMs?: number } = {}) {
  let clock = 0;
  const cleaned: string[] = [];
  const clients: Partial<Record<string, Client>> = {};
  const broker = Object.assign(new EventEmitter(), {
    clients,
    persistence: {
      cleanSubscriptions: (c: { id: string }) => Promise.resolve(void cleaned.push(c.id)),
    },
  });
  const policy = { principalOf: () => ({ kind: 'user', user: 'ann' }), filtersHeld: () => 3 } as unknown as AccessPolicy;
  const keeper = new SessionKeeper(
    broker as unknown as Aedes,
    policy,
    { maxPerUser: 50, maxIdleFiltersPerUser: 100, expiryMs: 1000, ...limits },
    () => clock,
  ).start();
  const device = { id: 'ann/phone', clean: false } as Client;
  return {
    keeper,
    cleaned,
    device,
    advance: (ms: number) => (clock += ms),
    /** The broker registered the login (it is among its clients): its CONNACK is still on the way. */
    registered: () => (broker.clients[device.id] = device),
    ready: () => broker.emit('clientReady', device),
    gone: () => {
      delete broker.clients[device.id];
      broker.emit('clientDisconnect', device);
    },
  };
}

describe('SessionKeeper', () => {
  it('forgets an idle session once expired, but not one whose new login the broker has registered and not yet answered', () => {
    const t = setUp();
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
    // Three filters per session (see setUp): a second count would pass the allowance of five.
    const t = setUp({ maxIdleFiltersPerUser: 5 });
    t.registered();
    t.ready();
    t.gone();
    t.registered();
    t.gone();
    expect(t.cleaned).toEqual([]);
    t.keeper.stop();
  });
});
