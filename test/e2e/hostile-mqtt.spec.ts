import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { topics } from '#libs/protocol';
import { loggedEvents, startParley, type ParleyServer } from '../support/parley-server.js';
import { droppedConnections } from '../support/proxy-protocol.js';
import { type MqttUser, registerUser, subscribeCodes, connectClient, endClient } from '../support/mqtt-user.js';
import { connectPacket, DISCONNECT, packet, PINGREQ, publishPacket, rawLogin, RawClient, subscribePacket, unsubscribePacket } from '../support/raw-mqtt.js';
import { TestUsers } from '../support/test-users.js';
import { Witnesses } from '../support/witnesses.js';

/**
 * Malformed and hostile MQTT against the real server: for each, the expected
 * refusal (a closed connection, or the CONNACK/SUBACK code the spec asks
 * for), every other client still served, and no stored state changed.
 */
let server: ParleyServer;
let users: TestUsers;
let alice: MqttUser;
let bob: MqttUser;
let aliceName: string;
let bobName: string;
let carolName: string;
const PASSWORD = 'end to end password';

beforeAll(async () => {
  server = await startParley({
    env: {
      PARLEY_CONNECT_TIMEOUT_MS: '3000',
      PARLEY_MAX_PACKET_BYTES: '70000',
      PARLEY_LOGIN_MAX_FAILURES: '1000',
      PARLEY_MAX_SESSIONS_PER_USER: '3',
      PARLEY_MAX_SUBSCRIPTIONS: '4',
    },
  });
  users = new TestUsers(() => [server.mqttUrl, server.mqttUrl6], PASSWORD);
  [aliceName, bobName, carolName] = [await users.fresh('alice'), await users.fresh('bob'), await users.fresh('carol')];
  alice = await users.login(aliceName);
  bob = await users.login(bobName);
  await alice.request({ op: 'send', to: bobName, text: 'before anything hostile' });
  // What is stored, as alice sees it: her conversations with bob and carol, and her groups.
  witnesses = new Witnesses(alice, bob, () => [
    [alice, { op: 'history', with: bobName, limit: 500 }],
    [alice, { op: 'group.list' }],
    [alice, { op: 'history', with: carolName, limit: 500 }],
  ]);
});

afterAll(async () => {
  await users?.closeAll();
  await server?.dispose();
});

let witnesses: Witnesses;
const stillServing = () => witnesses.stillServing();
const hostile = (run: () => Promise<void>) => witnesses.hostile(run);

/** Runs `body` against a server of its own, started with these settings, and disposes of it after. */
async function withServer(env: Record<string, string>, body: (server: ParleyServer) => Promise<void>): Promise<void> {
  const own = await startParley({ env });
  try {
    await body(own);
  } finally {
    await own.dispose();
  }
}

/** The reasons the server logged for forgetting this client id's persistent session, in order. */
const forgotten = (clientId: string, from: ParleyServer = server): string[] =>
  loggedEvents<{ client?: string; reason?: string }>(from, 'session_forgotten').flatMap((m) => (m.client === clientId ? [m.reason ?? ''] : []));

const refusedConnect = (bytes: Buffer, expected: number | 'closed') =>
  hostile(async () => {
    const c = await RawClient.open(server.mqttPort);
    c.send(bytes);
    expect(await c.connackCode()).toBe(expected);
    await c.waitClosed();
  });

/** Logs carol in over a raw socket, sends `bytes`, and expects the connection closed without any reply to them. */
const closesAfterLogin = (bytes: Buffer) =>
  hostile(async () => {
    const c = await rawLogin(server.mqttPort, carolName, PASSWORD, `${carolName}/raw${witnesses.probeCount}`);
    const seen = c.packets.length;
    c.send(bytes);
    await c.waitClosed();
    // Nothing was answered: no PUBACK, SUBACK or reply.
    expect(c.packets.slice(seen)).toEqual([]);
  });

describe('before login', () => {
  it('closes, as it comes, a connection from an address with PARLEY_MAX_CONNECTING_PER_ADDRESS logging in already, and counts one no more once answered', async () => {
    await withServer({ PARLEY_MAX_CONNECTING_PER_ADDRESS: '3', PARLEY_CONNECT_TIMEOUT_MS: '60000' }, async (limited) => {
      const name = `many${randomUUID().slice(0, 8)}`;
      expect((await registerUser(limited.mqttUrl, name, PASSWORD)).ok).toBe(true);
      // Three that say nothing: each would hold its socket for the connect timeout (a minute here).
      const silent = await Promise.all([0, 1, 2].map(() => RawClient.open(limited.mqttPort)));
      try {
        // A fourth is closed at once, with nothing said to it (it sent nothing to answer).
        const fourth = await RawClient.open(limited.mqttPort);
        await fourth.waitClosed();
        expect(fourth.packets).toEqual([]);
        await expect
          .poll(() => droppedConnections(limited).some((m) => m.reason === 'more than 3 connections from this address logging in at once'))
          .toBe(true);
        // One of the three logs in: answered, it no longer counts, and another may come.
        silent[0]!.send(connectPacket({ clientId: `${name}/first`, username: name, password: PASSWORD }));
        expect(await silent[0]!.connackCode()).toBe(0);
        const next = await rawLogin(limited.mqttPort, name, PASSWORD, `${name}/next`);
        next.close();
        // One that closed no longer counts either.
        silent[1]!.close();
        await expect
          .poll(async () => {
            const c = await RawClient.open(limited.mqttPort);
            c.send(connectPacket({ clientId: `${name}/later`, username: name, password: PASSWORD }));
            const code = await c.connackCode();
            c.close();
            return code;
          })
          .toBe(0);
      } finally {
        for (const c of silent) c.close();
      }
    });
  });
  it('cuts off a first packet that declares a huge remaining length, reading little and keeping memory flat', async () => {
    const rssKiB = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${server.pid}/status`, 'utf8'))![1]);
    const before = rssKiB();
    const junk = Buffer.alloc(64 * 1024, 0x41);
    // Twenty connections each claim 268 MB and pour up to 4 MB in.
    const results = await Promise.all(
      Array.from(
        { length: 20 },
        () =>
          new Promise<number>((resolve) => {
            const s = connect({ port: server.mqttPort, host: '127.0.0.1' }, () => {
              s.write(Buffer.from([0x10, 0xff, 0xff, 0xff, 0x7f]));
              let written = 0;
              const pump = () => {
                while (written < 4 * 1024 * 1024 && !s.destroyed) {
                  written += junk.length;
                  if (!s.write(junk)) return void s.once('drain', pump);
                }
              };
              pump();
            });
            s.on('error', () => undefined);
            s.on('close', () => resolve(Date.now()));
          }),
      ),
    );
    expect(results).toHaveLength(20);
    const grownMiB = (rssKiB() - before) / 1024;
    expect(grownMiB).toBeLessThan(40);
    const dropsLogged = () => droppedConnections(server).filter((m) => /268435455 bytes is over/.test(m.reason));
    // A client sees its socket close a moment before the server's log line about it reaches us: wait for the lines, bounded.
    await expect.poll(() => dropsLogged().length, { timeout: 10_000 }).toBe(20);
    const drops = dropsLogged();
    for (const d of drops) expect(d.bytesRead).toBeLessThanOrEqual(256 * 1024);
    await stillServing();
  });

  it('logs the first 50 drops of an address in 10 s, and then how many it left out, though no drop follows', async () => {
    await withServer({}, async (own) => {
      // Sixty connections in a row whose first packet is not a CONNECT: each is dropped at its first byte.
      for (let i = 0; i < 60; i++) {
        const c = await RawClient.open(own.mqttPort);
        c.send(PINGREQ);
        await c.waitClosed();
      }
      const drops = () => droppedConnections(own).filter((d) => d.clause === 'MQTT-3.1.0-1');
      await expect.poll(() => drops().length, { timeout: 10_000 }).toBe(50);
      // The window ends 10 s after the first drop, and says what it left out.
      const leftOut = () => loggedEvents<{ of: string; address: string; alikeLeftOut: number }>(own, 'log_left_out');
      await expect
        .poll(leftOut, { timeout: 20_000 })
        .toEqual([expect.objectContaining({ of: 'connection_dropped', address: expect.any(String) as string, alikeLeftOut: 10 })]);
      expect(drops()).toHaveLength(50);
    });
  });

  it('drops a half-sent CONNECT after the connect timeout', async () => {
    const c = await RawClient.open(server.mqttPort);
    const full = connectPacket({ clientId: `${carolName}/slow`, username: carolName, password: PASSWORD });
    c.send(full.subarray(0, 10));
    const started = Date.now();
    await c.waitClosed(10_000);
    expect(Date.now() - started).toBeLessThan(8000);
    await stillServing();
  });

  it('drops a connection that sends nothing at all', async () => {
    const c = await RawClient.open(server.mqttPort);
    await c.waitClosed(10_000);
  });

  it('closes on a malformed remaining length (five bytes)', () => refusedConnect(Buffer.from([0x10, 0x80, 0x80, 0x80, 0x80, 0x01]), 'closed'));
  it('closes when the first packet is not CONNECT', () => refusedConnect(publishPacket('a/b', 'x'), 'closed'));
  it('closes at once, not at the connect timeout, on a first byte that does not start a CONNECT [MQTT-3.1.0-1]', async () => {
    for (const first of [
      Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'), // 0x47 reads as a PUBACK header claiming 32 bytes
      Buffer.from([0x40, 0x02]), // a PUBACK header, its body never sent
      Buffer.from([0x30, 0x64]), // a PUBLISH header claiming 100 bytes
      Buffer.from([0x12, 0x0c]), // a CONNECT header with a reserved flag set [MQTT-2.2.2-2]
    ]) {
      await hostile(async () => {
        const c = await RawClient.open(server.mqttPort);
        c.send(first);
        // Well inside the 3 s connect timeout: before, each of these was held until it ran out.
        await c.waitClosed(1500);
        expect(c.packets).toEqual([]);
      });
    }
  });
  it('answers an unsupported protocol level with CONNACK 0x01 [MQTT-3.1.2-2]', async () => {
    await refusedConnect(connectPacket({ clientId: `${carolName}/v5`, username: carolName, password: PASSWORD, level: 5 }), 1);
    await refusedConnect(connectPacket({ clientId: `${carolName}/v3`, username: carolName, password: PASSWORD, level: 3, protocol: 'MQIsdp' }), 1);
    await refusedConnect(connectPacket({ clientId: `${carolName}/v9`, username: carolName, password: PASSWORD, level: 9 }), 1);
  });
  it('answers an empty client id with clean session off with CONNACK 0x02 [MQTT-3.1.3-8]', () =>
    refusedConnect(connectPacket({ clientId: '', clean: false, username: carolName, password: PASSWORD }), 2));
  it('refuses a zero-length client id and a foreign one with CONNACK 0x02', async () => {
    await refusedConnect(connectPacket({ clientId: '', username: carolName, password: PASSWORD }), 2);
    await refusedConnect(connectPacket({ clientId: `${aliceName}/stolen`, username: carolName, password: PASSWORD }), 2);
    await refusedConnect(connectPacket({ clientId: aliceName, username: carolName, password: PASSWORD }), 2);
  });
  it('closes on U+0000 or an encoded surrogate in the client id or user name [MQTT-1.5.3-1/2]', async () => {
    await refusedConnect(connectPacket({ clientId: `${carolName}\u0000x`, username: carolName, password: PASSWORD }), 'closed');
    const surrogate = Buffer.concat([Buffer.from(carolName), Buffer.from([0xed, 0xa0, 0x80])]);
    await refusedConnect(connectPacket({ clientId: surrogate, username: carolName, password: PASSWORD }), 'closed');
    await refusedConnect(connectPacket({ clientId: carolName, username: `${carolName}\u0000`, password: PASSWORD }), 'closed');
    await refusedConnect(connectPacket({ clientId: carolName, username: Buffer.from([0xc3, 0x28]), password: PASSWORD }), 'closed');
  });
  it('refuses a password that is not well-formed UTF-8 with CONNACK 0x04, instead of reading it as another password', async () => {
    const name = `utf${randomUUID().slice(0, 8)}`;
    // A password with a real U+FFFD in it: what a stray byte would have been read as.
    expect((await registerUser(server.mqttUrl, name, 'pass\ufffdword')).ok).toBe(true);
    const stray = Buffer.concat([Buffer.from('pass'), Buffer.from([0xff]), Buffer.from('word')]);
    await refusedConnect(connectPacket({ clientId: name, username: name, password: stray }), 4);
    await endClient(await connectClient(server.mqttUrl, { username: name, password: 'pass\ufffdword', clientId: name }));
  });
  it('closes on a Will of QoS 3 [MQTT-3.1.2-14] and on a password without a user name [MQTT-3.1.2-22]', async () => {
    await refusedConnect(
      connectPacket({ clientId: carolName, username: carolName, password: PASSWORD, will: { topic: 'a/b', payload: 'x', qos: 3 } }),
      'closed',
    );
    const noUser = connectPacket({ clientId: 'anon.abcdefgh12', password: 'x' });
    await refusedConnect(noUser, 'closed');
  });
  it('refuses a wrong password with CONNACK 0x04 and keeps serving', () =>
    refusedConnect(connectPacket({ clientId: carolName, username: carolName, password: 'wrong password' }), 4));
});

describe('after login', () => {
  it('closes on a wildcard, invalid UTF-8 or U+0000 in a PUBLISH topic [MQTT-3.3.2-2, MQTT-1.5.3-1/2]', async () => {
    await closesAfterLogin(publishPacket(`parley/v1/users/${carolName}/+`, '{}'));
    await closesAfterLogin(publishPacket(`parley/v1/users/${carolName}/#`, '{}'));
    await closesAfterLogin(publishPacket(Buffer.concat([Buffer.from(`parley/v1/users/${carolName}/`), Buffer.from([0xff, 0xfe])]), '{}'));
    await closesAfterLogin(publishPacket(`parley/v1/users/${carolName}/requests\u0000`, '{}'));
  });
  it('closes on packet id 0 in PUBLISH, SUBSCRIBE and UNSUBSCRIBE [MQTT-2.3.1-1]', async () => {
    await closesAfterLogin(publishPacket(topics.requests(carolName), '{"op":"who","id":"w","user":"bob"}', { qos: 1, id: 0 }));
    await closesAfterLogin(subscribePacket([topics.inbox(carolName)], { id: 0 }));
    await closesAfterLogin(unsubscribePacket([topics.inbox(carolName)], 0));
  });
  it('closes on a second CONNECT [MQTT-3.1.0-2]', () =>
    closesAfterLogin(connectPacket({ clientId: `${carolName}/again`, username: carolName, password: PASSWORD })));
  it('closes on invalid topic filters (a+, ##, a/#/b) and a requested QoS 3', async () => {
    await closesAfterLogin(subscribePacket(['a+']));
    await closesAfterLogin(subscribePacket(['##']));
    await closesAfterLogin(subscribePacket(['a/#/b']));
    await closesAfterLogin(subscribePacket([topics.inbox(carolName)], { qos: 3 }));
  });
  it('closes on truncated packets, reserved or server-only packet types, and a packet over the size limit', async () => {
    // A SUBSCRIBE whose filter length runs past the end of the packet.
    await closesAfterLogin(packet(0x82, Buffer.from([0x00, 0x01, 0x00, 0x40, 0x61])));
    // A PUBLISH whose topic length runs past the end of the packet.
    await closesAfterLogin(packet(0x32, Buffer.from([0x01, 0x00, 0x61])));
    await closesAfterLogin(Buffer.from([0x00, 0x00]));
    await closesAfterLogin(Buffer.from([0xf0, 0x00]));
    await closesAfterLogin(Buffer.from([0x20, 0x02, 0x00, 0x00]));
    await closesAfterLogin(Buffer.from([0xc0, 0x01, 0x00]));
    await closesAfterLogin(publishPacket(topics.requests(carolName), Buffer.alloc(80_000, 0x20)));
  });
  it('closes on a publish to any topic but the own requests topic (impersonation)', async () => {
    await closesAfterLogin(publishPacket(topics.requests(aliceName), JSON.stringify({ op: 'send', id: 'imp-1', to: bobName, text: 'I am alice' })));
    await closesAfterLogin(publishPacket(topics.inbox(bobName), JSON.stringify({ type: 'message', from: aliceName, text: 'forged' })));
    await closesAfterLogin(publishPacket(topics.presence(aliceName), '{"state":"offline"}', { retain: true }));
  });
  it('logs each connection it closes for a publish to a topic not its own, at the default log level', async () => {
    // A server of its own: this file's other drops from 127.0.0.1 would use up that address's logged drops (50 in 10 s).
    await withServer({}, async (own) => {
      const [name, other] = [`imp${randomUUID().slice(0, 8)}`, `oth${randomUUID().slice(0, 8)}`];
      for (const u of [name, other]) expect((await registerUser(own.mqttUrl, u, PASSWORD)).ok).toBe(true);
      const refused = () => droppedConnections(own).filter((m) => m.clause === 'MQTT-3.3.5-2').length;
      const probes = [
        publishPacket(topics.requests(other), JSON.stringify({ op: 'send', id: 'imp-2', to: name, text: 'I am the other' })),
        publishPacket(topics.inbox(other), '{"type":"message"}'),
        publishPacket(topics.presence(other), '{"state":"offline"}', { retain: true }),
      ];
      for (const [i, probe] of probes.entries()) {
        const c = await rawLogin(own.mqttPort, name, PASSWORD, `${name}/probe${i}`);
        c.send(probe);
        await c.waitClosed();
      }
      // Before, only a debug-level client error said so: probing others' topics left no trace in a default log.
      await expect.poll(refused, { timeout: 10_000 }).toBe(probes.length);
    });
  });
  it('refuses subscriptions to #, +/+/inbox, $SYS/#, $share and other users’ topics with SUBACK 0x80', async () => {
    await hostile(async () => {
      const c = await rawLogin(server.mqttPort, carolName, PASSWORD, `${carolName}/subs`);
      const filters = [
        '#',
        '+/+/inbox',
        'parley/v1/users/+/inbox',
        `parley/v1/users/${aliceName}/inbox`,
        `parley/v1/users/${aliceName}/requests`,
        '$SYS/#',
        `$share/g/parley/v1/users/${aliceName}/inbox`,
        `$share/g/#`,
        topics.inbox(carolName),
      ];
      c.send(subscribePacket(filters, { id: 7 }));
      const suback = await c.waitFor(9);
      expect([...suback.body.subarray(2)]).toEqual([...filters.slice(0, -1).map(() => 0x80), 0]);
      c.send(PINGREQ);
      await c.waitFor(13);
      c.send(DISCONNECT);
      await c.waitClosed();
    });
  });
  it('answers a SUBSCRIBE that names a filter more than once with one return code per filter listed [MQTT-3.9.3-1]', async () => {
    await hostile(async () => {
      const c = await rawLogin(server.mqttPort, carolName, PASSWORD, `${carolName}/twice`);
      const presence = topics.presence(aliceName);
      const filters = [presence, `parley/v1/users/${aliceName}/inbox`, presence, topics.inbox(carolName), presence];
      c.send(subscribePacket(filters, { id: 5 }));
      const suback = await c.waitFor(9);
      expect(suback.body.readUInt16BE(0)).toBe(5);
      expect([...suback.body.subarray(2)]).toEqual([0, 0x80, 0, 0, 0]);
      // The next SUBSCRIBE, of distinct filters, is answered as the broker answers it.
      c.send(subscribePacket([presence, topics.inbox(carolName)], { id: 6 }));
      const subacks = () => c.packets.filter((p) => p.type === 9);
      await expect.poll(() => subacks().length, { timeout: 10_000 }).toBe(2);
      expect(subacks()[1]!.body).toEqual(Buffer.from([0, 6, 0, 0]));
      c.send(DISCONNECT);
      await c.waitClosed();
    });
  });

  it('a plain user never sees $SYS traffic, even subscribed to everything it may read', async () => {
    const client = await connectClient(server.mqttUrl, { username: carolName, password: PASSWORD, clientId: `${carolName}/sys` });
    try {
      const seen: string[] = [];
      client.on('message', (t) => seen.push(t));
      expect(await subscribeCodes(client, ['$SYS/#', 'parley/v1/presence/+', topics.inbox(carolName)])).toEqual([128, 0, 0]);
      await stillServing();
      expect(seen.filter((t) => t.startsWith('$SYS'))).toEqual([]);
    } finally {
      await endClient(client);
    }
  });
  it('keeps a resumed session (clean session off) to what its user may read', async () => {
    const id = `${carolName}/persist`;
    const first = await connectClient(server.mqttUrl, { username: carolName, password: PASSWORD, clientId: id, clean: false });
    expect(await subscribeCodes(first, [topics.inbox(carolName), topics.inbox(aliceName)])).toEqual([0, 128]);
    await endClient(first);
    await alice.request({ op: 'send', to: carolName, text: 'while carol was away' });
    const seen: string[] = [];
    const again = await connectClient(server.mqttUrl, { username: carolName, password: PASSWORD, clientId: id, clean: false }, (c) =>
      c.on('message', (t, p) => seen.push(`${t} ${p.toString()}`)),
    );
    try {
      await stillServing();
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no backlog on the resumed session: ${seen.join('\n')}`)), 10_000);
        const check = () => {
          if (seen.some((s) => s.includes('while carol was away'))) {
            clearTimeout(timer);
            resolve();
          }
        };
        again.on('message', check);
        check();
      });
      expect(seen.every((s) => s.startsWith(topics.inbox(carolName)))).toBe(true);
    } finally {
      await endClient(again);
    }
  });
  it('keeps no queue for a persistent session: what happened while it was away comes back through the catch-up', async () => {
    const id = `${carolName}/queued`;
    const first = await connectClient(server.mqttUrl, { username: carolName, password: PASSWORD, clientId: id, clean: false });
    // A filter it may not read is refused, and everything is granted at QoS 0: nothing is kept for it while it is away.
    expect(await subscribeCodes(first, [topics.inbox(carolName), 'parley/#'])).toEqual([0, 128]);
    const replied = new Promise<{ conv: string; seq: number }>((resolve) =>
      first.on('message', (_t, p) => {
        const e = JSON.parse(p.toString()) as { type: string; id?: string; result?: { conv: string; seq: number } };
        if (e.type === 'reply' && e.id === 'queued-1') resolve(e.result!);
      }),
    );
    first.publish(topics.requests(carolName), JSON.stringify({ op: 'send', id: 'queued-1', to: aliceName, text: 'read this while I am away' }), { qos: 1 });
    const sent = await replied;
    await endClient(first);
    await alice.request({ op: 'receipt', conv: sent.conv, seq: sent.seq, status: 'read' });

    const events: { type: string; conversations?: { conv: string; peers: Record<string, { read: number }> }[] }[] = [];
    const again = await connectClient(server.mqttUrl, { username: carolName, password: PASSWORD, clientId: id, clean: false }, (c) =>
      c.on('message', (_t, p) => events.push(JSON.parse(p.toString()) as (typeof events)[number])),
    );
    try {
      await expect.poll(() => events.some((e) => e.type === 'synced'), { timeout: 10_000 }).toBe(true);
      // Alice's receipt is in the catch-up's cursors, not queued as an event.
      const sync = events.find((e) => e.type === 'sync')!;
      expect(sync.conversations!.find((c) => c.conv === sent.conv)!.peers[aliceName]!.read).toBe(sent.seq);
      expect(events.filter((e) => e.type === 'receipt')).toEqual([]);
    } finally {
      await endClient(again);
    }
  });
  it('grants a connection at most PARLEY_MAX_SUBSCRIPTIONS filters besides its inbox and replies topic: the rest get SUBACK 0x80 until it unsubscribes', async () => {
    const client = await connectClient(server.mqttUrl, { username: carolName, password: PASSWORD, clientId: `${carolName}/watcher` });
    try {
      const presence = (n: number) => topics.presence(`${carolName}${n}`);
      // The inbox, the replies topic and four filters held (refused ones do not count); the fifth is refused.
      const own = [topics.inbox(carolName), topics.replies(carolName)];
      expect(await subscribeCodes(client, [...own, 'parley/#', presence(1), presence(2), presence(3), presence(4), presence(5)])).toEqual([
        0, 0, 128, 0, 0, 0, 0, 128,
      ]);
      // A filter it holds is granted again; a new one is not, until one is let go (its UNSUBACK has come).
      expect(await subscribeCodes(client, [presence(1), presence(6)])).toEqual([0, 128]);
      await client.unsubscribeAsync(presence(2));
      expect(await subscribeCodes(client, [presence(6)])).toEqual([0]);
      // Everyone's presence in one filter: what a client that watches many users subscribes to.
      await client.unsubscribeAsync(presence(3));
      expect(await subscribeCodes(client, [topics.presence('+')])).toEqual([0]);
    } finally {
      await endClient(client);
    }
    await stillServing();
  });
  it('counts a persistent session exactly too, within one SUBSCRIBE and when it resumes', async () => {
    const id = `${carolName}/many`;
    const presence = (n: number) => topics.presence(`${carolName}${n}`);
    const first = await connectClient(server.mqttUrl, { username: carolName, password: PASSWORD, clientId: id, clean: false });
    try {
      expect(await subscribeCodes(first, [topics.inbox(carolName), presence(1), presence(2), presence(3)])).toEqual([0, 0, 0, 0]);
      // Aedes stores a persistent session's filters before it records them: the cap still holds inside one packet.
      expect(await subscribeCodes(first, [presence(4), presence(5), 'parley/#'])).toEqual([0, 128, 128]);
    } finally {
      await endClient(first);
    }
    let present: boolean | undefined;
    const again = await connectClient(server.mqttUrl, { username: carolName, password: PASSWORD, clientId: id, clean: false }, (c) =>
      c.once('connect', (ack) => (present = ack.sessionPresent)),
    );
    try {
      expect(present).toBe(true);
      // Restored: the inbox and the four granted filters, nothing refused; so still no room for a fifth.
      expect(await subscribeCodes(again, [presence(5)])).toEqual([128]);
      expect(await subscribeCodes(again, [presence(4), topics.inbox(carolName)])).toEqual([0, 0]);
    } finally {
      await endClient(again);
    }
  });
  it('keeps at most PARLEY_MAX_SESSIONS_PER_USER persistent sessions per user, forgetting the least recently used idle one', async () => {
    const dave = await users.fresh('dave');
    /** Logs in device `d` with clean session off; resolves with the client and whether the server still had its session. */
    const resume = async (d: number) => {
      let present: boolean | undefined;
      const client = await connectClient(server.mqttUrl, { username: dave, password: PASSWORD, clientId: `${dave}/d${d}`, clean: false }, (c) =>
        c.once('connect', (ack) => (present = ack.sessionPresent)),
      );
      if (!present) expect(await subscribeCodes(client, [topics.inbox(dave)])).toEqual([0]);
      return { client, present };
    };
    const visit = async (d: number) => {
      const { client, present } = await resume(d);
      await endClient(client);
      return present;
    };
    expect([await visit(1), await visit(2), await visit(3)]).toEqual([false, false, false]);
    // A fourth session, kept connected: the least recently used idle one (d1) is forgotten.
    const four = await resume(4);
    expect(await visit(1)).toBe(false);
    // d1 came back as a new session, and d2 went in its turn; d3 is still kept.
    expect(await visit(3)).toBe(true);
    expect(await visit(2)).toBe(false);
    // A connected session is never the one forgotten, however long ago it logged in: d4 is kept (d3 went instead).
    expect(await visit(5)).toBe(false);
    await endClient(four.client);
    expect(await visit(4)).toBe(true);
    await stillServing();
  });
  it("keeps at most a connection's allowance of filters (PARLEY_MAX_SUBSCRIPTIONS + inbox and replies) across a user's idle sessions", async () => {
    const erin = await users.fresh('erin');
    const watched = [aliceName, bobName, carolName, erin].map((u) => topics.presence(u));
    /** Logs in device `d` with clean session off, subscribing to its inbox and `filters` when its session is new. */
    const visit = async (d: number, filters: string[] = []) => {
      let present: boolean | undefined;
      const client = await connectClient(server.mqttUrl, { username: erin, password: PASSWORD, clientId: `${erin}/f${d}`, clean: false }, (c) =>
        c.once('connect', (ack) => (present = ack.sessionPresent)),
      );
      if (!present) expect(await subscribeCodes(client, [topics.inbox(erin), ...filters])).toEqual([0, ...filters.map(() => 0)]);
      await endClient(client);
      return present;
    };
    // Each leaves 5 filters behind; the second one's would make 10 idle filters where 6 may stay: f1 (older) goes.
    expect([await visit(1, watched), await visit(2, watched)]).toEqual([false, false]);
    await expect.poll(() => forgotten(`${erin}/f1`), { timeout: 10_000 }).toEqual(['filters']);
    // f1 comes back as a new session (its inbox alone: 6 idle filters with f2's, within the allowance), and f2 was kept.
    expect(await visit(1)).toBe(false);
    expect(await visit(2)).toBe(true);
    expect(forgotten(`${erin}/f2`)).toEqual([]);
    await stillServing();
  });
  it('refuses registration of user names with wildcards, slashes or control characters', async () => {
    for (const bad of ['a+b', 'a#b', 'a/b', 'ab\u0000', 'ab\u0007', '+', '#', 'Alice', 'ab\n']) {
      expect(await registerUser(server.mqttUrl, bad, PASSWORD)).toMatchObject({ ok: false, error: { code: 'invalid_username' } });
    }
    await stillServing();
  });
});

describe('connections the broker ends itself', () => {
  it('logs each as connection_dropped, as the guard logs its own: a refused login with its CONNACK code, a PUBLISH to a foreign topic, silence past a keep-alive the broker watches', async () => {
    // A server of its own: the drops of the other tests here, all from this address, would use up the log's allowance.
    await withServer({}, async (own) => {
      const name = `drop${randomUUID().slice(0, 8)}`;
      expect((await registerUser(own.mqttUrl, name, PASSWORD)).ok).toBe(true);
      const drops = () => droppedConnections(own);
      const refused = async (fields: Parameters<typeof connectPacket>[0], code: number) => {
        const c = await RawClient.open(own.mqttPort);
        c.send(connectPacket(fields));
        expect(await c.connackCode()).toBe(code);
        await c.waitClosed();
      };
      await refused({ clientId: name, username: name, password: 'wrong password' }, 4);
      await refused({ clientId: 'someone-else', username: name, password: PASSWORD }, 2);
      const forger = await rawLogin(own.mqttPort, name, PASSWORD);
      forger.send(publishPacket(topics.inbox(name), '{"type":"message","text":"forged"}'));
      await forger.waitClosed();
      // A keep-alive of one second: the broker drops it 1.5 s after its last packet [MQTT-3.1.2-24].
      const silent = await RawClient.open(own.mqttPort);
      silent.send(connectPacket({ clientId: `${name}/quiet`, username: name, password: PASSWORD, keepAlive: 1 }));
      expect(await silent.connackCode()).toBe(0);
      await silent.waitClosed();
      await expect
        .poll(() => drops().map((d) => [d.reason, d.clause ?? d.connack]), { timeout: 10_000 })
        .toEqual([
          ['login refused: bad user name or password', 4],
          ['login refused: client id must be your user name or user/<device>', 2],
          ['PUBLISH to a topic other than its own requests topic', 'MQTT-3.3.5-2'],
          ['silent for 1500 ms', 'MQTT-3.1.2-24'],
        ]);
      // A Will left on a foreign topic is only dropped when its connection ends: no second line for that connection.
      const willing = await RawClient.open(own.mqttPort);
      willing.send(connectPacket({ clientId: `${name}/will`, username: name, password: PASSWORD, will: { topic: topics.inbox(name), payload: 'x', qos: 0 } }));
      expect(await willing.connackCode()).toBe(0);
      willing.close();
      const after = await rawLogin(own.mqttPort, name, PASSWORD, `${name}/after`);
      after.send(PINGREQ);
      await after.waitFor(13);
      after.close();
      expect(drops()).toHaveLength(4);
    });
  });
});

describe('packets sent without waiting for answers', () => {
  /** The ids of the replies a raw connection got on its inbox, in the order they came. */
  const replyIds = (c: RawClient): string[] =>
    c.packets
      .filter((p) => p.type === 3)
      .map((p) => JSON.parse(p.body.subarray(2 + p.body.readUInt16BE(0)).toString()) as { type: string; id?: string })
      .filter((e) => e.type === 'reply')
      .map((e) => e.id!);
  const who = (id: string, packetId: number) =>
    publishPacket(topics.requests(carolName), JSON.stringify({ op: 'who', id, user: aliceName }), { qos: 1, id: packetId });

  it('answers requests sent right behind their SUBSCRIBE, in one write or several, with PUBACKs and replies in order', async () => {
    // One write: the SUBSCRIBE and the requests reach the server together.
    const together = await rawLogin(server.mqttPort, carolName, PASSWORD, `${carolName}/eager1`);
    // Several writes, none waiting for the answer to the one before (the server may read them in one go or one by one).
    const apart = await rawLogin(server.mqttPort, carolName, PASSWORD, `${carolName}/eager2`);
    try {
      together.send(Buffer.concat([subscribePacket([topics.inbox(carolName)], { id: 1, qos: 0 }), who('t1', 2), who('t2', 3), who('t3', 4)]));
      apart.send(subscribePacket([topics.inbox(carolName)], { id: 1, qos: 0 }));
      for (const [id, n] of [
        ['a1', 2],
        ['a2', 3],
        ['a3', 4],
      ] as const) {
        await new Promise((resolve) => setImmediate(resolve));
        apart.send(who(id, n));
      }
      for (const [c, ids] of [
        [together, ['t1', 't2', 't3']],
        [apart, ['a1', 'a2', 'a3']],
      ] as const) {
        // Each connection is subscribed to the same inbox, so it may also see the other's replies: its own come in order.
        await c.until(() => ids.every((id) => replyIds(c).includes(id)), 10_000, `replies ${ids.join(', ')}`);
        expect(replyIds(c).filter((id) => (ids as readonly string[]).includes(id))).toEqual(ids);
        // [MQTT-4.6.0-2] PUBACKs in the order of the PUBLISHes. (The SUBACK may come before or after them: the broker
        // answers a SUBSCRIBE once the subscription is in place, a PUBLISH as it reads it.)
        expect(c.packets.filter((p) => p.type === 4).map((p) => p.body.readUInt16BE(0))).toEqual([2, 3, 4]);
        expect(c.packets.filter((p) => p.type === 9).map((p) => [...p.body])).toEqual([[0, 1, 0]]);
      }
    } finally {
      together.close();
      apart.close();
    }
  });
});

describe('a Will', () => {
  // A Will on the client's own requests topic is a request left for when the connection drops, and is carried out then.
  // Its payload reaches the server whole through the copy the broker keeps of it (`keepWillApart`).
  it('carries out a Will left on the own requests topic when the connection drops, its payload intact', async () => {
    const dave = await users.fresh('dave');
    const text = `dropped ${Date.now()} ☂`;
    const c = await RawClient.open(server.mqttPort);
    const will = { topic: topics.requests(dave), payload: JSON.stringify({ op: 'send', id: 'will-1', to: bobName, text }), qos: 1 };
    c.socket.write(connectPacket({ clientId: `${dave}/will`, username: dave, password: PASSWORD, will }));
    expect(await c.connackCode()).toBe(0);
    c.socket.destroy();
    await bob.waitFor((e) => e.type === 'message' && e.text === text, 10_000, 'the message the Will sent');
  });

  it('does nothing with a Will that is not a valid request, or that is left on a topic not its own, and keeps serving', async () => {
    const erin = await users.fresh('erin');
    const dropWith = async (will: { topic: string; payload: string; qos: number }, n: number) => {
      const c = await RawClient.open(server.mqttPort);
      c.socket.write(connectPacket({ clientId: `${erin}/will${n}`, username: erin, password: PASSWORD, will }));
      const code = await c.connackCode();
      c.socket.destroy();
      return code;
    };
    const send = (text: string) => JSON.stringify({ op: 'send', id: `will-${randomUUID()}`, to: bobName, text });
    expect(await dropWith({ topic: topics.requests(erin), payload: 'not a request {', qos: 1 }, 1)).toBe(0);
    expect(await dropWith({ topic: topics.requests(erin), payload: JSON.stringify({ op: 'send', id: 'will-x', to: bobName }), qos: 1 }, 2)).toBe(0);
    expect(await dropWith({ topic: topics.requests(bobName), payload: send('as bob'), qos: 1 }, 3)).toBe(0);
    // The last one is carried out: by then the others had been, and bob got nothing from them.
    expect(await dropWith({ topic: topics.requests(erin), payload: send('the valid one'), qos: 1 }, 4)).toBe(0);
    await bob.waitFor((e) => e.type === 'message' && e.text === 'the valid one', 10_000, 'the message of the valid Will');
    expect(bob.events.filter((e) => e.type === 'message' && (e.from === erin || e.text === 'as bob')).map((e) => (e as { text: string }).text)).toEqual([
      'the valid one',
    ]);
    await stillServing();
  });
});

describe('logins in a loop', () => {
  it('lets one user log in PARLEY_LOGINS_PER_MINUTE times in a burst, a wrong password not counted, then answers CONNACK 3 ("try again")', async () => {
    await withServer({ PARLEY_LOGINS_PER_MINUTE: '3' }, async (limited) => {
      const [name, other] = [`flap${randomUUID().slice(0, 8)}`, `calm${randomUUID().slice(0, 8)}`];
      for (const user of [name, other]) expect((await registerUser(limited.mqttUrl, user, PASSWORD)).ok).toBe(true);
      const connack = async (user: string, clientId: string, password = PASSWORD) => {
        const c = await RawClient.open(limited.mqttPort);
        c.send(connectPacket({ clientId, username: user, password }));
        const code = await c.connackCode();
        c.send(DISCONNECT);
        await c.waitClosed();
        return code;
      };
      // A wrong password is the failed-login throttle's to count: it takes none of the three.
      expect(await connack(name, `${name}/typo`, 'not the password')).toBe(4);
      // Logging in and out in a loop, each time with its inbox's catch-up and a presence change for its watchers.
      for (let i = 0; i < 3; i++) {
        const c = await rawLogin(limited.mqttPort, name, PASSWORD, `${name}/loop`);
        c.send(subscribePacket([topics.inbox(name)]));
        c.send(DISCONNECT);
        await c.waitClosed();
      }
      expect(await connack(name, `${name}/loop`)).toBe(3);
      expect(await connack(name, `${name}/another`)).toBe(3);
      // Another user's logins are its own.
      expect(await connack(other, other)).toBe(0);
      await stillServing();
    });
  });
});

describe('subscriptions and the request rate', () => {
  it('counts each subscription, granted again or new, as a request: over the limit it is refused (0x80), so the retained presence (or the inbox catch-up) cannot be replayed at will; the first to the own inbox is always granted', async () => {
    await withServer({ PARLEY_CONNECTION_RATE: '1', PARLEY_CONNECTION_BURST: '3' }, async (limited) => {
      const name = `sub${randomUUID().slice(0, 8)}`;
      expect((await registerUser(limited.mqttUrl, name, PASSWORD)).ok).toBe(true);
      const client = await connectClient(limited.mqttUrl, { username: name, password: PASSWORD, clientId: `${name}/watcher` });
      try {
        const replayed: string[] = [];
        client.on('message', (topic) => replayed.push(topic));
        const everyone = topics.presence('+');
        // The burst: three subscriptions; the fourth, to the same filter, is refused and replays nothing.
        for (let i = 0; i < 3; i++) expect(await subscribeCodes(client, [everyone])).toEqual([0]);
        expect(await subscribeCodes(client, [everyone, topics.inbox(name), topics.replies(name)])).toEqual([128, 0, 0]);
        // A request shares the connection's budget: answered rate_limited now.
        const reply = new Promise<string>((resolve) =>
          client.on('message', (topic, payload) => {
            if (topic === topics.replies(name)) resolve((JSON.parse(payload.toString()) as { error?: { code: string } }).error?.code ?? 'ok');
          }),
        );
        await client.publishAsync(topics.requests(name), JSON.stringify({ op: 'who', id: 'w-1', user: name }), { qos: 1 });
        expect(await reply).toBe('rate_limited');
        // Subscribing to the inbox again starts its catch-up again: that costs, and is refused now.
        await client.unsubscribeAsync(topics.inbox(name));
        expect(await subscribeCodes(client, [topics.inbox(name)])).toEqual([128]);
        expect(replayed.filter((t) => t.startsWith(topics.presence(''))).length).toBeGreaterThan(0);
      } finally {
        await endClient(client);
      }
    });
  });
});

describe('a persistent session restored', () => {
  it('restores every subscription of a persistent session at its login, free of the request rate: the client is told its session is present and does not subscribe again', async () => {
    await withServer({ PARLEY_USER_RATE: '1', PARLEY_USER_BURST: '6' }, async (limited) => {
      const tag = randomUUID().slice(0, 6);
      const [name, ...watched] = ['erin', 'w1', 'w2', 'w3', 'w4'].map((n) => `${n}${tag}`);
      for (const u of [name!, ...watched]) expect((await registerUser(limited.mqttUrl, u, PASSWORD)).ok).toBe(true);
      const device = { username: name, password: PASSWORD, clientId: `${name}/phone`, clean: false };
      // Four presence filters cost four of the six requests; the inbox's first subscription is free.
      const first = await connectClient(limited.mqttUrl, device);
      expect(await subscribeCodes(first, [topics.inbox(name!), ...watched.map((w) => topics.presence(w))])).toEqual([0, 0, 0, 0, 0]);
      await endClient(first);
      // Back at once, with two requests left: the session is present, and all four filters are live again.
      let present: boolean | undefined;
      const again = await connectClient(limited.mqttUrl, device, (c) => c.once('connect', (ack) => (present = ack.sessionPresent)));
      try {
        expect(present).toBe(true);
        const online = new Set<string>();
        again.on('message', (_topic, payload) => {
          const p = JSON.parse(payload.toString()) as { type?: string; user?: string; state?: string };
          if (p.type === 'presence' && p.state === 'online' && p.user) online.add(p.user);
        });
        const others = await Promise.all(watched.map((w) => connectClient(limited.mqttUrl, { username: w, password: PASSWORD, clientId: `${w}/desk` })));
        try {
          await expect.poll(() => [...online].sort(), { timeout: 10_000 }).toEqual([...watched].sort());
        } finally {
          await Promise.all(others.map((o) => endClient(o)));
        }
      } finally {
        await endClient(again);
      }
    });
  });
});

describe('persistent sessions left behind', () => {
  it('keeps no payload of the QoS 2 requests a session leaves awaiting their PUBREL', async () => {
    await withServer({}, async (own) => {
      const name = `qos${randomUUID().slice(0, 8)}`;
      expect((await registerUser(own.mqttUrl, name, PASSWORD)).ok).toBe(true);
      const rssMiB = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${own.pid}/status`, 'utf8'))![1]) / 1024;
      const before = rssMiB();
      // Nearly the largest packet a logged-in client may send (PARLEY_MAX_PACKET_BYTES, 128 KiB by default).
      const payload = Buffer.alloc(130_000, 0x20);
      for (let session = 0; session < 3; session++) {
        const c = await RawClient.open(own.mqttPort);
        c.send(connectPacket({ clientId: `${name}/q${session}`, username: name, password: PASSWORD, clean: false }));
        expect(await c.connackCode()).toBe(0);
        // 999 of them, one short of the 1000 that may await a PUBREL: each is answered PUBREC, and none PUBREL'd.
        for (let id = 1; id <= 999; id++) c.send(publishPacket(topics.requests(name), payload, { qos: 2, id }));
        await c.until(() => c.packets.filter((p) => p.type === 5).length === 999, 60_000, '999 PUBRECs');
        c.close();
      }
      // The sessions outlive their connections (a week by default). Kept whole, their packets were 390 MB.
      expect(rssMiB() - before).toBeLessThan(150);
      // One more than the broker keeps awaiting a PUBREL ends the connection, and the drop is logged with its reason.
      const over = await RawClient.open(own.mqttPort);
      over.send(connectPacket({ clientId: `${name}/over`, username: name, password: PASSWORD }));
      expect(await over.connackCode()).toBe(0);
      for (let id = 1; id <= 1001; id++) over.send(publishPacket(topics.requests(name), '{}', { qos: 2, id }));
      await over.waitClosed(30_000);
      await expect
        .poll(() => droppedConnections(own).filter((d) => d.reason === '1000 inbound QoS 2 messages already awaiting PUBREL'), { timeout: 10_000 })
        .toHaveLength(1);
    });
  });
  it('forgets a persistent session PARLEY_SESSION_EXPIRY_MS after its connection ended, and keeps one still connected', async () => {
    await withServer({ PARLEY_SESSION_EXPIRY_MS: '1000' }, async (brief) => {
      const name = `exp${randomUUID().slice(0, 8)}`;
      expect((await registerUser(brief.mqttUrl, name, PASSWORD)).ok).toBe(true);
      const login = async (device: string) => {
        let present: boolean | undefined;
        const client = await connectClient(brief.mqttUrl, { username: name, password: PASSWORD, clientId: `${name}/${device}`, clean: false }, (c) =>
          c.once('connect', (ack) => (present = ack.sessionPresent)),
        );
        if (!present) expect(await subscribeCodes(client, [topics.inbox(name), topics.presence('+')])).toEqual([0, 0]);
        return { client, present };
      };
      const gone = await login('gone');
      const stays = await login('stays');
      await endClient(gone.client);
      await expect.poll(() => forgotten(`${name}/gone`, brief), { timeout: 10_000 }).toEqual(['expired']);
      // Back after its expiry: a new session, which subscribes again.
      const back = await login('gone');
      expect(back.present).toBe(false);
      await endClient(back.client);
      // Connected all along, past several expiries: its session was never forgotten, and it is still served.
      expect(forgotten(`${name}/stays`, brief)).toEqual([]);
      expect(await subscribeCodes(stays.client, [topics.presence(name)])).toEqual([0]);
      await endClient(stays.client);
      const again = await login('stays');
      expect(again.present).toBe(true);
      await endClient(again.client);
    });
  });
});
