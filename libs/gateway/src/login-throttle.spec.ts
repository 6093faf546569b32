import { describe, expect, it } from 'vitest';
import { addressKey, LoginThrottle } from './login-throttle.js';

describe('LoginThrottle', () => {
  const limits = { maxFailuresPerAddress: 3, maxFailuresPerUser: 5, windowMs: 60_000, lockoutMs: 300_000 };

  it('locks an address out after its failures, for the lockout time, and leaves other addresses alone', () => {
    let now = 1_000_000;
    const t = new LoginThrottle(limits, () => now);
    for (let i = 0; i < 3; i++) t.failed('alice', '198.51.100.7');
    expect(t.lockedUntil('alice', '198.51.100.7')).toBe(now + 300_000);
    expect(t.lockedUntil('bob', '::ffff:198.51.100.7')).toBeGreaterThan(0);
    expect(t.lockedUntil('alice', '198.51.100.8')).toBe(0);
    now += 300_001;
    expect(t.lockedUntil('alice', '198.51.100.7')).toBe(0);
  });

  it('forgets failures older than the window', () => {
    let now = 0;
    const t = new LoginThrottle(limits, () => now);
    t.failed('alice', '198.51.100.7');
    t.failed('alice', '198.51.100.7');
    now += 61_000;
    t.failed('alice', '198.51.100.7');
    expect(t.lockedUntil('alice', '198.51.100.7')).toBe(0);
  });

  it('locks a user name attacked from many addresses', () => {
    const t = new LoginThrottle(limits, () => 0);
    for (let i = 0; i < 5; i++) t.failed('alice', `203.0.113.${i}`);
    expect(t.lockedUntil('alice', '203.0.113.200')).toBeGreaterThan(0);
    expect(t.lockedUntil('bob', '203.0.113.200')).toBe(0);
  });

  it('counts IPv6 per /64 and IPv4-mapped addresses as IPv4', () => {
    expect(addressKey('2001:db8:1:2:aaaa::1')).toBe(addressKey('2001:db8:1:2:bbbb::2'));
    expect(addressKey('2001:db8:1:3::1')).not.toBe(addressKey('2001:db8:1:2::1'));
    expect(addressKey('::ffff:192.0.2.1')).toBe('192.0.2.1');
    expect(addressKey('::1')).toBe('0:0:0:0::/64');
  });
});
