import { afterAll, describe, expect, it } from 'vitest';
import { LoginThrottle, MemoryFailureLedger, RedisFailureLedger, type FailureLedger } from '#libs/gateway';
import { adapterFor, type StorageBackend } from '#libs/storage';
import { embeddedFixture, redisFixture } from './backends.js';

/** The failed-login throttle on both ledgers: one gateway's memory (standalone) and a shared Redis. */
const fixtures = [embeddedFixture(), redisFixture()];
afterAll(async () => {
  for (const f of fixtures) await f.teardown();
});

const ledgerOf = (b: StorageBackend) =>
  adapterFor<FailureLedger>(b, { embedded: () => new MemoryFailureLedger(), redis: (redis) => new RedisFailureLedger(redis) });
const limits = { maxFailuresPerAddress: 3, maxFailuresPerUser: 5, windowMs: 60_000, lockoutMs: 300_000 };

describe.each(fixtures)('LoginThrottle on $name', (fixture) => {
  it('locks an address out after its failures, for the lockout time, and leaves other addresses alone', async () => {
    const { backend } = await fixture.open();
    let now = 1_000_000;
    const t = new LoginThrottle(limits, ledgerOf(backend), () => now);
    for (let i = 0; i < 3; i++) await t.failed('alice', '198.51.100.7');
    expect(await t.lockedUntil('alice', '198.51.100.7')).toBe(now + 300_000);
    expect(await t.lockedUntil('bob', '::ffff:198.51.100.7')).toBeGreaterThan(0);
    expect(await t.lockedUntil('alice', '198.51.100.8')).toBe(0);
    now += 300_001;
    expect(await t.lockedUntil('alice', '198.51.100.7')).toBe(0);
  });

  it('forgets failures older than the window', async () => {
    const { backend } = await fixture.open();
    let now = 1_000_000;
    const t = new LoginThrottle(limits, ledgerOf(backend), () => now);
    await t.failed('alice', '198.51.100.7');
    await t.failed('alice', '198.51.100.7');
    now += 61_000;
    await t.failed('alice', '198.51.100.7');
    expect(await t.lockedUntil('alice', '198.51.100.7')).toBe(0);
  });

  it('locks a user name attacked from many addresses, and no other user', async () => {
    const { backend } = await fixture.open();
    const t = new LoginThrottle(limits, ledgerOf(backend), () => 1_000_000);
    for (let i = 0; i < 5; i++) await t.failed('alice', `203.0.113.${i}`);
    expect(await t.lockedUntil('alice', '203.0.113.200')).toBeGreaterThan(0);
    expect(await t.lockedUntil('bob', '203.0.113.200')).toBe(0);
  });

  it('counts two failures in the same millisecond as two', async () => {
    const { backend } = await fixture.open();
    const t = new LoginThrottle(limits, ledgerOf(backend), () => 1_000_000);
    await Promise.all([0, 1, 2].map(() => t.failed('alice', '198.51.100.9')));
    expect(await t.lockedUntil('carol', '198.51.100.9')).toBeGreaterThan(0);
  });
});

describe('LoginThrottle on a shared Redis', () => {
  const fixture = fixtures[1]!;

  it('counts the failures of every gateway on it: an attack spread over gateways locks out on all of them', async () => {
    const { backend, reopen } = await fixture.open();
    const now = () => 1_000_000;
    const gatewayA = new LoginThrottle(limits, ledgerOf(backend), now);
    const gatewayB = new LoginThrottle(limits, ledgerOf(await reopen()), now);
    await gatewayA.failed('alice', '198.51.100.7');
    await gatewayB.failed('alice', '198.51.100.7');
    expect(await gatewayA.lockedUntil('alice', '198.51.100.7')).toBe(0);
    await gatewayA.failed('alice', '198.51.100.7');
    expect(await gatewayB.lockedUntil('alice', '198.51.100.7')).toBe(1_000_000 + 300_000);
  });
});
