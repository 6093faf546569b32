/**
 * A bare Aedes 1.x broker in its own process, the yardstick Parley is measured
 * against: no login, no ACLs, no store of its own. With BENCH_REDIS_URL set it
 * is the stock distributed pair (aedes-persistence-redis + mqemitter-redis),
 * otherwise Aedes's in-memory persistence and emitter. Listens on an ephemeral
 * loopback port and prints `{"event":"listening","port":N}` on stdout.
 */
import { createRequire } from 'node:module';
import { createServer, type AddressInfo } from 'node:net';
import { Aedes, type AedesOptions } from 'aedes';

const require = createRequire(import.meta.url);

interface RedisTarget {
  host: string;
  port: number;
}

/** The stock Redis pair, configured so a 10,000-message offline backlog is delivered whole on connect (the default caps it at 1,000). */
function redisPair(url: string): Partial<AedesOptions> {
  const { hostname, port } = new URL(url);
  const target: RedisTarget = { host: hostname, port: Number(port) };
  const persistence = require('aedes-persistence-redis') as (opts: RedisTarget & { maxSessionDelivery: number }) => unknown;
  const mqemitter = require('mqemitter-redis') as (opts: RedisTarget) => unknown;
  return { persistence: persistence({ ...target, maxSessionDelivery: 1_000_000 }), mq: mqemitter(target) };
}

async function main(): Promise<void> {
  const url = process.env.BENCH_REDIS_URL;
  const aedes = new Aedes(url ? redisPair(url) : {});
  await aedes.listen();
  const server = createServer((socket) => aedes.handle(socket));
  await new Promise<void>((resolve) => server.listen({ host: '127.0.0.1', port: 0 }, resolve));
  process.stdout.write(JSON.stringify({ event: 'listening', port: (server.address() as AddressInfo).port }) + '\n');
  const stop = () => {
    server.close();
    aedes.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

main().catch((e: unknown) => {
  process.stderr.write(`bare broker failed: ${String(e)}\n`);
  process.exit(1);
});
