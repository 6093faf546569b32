import { connect, createServer } from 'node:net';
import { listenOnLoopback, trackedSockets } from './proxy-server.js';

/**
 * A TCP proxy in front of an MQTT server that cuts the next `cuts` connections right after the server's CONNACK has
 * reached the client: the login is accepted, and the connection is gone before anything else is answered (a server
 * going down between a client's login and its subscription). Later connections are passed through.
 */
export interface CuttingProxy {
  /** mqtt://127.0.0.1:PORT */
  url: string;
  /** How many more connections to cut after their CONNACK. */
  cuts: number;
  /** How many were cut so far. */
  cut: number;
  close(): Promise<void>;
}

/** A CONNACK is always 4 bytes: type 2, remaining length 2, flags, return code (MQTT 3.1.1, 3.2). */
const CONNACK_LENGTH = 4;

export async function startCuttingProxy(target: { host: string; port: number }, cuts: number): Promise<CuttingProxy> {
  const { sockets, track } = trackedSockets();
  const proxy: CuttingProxy = { url: '', cuts, cut: 0, close: () => Promise.resolve() };
  const server = createServer((client) => {
    track(client);
    const upstream = connect(target.port, target.host);
    track(upstream);
    const cutting = proxy.cuts > 0;
    if (cutting) proxy.cuts--;
    client.pipe(upstream);
    let fromServer = Buffer.alloc(0);
    let cuttingNow = false;
    upstream.on('data', (chunk: Buffer) => {
      if (!cutting) return void client.write(chunk);
      fromServer = Buffer.concat([fromServer, chunk]);
      if (fromServer.length < CONNACK_LENGTH || cuttingNow) return;
      cuttingNow = true;
      upstream.destroy();
      client.end(fromServer.subarray(0, CONNACK_LENGTH), () => {
        proxy.cut++;
        client.destroy();
      });
    });
    client.on('close', () => upstream.destroy());
    // The CONNACK is still on its way to the client while the server's side is cut already.
    upstream.on('close', () => {
      if (!cuttingNow) client.destroy();
    });
  });
  const listening = await listenOnLoopback(server, sockets);
  proxy.url = listening.url;
  proxy.close = listening.close;
  return proxy;
}
