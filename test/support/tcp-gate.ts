import { connect, createServer, type AddressInfo, type Socket } from 'node:net';

/**
 * A TCP port in front of another that turns every connection away (closes it at once) until `open()`, then passes
 * connections through to the target: a dependency (Redis) that is unreachable at first and comes later, on a port
 * that is taken from the start, so no other process can take it meanwhile.
 */
export interface TcpGate {
  port: number;
  /** `redis://` URL of the gate, for a Redis behind it. */
  url: string;
  open(): void;
  close(): Promise<void>;
}

export async function startTcpGate(target: { host: string; port: number }): Promise<TcpGate> {
  let opened = false;
  const sockets = new Set<Socket>();
  const track = (s: Socket): void => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => s.destroy());
  };
  const server = createServer((client) => {
    track(client);
    if (!opened) {
      client.destroy();
      return;
    }
    const upstream = connect(target.port, target.host);
    track(upstream);
    client.pipe(upstream).pipe(client);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    open: () => {
      opened = true;
    },
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
