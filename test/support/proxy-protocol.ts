import { isIPv4 } from 'node:net';
import { addressBytes } from '#libs/config';
import { loggedEvents, type ParleyServer } from './parley-server.js';

/** A PROXY protocol v1 line (HAProxy's proxy-protocol.txt, 2.1) naming a client; `UNKNOWN` for the proxy's own connection. */
export function proxyV1(client: string, port = 51234): Buffer {
  if (client === 'UNKNOWN') return Buffer.from('PROXY UNKNOWN\r\n');
  const v4 = isIPv4(client);
  return Buffer.from(`PROXY ${v4 ? 'TCP4' : 'TCP6'} ${client} ${v4 ? '10.0.0.1' : '::1'} ${port} 1883\r\n`);
}

const SIGNATURE = Buffer.from('0d0a0d0a000d0a515549540a', 'hex');

/** A PROXY protocol v2 header (2.2) naming a TCP client over IPv4 or IPv6; `LOCAL` for the proxy's own connection. */
export function proxyV2(client: string): Buffer {
  if (client === 'LOCAL') return Buffer.concat([SIGNATURE, Buffer.from([0x20, 0x00, 0x00, 0x00])]);
  const v4 = isIPv4(client);
  const src = addressBytes(client)!;
  const block = v4
    ? Buffer.concat([src.subarray(12), Buffer.from([10, 0, 0, 1]), Buffer.from([0xc8, 0x22, 0x07, 0x5b])])
    : Buffer.concat([src, addressBytes('::1')!, Buffer.from([0xc8, 0x22, 0x07, 0x5b])]);
  return Buffer.concat([SIGNATURE, Buffer.from([0x21, v4 ? 0x11 : 0x21, 0, block.length]), block]);
}

export interface DroppedConnection {
  address: string;
  reason: string;
  clause?: string;
  /** The CONNACK code of a refused login. */
  connack?: number;
  bytesRead?: number;
}

/** The connections the server logged as dropped (`connection_dropped`), so far. */
export function droppedConnections(server: Pick<ParleyServer, 'output'>): DroppedConnection[] {
  return loggedEvents<DroppedConnection>(server, 'connection_dropped');
}
