import { isIPv4, isIPv6 } from 'node:net';

/**
 * IP addresses and CIDR ranges, IPv4 and IPv6 in one space: an IPv4 address is
 * held as its IPv4-mapped IPv6 form (::ffff:a.b.c.d, RFC 4291 2.5.5.2), so that
 * `10.0.0.0/8` also holds `::ffff:10.1.2.3`, the way an IPv4 client shows on a
 * dual-stack socket, and `::ffff:10.0.0.0/104` holds `10.1.2.3`.
 */
export class AddressRanges {
  private constructor(private readonly ranges: readonly { bytes: Buffer; bits: number }[]) {}

  /** The ranges of a list such as `10.0.0.0/8, ::1`; throws a RangeError naming the first entry that is not one. */
  static parse(entries: readonly string[]): AddressRanges {
    return new AddressRanges(
      entries.map((entry) => {
        const range = parseRange(entry);
        if (typeof range === 'string') throw new RangeError(range);
        return range;
      }),
    );
  }

  get empty(): boolean {
    return this.ranges.length === 0;
  }

  /** True when the address (IPv4, IPv6 or IPv4-mapped IPv6) is in one of the ranges; false for anything that is no address. */
  has(address: string): boolean {
    const bytes = addressBytes(address);
    return bytes !== undefined && this.ranges.some((r) => samePrefix(bytes, r.bytes, r.bits));
  }
}

/**
 * An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, the way an IPv4 client shows on a dual-stack socket) as the IPv4
 * address it is; any other address or name as it is.
 */
export function unmappedAddress(address: string): string {
  const tail = /^::ffff:(.*)$/i.exec(address)?.[1];
  return tail !== undefined && isIPv4(tail) ? tail : address;
}

/** Why an entry is not an address or CIDR range, or undefined when it is one. */
export function addressRangeProblem(entry: string): string | undefined {
  const range = parseRange(entry);
  return typeof range === 'string' ? range : undefined;
}

function parseRange(entry: string): { bytes: Buffer; bits: number } | string {
  const [address = '', prefix, ...more] = entry.split('/');
  const bytes = addressBytes(address);
  if (bytes === undefined || more.length > 0) return `"${entry}" is not an IP address or CIDR range`;
  const v4 = isIPv4(address);
  const max = v4 ? 32 : 128;
  if (prefix !== undefined && (!/^\d{1,3}$/.test(prefix) || Number(prefix) > max)) return `"${entry}" has a prefix length that is not 0–${max}`;
  const bits = prefix === undefined ? 128 : Number(prefix) + (v4 ? 96 : 0);
  return { bytes, bits };
}

/** The 16 bytes of an IPv6 address, or of an IPv4 address's mapped form; undefined for anything else (a zone id too). */
export function addressBytes(address: string): Buffer | undefined {
  if (isIPv4(address)) return Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, ...address.split('.').map(Number)]);
  if (!isIPv6(address) || address.includes('%')) return undefined;
  // A dotted IPv4 tail (::ffff:1.2.3.4) as its two groups.
  const text = address.replace(/(\d+)\.(\d+)\.(\d+)\.(\d+)$/, (_m, a: string, b: string, c: string, d: string) =>
    [Number(a) * 256 + Number(b), Number(c) * 256 + Number(d)].map((n) => n.toString(16)).join(':'),
  );
  const [head = '', tail] = text.split('::');
  const groupsOf = (s: string) => (s === '' ? [] : s.split(':'));
  const left = groupsOf(head);
  const right = tail === undefined ? [] : groupsOf(tail);
  const groups = tail === undefined ? left : [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right];
  const bytes = Buffer.alloc(16);
  groups.forEach((g, i) => bytes.writeUInt16BE(parseInt(g, 16), i * 2));
  return bytes;
}

/**
 * An address's 16 bytes as text: an IPv4-mapped address as plain dotted IPv4, an IPv6 address in the RFC 5952 form
 * (lower case, the longest run of two or more zero groups as `::`).
 */
export function formatAddress(bytes: Buffer): string {
  if (bytes.subarray(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff) return [...bytes.subarray(12)].join('.');
  const groups = Array.from({ length: 8 }, (_, i) => bytes.readUInt16BE(i * 2));
  let [bestAt, bestLength] = [-1, 1];
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) [bestAt, bestLength] = [i, j - i];
    i = j;
  }
  const hex = (gs: number[]) => gs.map((g) => g.toString(16)).join(':');
  if (bestAt < 0) return hex(groups);
  return `${hex(groups.slice(0, bestAt))}::${hex(groups.slice(bestAt + bestLength))}`;
}

function samePrefix(a: Buffer, b: Buffer, bits: number): boolean {
  const whole = bits >> 3;
  if (a.compare(b, 0, whole, 0, whole) !== 0) return false;
  const rest = bits & 7;
  if (rest === 0) return true;
  const mask = (0xff << (8 - rest)) & 0xff;
  return (a[whole]! & mask) === (b[whole]! & mask);
}
