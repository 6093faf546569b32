import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { topics, type ErrorReply, type OkReply } from '#libs/protocol';
import { startParley, type ParleyServer } from '../support/parley-server.js';
import { connectClient, endClient, registerUser, subscribeCodes, type MqttUser } from '../support/mqtt-user.js';
import { connectPacket, publishPacket, RawClient, subscribePacket } from '../support/raw-mqtt.js';
import { TestUsers } from '../support/test-users.js';
import { Witnesses } from '../support/witnesses.js';
import { sample } from '../support/prometheus.js';
import request from 'supertest';

/**
 * Malformed requests and the security rules, against the real server: each
 * gets its refusal, every other client is still served, nothing stored changes.
 */
let server: ParleyServer;
let users: TestUsers;
let alice: MqttUser;
let bob: MqttUser;
let mallory: MqttUser;
let names: { alice: string; bob: string; mallory: string };
let groupId: string;

beforeAll(async () => {
  server = await startParley({ env: { PARLEY_LOGIN_MAX_FAILURES: '1000', PARLEY_LOGIN_MAX_USER_FAILURES: '1000' } });
  users = new TestUsers(() => [server.mqttUrl, server.mqttUrl6]);
  names = { alice: await users.fresh('alice'), bob: await users.fresh('bob'), mallory: await users.fresh('mallory') };
  [alice, bob, mallory] = [await users.login(names.alice), await users.login(names.bob), await users.login(names.mallory)];
  expect(await alice.request({ op: 'send', to: names.bob, text: 'a private word' })).toMatchObject({ ok: true });
  const created = (await alice.request({ op: 'group.create', name: 'private club', members: [names.bob] })) as OkReply;
  groupId = (created.result as { id: string }).id;
  expect(await alice.request({ op: 'send', group: groupId, text: 'members only' })).toMatchObject({ ok: true });
  // Everything alice, bob and mallory have stored, as they see it.
  witnesses = new Witnesses(alice, bob, () => [
    [alice, { op: 'history', with: names.bob, limit: 500 }],
    [alice, { op: 'history', group: groupId, limit: 500 }],
    [alice, { op: 'group.members', group: groupId }],
    [bob, { op: 'group.list' }],
    [mallory, { op: 'group.list' }],
    [mallory, { op: 'history', with: names.alice, limit: 500 }],
  ]);
});

afterAll(async () => {
  await users?.closeAll();
  await server?.dispose();
});

let witnesses: Witnesses;
const hostile = (run: () => Promise<void>) => witnesses.hostile(run);

/** Publishes a raw payload as mallory and returns the reply (matched by id, or the only id-less reply). */
async function rawRequest(payload: string | Buffer, id: string | null): Promise<ErrorReply | OkReply> {
  const earlier = new Set(mallory.events);
  await mallory.client.publishAsync(topics.requests(names.mallory), payload, { qos: 1 });
  const reply = await mallory.waitFor((e) => e.type === 'reply' && e.id === id && !earlier.has(e), 10_000, `reply ${String(id)}`);
  return reply as ErrorReply | OkReply;
}

const refused = (payload: string | Buffer, id: string | null, code: string) =>
  hostile(async () => {
    expect(await rawRequest(payload, id)).toMatchObject({ ok: false, id, error: { code } });
  });

describe('malformed requests', () => {
  it('not JSON, not an object, no op, unknown op', async () => {
    await refused('{not json', null, 'bad_request');
    await refused(Buffer.from([0xff, 0xfe, 0x00]), null, 'bad_request');
    await refused('[1,2,3]', null, 'bad_request');
    await refused('"send"', null, 'bad_request');
    await refused('null', null, 'bad_request');
    await refused(JSON.stringify({ id: 'no-op' }), 'no-op', 'bad_request');
    await refused(JSON.stringify({ op: 42, id: 'num-op' }), 'num-op', 'bad_request');
    await refused(JSON.stringify({ op: 'drop.tables', id: 'u-1' }), 'u-1', 'unknown_op');
    await refused(JSON.stringify({ op: '__proto__', id: 'u-2' }), 'u-2', 'unknown_op');
  });

  it('wrong types and missing fields', async () => {
    await refused(JSON.stringify({ op: 'send', id: 'w-1', to: names.bob, text: 42 }), 'w-1', 'bad_request');
    await refused(JSON.stringify({ op: 'send', id: 'w-2', to: [names.bob], text: 'x' }), 'w-2', 'bad_request');
    await refused(JSON.stringify({ op: 'send', id: 'w-3', text: 'to nobody' }), 'w-3', 'bad_request');
    await refused(JSON.stringify({ op: 'send', id: 'w-4', to: names.bob }), 'w-4', 'bad_request');
    await refused(JSON.stringify({ op: 'receipt', id: 'w-5', conv: 'dm:a:b', seq: '7', status: 'read' }), 'w-5', 'bad_request');
    await refused(JSON.stringify({ op: 'receipt', id: 'w-6', conv: 'dm:a:b', seq: 1.5, status: 'read' }), 'w-6', 'bad_request');
    await refused(JSON.stringify({ op: 'history', id: 'w-7', with: names.bob, limit: -1 }), 'w-7', 'bad_request');
    await refused(JSON.stringify({ op: 'group.add', id: 'w-8', group: groupId, members: 'bob' }), 'w-8', 'bad_request');
    await refused(JSON.stringify({ op: 'send', id: { $gt: '' }, to: names.bob, text: 'x' }), null, 'bad_request');
    await refused(JSON.stringify({ op: 'send', id: 'w-9', to: names.bob, text: 'x', extra: true }), 'w-9', 'bad_request');
  });

  it('huge fields and payloads', async () => {
    await refused(JSON.stringify({ op: 'send', id: 'h-1', to: names.bob, text: 'x'.repeat(5000) }), 'h-1', 'text_too_long');
    await refused(JSON.stringify({ op: 'send', id: 'h-2', to: 'b'.repeat(10_000), text: 'x' }), 'h-2', 'bad_request');
    await refused(JSON.stringify({ op: 'send', id: 'x'.repeat(100), to: names.bob, text: 'x' }), null, 'bad_request');
    // Too large to parse: answered with the id when it comes first, as clients write it.
    await refused(JSON.stringify({ op: 'send', id: 'h-3', to: names.bob, text: 'x', pad: 'y'.repeat(70_000) }), 'h-3', 'payload_too_large');
    await refused(JSON.stringify({ op: 'send', pad: 'y'.repeat(70_000), id: 'h-3b' }), null, 'payload_too_large');
    await refused(
      JSON.stringify({ op: 'group.create', id: 'h-4', name: 'big', members: Array.from({ length: 2000 }, (_, i) => `u${i}`) }),
      'h-4',
      'bad_request',
    );
  });

  it('ill-formed UTF-8 is refused, not stored or echoed as U+FFFD; a U+FFFD sent as such is kept', async () => {
    const send = (id: string, bytes: number[]) =>
      Buffer.concat([Buffer.from(`{"op":"send","id":"${id}","to":"${names.alice}","text":"hi `), Buffer.from(bytes), Buffer.from('"}')]);
    // A stray byte, an encoded surrogate (CESU-8), an overlong NUL: the witnesses see nothing stored.
    for (const [id, bytes] of [
      ['e-1', [0xff, 0xfe]],
      ['e-2', [0xed, 0xa0, 0x80]],
      ['e-3', [0xc0, 0x80]],
    ] as const) {
      await hostile(async () => {
        expect(await rawRequest(send(id, [...bytes]), id)).toMatchObject({
          ok: false,
          id,
          error: { code: 'bad_request', message: expect.stringMatching(/UTF-8/) as string },
        });
      });
    }
    // Not answered about a user "b\uFFFDob": refused for what it is.
    const who = Buffer.concat([Buffer.from('{"op":"who","id":"e-4","user":"b'), Buffer.from([0xff]), Buffer.from('ob"}')]);
    await hostile(async () => {
      expect(await rawRequest(who, 'e-4')).toMatchObject({
        ok: false,
        id: 'e-4',
        error: { code: 'bad_request', message: expect.stringMatching(/UTF-8/) as string },
      });
    });
    // A replacement character the client meant (EF BF BD) is text like any other.
    const text = `kept \ufffd ${Date.now()}`;
    const kept = Buffer.from(JSON.stringify({ op: 'send', id: 'e-5', to: names.bob, text }));
    expect(kept.includes(Buffer.from([0xef, 0xbf, 0xbd]))).toBe(true);
    expect(await rawRequest(kept, 'e-5')).toMatchObject({ ok: true });
    expect(await bob.waitFor((e) => e.type === 'message' && e.text === text)).toMatchObject({ from: names.mallory });
  });

  it('deeply nested JSON', async () => {
    const deep = '{"a":'.repeat(5000) + '1' + '}'.repeat(5000);
    await refused(deep, null, 'bad_request');
    const nestedText = JSON.stringify({ op: 'send', id: 'n-1', to: names.bob, text: JSON.parse('['.repeat(1000) + ']'.repeat(1000)) as unknown });
    await refused(nestedText, 'n-1', 'bad_request');
  });
});

describe('security', () => {
  it('a sender cannot be impersonated: a request naming "from" is refused, and messages carry the real sender', async () => {
    await refused(JSON.stringify({ op: 'send', id: 's-1', to: names.bob, text: 'I am alice', from: names.alice }), 's-1', 'bad_request');
    const text = `from mallory ${Date.now()}`;
    expect(await mallory.request({ op: 'send', to: names.bob, text })).toMatchObject({ ok: true });
    expect(await bob.waitFor((e) => e.type === 'message' && e.text === text)).toMatchObject({ from: names.mallory });
  });

  it('nobody reads another’s inbox, history or receipts beyond what the docs allow', async () => {
    await hostile(async () => {
      expect(
        await subscribeCodes(mallory.client, [
          topics.inbox(names.alice),
          topics.replies(names.alice),
          'parley/v1/users/+/inbox',
          'parley/v1/users/+/replies',
          '#',
        ]),
      ).toEqual([128, 128, 128, 128, 128]);
      // Mallory's own history with alice is empty; the alice–bob conversation is not hers.
      expect(await mallory.request({ op: 'history', with: names.alice })).toMatchObject({ ok: true, result: { messages: [] } });
      const conv = [names.alice, names.bob].sort().join(':');
      expect(await mallory.request({ op: 'receipt', conv: `dm:${conv}`, seq: 1, status: 'read' })).toMatchObject({ ok: false, error: { code: 'not_member' } });
      expect(await mallory.request({ op: 'history', group: groupId })).toMatchObject({ ok: false, error: { code: 'unknown_group' } });
      expect(await mallory.request({ op: 'info', group: groupId, seq: 1 })).toMatchObject({ ok: false, error: { code: 'unknown_group' } });
      // Presence is public by design: state and last seen, nothing more.
      expect(await mallory.request({ op: 'who', user: names.alice })).toMatchObject({ ok: true, result: { user: names.alice, state: 'online' } });
    });
  });

  it('a user named like a property every object has (constructor) is no member, former member or receiver of anything', async () => {
    // User names are [a-z][a-z0-9_-]*: of Object.prototype's own names, only this one fits.
    const name = 'constructor';
    expect(await registerUser(server.mqttUrl, name, users.password)).toMatchObject({ ok: true });
    const intruder = await users.login(name);
    // A complete offer from alice to bob (one byte, "x").
    const sha256 = '2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881';
    const offered = (await alice.request({ op: 'file.offer', to: names.bob, name: 'x.txt', size: 1, sha256 })) as OkReply;
    const offer = (offered.result as { offer: { id: string } }).offer.id;
    expect(await alice.request({ op: 'file.chunk', offer, index: 0, data: 'eA==' })).toMatchObject({ ok: true, result: { complete: true } });
    await hostile(async () => {
      expect(await intruder.request({ op: 'history', group: groupId })).toMatchObject({ ok: false, error: { code: 'unknown_group' } });
      expect(await intruder.request({ op: 'info', group: groupId, seq: 1 })).toMatchObject({ ok: false, error: { code: 'unknown_group' } });
      expect(await intruder.request({ op: 'send', group: groupId, text: 'in?' })).toMatchObject({ ok: false, error: { code: 'unknown_group' } });
      expect(await intruder.request({ op: 'file.decline', offer })).toMatchObject({ ok: false, error: { code: 'unknown_file' } });
    });
  });

  it('nobody posts to, or manages, a group they are not in or do not own', async () => {
    await hostile(async () => {
      for (const req of [
        { op: 'send', group: groupId, text: 'let me in' },
        { op: 'group.add', group: groupId, members: [names.mallory] },
        { op: 'group.remove', group: groupId, members: [names.bob] },
        { op: 'group.rename', group: groupId, name: 'pwned' },
        { op: 'group.owner', group: groupId, user: names.mallory },
        { op: 'group.delete', group: groupId },
        { op: 'group.leave', group: groupId },
        { op: 'group.members', group: groupId },
      ]) {
        expect(await mallory.request(req)).toMatchObject({ ok: false, error: { code: 'unknown_group' } });
      }
      // A member who is not the owner may post but not manage.
      for (const req of [
        { op: 'group.add', group: groupId, members: [names.mallory] },
        { op: 'group.rename', group: groupId, name: 'pwned' },
        { op: 'group.delete', group: groupId },
      ]) {
        expect(await bob.request(req)).toMatchObject({ ok: false, error: { code: 'not_group_owner' } });
      }
    });
  });

  it('nobody takes over another user’s session by client id', async () => {
    await hostile(async () => {
      for (const clientId of [names.alice, `${names.alice}/test`, `${names.alice}/phone`]) {
        await expect(connectClient(server.mqttUrl, { username: names.mallory, password: users.password, clientId })).rejects.toMatchObject({ code: 2 });
      }
    });
  });

  it('password brute force: locked out after the failure limit, before hashing, while other addresses log in', async () => {
    const locked = await startParley({ env: { PARLEY_LOGIN_MAX_FAILURES: '5', PARLEY_LOGIN_LOCKOUT_MS: '60000' } });
    try {
      const u = new TestUsers(() => [locked.mqttUrl], users.password);
      const victim = await u.fresh('victim');
      const attempt = (password: string, url = locked.mqttUrl) =>
        connectClient(url, { username: victim, password, clientId: `${victim}/bf${Math.random().toString(36).slice(2, 8)}` }).then(
          async (c) => {
            await endClient(c);
            return 0;
          },
          (e: { code?: number }) => e.code ?? -1,
        );
      const codes: number[] = [];
      for (let i = 0; i < 5; i++) codes.push(await attempt(`guess number ${i}`));
      expect(codes).toEqual([4, 4, 4, 4, 4]);
      // Locked now: refused at once (0x05), even with the right password, and without a KDF run.
      const started = Date.now();
      const lockedCodes: number[] = [];
      for (let i = 0; i < 50; i++) lockedCodes.push(await attempt(`guess number ${i + 5}`));
      expect(new Set(lockedCodes)).toEqual(new Set([5]));
      expect(await attempt(users.password)).toBe(5);
      expect(Date.now() - started).toBeLessThan(15_000);
      // Another address (IPv6 loopback) is unaffected.
      expect(await attempt(users.password, locked.mqttUrl6)).toBe(0);
      const metrics = await (await fetch(`${locked.httpUrl}/metrics`)).text();
      expect(metrics).toMatch(/parley_logins_failed_total\{reason="throttled"\} 5[1-9]/);
    } finally {
      await locked.dispose();
    }
  });

  it('password guesses sent all at once: no more are hashed than the failure limit lets through, the rest meet the lockout', async () => {
    const locked = await startParley({ env: { PARLEY_LOGIN_MAX_FAILURES: '5', PARLEY_LOGIN_LOCKOUT_MS: '60000' } });
    try {
      const victim = await new TestUsers(() => [locked.mqttUrl], users.password).fresh('victim');
      const codes = await Promise.all(
        Array.from({ length: 40 }, async (_, i) => {
          const c = await RawClient.open(locked.mqttPort);
          c.send(connectPacket({ clientId: `${victim}/at-once${i}`, username: victim, password: `guess number ${i}` }));
          const code = await c.connackCode();
          c.socket.destroy();
          return code;
        }),
      );
      // Five under way at once, and the few that start as the first end, before the fifth failure locks the address.
      const hashed = codes.filter((c) => c === 4).length;
      expect(hashed).toBeGreaterThanOrEqual(5);
      expect(hashed).toBeLessThanOrEqual(9);
      expect(codes.filter((c) => c === 5).length).toBe(40 - hashed);
    } finally {
      await locked.dispose();
    }
  });

  it('a registration retried with guesses at the password is a failed login each: a known request id (the docs’ "reg-1") is no way around the lockout', async () => {
    const locked = await startParley({ env: { PARLEY_LOGIN_MAX_FAILURES: '5', PARLEY_LOGIN_LOCKOUT_MS: '60000', PARLEY_REGISTRATIONS_PER_MINUTE: '100' } });
    try {
      // Registered with the request id "reg-1", as `registerUser` (and the example in docs/topics.md) does.
      const victim = await new TestUsers(() => [locked.mqttUrl], users.password).fresh('victim');
      for (let i = 0; i < 5; i++) {
        expect(await registerUser(locked.mqttUrl, victim, `guess number ${i}`)).toMatchObject({ ok: false, error: { code: 'user_exists' } });
      }
      // Locked out now: the right password is not checked (the answer tells nothing), and this address's logins are refused.
      expect(await registerUser(locked.mqttUrl, victim, users.password)).toMatchObject({ ok: false, error: { code: 'user_exists' } });
      await expect(connectClient(locked.mqttUrl, { username: victim, password: users.password, clientId: `${victim}/after` })).rejects.toMatchObject({
        code: 5,
      });
      // Another address logs in.
      await endClient(await connectClient(locked.mqttUrl6, { username: victim, password: users.password, clientId: `${victim}/other` }));
    } finally {
      await locked.dispose();
    }
  });
});

describe('abuse limits', () => {
  it('rate limits a flooding connection with rate_limited, and other users are not slowed', async () => {
    const limited = await startParley({ env: { PARLEY_CONNECTION_RATE: '5', PARLEY_CONNECTION_BURST: '10', PARLEY_USER_RATE: '5', PARLEY_USER_BURST: '10' } });
    try {
      const u = new TestUsers(() => [limited.mqttUrl]);
      const [f, a, b] = [await u.fresh('flood'), await u.fresh('calm'), await u.fresh('peer')];
      const [flood, calm, peer] = [await u.login(f), await u.login(a), await u.login(b)];
      const ids = Array.from({ length: 60 }, (_, i) => `fl-${i}`);
      await Promise.all(ids.map((id) => flood.client.publishAsync(topics.requests(f), JSON.stringify({ op: 'who', id, user: b }), { qos: 1 })));
      const replies = await flood.waitForCount((e) => e.type === 'reply' && e.id !== null && e.id.startsWith('fl-'), 60, 20_000);
      const limitedCount = replies.filter((r) => r.type === 'reply' && !r.ok && r.error.code === 'rate_limited').length;
      expect(limitedCount).toBeGreaterThanOrEqual(40);
      expect(replies.filter((r) => r.type === 'reply' && r.ok).length).toBeGreaterThanOrEqual(10);
      // The metrics say which op was throttled.
      const metrics = (await request(limited.httpUrl).get('/metrics')).text;
      expect(sample(metrics, 'parley_requests_total', { op: 'who', outcome: 'rate_limited' })).toBe(limitedCount);
      // Another user is not affected.
      for (let i = 0; i < 10; i++) expect(await calm.request({ op: 'send', to: b, text: `calm ${i}` })).toMatchObject({ ok: true });
      await peer.waitForCount((e) => e.type === 'message' && e.from === a, 10);
      // A second connection of the same user shares the user's budget.
      const flood2 = await u.login(f);
      const burst = await Promise.all(Array.from({ length: 20 }, () => flood2.request({ op: 'who', user: b })));
      expect(burst.some((r) => !r.ok && r.error.code === 'rate_limited')).toBe(true);
      await u.closeAll();
    } finally {
      await limited.dispose();
    }
  });

  it('limits registrations per address (each costs a password hash), and other addresses are unaffected', async () => {
    const limited = await startParley({ env: { PARLEY_REGISTRATIONS_PER_MINUTE: '3' } });
    try {
      const stamp = Date.now().toString(36).slice(-5);
      const codes: string[] = [];
      for (let i = 0; i < 5; i++) {
        const r = await registerUser(limited.mqttUrl, `reg${i}${stamp}`, 'registration password');
        codes.push(r.ok ? 'ok' : r.error.code);
      }
      expect(codes).toEqual(['ok', 'ok', 'ok', 'rate_limited', 'rate_limited']);
      expect(await registerUser(limited.mqttUrl6, `reg9${stamp}`, 'registration password')).toMatchObject({ ok: true });
    } finally {
      await limited.dispose();
    }
  });

  it('caps anonymous connections per address, and closes each after a while: free sockets held open exhaust a server', async () => {
    const capped = await startParley({ env: { PARLEY_MAX_ANONYMOUS_PER_ADDRESS: '2', PARLEY_ANONYMOUS_TIMEOUT_MS: '2000' } });
    try {
      // Each connection's close is watched from its CONNACK on: the timeout may run out before the test looks.
      const closes: Promise<number>[] = [];
      const anon = async (url = capped.mqttUrl) => {
        const c = await connectClient(url, { clientId: `anon.${Math.random().toString(36).slice(2)}` });
        closes.push(new Promise<number>((resolve) => c.once('close', () => resolve(Date.now()))));
        return c;
      };
      const openedAt = Date.now();
      const [first, second] = [await anon(), await anon()];
      await expect(anon()).rejects.toMatchObject({ code: 5 });
      // Another address (IPv6 loopback) has its own count; a user's login is not anonymous.
      const other = await anon(capped.mqttUrl6);
      const u = new TestUsers(() => [capped.mqttUrl6]);
      const user = await u.login(await u.fresh('named'));
      // The cap holds while they last; each is closed after the timeout, as anyone still registering would be.
      const closedAt = await Promise.all(closes);
      for (const at of closedAt) expect(at - openedAt).toBeGreaterThanOrEqual(2000);
      for (const at of closedAt) expect(at - openedAt).toBeLessThan(30_000);
      const again = await anon();
      await endClient(again);
      // The logged-in user stayed.
      expect(await user.request({ op: 'who', user: user.user })).toMatchObject({ ok: true });
      await u.closeAll();
      for (const c of [first, second, other]) c.end(true);
    } finally {
      await capped.dispose();
    }
  });

  it('logs at most 50 dropped connections of one address in 10 s: a stranger cannot write the log at will', async () => {
    const server = await startParley({});
    try {
      const startedAt = Date.now();
      for (let i = 0; i < 60; i++) {
        const c = await RawClient.open(server.mqttPort, '127.0.0.1');
        c.send(Buffer.from([0x30, 0x00]));
        expect(await c.connackCode()).toBe('closed');
      }
      // Another address is logged on its own.
      const other = await RawClient.open(server.mqttPort, '::1');
      other.send(Buffer.from([0x30, 0x00]));
      expect(await other.connackCode()).toBe('closed');
      const drops = () => server.output.filter((l) => l.includes('connection_dropped'));
      await expect.poll(() => drops().some((l) => l.includes('"address":"::1"')), { timeout: 10_000 }).toBe(true);
      const logged = drops().filter((l) => l.includes('127.0.0.1')).length;
      // Within one 10 s window, 50 of the 60; a machine so slow that the drops spanned two windows logs more, never all.
      if (Date.now() - startedAt < 10_000) expect(logged).toBe(50);
      else expect(logged).toBeLessThan(60);
    } finally {
      await server.dispose();
    }
  });

  it('caps connections per user, and drops a silent connection after the keep-alive rules', async () => {
    const capped = await startParley({ env: { PARLEY_MAX_CONNECTIONS_PER_USER: '2', PARLEY_MAX_KEEPALIVE_S: '1' } });
    try {
      const u = new TestUsers(() => [capped.mqttUrl]);
      const name = await u.fresh('many');
      const first = await connectClient(capped.mqttUrl, { username: name, password: u.password, clientId: `${name}/a` });
      const second = await connectClient(capped.mqttUrl, { username: name, password: u.password, clientId: `${name}/b` });
      await expect(connectClient(capped.mqttUrl, { username: name, password: u.password, clientId: `${name}/c` })).rejects.toMatchObject({ code: 5 });
      // Taking over one of its own ids replaces a connection instead of adding one.
      const again = await connectClient(capped.mqttUrl, { username: name, password: u.password, clientId: `${name}/a` });
      await endClient(second);
      const third = await connectClient(capped.mqttUrl, { username: name, password: u.password, clientId: `${name}/c` });
      await Promise.all([first, again, third].map(endClient));
      // keepalive 0 asks for no keep-alive; the server still drops it after 1.5 × PARLEY_MAX_KEEPALIVE_S of silence.
      const silent = await connectClient(capped.mqttUrl, { username: name, password: u.password, clientId: `${name}/silent`, keepalive: 0 });
      const connectedAt = Date.now();
      const closedAt = await new Promise<number>((resolve) => silent.once('close', () => resolve(Date.now())));
      expect(closedAt - connectedAt).toBeGreaterThanOrEqual(1000);
      expect(closedAt - connectedAt).toBeLessThan(10_000);
      silent.end(true);
      // A keep-alive within the limit is the broker's to watch: 1.5 × its own keep-alive of silence.
      const quiet = await RawClient.open(capped.mqttPort);
      try {
        // The broker's timer cannot start before the CONNECT is sent: 1.5 s of silence from then at the least.
        const sentAt = Date.now();
        quiet.send(connectPacket({ clientId: `${name}/quiet`, username: name, password: u.password, keepAlive: 1 }));
        expect(await quiet.connackCode()).toBe(0);
        await quiet.waitClosed();
        expect(Date.now() - sentAt).toBeGreaterThanOrEqual(1500);
        expect(Date.now() - sentAt).toBeLessThan(10_000);
      } finally {
        quiet.socket.destroy();
      }
      // Requests are signs of life too, though the server answers them past the broker: a client that only sends
      // requests (no PINGREQ) for twice its 1.5 s of allowed silence stays connected, and gets every reply.
      const busy = await RawClient.open(capped.mqttPort);
      try {
        busy.send(connectPacket({ clientId: `${name}/busy`, username: name, password: u.password, keepAlive: 1 }));
        expect(await busy.connackCode()).toBe(0);
        busy.send(subscribePacket([topics.inbox(name)], { qos: 0 }));
        await busy.waitFor(9);
        const replies = () => busy.packets.filter((p) => p.type === 3 && p.body.includes('"type":"reply"')).length;
        // A request every 300 ms, whatever the answers, for 3 s: never silent for long, whatever the server's pace.
        let sent = 0;
        await new Promise<void>((resolve) => {
          const startedAt = Date.now();
          const tick = setInterval(() => {
            if (busy.closed || Date.now() - startedAt >= 3000) {
              clearInterval(tick);
              return resolve();
            }
            sent++;
            busy.send(publishPacket(topics.requests(name), JSON.stringify({ op: 'who', id: `busy-${sent}`, user: name }), { qos: 1, id: sent }));
          }, 300);
        });
        expect(busy.closed).toBe(false);
        await busy.until(() => replies() === sent || busy.closed, 10_000, `${sent} replies`);
        expect(busy.closed).toBe(false);
        expect(busy.packets.filter((p) => p.type === 4).length).toBe(sent);
      } finally {
        busy.socket.destroy();
      }
    } finally {
      await capped.dispose();
    }
  });
});
