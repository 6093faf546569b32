import { readFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { createServer as createTcpServer, type AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { createServer as createTlsServer } from 'node:tls';
import { Logger } from '@nestjs/common';
import { createWebSocketStream, WebSocketServer } from 'ws';
import { describeListenError } from '#libs/runtime';

/** The transports a client can reach the broker over, each on its own port. */
export type ListenerKind = 'mqtt' | 'mqtts' | 'ws' | 'wss';

const logger = new Logger('MqttListeners');

const LABEL: Record<ListenerKind, string> = { mqtt: 'MQTT', mqtts: 'MQTT over TLS', ws: 'MQTT over WebSocket', wss: 'MQTT over secure WebSocket' };

export interface TlsFiles {
  /** PEM certificate (chain) file. */
  cert: string;
  /** PEM private key file. */
  key: string;
}

export class ListenError extends Error {
  override readonly name = 'ListenError';
}

/** A byte stream from a client and the address it came from. */
export type Accept = (stream: Duplex, remoteAddress: string) => void;

export interface OpenListener {
  kind: ListenerKind;
  address: AddressInfo;
  close(): Promise<void>;
  readonly listening: boolean;
}

/**
 * Opens one listener. On `::` every listener is dual-stack: IPv4 clients
 * arrive as IPv4-mapped addresses on the same socket. WebSocket listeners
 * speak the `mqtt` subprotocol and carry MQTT packets in binary frames.
 */
export async function openListener(
  kind: ListenerKind,
  host: string,
  port: number,
  accept: Accept,
  opts: { tls?: TlsFiles; maxPacketBytes: number },
): Promise<OpenListener> {
  const tls = opts.tls;
  const secure = kind === 'mqtts' || kind === 'wss';
  if (secure && !tls) throw new ListenError(`cannot listen for ${LABEL[kind]}: no certificate and key (PARLEY_TLS_CERT, PARLEY_TLS_KEY)`);
  const tlsOptions = tls ? { cert: readFileSync(tls.cert), key: readFileSync(tls.key) } : undefined;
  const addressOf = (s: { remoteAddress?: string | undefined }) => s.remoteAddress ?? 'unknown';

  let server;
  let wss: WebSocketServer | undefined;
  switch (kind) {
    case 'mqtt':
      // Each packet goes out in one write; Nagle's algorithm would only delay it.
      server = createTcpServer({ noDelay: true }, (socket) => accept(socket, addressOf(socket)));
      break;
    case 'mqtts':
      // A handshake that never completes is the guard's connect timeout's business once it does; until then, TLS's own.
      server = createTlsServer({ ...tlsOptions, handshakeTimeout: 10_000 }, (socket) => {
        socket.setNoDelay(true);
        accept(socket, addressOf(socket));
      });
      break;
    case 'ws':
    case 'wss': {
      server = kind === 'wss' ? createHttpsServer(tlsOptions!) : createHttpServer();
      server.on('request', (_req, res) => res.writeHead(426, { 'content-type': 'text/plain' }).end('MQTT over WebSocket only\n'));
      const ws = new WebSocketServer({
        server,
        // A WebSocket message carries a packet or part of one: never more than the largest packet (plus its header).
        maxPayload: opts.maxPacketBytes + 5,
        handleProtocols: (protocols) => (protocols.has('mqtt') ? 'mqtt' : protocols.has('mqttv3.1') ? 'mqttv3.1' : false),
      });
      ws.on('connection', (socket, req) => accept(createWebSocketStream(socket), addressOf(req.socket)));
      wss = ws;
      break;
    }
  }
  // A client that errs during a TLS handshake affects only itself.
  server.on('tlsClientError', () => undefined);
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => reject(new ListenError(describeListenError(err, host, port, LABEL[kind]))));
    server.listen({ host, port, ipv6Only: false }, () => resolve());
  });
  // Once listening, a listener error (EMFILE, say) is logged; it must never crash the process.
  server.on('error', (err: Error) => logger.error({ event: 'listener_error', listener: kind, error: err.message }));
  return {
    kind,
    address: server.address() as AddressInfo,
    get listening() {
      return server.listening;
    },
    close: async () => {
      if (wss) for (const c of wss.clients) c.terminate();
      wss?.close();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
