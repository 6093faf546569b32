import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { createServer as createTcpServer, type AddressInfo, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { createSecureContext, createServer as createTlsServer, type SecureContext, TLSSocket } from 'node:tls';
import { Logger } from '@nestjs/common';
import { createWebSocketStream, WebSocketServer } from 'ws';
import { unmappedAddress, type AddressRanges } from '#libs/config';
import { describeListenError } from '#libs/runtime';
import { awaitProxyHeader, type ProxyHeaderDrop } from './proxy-header.js';

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

/** A connection closed before it reached the guard (a TLS handshake failed or late, a WebSocket upgrade late), for the log. */
export type ListenerDrop = (drop: { reason: string; bytesRead: number }, remoteAddress: string) => void;

/**
 * Connections from trusted proxies (PARLEY_PROXY_FROM) on the MQTT and MQTT over TLS listeners: each must start with a
 * PROXY protocol header, and is known by the client address it names.
 */
export interface ProxyTrust {
  from: AddressRanges;
  /** How long a proxy has to send its header: the connect timeout. */
  headerTimeoutMs: number;
  /** A proxied connection closed for its header (malformed, too long, late), with the proxy's address. */
  onDrop: (drop: ProxyHeaderDrop, proxyAddress: string) => void;
}

/**
 * The server side of TLS on a connection read from a trusted proxy, handed on once the handshake is done. A handshake
 * that fails closes the connection and concerns no one else; one that does not finish is the listener's deadline's
 * business (`Unaccepted`).
 */
function acceptProxiedTls(socket: Socket, secureContext: SecureContext, next: (socket: TLSSocket) => void): void {
  const tlsSocket = new TLSSocket(socket, { isServer: true, secureContext });
  const fail = () => tlsSocket.destroy();
  tlsSocket.on('error', fail);
  tlsSocket.once('secure', () => {
    tlsSocket.off('error', fail);
    next(tlsSocket);
  });
}

/**
 * The TCP connections of a TLS or WebSocket listener that have not reached the guard yet (a TLS handshake, an HTTP
 * upgrade under way): each is closed if it is not handed on within the connect timeout, and all are closed when the
 * listener is. The guard's own connect timeout starts only once it has the connection; without this, a client that
 * opened a TCP connection and sent nothing held it open for as long as it liked (TLS's handshake timeout only reports
 * a stall), and kept a stopping server waiting. Known by the remote address and port, which a TLS socket shares with
 * the TCP connection under it.
 */
class Unaccepted {
  private readonly waiting = new Map<string, { socket: Socket; timer: NodeJS.Timeout }>();

  constructor(
    private readonly deadlineMs: number,
    /** Told of each connection closed here, once: what it read, where from, and why. */
    private readonly onDrop: (socket: Socket, reason: string) => void,
    private readonly lateReason: string,
  ) {}

  add(socket: Socket): void {
    const key = peerOf(socket);
    const timer = setTimeout(() => this.drop(socket, this.lateReason), this.deadlineMs).unref();
    this.waiting.set(key, { socket, timer });
    socket.once('close', () => {
      clearTimeout(timer);
      if (this.waiting.get(key)?.socket === socket) this.waiting.delete(key);
    });
  }

  /** The connection under `handedOn` reached the guard: its deadline is the guard's now. */
  accepted(handedOn: Peer): void {
    const key = peerOf(handedOn);
    const entry = this.waiting.get(key);
    if (!entry) return;
    clearTimeout(entry.timer);
    this.waiting.delete(key);
  }

  /**
   * Closes a connection still waiting here for this reason (`socket` may be the TLS socket over it, which TLS may have
   * destroyed already when it reports a failed handshake). One reported twice (TLS's handshake timeout and the
   * deadline here) is told of once.
   */
  drop(socket: Peer & { destroy(): void }, reason: string): void {
    const entry = this.waiting.get(peerOf(socket));
    if (entry) {
      clearTimeout(entry.timer);
      this.waiting.delete(peerOf(socket));
      this.onDrop(entry.socket, reason);
      entry.socket.destroy();
    }
    socket.destroy();
  }

  closeAll(): void {
    for (const { socket, timer } of this.waiting.values()) {
      clearTimeout(timer);
      socket.destroy();
    }
    this.waiting.clear();
  }
}

/** What a TLS socket shares with the TCP connection under it: both ends' addresses and ports. */
interface Peer {
  remoteAddress?: string | undefined;
  remotePort?: number | undefined;
  localAddress?: string | undefined;
  localPort?: number | undefined;
}

function peerOf(s: Peer): string {
  return `${s.remoteAddress ?? ''}\0${s.remotePort ?? ''}\0${s.localAddress ?? ''}\0${s.localPort ?? ''}`;
}

/**
 * The certificate and key, read and checked before anything listens: a file that is not PEM, or a key that does not
 * match its certificate, is refused with the files named (OpenSSL's own message names neither).
 */
function readTlsFiles(tls: TlsFiles, kind: ListenerKind): { cert: Buffer; key: Buffer } {
  const read = (setting: string, path: string) => {
    try {
      return readFileSync(path);
    } catch (e) {
      throw new ListenError(`cannot listen for ${LABEL[kind]}: cannot read ${setting} ${path} (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
    }
  };
  const files = { cert: read('PARLEY_TLS_CERT', tls.cert), key: read('PARLEY_TLS_KEY', tls.key) };
  try {
    createSecureContext(files);
  } catch (e) {
    throw new ListenError(
      `cannot listen for ${LABEL[kind]}: PARLEY_TLS_CERT ${tls.cert} and PARLEY_TLS_KEY ${tls.key} are not a PEM certificate and its key (${(e as Error).message})`,
    );
  }
  warnOfExpiry(files.cert, tls.cert, kind);
  return files;
}

/** Says at start when the certificate has expired, is not valid yet, or expires within 14 days: clients will refuse it. */
function warnOfExpiry(pem: Buffer, path: string, kind: ListenerKind): void {
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(pem);
  } catch {
    return;
  }
  const [from, to, now] = [Date.parse(cert.validFrom), Date.parse(cert.validTo), Date.now()];
  const state = now > to ? 'has expired' : now < from ? 'is not valid yet' : to - now < 14 * 86_400_000 ? 'expires soon' : null;
  if (state) logger.warn({ event: 'certificate_not_valid', listener: kind, file: path, state, validFrom: cert.validFrom, validTo: cert.validTo });
}

export interface OpenListener {
  kind: ListenerKind;
  address: AddressInfo;
  close(): Promise<void>;
  readonly listening: boolean;
}

/**
 * Opens one listener. On `::` every listener is dual-stack: IPv4 clients
 * arrive as IPv4-mapped addresses on the same socket, and are handed on by
 * their IPv4 address. WebSocket listeners speak the `mqtt` subprotocol and
 * carry MQTT packets in binary frames.
 */
export async function openListener(
  kind: ListenerKind,
  host: string,
  port: number,
  accept: Accept,
  opts: { tls?: TlsFiles; maxPacketBytes: number; proxy?: ProxyTrust; connectTimeoutMs: number; onDrop?: ListenerDrop },
): Promise<OpenListener> {
  const tls = opts.tls;
  const secure = kind === 'mqtts' || kind === 'wss';
  if (secure && !tls) throw new ListenError(`cannot listen for ${LABEL[kind]}: no certificate and key (PARLEY_TLS_CERT, PARLEY_TLS_KEY)`);
  const tlsOptions = tls ? readTlsFiles(tls, kind) : undefined;
  // An IPv4 client of a dual-stack socket shows as ::ffff:a.b.c.d: it is known (in logs, by limits) as a.b.c.d, the
  // address a PROXY header names for it, so that one client is one address whichever way it came in.
  const addressOf = (s: { remoteAddress?: string | undefined }) => unmappedAddress(s.remoteAddress ?? 'unknown');
  const proxy = opts.proxy && !opts.proxy.from.empty ? opts.proxy : undefined;
  /** Hands a TCP connection on, after its PROXY protocol header when it comes from a trusted proxy. */
  const afterProxyHeader = (socket: Socket, next: (socket: Socket, address: string) => void) => {
    const address = addressOf(socket);
    if (!proxy?.from.has(address)) return next(socket, address);
    awaitProxyHeader(socket, address, proxy.headerTimeoutMs, (s, client) => next(s as Socket, client), proxy.onDrop);
  };

  // Behind a trusted proxy the PROXY header comes first, with the connect timeout of its own: then the handshake.
  const late =
    kind === 'mqtts' ? 'no TLS handshake in time' : kind === 'wss' ? 'no TLS handshake and WebSocket upgrade in time' : 'no WebSocket upgrade in time';
  const deadlineMs = proxy ? 2 * opts.connectTimeoutMs : opts.connectTimeoutMs;
  // TLS's own handshake timeout is only a backstop behind this deadline: when it fires, TLS has destroyed the socket
  // already, and the address it came from, which the log wants, is gone with it.
  const handshakeTimeout = deadlineMs + 1000;
  // Each connection closed before it reached a guard is logged as the guard logs its drops.
  const unaccepted = new Unaccepted(deadlineMs, (socket, reason) => opts.onDrop?.({ reason, bytesRead: socket.bytesRead }, addressOf(socket)), late);
  let server;
  let wss: WebSocketServer | undefined;
  switch (kind) {
    case 'mqtt':
      // Each packet goes out in one write; Nagle's algorithm would only delay it.
      server = createTcpServer({ noDelay: true }, (socket) =>
        afterProxyHeader(socket, (s, address) => {
          accept(s, address);
          // Paused after its header (see awaitProxyHeader): flowing again, as a socket that had none starts.
          s.resume();
        }),
      );
      break;
    case 'mqtts': {
      // A handshake that never completes is closed at the connect timeout (`unaccepted`); once it completes, the guard's.
      const tlsServer = createTlsServer({ ...tlsOptions, handshakeTimeout }, (socket) => {
        unaccepted.accepted(socket);
        socket.setNoDelay(true);
        accept(socket, addressOf(socket));
      });
      if (!proxy) {
        tlsServer.on('connection', (socket: Socket) => unaccepted.add(socket));
        server = tlsServer;
        break;
      }
      // The PROXY header comes before the TLS handshake: it is read off the TCP connection, and TLS then takes the
      // connection over (reading what came after the header first). A connection from elsewhere goes to the TLS server
      // as it came; a proxied one is wrapped here, so that its client's address stays with it.
      const context = createSecureContext(tlsOptions);
      server = createTcpServer({ noDelay: true }, (socket) => {
        unaccepted.add(socket);
        afterProxyHeader(socket, (s, address) => {
          if (!proxy.from.has(addressOf(s))) return void tlsServer.emit('connection', s);
          acceptProxiedTls(s, context, (tlsSocket) => {
            unaccepted.accepted(s);
            accept(tlsSocket, address);
          });
        });
      });
      break;
    }
    case 'ws':
    case 'wss': {
      server = kind === 'wss' ? createHttpsServer({ ...tlsOptions!, handshakeTimeout }) : createHttpServer();
      // Until its upgrade to WebSocket (and its TLS handshake before that), a connection has the connect timeout.
      server.on('connection', (socket: Socket) => unaccepted.add(socket));
      server.on('request', (_req, res) => res.writeHead(426, { 'content-type': 'text/plain' }).end('MQTT over WebSocket only\n'));
      const ws = new WebSocketServer({
        server,
        // A WebSocket message carries a packet or part of one: never more than the largest packet (plus its header).
        maxPayload: opts.maxPacketBytes + 5,
        handleProtocols: (protocols) => (protocols.has('mqtt') ? 'mqtt' : protocols.has('mqttv3.1') ? 'mqttv3.1' : false),
      });
      ws.on('connection', (socket, req) => {
        unaccepted.accepted(req.socket);
        accept(createWebSocketStream(socket), addressOf(req.socket));
      });
      // ws passes on the HTTP server's errors (a port in use, say), which are handled on the server below.
      ws.on('error', () => undefined);
      wss = ws;
      break;
    }
  }
  // A client that errs during a TLS handshake (or does not finish it in time, which is only reported) affects only itself.
  server.on('tlsClientError', (err: NodeJS.ErrnoException, socket: Socket) =>
    unaccepted.drop(socket, err.code === 'ERR_TLS_HANDSHAKE_TIMEOUT' ? late : `TLS handshake failed: ${err.code ?? err.message}`),
  );
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
      unaccepted.closeAll();
      if (wss) for (const c of wss.clients) c.terminate();
      wss?.close();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
