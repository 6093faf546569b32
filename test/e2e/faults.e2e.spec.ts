import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { topics, type ErrorReply, type OkReply, type WhoResult } from '#libs/protocol';
import { ParleyClient } from '../../apps/cli/src/parley-client.js';
import { CliProcess, runCli } from '../support/cli.js';
import { startCuttingProxy } from '../support/cutting-proxy.js';
import { connectClient, type MqttUser } from '../support/mqtt-user.js';
import { startParley, type ParleyServer } from '../support/parley-server.js';
import { freePort as freeTcpPort } from '../support/redis-server.js';
import { TestUsers } from '../support/test-users.js';

/**
 * Faults on loopback, standalone: the server is killed with SIGKILL while
 * messages flow. The only promise Parley makes is the `accepted` reply; an
 * MQTT PUBACK is not one (Aedes sends it before anything is stored).
 */
const LIMITS = { PARLEY_CONNECTION_BURST: '2000', PARLEY_USER_BURST: '2000' };
let server: ParleyServer | undefined;
const cleanups: (() => Promise<unknown>)[] = [];

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  await server?.dispose();
  server = undefined;
});

/** A port for a gateway that restarts on it: dual-stack, as the gateway listens, and outside the ephemeral range. */
const freePort = () => freeTcpPort('::');

it('a kill -9 after PUBACK but before the durable append never loses an accepted message', { timeout: 120_000 }, async () => {
  server = await startParley({ env: LIMITS });
  const users = new TestUsers(() => [server!.mqttUrl]);
  const [a, b] = [await users.fresh('alice'), await users.fresh('bob')];
  const client = await connectClient(server.mqttUrl, { username: a, password: users.password, clientId: `${a}/burst` });
  const accepted = new Set<string>();
  client.on('message', (_t, p) => {
    const reply = JSON.parse(p.toString()) as OkReply | ErrorReply;
    if (reply.type === 'reply' && reply.ok && reply.id) accepted.add(reply.id);
  });
  await client.subscribeAsync(topics.inbox(a), { qos: 1 });
  const ids = Array.from({ length: 300 }, (_, i) => `burst-${i}`);
  // All 300 are PUBACKed at once; the server stores them one after the other.
  await Promise.all(ids.map((id) => client.publishAsync(topics.requests(a), JSON.stringify({ op: 'send', id, to: b, text: id }), { qos: 1 })));
  const acceptedAtPuback = new Set(accepted);
  await server.kill9();
  client.end(true);
  const pubackedOnly = ids.filter((id) => !acceptedAtPuback.has(id)).length;
  console.log(`PUBACKed ${ids.length}, accepted when the last PUBACK arrived ${acceptedAtPuback.size}, PUBACKed but not accepted ${pubackedOnly}`);
  // The window exists: most were acknowledged by MQTT before being stored.
  expect(pubackedOnly).toBeGreaterThan(0);

  server = await startParley({ env: LIMITS, dataDir: server.dataDir });
  const bob = await new TestUsers(() => [server!.mqttUrl]).login(b);
  cleanups.push(() => bob.close());
  const history = (await bob.request({ op: 'history', with: a, limit: 500 })) as OkReply;
  const stored = new Set((history.result as { messages: { id: string }[] }).messages.map((m) => m.id));
  const lost = [...accepted].filter((id) => !stored.has(id));
  console.log(`accepted before the kill ${accepted.size}, stored after restart ${stored.size}, accepted but lost ${lost.length}`);
  expect(lost).toEqual([]);
});

it('kill -9 of the standalone server during a steady stream: every accepted message is shown exactly once', { timeout: 180_000 }, async () => {
  const port = await freePort();
  server = await startParley({ env: LIMITS, mqttPort: port });
  const url = `mqtt://127.0.0.1:${port}`;
  const users = new TestUsers(() => [url]);
  const [a, b] = [await users.fresh('sender'), await users.fresh('reader')];

  const listen = CliProcess.start(['listen', '--json'], { PARLEY_SERVER: url, PARLEY_USER: b, PARLEY_PASSWORD: users.password });
  cleanups.push(() => listen.stop());
  await listen.waitForLine(/"type":"ready"/, 20_000);

  let sender: MqttUser = await users.login(a);
  let restarted: Promise<unknown> = Promise.resolve();
  const TOTAL = 120;
  const accepted = new Set<string>();
  let sent = 0;
  for (let i = 0; i < TOTAL; i++) {
    const id = `steady-${i}`;
    sent++;
    if (i === TOTAL / 2) {
      // The crash, mid-stream: SIGKILL races the next request.
      const dead = server;
      restarted = dead.kill9().then(() => startParley({ env: LIMITS, mqttPort: port, dataDir: dead.dataDir }).then((s) => (server = s)));
    }
    // The client's rule: no answer means retry with the same id until one comes.
    for (let attempt = 0; ; attempt++) {
      expect(attempt).toBeLessThan(20);
      try {
        // A publish on a dead connection may never call back: the whole request is bounded.
        let timer: NodeJS.Timeout | undefined;
        const reply = await Promise.race([
          sender.request({ op: 'send', id, to: b, text: `steady ${i}` }, 3000),
          new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error('no answer')), 4000))),
        ]).finally(() => clearTimeout(timer));
        if (reply.ok) accepted.add(id);
        break;
      } catch {
        await sender.close();
        await restarted;
        sender = await users.login(a);
      }
    }
  }
  cleanups.push(() => users.closeAll());

  // Everything accepted reaches the reader's screen, once.
  const shown = () => listen.json().filter((l) => l.type === 'message' && typeof l.id === 'string' && l.id.startsWith('steady-'));
  await listen.waitForLine(() => new Set(shown().map((l) => l.id)).size >= accepted.size, 60_000);
  const shownIds = shown().map((l) => l.id as string);
  const delivered = new Set(shownIds).size;
  const lost = [...accepted].filter((id) => !shownIds.includes(id)).length;
  const duplicated = shownIds.length - delivered;
  console.log(`sent ${sent}, accepted ${accepted.size}, delivered ${delivered}, lost ${lost}, duplicated-as-shown ${duplicated}`);
  expect(accepted.size).toBe(TOTAL);
  expect(lost).toBe(0);
  expect(duplicated).toBe(0);
});

/** A slow TCP relay on loopback whose connections can be cut at once, as a dropped network would. */
async function startRelay(target: number): Promise<{ port: number; cut(): void; close(): Promise<void> }> {
  const pairs = new Set<[Socket, Socket]>();
  const relay = createServer((client) => {
    const upstream = connect({ port: target, host: '127.0.0.1' });
    const pair: [Socket, Socket] = [client, upstream];
    pairs.add(pair);
    client.pipe(upstream);
    // A slow link towards the client (a pause after each chunk), so a transfer is still under way when the network drops.
    upstream.on('data', (chunk: Buffer) => {
      client.write(chunk);
      upstream.pause();
      setTimeout(() => upstream.resume(), 5);
    });
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  });
  await new Promise<void>((resolve) => relay.listen({ port: 0, host: '127.0.0.1' }, resolve));
  return {
    port: (relay.address() as { port: number }).port,
    // resetAndDestroy: an RST, no FIN — neither side learns of it cleanly.
    cut: () => {
      for (const [c, u] of pairs) {
        c.resetAndDestroy();
        u.resetAndDestroy();
      }
    },
    close: () => new Promise<void>((resolve) => relay.close(() => resolve())),
  };
}

it('a client whose network drops mid-transfer gets every message exactly once after it reconnects', { timeout: 120_000 }, async () => {
  server = await startParley({ env: LIMITS });
  const users = new TestUsers(() => [server!.mqttUrl]);
  const [a, b] = [await users.fresh('sender'), await users.fresh('reader')];
  const alice = await users.login(a);
  cleanups.push(() => users.closeAll());
  const TOTAL = 400;
  const replies = await Promise.all(
    Array.from({ length: TOTAL }, (_, i) => alice.request({ op: 'send', id: `net-${i}`, to: b, text: `net ${i} ${'x'.repeat(2000)}` }, 60_000)),
  );
  const accepted = replies.filter((r) => r.ok).length;

  const relay = await startRelay(server.mqttPort);
  cleanups.push(() => relay.close());
  const listen = CliProcess.start(['listen', '--json'], { PARLEY_SERVER: `mqtt://127.0.0.1:${relay.port}`, PARLEY_USER: b, PARLEY_PASSWORD: users.password });
  cleanups.push(() => listen.stop());
  // Counted as lines arrive (parsing every line again on each new one would cost more than the transfer).
  const ids: string[] = [];
  let counted = 0;
  const count = () => {
    for (; counted < listen.lines.length; counted++) {
      const id = /^\{"type":"message".*"id":"(net-\d+)"/.exec(listen.lines[counted]!)?.[1];
      if (id) ids.push(id);
    }
    return ids.length;
  };
  // Mid-transfer: some of the backlog shown, the rest still on its way.
  await listen.waitForLine(() => count() >= 50, 30_000);
  relay.cut();
  const atCut = count();
  await listen.waitForLine(() => {
    count();
    return new Set(ids).size >= accepted;
  }, 60_000);
  const delivered = new Set(ids).size;
  console.log(
    `network drop: sent ${TOTAL}, accepted ${accepted}, shown before the drop ${atCut}, delivered ${delivered}, lost ${accepted - delivered}, duplicated-as-shown ${ids.length - delivered}`,
  );
  expect(atCut).toBeLessThan(accepted);
  expect(delivered).toBe(accepted);
  expect(ids.length).toBe(delivered);
});

it('a message sent while the server is down is accepted once it is back, and stored once: the CLI client says so', { timeout: 120_000 }, async () => {
  const port = await freePort();
  server = await startParley({ env: LIMITS, mqttPort: port });
  const users = new TestUsers(() => [server!.mqttUrl]);
  const [a, b] = [await users.fresh('alice'), await users.fresh('bob')];
  const client = await ParleyClient.connect({ server: server.mqttUrl, user: a, password: users.password, keepTrying: true, timeoutMs: 60_000 });
  cleanups.push(() => client.close());
  await server.kill9();
  await expect.poll(() => client.connected, { timeout: 10_000 }).toBe(false);
  const sent = client.request('send', { to: b, text: 'typed while the server was down' }, 'while-down-1');
  server = await startParley({ env: LIMITS, mqttPort: port, dataDir: server.dataDir });
  expect(await sent).toMatchObject({ conv: expect.any(String), seq: 1 });
  const bob = await new TestUsers(() => [server!.mqttUrl]).login(b);
  cleanups.push(() => bob.close());
  const history = (await bob.request({ op: 'history', with: a })) as OkReply;
  expect((history.result as { messages: { id: string }[] }).messages.map((m) => m.id)).toEqual(['while-down-1']);
});

it('a message the CLI client reported as not sent, the server being down, is not sent later when it is back', { timeout: 120_000 }, async () => {
  const port = await freePort();
  server = await startParley({ env: LIMITS, mqttPort: port });
  const users = new TestUsers(() => [server!.mqttUrl]);
  const [a, b] = [await users.fresh('alice'), await users.fresh('bob')];
  const client = await ParleyClient.connect({ server: server.mqttUrl, user: a, password: users.password, keepTrying: true, timeoutMs: 2000 });
  cleanups.push(() => client.close());
  await server.kill9();
  await expect.poll(() => client.connected, { timeout: 10_000 }).toBe(false);
  const failed = await client.request('send', { to: b, text: 'given up' }, 'given-up-1').catch((e: unknown) => e);
  expect(failed).toMatchObject({ message: 'not sent: no connection to the server for 2 s' });
  server = await startParley({ env: LIMITS, mqttPort: port, dataDir: server.dataDir });
  await expect.poll(() => client.connected, { timeout: 20_000 }).toBe(true);
  // Requests go out in order on the new connection: once a later one is answered, the given-up one would have been
  // carried out.
  expect(await client.request('send', { to: b, text: 'sent once it is back' }, 'later-1')).toMatchObject({ seq: 1 });
  const bob = await new TestUsers(() => [server!.mqttUrl]).login(b);
  cleanups.push(() => bob.close());
  const history = (await bob.request({ op: 'history', with: a })) as OkReply;
  expect((history.result as { messages: { id: string }[] }).messages.map((m) => m.id)).toEqual(['later-1']);
});

it('after a kill -9, a user who was online is last seen about when the server died, not when it came back', { timeout: 120_000 }, async () => {
  server = await startParley({ env: LIMITS });
  const users = new TestUsers(() => [server!.mqttUrl]);
  const [a, b] = [await users.fresh('alice'), await users.fresh('bob')];
  const alice = await users.login(a);
  cleanups.push(() => alice.close());
  const bob = await users.login(b);
  await expect.poll(async () => ((await bob.request({ op: 'who', user: a })) as OkReply).result).toMatchObject({ state: 'online' });
  await bob.close();
  const killedAt = Date.now();
  await server.kill9();
  const first = server;
  server = await startParley({ env: LIMITS, dataDir: first.dataDir });
  const startedAt = Date.now();
  const watcher = await new TestUsers(() => [server!.mqttUrl]).login(b);
  cleanups.push(() => watcher.close());
  const who = async () => ((await watcher.request({ op: 'who', user: a })) as OkReply).result as WhoResult;
  await expect.poll(who, { timeout: 10_000 }).toMatchObject({ state: 'offline' });
  const { lastSeen } = await who();
  // Alice was online until the server died: her last seen is its last sign of life (the data directory's lock, refreshed
  // every 5 s), not the restart, which came later.
  expect(lastSeen).toBeLessThanOrEqual(killedAt);
  expect(lastSeen).toBeGreaterThan(killedAt - 10_000);
  expect(startedAt).toBeGreaterThan(killedAt);
});

it('parley file send and file accept ride out a kill -9 and restart of the server mid-transfer, saying so', { timeout: 180_000 }, async () => {
  const port = await freePort();
  // Transfers at 1 MiB/s past a small burst: a file of a few MiB is still on its way when the server is killed.
  const env = { ...LIMITS, PARLEY_TRANSFER_RATE: '1048576', PARLEY_TRANSFER_BURST: '262144' };
  server = await startParley({ env, mqttPort: port });
  const url = `mqtt://127.0.0.1:${port}`;
  const users = new TestUsers(() => [url]);
  const [a, b] = [await users.fresh('alice'), await users.fresh('bob')];
  const as = (user: string) => ({ PARLEY_SERVER: url, PARLEY_USER: user, PARLEY_PASSWORD: users.password });
  const dir = mkdtempSync(join(tmpdir(), 'parley-restart-'));
  cleanups.push(() => Promise.resolve(rmSync(dir, { recursive: true, force: true })));
  const data = randomBytes(3 * 1024 * 1024 + 77);
  writeFileSync(join(dir, 'big.bin'), data);
  const movedSome = (l: string) => l.startsWith('{') && ((JSON.parse(l) as { type: string; bytes?: number }).bytes ?? 0) > 0;
  /** Runs a transfer, kills and restarts the server once it has moved some bytes, and sees it finish, saying so. */
  const interrupted = async (args: string[], user: string) => {
    const cli = CliProcess.start(['--json', 'file', ...args], as(user));
    cleanups.push(() => cli.stop());
    await cli.waitForLine(movedSome, 20_000);
    const dead = server!;
    await dead.kill9();
    server = await startParley({ env, mqttPort: port, dataDir: dead.dataDir });
    expect(await cli.exited, cli.lines.join('\n')).toBe(0);
    const states = cli.json().filter((l) => l.type === 'connection');
    expect(states.map((l) => l.state)).toEqual(['lost', 'back']);
    return cli;
  };

  const send = await interrupted(['send', b, join(dir, 'big.bin')], a);
  const offer = (send.json().find((l) => l.type === 'offered')?.offer as { id: string } | undefined)?.id;
  expect(offer).toBeDefined();
  const into = mkdtempSync(join(dir, 'into-'));
  await interrupted(['accept', offer!, '--to', into], b);
  expect(readFileSync(join(into, 'big.bin')).equals(data)).toBe(true);
});

it(
  'parley file send and file accept ride out connections dropped between the login (CONNACK) and the inbox subscription; other one-shot commands fail at once',
  { timeout: 120_000 },
  async () => {
    server = await startParley({ env: LIMITS });
    const users = new TestUsers(() => [server!.mqttUrl]);
    const [a, b] = [await users.fresh('alice'), await users.fresh('bob')];
    // Each command's first two connections are cut as soon as the server's CONNACK has passed the proxy.
    const proxy = await startCuttingProxy({ host: '127.0.0.1', port: server.mqttPort }, 0);
    cleanups.push(() => proxy.close());
    const as = (user: string) => ({ PARLEY_SERVER: proxy.url, PARLEY_USER: user, PARLEY_PASSWORD: users.password });
    const dir = mkdtempSync(join(tmpdir(), 'parley-cut-'));
    cleanups.push(() => Promise.resolve(rmSync(dir, { recursive: true, force: true })));
    const data = randomBytes(200 * 1024 + 5);
    writeFileSync(join(dir, 'cut.bin'), data);

    proxy.cuts = 2;
    const send = await runCli(['file', 'send', b, join(dir, 'cut.bin')], as(a), { timeoutMs: 30_000 });
    expect(send.code, send.stdout + send.stderr).toBe(0);
    expect(proxy.cut).toBe(2);
    // Said once, on stderr: a person sees why it takes a moment.
    expect(send.stderr.trim().split('\n')).toEqual([
      '* could not subscribe to the replies topic: Connection closed; retrying…',
      `${b} is offline (never seen online): they will see the offer when they next connect`,
    ]);
    const offer = new RegExp(`^offered cut\\.bin \\(200\\.0 KiB\\) to ${b}: (\\S+)$`).exec(send.stdout.trim())?.[1];
    expect(offer, send.stdout).toBeDefined();

    proxy.cuts = 2;
    const into = mkdtempSync(join(dir, 'into-'));
    const accept = await runCli(['--json', 'file', 'accept', offer!, '--to', into], as(b), { timeoutMs: 30_000 });
    expect(accept.code, accept.stdout + accept.stderr).toBe(0);
    expect(proxy.cut).toBe(4);
    expect(readFileSync(join(into, 'cut.bin')).equals(data)).toBe(true);

    // A one-shot command that does not ride out drops says why at once.
    proxy.cuts = 1;
    const list = await runCli(['--json', 'file', 'list'], as(b), { timeoutMs: 30_000 });
    expect(list.code).toBe(1);
    expect(list.json).toEqual([{ type: 'error', code: 'connect', message: 'could not subscribe to the replies topic: Connection closed' }]);
  },
);
