import { afterAll, beforeAll, expect, it } from 'vitest';
import { topics, type OkReply } from '#libs/protocol';
import { startParley, type ParleyServer } from '../support/parley-server.js';
import { connectClient, endClient } from '../support/mqtt-user.js';
import { rawLogin, subscribePacket } from '../support/raw-mqtt.js';
import { TestUsers } from '../support/test-users.js';

/**
 * A client that stops reading (a frozen phone, a hostile peer) must not hold
 * up anyone else. Bare Aedes waits for each slow socket to drain (60 s by
 * default) before it calls a publish done, so a sender whose group has one
 * frozen member stalls on every post, and everything it sends after it waits
 * too. Parley's connections never make the broker wait; the frozen client is
 * dropped after a bounded time instead.
 */
let server: ParleyServer;
let users: TestUsers;

beforeAll(async () => {
  server = await startParley({
    env: {
      PARLEY_MAX_TEXT_LENGTH: '100000',
      PARLEY_MAX_REQUEST_BYTES: '410000',
      PARLEY_MAX_PACKET_BYTES: '420000',
      PARLEY_WRITE_STALL_MS: '3000',
    },
  });
  users = new TestUsers(() => [server.mqttUrl]);
});

afterAll(async () => {
  await users?.closeAll();
  await server?.dispose();
});

it('one frozen group member does not stall the poster or anyone else, and is dropped after a bounded time', { timeout: 120_000 }, async () => {
  const [a, b, z] = [await users.fresh('alice'), await users.fresh('bob'), await users.fresh('zed')];
  const [alice, bob] = [await users.login(a), await users.login(b)];
  const created = (await alice.request({ op: 'group.create', name: 'with a frozen member', members: [b, z] })) as OkReply;
  const group = (created.result as { id: string }).id;

  // zed logs in, subscribes to its inbox, then stops reading altogether.
  const zed = await rawLogin(server.mqttPort, z, users.password, `${z}/frozen`);
  zed.send(subscribePacket([topics.inbox(z)], { id: 1 }));
  await zed.waitFor(9);
  zed.socket.pause();

  const watcher = await connectClient(server.mqttUrl, { username: b, password: users.password, clientId: `${b}/watch` });
  let zedState = 'unknown';
  const zedOffline = new Promise<void>((resolve) =>
    watcher.on('message', (_t, p) => {
      zedState = (JSON.parse(p.toString()) as { state: string }).state;
      if (zedState === 'offline') resolve();
    }),
  );
  await watcher.subscribeAsync(topics.presence(z), { qos: 1 });

  // alice posts 200 large messages to the group (20 MB for zed, who reads none) and, between them, small ones to bob.
  const big = 'x'.repeat(99_000);
  const dmLatencies: number[] = [];
  const started = Date.now();
  for (let i = 0; i < 200; i++) {
    expect(await alice.request({ op: 'send', group, text: `${i} ${big}` }, 20_000)).toMatchObject({ ok: true });
    if (i % 20 === 19) {
      const text = `dm ${i}`;
      const sentAt = Date.now();
      expect(await alice.request({ op: 'send', to: b, text }, 10_000)).toMatchObject({ ok: true });
      await bob.waitFor((e) => e.type === 'message' && e.text === text, 10_000, text);
      dmLatencies.push(Date.now() - sentAt);
    }
  }
  const elapsed = Date.now() - started;
  // Bob got every group message too: the frozen member held up no one.
  await bob.waitForCount((e) => e.type === 'message' && e.conv === `grp:${group}`, 200, 30_000, 'group messages');
  expect(Math.max(...dmLatencies)).toBeLessThan(5000);
  expect(elapsed).toBeLessThan(60_000);

  // zed is dropped: its presence turns offline within a bounded time, and the log says why.
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([zedOffline, new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`zed still ${zedState} after 30 s`)), 30_000)))]);
  clearTimeout(timer);
  expect(server.output.some((l) => l.includes('connection_dropped') && /not reading|took no bytes/.test(l))).toBe(true);
  zed.close();
  await endClient(watcher);
});
