import type { AddressInfo, Server, Socket } from 'node:net';

/** The open sockets of a test proxy: each is forgotten once closed, and destroyed on an error. */
export function trackedSockets(): { sockets: Set<Socket>; track: (s: Socket) => void } {
  const sockets = new Set<Socket>();
  const track = (s: Socket): void => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => s.destroy());
  };
  return { sockets, track };
}

/**
 * Starts a test proxy's server on an ephemeral loopback port: its URL (mqtt://127.0.0.1:PORT), and a close that ends
 * every socket still open before it stops listening.
 */
export async function listenOnLoopback(server: Server, sockets: Set<Socket>): Promise<{ url: string; close: () => Promise<void> }> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  return {
    url: `mqtt://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
