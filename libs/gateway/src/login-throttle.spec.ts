import { describe, expect, it } from 'vitest';
import { addressKey, MemoryFailureLedger } from './login-throttle.js';

// The throttle's rules are tested on both ledgers in test/contract/login-throttle.contract.spec.ts.
describe('addressKey', () => {
  it('counts IPv6 per /64 and IPv4-mapped addresses as IPv4', () => {
    expect(addressKey('2001:db8:1:2:aaaa::1')).toBe(addressKey('2001:db8:1:2:bbbb::2'));
    expect(addressKey('2001:db8:1:3::1')).not.toBe(addressKey('2001:db8:1:2::1'));
    expect(addressKey('::ffff:192.0.2.1')).toBe('192.0.2.1');
    expect(addressKey('::1')).toBe('0:0:0:0::/64');
  });
});

describe('MemoryFailureLedger', () => {
  it('forgets what is over, so its table stays as small as the current attack', async () => {
    const ledger = new MemoryFailureLedger();
    await ledger.fail([{ key: 'a', max: 3 }], 0, 1_000, 5_000);
    await ledger.fail([{ key: 'b', max: 1 }], 500, 1_000, 5_000);
    expect(ledger.size).toBe(2);
    await ledger.fail([{ key: 'c', max: 3 }], 7_000, 1_000, 5_000);
    expect(ledger.size).toBe(1);
  });
});
