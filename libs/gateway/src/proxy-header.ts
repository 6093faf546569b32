import { isIPv4, isIPv6 } from 'node:net';
import type { Duplex } from 'node:stream';
import { addressBytes, formatAddress } from '#libs/config';

/**
 * The PROXY protocol header a load balancer puts before a client's bytes
 * (HAProxy's proxy-protocol.txt, versions 1 and 2), read from the start of a
 * connection. Only the source address is used; destination, ports and v2 TLVs
 * are checked for shape and otherwise ignored.
 */

/** The longest v1 header: `PROXY TCP6 <39> <39> 65535 65535\r\n` (section 2.1). */
export const MAX_V1_HEADER_BYTES = 107;
/** The longest v2 header taken: 16 bytes and its address block, capped as HAProxy's own receiver caps it (section 2.2). */
export const MAX_V2_HEADER_BYTES = 536;

/** The client the proxy names, or `local`: a connection of the proxy's own (a health check), which keeps the socket's address. */
export type ProxiedSource = { address: string } | 'local';

export type ProxyHeaderResult =
  /** More bytes are needed to tell. */
  | 'incomplete'
  /** A header of `length` bytes: what follows it is the client's own. */
  | { source: ProxiedSource; length: number }
  /** No valid header: the connection is to be closed. */
  | { reason: string };

const V1_PREFIX = Buffer.from('PROXY ', 'latin1');
/** Section 2.2: `\r\n\r\n\0\r\nQUIT\n`. */
const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);

/** Reads a PROXY protocol header from the first bytes of a connection (all of them so far). */
export function parseProxyHeader(buf: Buffer): ProxyHeaderResult {
  if (startsLike(buf, V2_SIGNATURE)) return buf.length < 16 ? 'incomplete' : parseV2(buf);
  if (startsLike(buf, V1_PREFIX)) return buf.length < V1_PREFIX.length ? 'incomplete' : parseV1(buf);
  return { reason: 'no PROXY protocol header' };
}

/** True when `buf` and `prefix` agree on their common length. */
function startsLike(buf: Buffer, prefix: Buffer): boolean {
  const n = Math.min(buf.length, prefix.length);
  return buf.compare(prefix, 0, n, 0, n) === 0;
}

function parseV1(buf: Buffer): ProxyHeaderResult {
  const window = buf.subarray(0, MAX_V1_HEADER_BYTES);
  const cr = window.indexOf(0x0d);
  // Section 2.1: the line ends with CR LF, and is at most 107 bytes with it.
  if (cr < 0) return buf.length >= MAX_V1_HEADER_BYTES ? { reason: `PROXY v1 header longer than ${MAX_V1_HEADER_BYTES} bytes` } : lineSoFar(window);
  if (cr + 1 >= MAX_V1_HEADER_BYTES) return { reason: `PROXY v1 header longer than ${MAX_V1_HEADER_BYTES} bytes` };
  if (cr + 1 === buf.length) return lineSoFar(window.subarray(0, cr));
  if (buf[cr + 1] !== 0x0a) return { reason: 'PROXY v1 header: CR not followed by LF' };
  const bad = lineSoFar(window.subarray(0, cr));
  if (bad !== 'incomplete') return bad;
  const length = cr + 2;
  const fields = buf.toString('latin1', V1_PREFIX.length, cr).split(' ');
  const [proto, src, dst, srcPort, dstPort, ...extra] = fields;
  // Section 2.1: UNKNOWN (the proxy's own connection, or a protocol it cannot name) ignores the rest of the line.
  if (proto === 'UNKNOWN') return { source: 'local', length };
  if (proto !== 'TCP4' && proto !== 'TCP6') return { reason: `PROXY v1 header: unknown protocol "${proto}"` };
  if (extra.length > 0 || dstPort === undefined) return { reason: 'PROXY v1 header: not 4 fields after the protocol' };
  const isIP = proto === 'TCP4' ? isIPv4 : isIPv6;
  if (!isIP(src!) || !isIP(dst!) || src!.includes('%') || dst!.includes('%')) return { reason: `PROXY v1 header: addresses are not ${proto} addresses` };
  if (!isPort(srcPort!) || !isPort(dstPort)) return { reason: 'PROXY v1 header: ports are not 0–65535' };
  return { source: { address: formatAddress(addressBytes(src!)!) }, length };
}

/** A v1 line so far (before its CR): printable US-ASCII only, else it is no header and nothing more is awaited. */
function lineSoFar(line: Buffer): 'incomplete' | { reason: string } {
  for (const b of line) if (b < 0x20 || b > 0x7e) return { reason: 'PROXY v1 header: a byte that is not printable ASCII' };
  return 'incomplete';
}

const isPort = (s: string) => /^(?:0|[1-9]\d{0,4})$/.test(s) && Number(s) <= 65535;

function parseV2(buf: Buffer): ProxyHeaderResult {
  const verCmd = buf[12]!;
  const famProto = buf[13]!;
  const length = 16 + buf.readUInt16BE(14);
  // Section 2.2: the version is the high nibble, and must be 2.
  if (verCmd >> 4 !== 2) return { reason: `PROXY v2 header: version ${verCmd >> 4}` };
  if (length > MAX_V2_HEADER_BYTES) return { reason: `PROXY v2 header of ${length} bytes is over the ${MAX_V2_HEADER_BYTES} byte limit` };
  const command = verCmd & 0x0f;
  if (command !== 0 && command !== 1) return { reason: `PROXY v2 header: unknown command ${command}` };
  if (buf.length < length) return 'incomplete';
  // LOCAL: the proxy's own connection (a health check); its address block is to be ignored.
  if (command === 0) return { source: 'local', length };
  const family = famProto >> 4;
  const transport = famProto & 0x0f;
  // UNSPEC and UNIX: no client address to use; the receiver may take the connection with its own endpoints.
  if (family === 0 || family === 3) return { source: 'local', length };
  if (family !== 1 && family !== 2) return { reason: `PROXY v2 header: unknown address family ${family}` };
  if (transport !== 1) return { reason: 'PROXY v2 header: not a stream (TCP) connection' };
  const block = family === 1 ? 12 : 36;
  if (length - 16 < block) return { reason: `PROXY v2 header: an address block of ${length - 16} bytes, under the ${block} its family needs` };
  const src = family === 1 ? Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, ...buf.subarray(16, 20)]) : Buffer.from(buf.subarray(16, 32));
  return { source: { address: formatAddress(src) }, length };
}

/** Why a connection from a trusted proxy was closed before its header was read, for the drop log. */
export interface ProxyHeaderDrop {
  reason: string;
  clause: 'PROXY protocol';
  bytesRead: number;
}

/**
 * Reads the PROXY protocol header off the start of a socket from a trusted proxy, then hands the socket on, paused,
 * with whatever came after the header put back to be read first: `onHeader` gets the client's address (the socket's
 * own for a LOCAL or UNKNOWN header). A header that is malformed, too long or not complete within `timeoutMs` closes
 * the socket and goes to `onDrop`; a socket that closes first is let go quietly. Nothing of this stays with the socket
 * once the header is read.
 */
export function awaitProxyHeader(
  socket: Duplex,
  socketAddress: string,
  timeoutMs: number,
  onHeader: (socket: Duplex, clientAddress: string) => void,
  onDrop: (drop: ProxyHeaderDrop, socketAddress: string) => void,
): void {
  let read: Buffer = Buffer.alloc(0);
  const finish = () => {
    clearTimeout(timer);
    socket.off('data', onData);
    socket.off('end', onGone);
    socket.off('close', onGone);
    socket.off('error', onGone);
  };
  const drop = (reason: string) => {
    finish();
    // The connection is left with an error listener: a reset after the drop must not become an uncaught error.
    socket.on('error', ignore);
    socket.destroy();
    onDrop({ reason, clause: 'PROXY protocol', bytesRead: read.length }, socketAddress);
  };
  const onData = (chunk: Buffer) => {
    read = read.length === 0 ? chunk : Buffer.concat([read, chunk]);
    const result = parseProxyHeader(read);
    if (result === 'incomplete') return;
    if ('reason' in result) return drop(result.reason);
    finish();
    socket.pause();
    if (read.length > result.length) socket.unshift(read.subarray(result.length));
    onHeader(socket, result.source === 'local' ? socketAddress : result.source.address);
  };
  const onGone = () => {
    finish();
    socket.on('error', ignore);
    socket.destroy();
  };
  const timer = setTimeout(() => drop('no complete PROXY protocol header in time'), timeoutMs);
  socket.on('data', onData);
  socket.on('end', onGone);
  socket.on('close', onGone);
  socket.on('error', onGone);
}

function ignore(): void {}
