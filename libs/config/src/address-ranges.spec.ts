import { describe, expect, it } from 'vitest';
import { addressBytes, AddressRanges, addressRangeProblem, formatAddress, unmappedAddress } from './address-ranges.js';

describe('AddressRanges', () => {
  it('holds IPv4 and IPv6 addresses and CIDR ranges, IPv4 clients of a dual-stack socket (::ffff:a.b.c.d) too', () => {
    const ranges = AddressRanges.parse(['172.30.83.0/24', 'fd00:7061:726c:6579::/64', '127.0.0.1', '::1']);
    for (const inside of ['172.30.83.9', '::ffff:172.30.83.9', '::FFFF:ac1e:5309', 'fd00:7061:726c:6579::7', '127.0.0.1', '::ffff:127.0.0.1', '::1'])
      expect(ranges.has(inside), inside).toBe(true);
    for (const outside of ['172.30.84.9', '::ffff:172.30.84.9', 'fd00:7061:726c:657a::7', '127.0.0.2', '::2', 'unknown', '', 'fe80::1%lo'])
      expect(ranges.has(outside), outside).toBe(false);
  });

  it('takes an IPv4-mapped range as the IPv4 range it is, and prefix lengths that are not whole bytes', () => {
    expect(AddressRanges.parse(['::ffff:10.0.0.0/104']).has('10.200.1.1')).toBe(true);
    expect(AddressRanges.parse(['::ffff:10.0.0.0/104']).has('11.0.0.1')).toBe(false);
    const odd = AddressRanges.parse(['192.168.0.0/13']);
    expect(odd.has('192.175.255.255')).toBe(true);
    expect(odd.has('192.176.0.0')).toBe(false);
    expect(AddressRanges.parse(['0.0.0.0/0']).has('::ffff:8.8.8.8')).toBe(true);
    expect(AddressRanges.parse(['0.0.0.0/0']).has('2001:db8::1')).toBe(false);
    expect(AddressRanges.parse([]).empty).toBe(true);
  });

  it('names what is no address or range', () => {
    for (const bad of ['10.0.0.0/33', '::/129', '10.0.0.0/', '10.0.0.0/8/8', '10.0.0', 'example.com', '10.0.0.0/-1', '10.0.0.0/08x', 'fe80::1%eth0'])
      expect(addressRangeProblem(bad), bad).toMatch(/not/);
    expect(addressRangeProblem('10.0.0.0/8')).toBeUndefined();
    expect(() => AddressRanges.parse(['10.0.0.0/8', 'nope'])).toThrow(/"nope"/);
  });
});

describe('formatAddress', () => {
  it('writes IPv6 as RFC 5952 does, and an IPv4-mapped address as plain IPv4', () => {
    for (const [given, written] of [
      ['2001:DB8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
      ['2001:db8:0:0:0:0:2:1', '2001:db8::2:1'],
      ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'],
      ['::', '::'],
      ['::1', '::1'],
      ['1::', '1::'],
      ['::ffff:192.0.2.1', '192.0.2.1'],
      ['192.0.2.1', '192.0.2.1'],
    ])
      expect(formatAddress(addressBytes(given!)!), given).toBe(written);
  });
});

describe('unmappedAddress', () => {
  it('gives an IPv4-mapped IPv6 address as its IPv4 address, and anything else as it is', () => {
    expect(['::ffff:198.51.100.20', '::FFFF:10.0.0.1', '198.51.100.20', '::1', '::ffff:abc.example', 'unknown'].map(unmappedAddress)).toEqual([
      '198.51.100.20',
      '10.0.0.1',
      '198.51.100.20',
      '::1',
      '::ffff:abc.example',
      'unknown',
    ]);
  });
});
