import { connect, createServer } from 'node:net';
import { listenOnLoopback, trackedSockets } from './proxy-server.js';
import { packet, splitPackets } from './raw-mqtt.js';

/**
 * A TCP proxy in front of an MQTT server that loses the answer to a request: on the next `cuts` connections that
 * publish a request (of one of the `ops`, when set), it passes the request on, and cuts the connection as the server's
 * first PUBLISH after it (the answer, the request carried out) arrives, without passing that on. With `refusing` set, it
 * turns every new connection away (closes it at once): a server that does not come back in time. Other connections are
 * passed through, to `target` as it is when they open (another server: one that does not know the user, say).
 */
export interface AnswerCuttingProxy {
  /** mqtt://127.0.0.1:PORT */
  url: string;
  /** How many more connections to cut before an answer. */
  cuts: number;
  /** How many answers were lost so far. */
  cut: number;
  refusing: boolean;
  /** Only a request of these ops starts a cut (`{"op":…}`); null: any request. */
  ops: string[] | null;
  /** Where new connections go. */
  target: { host: string; port: number };
  /** Called as an answer is lost (after `cut` has grown): the test may change the proxy before anything else arrives. */
  onCut: () => void;
  close(): Promise<void>;
}

/** MQTT packet types (MQTT 3.1.1, 2.2.1): the one the proxy looks for, and the one a server sends with flags (2.2.2). */
const PUBLISH = 3;
const PUBREL = 6;

export async function startAnswerCuttingProxy(target: { host: string; port: number }): Promise<AnswerCuttingProxy> {
  const { sockets, track } = trackedSockets();
  const proxy: AnswerCuttingProxy = {
    url: '',
    cuts: 0,
    cut: 0,
    refusing: false,
    ops: null,
    target,
    onCut: () => undefined,
    close: () => Promise.resolve(),
  };
  /** Whether a client's PUBLISH (a request, at QoS 0 as the CLI sends them: its payload right after the topic) starts a cut. */
  const cutsOn = (body: Buffer): boolean => {
    if (proxy.ops === null) return true;
    try {
      const { op } = JSON.parse(body.subarray(2 + body.readUInt16BE(0)).toString('utf8')) as { op?: unknown };
      return typeof op === 'string' && proxy.ops.includes(op);
    } catch {
      return false;
    }
  };
  const server = createServer((client) => {
    track(client);
    if (proxy.refusing) return void client.destroy();
    const upstream = connect(proxy.target.port, proxy.target.host);
    track(upstream);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
    // Which connection the cut falls on is decided by its first request, not when it opens.
    let fromClient: Buffer = Buffer.alloc(0);
    let fromServer: Buffer = Buffer.alloc(0);
    let cutting = false;
    client.on('data', (chunk: Buffer) => {
      upstream.write(chunk);
      if (cutting) return;
      const { packets, rest } = splitPackets(Buffer.concat([fromClient, chunk]));
      fromClient = rest;
      if (proxy.cuts > 0 && packets.some((p) => p.type === PUBLISH && cutsOn(p.body))) {
        proxy.cuts--;
        cutting = true;
      }
    });
    upstream.on('data', (chunk: Buffer) => {
      if (!cutting) return void client.write(chunk);
      const { packets, rest } = splitPackets(Buffer.concat([fromServer, chunk]));
      fromServer = rest;
      for (const p of packets) {
        if (p.type === PUBLISH) {
          proxy.cut++;
          proxy.onCut();
          client.destroy();
          upstream.destroy();
          return;
        }
        // What comes before the answer (a PINGRESP) goes on as it is.
        client.write(packet((p.type << 4) | (p.type === PUBREL ? 2 : 0), p.body));
      }
    });
  });
  const listening = await listenOnLoopback(server, sockets);
  proxy.url = listening.url;
  proxy.close = listening.close;
  return proxy;
}
