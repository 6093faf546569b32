import { once } from 'node:events';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { awaitProxyHeader, MAX_V1_HEADER_BYTES, parseProxyHeader, type ProxyHeaderDrop } from './proxy-header.js';

const SIG = Buffer.from('0d0a0d0a000d0a515549540a', 'hex');
/** A v2 header: version/command byte, family/transport byte, then the address block (and any TLVs). */
const v2 = (verCmd: number, famProto: number, block: Buffer) => {
  const len = Buffer.alloc(2);
  len.writeUInt16BE(block.length);
  return Buffer.concat([SIG, Buffer.from([verCmd, famProto]), len, block]);
};
const ports = Buffer.from([0x30, 0x39, 0x07, 0x5b]);
const v2Inet = (src: number[], dst = [10, 0, 0, 2]) => v2(0x21, 0x11, Buffer.concat([Buffer.from([...src, ...dst]), ports]));
const v2Inet6 = (src: string, dst = '00000000000000000000000000000001') =>
  v2(0x21, 0x21, Buffer.concat([Buffer.from(src, 'hex'), Buffer.from(dst, 'hex'), ports]));
const CONNECT = Buffer.from([0x10, 0x0c, 0x00, 0x04, 0x4d, 0x51, 0x54, 0x54, 0x04, 0x02, 0x00, 0x3c, 0x00, 0x00]);

describe('parseProxyHeader, v1 (text)', () => {
  it('reads TCP4 and TCP6 lines, and gives the length to strip', () => {
    const line = Buffer.from('PROXY TCP4 192.0.2.7 10.0.0.2 51234 1883\r\n');
    expect(parseProxyHeader(line)).toEqual({ source: { address: '192.0.2.7' }, length: line.length });
    expect(parseProxyHeader(Buffer.from('PROXY TCP6 2001:DB8:0:0:0:0:0:1 ::1 51234 1883\r\n'))).toMatchObject({ source: { address: '2001:db8::1' } });
    // An IPv4 client of a dual-stack proxy may come as IPv4-mapped IPv6: it is known by its IPv4 address.
    expect(parseProxyHeader(Buffer.from('PROXY TCP6 ::ffff:192.0.2.7 ::1 1 2\r\n'))).toMatchObject({ source: { address: '192.0.2.7' } });
  });

  it('takes UNKNOWN as the proxy’s own connection, whatever follows it on the line', () => {
    expect(parseProxyHeader(Buffer.from('PROXY UNKNOWN\r\n'))).toEqual({ source: 'local', length: 15 });
    expect(parseProxyHeader(Buffer.from('PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n'))).toMatchObject({ source: 'local' });
  });

  it('waits for the rest of a header split anywhere, and leaves the MQTT bytes after it', () => {
    const line = Buffer.from('PROXY TCP4 192.0.2.7 10.0.0.2 51234 1883\r\n');
    for (let cut = 1; cut < line.length; cut++) expect(parseProxyHeader(line.subarray(0, cut)), `first ${cut} bytes`).toBe('incomplete');
    const both = Buffer.concat([line, CONNECT]);
    const result = parseProxyHeader(both);
    expect(result).toMatchObject({ length: line.length });
    expect(both.subarray((result as { length: number }).length)).toEqual(CONNECT);
  });

  it('refuses malformed lines: wrong fields, bad addresses or ports, a bare LF, trailing fields, control bytes', () => {
    for (const bad of [
      'PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n',
      'PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n',
      'PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n',
      'PROXY TCP4 ::1 5.6.7.8 1 2\r\n',
      'PROXY TCP6 1.2.3.4 ::1 1 2\r\n',
      'PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n',
      'PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n',
      'PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n',
      'PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n',
      'PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n',
      'PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX',
      'PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n',
      'proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n',
    ])
      expect(parseProxyHeader(Buffer.from(bad)), JSON.stringify(bad)).toHaveProperty('reason');
  });

  it(`refuses a line of more than ${MAX_V1_HEADER_BYTES} bytes without waiting for its end`, () => {
    const long = Buffer.from(`PROXY UNKNOWN ${'x'.repeat(200)}`);
    expect(parseProxyHeader(long.subarray(0, MAX_V1_HEADER_BYTES - 1))).toBe('incomplete');
    expect(parseProxyHeader(long.subarray(0, MAX_V1_HEADER_BYTES))).toHaveProperty('reason');
    // 107 bytes with its CR LF is the longest there is.
    const longest = Buffer.from(`PROXY UNKNOWN ${'x'.repeat(MAX_V1_HEADER_BYTES - 16)}\r\n`);
    expect(longest.length).toBe(MAX_V1_HEADER_BYTES);
    expect(parseProxyHeader(longest)).toMatchObject({ source: 'local', length: MAX_V1_HEADER_BYTES });
    expect(parseProxyHeader(Buffer.from(`PROXY UNKNOWN ${'x'.repeat(MAX_V1_HEADER_BYTES - 15)}\r\n`))).toHaveProperty('reason');
  });
});

describe('parseProxyHeader, v2 (binary)', () => {
  it('reads the source of an IPv4 and an IPv6 connection, TLVs after the addresses ignored', () => {
    const h4 = v2Inet([192, 0, 2, 7]);
    expect(parseProxyHeader(h4)).toEqual({ source: { address: '192.0.2.7' }, length: 28 });
    const h6 = v2Inet6('20010db8000000000000000000000042');
    expect(parseProxyHeader(h6)).toEqual({ source: { address: '2001:db8::42' }, length: 52 });
    expect(parseProxyHeader(v2Inet6('00000000000000000000ffffc0000207'))).toMatchObject({ source: { address: '192.0.2.7' } });
    const withTlv = v2(0x21, 0x11, Buffer.concat([Buffer.from([192, 0, 2, 7, 10, 0, 0, 2]), ports, Buffer.from([0x04, 0x00, 0x00])]));
    expect(parseProxyHeader(withTlv)).toEqual({ source: { address: '192.0.2.7' }, length: 31 });
  });

  it('takes LOCAL, and PROXY over UNSPEC or UNIX, as the proxy’s own connection', () => {
    expect(parseProxyHeader(v2(0x20, 0x00, Buffer.alloc(0)))).toEqual({ source: 'local', length: 16 });
    expect(parseProxyHeader(v2(0x20, 0x11, Buffer.alloc(12)))).toEqual({ source: 'local', length: 28 });
    expect(parseProxyHeader(v2(0x21, 0x00, Buffer.alloc(0)))).toMatchObject({ source: 'local' });
    expect(parseProxyHeader(v2(0x21, 0x31, Buffer.alloc(216)))).toMatchObject({ source: 'local' });
  });

  it('waits for a header split anywhere, and leaves the MQTT bytes after it', () => {
    const h = v2Inet6('20010db8000000000000000000000042');
    for (let cut = 1; cut < h.length; cut++) expect(parseProxyHeader(h.subarray(0, cut)), `first ${cut} bytes`).toBe('incomplete');
    const both = Buffer.concat([h, CONNECT]);
    expect(both.subarray((parseProxyHeader(both) as { length: number }).length)).toEqual(CONNECT);
  });

  it('refuses another version or command, an unknown family, datagrams, a short address block, an oversized header', () => {
    expect(parseProxyHeader(v2(0x11, 0x11, Buffer.alloc(12)))).toHaveProperty('reason');
    expect(parseProxyHeader(v2(0x22, 0x11, Buffer.alloc(12)))).toHaveProperty('reason');
    expect(parseProxyHeader(v2(0x21, 0x41, Buffer.alloc(12)))).toHaveProperty('reason');
    expect(parseProxyHeader(v2(0x21, 0x12, Buffer.alloc(12)))).toHaveProperty('reason');
    expect(parseProxyHeader(v2(0x21, 0x11, Buffer.alloc(11)))).toHaveProperty('reason');
    expect(parseProxyHeader(v2(0x21, 0x21, Buffer.alloc(35)))).toHaveProperty('reason');
    // The length field is judged before the bytes it claims are awaited.
    const huge = v2(0x21, 0x11, Buffer.alloc(12));
    huge.writeUInt16BE(0xffff, 14);
    expect(parseProxyHeader(huge.subarray(0, 16))).toMatchObject({ reason: expect.stringMatching(/limit/) as unknown });
    expect(parseProxyHeader(v2(0x21, 0x11, Buffer.alloc(520)))).toMatchObject({ length: 536 });
    expect(parseProxyHeader(v2(0x21, 0x11, Buffer.alloc(521)))).toHaveProperty('reason');
  });

  it('refuses bytes that begin neither header, at the first byte that tells', () => {
    expect(parseProxyHeader(CONNECT)).toHaveProperty('reason');
    expect(parseProxyHeader(Buffer.from('PROXX'))).toHaveProperty('reason');
    expect(parseProxyHeader(Buffer.from([0x0d, 0x0a, 0x0d, 0x0b]))).toHaveProperty('reason');
    expect(parseProxyHeader(Buffer.from('PROX'))).toBe('incomplete');
    expect(parseProxyHeader(SIG.subarray(0, 5))).toBe('incomplete');
  });
});

/** A real TCP connection: `client` writes, the server side goes through awaitProxyHeader. */
describe('awaitProxyHeader', () => {
  let server: Server | undefined;
  let client: Socket | undefined;
  afterEach(async () => {
    client?.destroy();
    if (server) await new Promise((r) => server!.close(r));
  });

  type Outcome = { header: { address: string; after: Buffer } } | { drop: ProxyHeaderDrop; closed: Promise<unknown> };
  const open = async (timeoutMs = 5000) => {
    const outcome = new Promise<Outcome>((resolve) => {
      server = createServer((socket) =>
        awaitProxyHeader(
          socket,
          'proxy',
          timeoutMs,
          (s, address) => {
            // What the next reader sees: the bytes after the header, then the rest of the stream.
            const chunks: Buffer[] = [];
            s.on('data', (d: Buffer) => {
              chunks.push(d);
              if (Buffer.concat(chunks).length >= CONNECT.length) resolve({ header: { address, after: Buffer.concat(chunks) } });
            });
            s.resume();
          },
          (drop) => resolve({ drop, closed: once(socket, 'close') }),
        ),
      );
    });
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
    client = connect((server!.address() as AddressInfo).port, '127.0.0.1');
    client.on('error', () => undefined);
    await once(client, 'connect');
    return { outcome };
  };

  it('hands on the client address and every byte after the header, split over writes or sent with it', async () => {
    const header = v2Inet([192, 0, 2, 7]);
    const { outcome } = await open();
    // Separate writes, each waited for, so they do not meet in one segment.
    const write = (b: Buffer) => new Promise((r) => client!.write(b, r));
    await write(header.subarray(0, 5));
    await write(Buffer.concat([header.subarray(5), CONNECT.subarray(0, 3)]));
    await write(CONNECT.subarray(3));
    expect(await outcome).toEqual({ header: { address: '192.0.2.7', after: CONNECT } });
  });

  it('closes a connection whose header is garbage, and one whose header does not come in time', async () => {
    const { outcome: garbage } = await open();
    client!.write(CONNECT);
    const dropped = await garbage;
    expect(dropped).toMatchObject({ drop: { clause: 'PROXY protocol', bytesRead: CONNECT.length } });
    await (dropped as { closed: Promise<unknown> }).closed;
    client!.destroy();
    await new Promise((r) => server!.close(r));

    const { outcome: late } = await open(100);
    client!.write('PROXY TCP4 1.2.3.4');
    expect(await late).toMatchObject({ drop: { reason: 'no complete PROXY protocol header in time' } });
  });
});
