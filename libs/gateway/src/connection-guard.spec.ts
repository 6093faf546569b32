import { Duplex, PassThrough, Writable } from 'node:stream';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { GuardedConnection, type GuardDrop, type GuardLimits } from './connection-guard.js';
import { pubackPacket } from './mqtt-frame.js';

/** A client's socket as an in-memory pair: what the test writes, the guard reads; what the guard writes, the test reads. */
function pair(): { socket: Duplex; toServer: PassThrough; fromServer: PassThrough } {
  const toServer = new PassThrough();
  const fromServer = new PassThrough();
  const socket = Duplex.from({ readable: toServer, writable: fromServer });
  return { socket, toServer, fromServer };
}

const limits = { connectTimeoutMs: 200, maxConnectBytes: 1024, maxPacketBytes: 4096, maxKeepAliveS: 60, maxOutboundBytes: 1 << 20, writeStallMs: 1000 };
const str = (s: string) => Buffer.concat([Buffer.from([0, s.length]), Buffer.from(s)]);
const connect = Buffer.concat([Buffer.from([0x10, 17]), str('MQTT'), Buffer.from([4, 0x02, 0, 60]), str('alice')]);

const open: GuardedConnection[] = [];
afterEach(() => {
  for (const g of open.splice(0)) g.destroy();
});

function guard(extra: Partial<GuardLimits> = {}): {
  g: GuardedConnection;
  socket: Duplex;
  toServer: PassThrough;
  fromServer: PassThrough;
  drops: GuardDrop[];
  read: Buffer[];
} {
  const { socket, toServer, fromServer } = pair();
  const drops: GuardDrop[] = [];
  const g = new GuardedConnection(socket, '192.0.2.1', { ...limits, ...extra }, (d) => drops.push(d));
  const read: Buffer[] = [];
  g.on('data', (d: Buffer) => read.push(d));
  g.on('error', () => undefined);
  open.push(g);
  return { g, socket, toServer, fromServer, drops, read };
}

const closed = (g: GuardedConnection) => new Promise<void>((resolve) => (g.destroyed ? resolve() : g.once('close', () => resolve())));

describe('GuardedConnection', () => {
  it('lowers the QoS a SUBSCRIBE asks for to the cap, clean session or not, before the broker reads it', async () => {
    const subscribe = (id: number, qos: number[]) => {
      const body = Buffer.concat([Buffer.from([0, id]), ...qos.flatMap((q, i) => [str(`t/${i}`), Buffer.from([q])])]);
      return Buffer.concat([Buffer.from([0x82, body.length]), body]);
    };
    const persistent = Buffer.concat([Buffer.from([0x10, 17]), str('MQTT'), Buffer.from([4, 0x00, 0, 60]), str('alice')]);
    for (const [hello, cap, granted] of [
      [connect, 0, [0, 0, 0]],
      [persistent, 0, [0, 0, 0]],
      [connect, 1, [0, 1, 1]],
    ] as const) {
      const { g, toServer, read } = guard({ maxSubscribeQos: cap });
      toServer.write(hello);
      await new Promise((r) => setImmediate(r));
      g.admit(true);
      read.length = 0;
      toServer.write(subscribe(9, [0, 1, 2]));
      await new Promise((r) => setImmediate(r));
      expect(Buffer.concat(read)).toEqual(subscribe(9, [...granted]));
    }
  });

  it('never makes the broker wait for a drain: a large corked burst is taken, and a closed connection takes writes and drops them', async () => {
    const { g, fromServer } = guard();
    const got: Buffer[] = [];
    fromServer.on('data', (d: Buffer) => got.push(d));
    // The broker corks the stream while it writes a packet in pieces; 64 KiB at once still says "go on".
    g.cork();
    expect(g.write(Buffer.alloc(64 * 1024, 1))).toBe(true);
    process.nextTick(() => g.uncork());
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setImmediate(r));
    expect(Buffer.concat(got).length).toBe(64 * 1024);

    // Aedes may deliver to a client for a moment after its socket closed; it waits for 'drain' when a write says false.
    g.destroy();
    await closed(g);
    const calledBack = new Promise<unknown>((resolve) => expect(g.write(Buffer.from([0x30, 0x00]), (err) => resolve(err))).toBe(true));
    await expect(calledBack).resolves.toBeUndefined();
  });

  it('passes on at most 64 packets of one connection in a turn of the event loop, the rest in the turns after, in order', async () => {
    const { g, toServer, read } = guard();
    toServer.write(connect);
    await new Promise((r) => setImmediate(r));
    g.admit(true);
    read.length = 0;
    // One read of the socket: 1,000 PINGREQs. Handled in one go, they held up every other connection for as long.
    const pings = Buffer.alloc(2000);
    for (let i = 0; i < pings.length; i += 2) pings[i] = 0xc0;
    toServer.write(pings);
    await new Promise((r) => setImmediate(r));
    expect(Buffer.concat(read).length).toBe(128);
    // Each later turn passes on the next 64, until all have gone, as they came.
    await vi.waitFor(() => expect(Buffer.concat(read)).toEqual(pings), { timeout: 2000 });
    expect(g.destroyed).toBe(false);
  });

  it('keeps to 64 packets a turn for what came with the CONNECT too: the socket stays paused until the turns after', async () => {
    const { g, socket, toServer, read } = guard();
    const pings = Buffer.alloc(2000);
    for (let i = 0; i < pings.length; i += 2) pings[i] = 0xc0;
    toServer.write(Buffer.concat([connect, pings]));
    await new Promise((r) => setImmediate(r));
    g.admit(true);
    expect(Buffer.concat(read).length).toBe(connect.length + 128);
    expect(socket.isPaused()).toBe(true);
    await vi.waitFor(() => expect(Buffer.concat(read)).toEqual(Buffer.concat([connect, pings])), { timeout: 2000 });
  });

  it('passes the CONNECT, then holds everything else until the broker admits the client', async () => {
    const { g, toServer, read } = guard();
    toServer.write(Buffer.concat([connect, Buffer.from([0xc0, 0x00])]));
    await new Promise((r) => setImmediate(r));
    expect(Buffer.concat(read)).toEqual(connect);
    g.admit(true);
    await new Promise((r) => setImmediate(r));
    expect(Buffer.concat(read)).toEqual(Buffer.concat([connect, Buffer.from([0xc0, 0x00])]));
  });

  it('drops a client that asked for no keep-alive, or a longer one than allowed, after 1.5 times the limit of silence', async () => {
    const noKeepAlive = Buffer.concat([Buffer.from([0x10, 17]), str('MQTT'), Buffer.from([4, 0x02, 0, 0]), str('alice')]);
    // `connect` asks for 60 s; the limit here is 0.1 s.
    for (const hello of [noKeepAlive, connect]) {
      const { g, toServer, drops } = guard({ maxKeepAliveS: 0.1 });
      // The silence is counted from the CONNECT, which cannot arrive before it is sent.
      const sentAt = Date.now();
      toServer.write(hello);
      await new Promise((r) => setImmediate(r));
      g.admit(true);
      await closed(g);
      expect(Date.now() - sentAt).toBeGreaterThanOrEqual(145);
      expect(drops[0]?.reason).toBe('silent for 150 ms');
    }
  });

  it('keeps no timer of its own for an idle client whose keep-alive the broker watches, nor after a flush the socket took', async () => {
    const { g, toServer } = guard();
    const timers = g as unknown as { connectTimer?: unknown; idleTimer?: unknown; stallTimer?: unknown };
    toServer.write(connect); // keep-alive 60, the limit
    await new Promise((r) => setImmediate(r));
    g.admit(true);
    g.write(Buffer.from([0x20, 0x02, 0x00, 0x00]));
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setImmediate(r));
    expect(timers).toMatchObject({ connectTimer: undefined, idleTimer: undefined, stallTimer: undefined });
  });

  it('settles once the socket has taken what waited, though the socket never had to ask for a drain', async () => {
    // A socket that takes each write when the test says so, with Node's usual 16 KiB high-water mark; the guard paces at
    // a quarter of a small outbound limit, 10 KB, below that mark: a 12 KB write is "waiting", yet asked for no 'drain'.
    const done: (() => void)[] = [];
    const socket = new Duplex({ read: () => undefined, write: (_chunk, _enc, cb: () => void) => void done.push(cb) });
    // (No login comes: the connect timeout is set past the test's own bound, so that the connection stays open.)
    const g = new GuardedConnection(socket, '192.0.2.1', { ...limits, maxOutboundBytes: 40_000, connectTimeoutMs: 60_000 });
    g.on('error', () => undefined);
    open.push(g);
    g.write(Buffer.alloc(12_000, 1));
    await new Promise((r) => setImmediate(r));
    expect(socket.writableLength).toBe(12_000);
    let settled = false;
    const settling = g.settled().then(() => (settled = true));
    done.shift()!();
    await Promise.race([settling, new Promise((r) => setTimeout(r, 1000))]);
    expect(socket.writableLength).toBe(0);
    expect(g.destroyed).toBe(false);
    expect(settled).toBe(true);
  });

  it('drops a client whose socket takes none of the bytes waiting for it within the stall time', async () => {
    // A socket whose client never reads: the first write is never done, and what follows waits behind it.
    const frozen = new Writable({ highWaterMark: 16, write: () => undefined });
    const socket = Duplex.from({ readable: new PassThrough(), writable: frozen });
    const drops: GuardDrop[] = [];
    const g = new GuardedConnection(socket, '192.0.2.1', { ...limits, writeStallMs: 100 }, (d) => drops.push(d));
    g.on('error', () => undefined);
    open.push(g);
    g.write(Buffer.alloc(64, 1));
    g.write(Buffer.alloc(64, 2));
    await closed(g);
    expect(drops[0]?.reason).toMatch(/^client took no bytes for \d+ ms$/);
  });

  it('cuts a first packet that claims more than the pre-login cap as soon as its header arrives', async () => {
    const { g, toServer, drops, read } = guard();
    toServer.write(Buffer.from([0x10, 0xff, 0xff, 0xff, 0x7f]));
    await closed(g);
    expect(read).toEqual([]);
    expect(drops[0]).toMatchObject({ bytesRead: 5 });
  });

  it('refuses a first byte that does not start a CONNECT as soon as it arrives, long before the connect timeout', async () => {
    for (const [first, reason, clause] of [
      ['GET / HTTP/1.1\r\n', 'first packet is not CONNECT', 'MQTT-3.1.0-1'], // 0x47: a PUBACK header, flags 7
      [Buffer.from([0x40, 0x02]), 'first packet is not CONNECT', 'MQTT-3.1.0-1'], // a PUBACK header alone
      [Buffer.from([0x30, 0x64]), 'first packet is not CONNECT', 'MQTT-3.1.0-1'], // a PUBLISH claiming 100 bytes
      [Buffer.from([0x12]), 'reserved flags set in CONNECT', 'MQTT-2.2.2-2'],
      [Buffer.from([0x16, 0x03, 0x01]), 'reserved flags set in CONNECT', 'MQTT-2.2.2-2'], // a TLS ClientHello: type 1, flags 6
    ] as const) {
      const { g, toServer, drops, read } = guard({ connectTimeoutMs: 60_000 });
      // One byte: it already tells.
      toServer.write(Buffer.from(first).subarray(0, 1));
      await closed(g);
      expect(drops).toEqual([{ reason, clause, bytesRead: 1 }]);
      expect(read).toEqual([]);
    }
  });

  it('answers an unsupported protocol level with CONNACK 0x01 before closing', async () => {
    const { g, toServer, fromServer } = guard();
    const answer: Buffer[] = [];
    fromServer.on('data', (d: Buffer) => answer.push(d));
    toServer.write(Buffer.concat([Buffer.from([0x10, 17]), str('MQTT'), Buffer.from([5, 0x02, 0, 60]), str('alice')]));
    await closed(g);
    expect(Buffer.concat(answer)).toEqual(Buffer.from([0x20, 0x02, 0x00, 0x01]));
  });

  it('drops a client whose CONNECT does not arrive in time', async () => {
    const { g, toServer, drops } = guard();
    toServer.write(connect.subarray(0, 5));
    await closed(g);
    expect(drops[0]?.reason).toMatch(/in time/);
  });

  it('after login, refuses a malformed packet before the broker sees it', async () => {
    const { g, toServer, read } = guard();
    toServer.write(connect);
    await new Promise((r) => setImmediate(r));
    g.admit(true);
    toServer.write(Buffer.concat([Buffer.from([0x82, 4, 0, 0]), str('')]));
    await closed(g);
    expect(Buffer.concat(read)).toEqual(connect);
  });

  describe('request lane', () => {
    const REQUESTS = 'parley/v1/users/alice/requests';
    /** A PUBLISH to `topic` at `qos` (packet identifier 7 when it has one) carrying `payload`. */
    const publish = (topic: string, qos: 0 | 1 | 2, payload: string) => {
      const body = Buffer.concat([str(topic), qos > 0 ? Buffer.from([0, 7]) : Buffer.alloc(0), Buffer.from(payload)]);
      return Buffer.concat([Buffer.from([0x30 | (qos << 1), body.length]), body]);
    };
    const turn = () => new Promise((r) => setImmediate(r));

    /** A logged-in guard whose broker side the test reads by hand, as Aedes does: `read()` once it has handled a batch. */
    async function laneGuard(taking = () => true) {
      const { socket, toServer, fromServer } = pair();
      const taken: string[] = [];
      const g = new GuardedConnection(socket, '192.0.2.1', limits, undefined, (guard, payload) => {
        if (!taking()) return false;
        taken.push(`${String(guard.owner)} ${payload.toString()}`);
        return true;
      });
      g.on('error', () => undefined);
      open.push(g);
      const written: Buffer[] = [];
      fromServer.on('data', (d: Buffer) => written.push(d));
      toServer.write(connect);
      await turn();
      expect(g.read()).toEqual(connect);
      g.admit(true);
      g.owner = 'alice-client';
      g.openRequests({ kind: 'user', user: 'alice', device: 'phone' });
      return { g, toServer, taken, written };
    }

    it('answers a QoS 0 or 1 request to the own requests topic itself, once the broker has read all before it, and hands it to the lane', async () => {
      const { g, toServer, taken, written } = await laneGuard();
      expect(g.read()).toBeNull(); // the broker has handled the CONNECT and asks for more
      toServer.write(Buffer.concat([publish(REQUESTS, 1, '{"op":"who"}'), publish(REQUESTS, 0, '{"op":"history"}')]));
      await turn();
      await turn();
      expect(taken).toEqual(['alice-client {"op":"who"}', 'alice-client {"op":"history"}']);
      // [MQTT-4.3.2-2] The QoS 1 one is acknowledged with its packet identifier; nothing reached the broker.
      expect(Buffer.concat(written)).toEqual(pubackPacket(7));
      expect(g.read()).toBeNull();
    });

    it('leaves to the broker a QoS 2 request, another topic, and anything behind a packet the broker has not handled yet', async () => {
      const { g, toServer, taken } = await laneGuard();
      expect(g.read()).toBeNull();
      const qos2 = publish(REQUESTS, 2, '{"op":"who"}');
      const elsewhere = publish('parley/v1/users/bob/requests', 1, '{}');
      toServer.write(Buffer.concat([qos2, elsewhere]));
      await turn();
      expect(taken).toEqual([]);
      // The broker has not read those yet: a request now must come after them, through it.
      const behind = publish(REQUESTS, 1, '{"op":"after"}');
      toServer.write(behind);
      await turn();
      expect(taken).toEqual([]);
      expect(g.read()).toEqual(Buffer.concat([qos2, elsewhere, behind]));
      // Handled, and asked for more: the lane is open again.
      expect(g.read()).toBeNull();
      toServer.write(publish(REQUESTS, 1, '{"op":"next"}'));
      await turn();
      expect(taken).toEqual(['alice-client {"op":"next"}']);
    });

    it('takes nothing before the broker has opened the lane for a logged-in client', async () => {
      const { socket, toServer } = pair();
      const taken: Buffer[] = [];
      const g = new GuardedConnection(socket, '192.0.2.1', limits, undefined, (_g, payload) => taken.push(payload) > 0);
      open.push(g);
      toServer.write(connect);
      await turn();
      expect(g.read()).toEqual(connect);
      g.admit(true);
      expect(g.read()).toBeNull();
      toServer.write(publish(REQUESTS, 1, '{}'));
      await turn();
      expect(taken).toEqual([]);
      expect(g.read()).toEqual(publish(REQUESTS, 1, '{}'));
    });

    it('leaves to the broker, unanswered, a request the lane does not take (its connection is closing)', async () => {
      let open = true;
      const { g, toServer, taken, written } = await laneGuard(() => open);
      expect(g.read()).toBeNull();
      open = false;
      const request = publish(REQUESTS, 1, '{"op":"who"}');
      toServer.write(request);
      await turn();
      expect(taken).toEqual([]);
      expect(written).toEqual([]);
      expect(g.read()).toEqual(request);
    });
  });

  it('gathers a packet sent a few bytes at a time with copying in proportion to its size, not to its square', async () => {
    const { g, read } = guard({ maxConnectBytes: 8192, maxPacketBytes: 100_000 });
    // A CONNECT of 8011 bytes (its client id 7996 characters), and a PUBLISH of 60009.
    const id = Buffer.from(`alice/${'a'.repeat(7990)}`);
    const hello = Buffer.concat([Buffer.from([0x10, 0xc8, 0x3e]), str('MQTT'), Buffer.from([4, 0x02, 0, 60, id.length >> 8, id.length & 0xff]), id]);
    expect(hello.length).toBe(3 + 8008);
    const body = Buffer.concat([str('t/a'), Buffer.alloc(60_000, 0x7a)]);
    const publish = Buffer.concat([Buffer.from([0x30, 0xe5, 0xd4, 0x03]), body]);
    expect(publish.length).toBe(4 + 60_005);
    const ping = Buffer.from([0xc0, 0x00]);
    // Every byte the guard copies goes through one of these: count the bytes they make.
    let made = 0;
    const concat = Buffer.concat.bind(Buffer);
    const allocUnsafe = Buffer.allocUnsafe.bind(Buffer);
    vi.spyOn(Buffer, 'concat').mockImplementation((list, total) => {
      const b = concat(list, total);
      made += b.length;
      return b;
    });
    vi.spyOn(Buffer, 'allocUnsafe').mockImplementation((size) => {
      made += size;
      return allocUnsafe(size);
    });
    try {
      for (let i = 0; i < hello.length; i++) g.onData(hello.subarray(i, i + 1));
      expect(made).toBeLessThan(4 * hello.length);
      g.admit(true);
      made = 0;
      // Three bytes at a time; the last piece ends the PUBLISH and carries a whole PINGREQ behind it.
      for (let i = 0; i < publish.length - 1; i += 3) g.onData(publish.subarray(i, Math.min(i + 3, publish.length - 1)));
      g.onData(Buffer.concat([publish.subarray(-1), ping]));
      expect(made).toBeLessThan(4 * publish.length);
    } finally {
      vi.restoreAllMocks();
    }
    await new Promise((r) => setImmediate(r));
    expect(Buffer.concat(read)).toEqual(Buffer.concat([hello, publish, ping]));
  });

  it('writes a packet of its own behind what the broker has corked in it, never before', async () => {
    const { g, fromServer } = guard();
    const got: Buffer[] = [];
    fromServer.on('data', (d: Buffer) => got.push(d));
    // The broker corks the stream and writes a packet in pieces, uncorking on the next tick (mqtt-packet).
    g.cork();
    g.write(Buffer.from([0x30, 0x03]));
    g.write(Buffer.from([0x00, 0x01, 0x61]));
    g.writePacket(Buffer.from([0x40, 0x02, 0x00, 0x07]));
    process.nextTick(() => g.uncork());
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setImmediate(r));
    expect(Buffer.concat(got)).toEqual(Buffer.from([0x30, 0x03, 0x00, 0x01, 0x61, 0x40, 0x02, 0x00, 0x07]));
  });
});
