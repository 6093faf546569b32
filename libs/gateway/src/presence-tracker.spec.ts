import { EventEmitter } from 'node:events';
import { Logger } from '@nestjs/common';
import type { Aedes, Client } from 'aedes';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { PresenceApi } from '#libs/presence';
import type { Principal } from '#libs/protocol';
import type { AccessPolicy } from './access-policy.js';
import { PresenceTracker } from './presence-tracker.js';

/**
 * Presence as one gateway's reports reach it: the connections recorded under the gateway, and a switch for how calls
 * fare: carried out (`up`), not carried out (`down`: Redis away), or carried out with the answer lost on the way back
 * (`lost`: an RPC that timed out while it waited in the stream, and ran later).
 */
function presence() {
  const records = new Map<string, string>();
  const calls: string[] = [];
  /** The time each realignment said the connections it left out had ended by. */
  const closedAt: (number | undefined)[] = [];
  /** When each user's connection came up, as its report said. */
  const startedAt = new Map<string, number | undefined>();
  /** When each user's connection ended, as its report said. */
  const endedAt = new Map<string, number | undefined>();
  const state = { mode: 'up' as 'up' | 'down' | 'lost' };
  const call = <T>(name: string, apply: () => T): Promise<T> => {
    calls.push(name);
    if (state.mode === 'down') return Promise.reject(new Error('presence is away'));
    const result = apply();
    return state.mode === 'lost' ? Promise.reject(new Error('no answer in time')) : Promise.resolve(result);
  };
  const api: PresenceApi = {
    connected: (ref, at) => call(`connected ${ref.user}`, () => (records.set(ref.connId, ref.user), startedAt.set(ref.user, at), null)),
    disconnected: (ref, at) => call(`disconnected ${ref.user}`, () => (records.delete(ref.connId), endedAt.set(ref.user, at), null)),
    gatewayHolds: (_gatewayId, held, endedBy) =>
      call(`holds ${held.map((h) => h.user).join(',')}`, () => {
        closedAt.push(endedBy);
        records.clear();
        for (const h of held) records.set(h.connId, h.user);
        return [];
      }),
    gatewayGone: () => Promise.reject(new Error('not used')),
    who: () => Promise.reject(new Error('not used')),
    stateOf: () => Promise.reject(new Error('not used')),
  };
  return { api, calls, closedAt, startedAt, endedAt, state, users: () => [...records.values()].sort() };
}

/** The broker as the tracker sees it: connection events, whether it is closed, and retained publishes. */
function broker() {
  const principals = new Map<Client, Principal>();
  const aedes = Object.assign(new EventEmitter(), { closed: false, publish: (_packet: unknown, done: () => void) => done() });
  const policy = { principalOf: (client: Client) => principals.get(client) } as unknown as AccessPolicy;
  const connect = (user: string): Client => {
    const client = { id: `${user}/phone`, closed: false } as unknown as Client;
    principals.set(client, { kind: 'user', user, device: 'phone' });
    aedes.emit('clientReady', client);
    return client;
  };
  const disconnect = (client: Client) => aedes.emit('clientDisconnect', client);
  return { aedes, policy, connect, disconnect };
}

describe('PresenceTracker', () => {
  const trackers: { aedes: { closed: boolean } }[] = [];
  afterEach(() => {
    // Ends the retry loops of the trackers a test left running.
    for (const t of trackers.splice(0)) t.aedes.closed = true;
  });

  async function started() {
    const p = presence();
    const b = broker();
    const tracker = new PresenceTracker(b.aedes as unknown as Aedes, b.policy, p.api, 'gw1');
    trackers.push(b);
    tracker.start();
    // Starting brings the records in line with no connection: what a previous run left is closed.
    await expect.poll(() => p.calls).toEqual(['holds ']);
    return { ...p, ...b, tracker };
  }

  it('reports a connection’s start and end, the end after the start and with the time it ended', async () => {
    const t = await started();
    const startedAfter = Date.now();
    const bob = t.connect('bob');
    const endedAfter = Date.now();
    t.disconnect(bob);
    await t.tracker.settle(1000);
    expect(t.calls.slice(1)).toEqual(['connected bob', 'disconnected bob']);
    // Each report carries the time of its change: it may reach presence later.
    expect(t.startedAt.get('bob')).toBeGreaterThanOrEqual(startedAfter);
    expect(t.startedAt.get('bob')).toBeLessThanOrEqual(endedAfter);
    expect(t.endedAt.get('bob')).toBeGreaterThanOrEqual(endedAfter);
    expect(t.users()).toEqual([]);
  });

  it('ends a connection dropped for its silence when it was last heard from, not when the drop came', async () => {
    const t = await started();
    const bob = t.connect('bob');
    const carol = t.connect('carol');
    // The broker drops a client silent for 1.5 times its keep-alive, the timer refreshed by every packet it sends: bob
    // was online for a minute, carol never said a word after her CONNECT.
    Object.assign(bob, { _keepaliveInterval: 6001 });
    Object.assign(carol, { _keepaliveInterval: 90_001 });
    const dropAt = Date.now() + 60_000;
    vi.useFakeTimers({ toFake: ['Date'], now: dropAt });
    try {
      for (const c of [bob, carol]) {
        t.aedes.emit('keepaliveTimeout', c);
        t.disconnect(c);
      }
    } finally {
      vi.useRealTimers();
    }
    await t.tracker.settle(1000);
    expect(t.endedAt.get('bob')).toBe(dropAt - 6001);
    // Never before it came up: online from its CONNECT.
    expect(t.endedAt.get('carol')).toBe(t.startedAt.get('carol'));
  });

  it('closes in presence a connection whose end could not be reported, once presence is back', async () => {
    const t = await started();
    const bob = t.connect('bob');
    await expect.poll(() => t.users()).toEqual(['bob']);
    t.state.mode = 'down';
    t.disconnect(bob);
    await expect.poll(() => t.calls).toContain('disconnected bob');
    // Still recorded: the report failed. Nothing is lost once presence answers again.
    expect(t.users()).toEqual(['bob']);
    t.state.mode = 'up';
    await expect.poll(() => t.users(), { timeout: 5000 }).toEqual([]);
    // At the time it ended, not when presence came back: reported again with its own time before the realignment.
    const ended = t.endedAt.get('bob');
    expect(ended).toBeDefined();
    expect(t.closedAt.at(-1)! - ended!).toBeGreaterThanOrEqual(0);
    expect(t.calls.slice(-2)).toEqual(['disconnected bob', 'holds ']);
  });

  it('records a connection whose start could not be reported, and not one that ended before presence was back, even if its start was carried out', async () => {
    const t = await started();
    // Carol's start is carried out but its answer lost; then presence is away altogether.
    t.state.mode = 'lost';
    const carol = t.connect('carol');
    await expect.poll(() => t.calls).toContain('connected carol');
    t.state.mode = 'down';
    const dave = t.connect('dave');
    const erin = t.connect('erin');
    t.disconnect(carol);
    t.disconnect(erin);
    expect(t.users()).toEqual(['carol']);
    t.state.mode = 'up';
    await expect.poll(() => t.users(), { timeout: 5000 }).toEqual(['dave']);
    await t.tracker.settle(1000);
    expect(t.users()).toEqual(['dave']);
    // Reports held back while the records were brought in line go after it, in order per connection: erin's start
    // too (she was online, and is last seen then), then her end. Carol's failed start is not made again; her end is.
    const after = t.calls.slice(t.calls.lastIndexOf('holds dave') + 1);
    expect(after).toEqual(expect.arrayContaining(['connected dave', 'disconnected carol', 'connected erin', 'disconnected erin']));
    expect(after.indexOf('connected erin')).toBeLessThan(after.indexOf('disconnected erin'));
    expect(after).not.toContain('connected carol');
    t.disconnect(dave);
    await t.tracker.settle(1000);
    expect(t.users()).toEqual([]);
  });

  it('brings the records back when asked (another gateway closed this one’s connections), without waiting for a report to fail', async () => {
    const t = await started();
    t.connect('bob');
    await expect.poll(() => t.users()).toEqual(['bob']);
    await t.api.gatewayHolds('gw1', []); // what a sweep by another gateway does
    expect(t.users()).toEqual([]);
    t.tracker.realign();
    await expect.poll(() => t.users()).toEqual(['bob']);
  });

  it('closes what a killed previous run left at its last sign of life, once; later rounds close at the time', async () => {
    const p = presence();
    const b = broker();
    const tracker = new PresenceTracker(b.aedes as unknown as Aedes, b.policy, p.api, 'gw1');
    trackers.push(b);
    let lastAlive!: (at: number) => void;
    tracker.start(new Promise((resolve) => (lastAlive = resolve)));
    // A connection made meanwhile is among those held (recorded now), and its own report waits for that.
    b.connect('bob');
    lastAlive(1234);
    await expect.poll(() => p.calls).toEqual(['holds bob', 'connected bob']);
    expect(p.closedAt).toEqual([1234]);
    const asked = Date.now();
    tracker.realign();
    await expect.poll(() => p.calls).toEqual(['holds bob', 'connected bob', 'holds bob']);
    expect(p.closedAt[1]).toBeGreaterThanOrEqual(asked);
  });

  it('logs the reports that fail alike while presence is away once, not once per connection', async () => {
    const t = await started();
    const users = ['bob', 'carol', 'dave', 'erin', 'frank'];
    const clients = users.map((u) => t.connect(u));
    await expect.poll(() => t.users()).toEqual(users);
    // Redis restarting: every connection of the gateway ends at once, and every end fails to be reported.
    const logged = vi.spyOn(Logger.prototype, 'error').mockImplementation(() => undefined);
    try {
      t.state.mode = 'down';
      for (const c of clients) t.disconnect(c);
      await expect.poll(() => t.calls.filter((c) => c.startsWith('disconnected')).length).toBe(users.length);
      const failures = logged.mock.calls.filter(([m]) => (m as { event?: string }).event === 'presence_report_failed');
      expect(failures).toHaveLength(1);
    } finally {
      logged.mockRestore();
    }
    t.state.mode = 'up';
    await expect.poll(() => t.users(), { timeout: 5000 }).toEqual([]);
  });

  it('says its records are out of line from a failed report until a realignment succeeds', async () => {
    const t = await started();
    expect(t.tracker.inLine).toBe(true);
    t.state.mode = 'down';
    const bob = t.connect('bob');
    await expect.poll(() => t.calls).toContain('connected bob');
    await expect.poll(() => t.tracker.inLine).toBe(false);
    t.state.mode = 'up';
    await expect.poll(() => t.users(), { timeout: 5000 }).toEqual(['bob']);
    await expect.poll(() => t.tracker.inLine).toBe(true);
    t.disconnect(bob);
    await t.tracker.settle(1000);
    expect(t.tracker.inLine).toBe(true);
  });
});
