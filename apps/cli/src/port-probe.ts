import { isIP, connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';

/**
 * What answers on a port, as far as two small questions tell: `mqtt` (a CONNACK to a CONNECT), `websocket` (an HTTP
 * server that answers a plain request with 426 Upgrade Required, as a WebSocket listener does), `parley-http` (Parley's
 * health and metrics port: `/healthz` answers `{"status":"ok"}`), `http` (another HTTP server), or `unknown`.
 */
export type PortKind = 'mqtt' | 'websocket' | 'parley-http' | 'http' | 'unknown';

export interface ProbeTarget {
  host: string;
  port: number;
  /**
   * Ask over TLS (the port took a TLS handshake), trusting these CA certificates besides the system's; or, `unverified`,
   * any certificate: only to tell whether the port speaks TLS, and what over it (the questions carry nothing secret).
   */
  tls?: { ca?: Buffer; servername: string; unverified?: boolean };
}

/**
 * Asks the port what it speaks, after a connection to it failed in a way that suggests the wrong scheme: first an MQTT
 * CONNECT (a client id the server refuses, CONNACK 2, before any login: nothing is logged in, no account is tried),
 * then, if HTTP answered, `GET /healthz`. Each question gets `timeoutMs`; never rejects.
 */
export async function probePort(target: ProbeTarget, timeoutMs = 2000): Promise<PortKind> {
  const mqtt = await exchange(target, MQTT_CONNECT, timeoutMs, (b) => b.length >= 5 || (b[0] === 0x20 && b.length >= 4));
  if (mqtt[0] === 0x20) return 'mqtt';
  if (mqtt.subarray(0, 5).toString('latin1') !== 'HTTP/') return 'unknown';
  const host = target.host.includes(':') ? `[${target.host}]` : target.host;
  const request = Buffer.from(`GET /healthz HTTP/1.1\r\nHost: ${host}:${target.port}\r\nConnection: close\r\n\r\n`, 'latin1');
  const answer = (await exchange(target, request, timeoutMs, (b) => b.length >= 4096)).toString('latin1');
  const status = /^HTTP\/1\.[01] (\d{3})/.exec(answer)?.[1];
  if (status === '426') return 'websocket';
  if (status === '200' && /"status"\s*:\s*"ok"/.test(answer)) return 'parley-http';
  return status === undefined ? 'unknown' : 'http';
}

/**
 * CONNECT, MQTT 3.1.1, clean session, keep-alive 0, client id `?`, which no Parley server (nor a broker that checks ids
 * as the spec allows) takes: it is answered with CONNACK 2 and closed.
 */
const MQTT_CONNECT = Buffer.from([0x10, 13, 0, 4, 0x4d, 0x51, 0x54, 0x54, 4, 0x02, 0, 0, 0, 1, 0x3f]);

/** Writes `bytes` to a new connection and resolves with what came back: once `enough`, at the close, or at the timeout. */
function exchange(target: ProbeTarget, bytes: Buffer, timeoutMs: number, enough: (read: Buffer) => boolean): Promise<Buffer> {
  return new Promise((resolve) => {
    let read = Buffer.alloc(0);
    const socket: Socket = target.tls
      ? tlsConnect(
          {
            host: target.host,
            port: target.port,
            // A name, not an address (RFC 6066: Node warns of an address).
            ...(isIP(target.tls.servername) ? {} : { servername: target.tls.servername }),
            ...(target.tls.ca ? { ca: [target.tls.ca] } : {}),
            ...(target.tls.unverified ? { rejectUnauthorized: false } : {}),
          },
          () => socket.write(bytes),
        )
      : netConnect({ host: target.host, port: target.port }, () => socket.write(bytes));
    const done = () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(read);
    };
    const timer = setTimeout(done, timeoutMs);
    socket.on('data', (chunk: Buffer) => {
      read = Buffer.concat([read, chunk]);
      if (enough(read)) done();
    });
    socket.on('error', done);
    socket.on('close', done);
  });
}
