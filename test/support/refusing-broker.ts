import { createServer, type AddressInfo, type Server } from 'node:net';
import { Aedes, type Client } from 'aedes';

/**
 * A plain Aedes broker standing in for a server that refuses logins for a while: a distributed server whose account
 * store (Redis) restarts answers CONNACK 3, "try again"; a changed password answers 4, a lockout 5. Each user's logins
 * get the code set in `refuse` (0 or none: accepted); `refused` counts the refusals.
 */
export interface RefusingBroker {
  url: string;
  broker: Aedes;
  refuse: Map<string, number>;
  refused: Map<string, number>;
  /** How long the broker takes to refuse each user's login, in ms (a server that cannot check logins may take seconds). */
  slowness: Map<string, number>;
  /** Closes the user's connections, once the broker counts one logged in (its CONNACK may reach the client first). */
  drop(user: string): Promise<void>;
  close(): Promise<void>;
}

export async function startRefusingBroker(): Promise<RefusingBroker> {
  const refuse = new Map<string, number>();
  const refused = new Map<string, number>();
  const slowness = new Map<string, number>();
  const logins = new Set<Client>();
  const broker = new Aedes({
    authenticate: (_client, username, _password, done) => {
      const code = refuse.get(username ?? '') ?? 0;
      if (code === 0) return done(null, true);
      refused.set(username!, (refused.get(username!) ?? 0) + 1);
      const refusal = () => done(Object.assign(new Error('refused'), { returnCode: code }), false);
      const ms = slowness.get(username!) ?? 0;
      if (ms > 0) setTimeout(refusal, ms);
      else refusal();
    },
  });
  await broker.listen();
  broker.on('clientReady', (c) => logins.add(c));
  broker.on('clientDisconnect', (c) => logins.delete(c));
  const tcp: Server = createServer((socket) => broker.handle(socket));
  await new Promise<void>((resolve) => tcp.listen({ host: '127.0.0.1', port: 0 }, resolve));
  return {
    url: `mqtt://127.0.0.1:${(tcp.address() as AddressInfo).port}`,
    broker,
    refuse,
    refused,
    slowness,
    drop: async (user) => {
      const open = () => [...logins].filter((c) => c.id.startsWith(`${user}/`) && !c.closed);
      // Waits for the login itself rather than polling with expect.poll, which a test run concurrently cannot use.
      if (open().length === 0) {
        await new Promise<void>((resolve, reject) => {
          const ready = () => {
            if (open().length === 0) return;
            clearTimeout(timer);
            broker.off('clientReady', ready);
            resolve();
          };
          const timer = setTimeout(() => {
            broker.off('clientReady', ready);
            reject(new Error(`${user} did not log in within 5000 ms`));
          }, 5000);
          broker.on('clientReady', ready);
        });
      }
      for (const c of open()) c.close();
    },
    close: async () => {
      await new Promise<void>((resolve) => broker.close(() => resolve()));
      await new Promise<void>((resolve) => tcp.close(() => resolve()));
    },
  };
}
