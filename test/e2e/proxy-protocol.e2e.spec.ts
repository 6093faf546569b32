import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Duplex } from 'node:stream';
import { connect as tlsConnect } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCertificates } from '../support/certificates.js';
import { startParley, type ParleyServer } from '../support/parley-server.js';
import { droppedConnections, proxyV1, proxyV2 } from '../support/proxy-protocol.js';
import { connectPacket, PINGREQ, RawClient, splitPackets } from '../support/raw-mqtt.js';
import { TestUsers } from '../support/test-users.js';

/**
 * PARLEY_PROXY_FROM against the real server: 127.0.0.1 is a trusted proxy
 * here and ::1 an ordinary client. A connection from the proxy must start
 * with a PROXY protocol header, and the client it names is the connection's
 * address for the login throttle and the logs; anyone else's header is just
 * bad MQTT.
 */
const MAX_FAILURES = 3;
const PASSWORD = 'proxied password';
let server: ParleyServer;
let users: TestUsers;
let dir: string;
let ca: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'parley-proxy-'));
  const files = makeCertificates(dir);
  ca = files.ca;
  server = await startParley({
    env: {
      PARLEY_PROXY_FROM: '127.0.0.1',
      PARLEY_CONNECT_TIMEOUT_MS: '1500',
      PARLEY_LOGIN_MAX_FAILURES: String(MAX_FAILURES),
      PARLEY_MQTTS_PORT: '0',
      PARLEY_TLS_CERT: files.cert,
      PARLEY_TLS_KEY: files.key,
    },
  });
  // Registered from ::1, which is no proxy: connections from there are as they always were.
  users = new TestUsers(() => [server.mqttUrl6], PASSWORD);
});

afterAll(async () => {
  await users?.closeAll();
  await server?.dispose();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** A connection from the proxy (127.0.0.1) that sends `header`, then a CONNECT, in one write; its CONNACK code or 'closed'. */
async function loginVia(header: Buffer, user: string, password = PASSWORD): Promise<number | 'closed'> {
  const c = await RawClient.open(server.mqttPort, '127.0.0.1');
  try {
    c.send(Buffer.concat([header, connectPacket({ clientId: `${user}/proxied`, username: user, password })]));
    return await c.connackCode();
  } finally {
    c.close();
  }
}

/** Waits (bounded) for the server to log a dropped connection that matches, and returns it. */
async function dropLogged(match: (d: { address: string; reason: string; clause?: string }) => boolean) {
  await expect.poll(() => droppedConnections(server).some(match), { timeout: 10_000 }).toBe(true);
  return droppedConnections(server).find(match)!;
}

describe('connections from a trusted proxy (PARLEY_PROXY_FROM)', () => {
  it('are known by the client the header names: one client locked out after failed logins, others through the same proxy still log in', async () => {
    const name = await users.fresh('pia');
    // v1 and v2, IPv4 and IPv6: each header names a client of its own.
    const attacker = proxyV1('198.51.100.7');
    for (let i = 0; i < MAX_FAILURES; i++) expect(await loginVia(attacker, name, 'wrong password')).toBe(4);
    // Locked out: even the right password is refused (5, not authorized) for that client...
    expect(await loginVia(attacker, name)).toBe(5);
    expect(await loginVia(proxyV2('198.51.100.7'), name)).toBe(5);
    // ...but not for the others behind the same proxy, nor for the proxy's own connections (LOCAL, UNKNOWN).
    expect(await loginVia(proxyV2('2001:db8::7'), name)).toBe(0);
    expect(await loginVia(proxyV1('2001:db8:0:1::8'), name)).toBe(0);
    expect(await loginVia(proxyV2('203.0.113.9'), name)).toBe(0);
    expect(await loginVia(proxyV2('LOCAL'), name)).toBe(0);
    expect(await loginVia(proxyV1('UNKNOWN'), name)).toBe(0);
  });

  it('logs the client address the header names', async () => {
    const c = await RawClient.open(server.mqttPort, '127.0.0.1');
    // A first packet that is not CONNECT is dropped and logged, by the connection's address.
    c.send(Buffer.concat([proxyV2('2001:db8::77'), PINGREQ]));
    await c.waitClosed();
    const drop = await dropLogged((d) => d.reason === 'first packet is not CONNECT' && d.address === '2001:db8::77');
    expect(drop.clause).toBe('MQTT-3.1.0-1');
  });

  it('are closed without a header, with a malformed or oversized one, or with one not complete in the connect timeout; the server keeps serving', async () => {
    const name = await users.fresh('rex');
    const before = droppedConnections(server).filter((d) => d.clause === 'PROXY protocol').length;
    const cases: Buffer[] = [
      connectPacket({ clientId: `${name}/direct`, username: name, password: PASSWORD }),
      Buffer.from('GET / HTTP/1.1\r\n\r\n'),
      Buffer.from('PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n'),
      Buffer.from(`PROXY UNKNOWN ${'x'.repeat(200)}`),
      Buffer.concat([proxyV2('LOCAL').subarray(0, 14), Buffer.from([0xff, 0xff])]),
    ];
    for (const bytes of cases) {
      const c = await RawClient.open(server.mqttPort, '127.0.0.1');
      c.send(bytes);
      expect(await c.connackCode()).toBe('closed');
    }
    // Half a header, then nothing: closed once the connect timeout is over.
    const slow = await RawClient.open(server.mqttPort, '127.0.0.1');
    slow.send(proxyV1('192.0.2.1').subarray(0, 20));
    await slow.waitClosed(10_000);
    await expect.poll(() => droppedConnections(server).filter((d) => d.clause === 'PROXY protocol').length, { timeout: 10_000 }).toBe(before + 6);
    const drops = droppedConnections(server).filter((d) => d.clause === 'PROXY protocol');
    // Logged by the address they came from, the proxy's (an IPv4 one as such, not as ::ffff:127.0.0.1).
    for (const d of drops) expect(d.address).toBe('127.0.0.1');
    expect(drops.some((d) => d.reason === 'no complete PROXY protocol header in time')).toBe(true);

    expect(await loginVia(proxyV1('192.0.2.1'), name)).toBe(0);
    const direct = await users.login(name);
    expect(await direct.request({ op: 'who', user: name })).toMatchObject({ ok: true });
  });
});

describe('a client that is no trusted proxy', () => {
  it('cannot name another address with a PROXY header: its header is bad MQTT, and the connection is dropped by its own address', async () => {
    const name = await users.fresh('sly');
    for (const header of [proxyV1('203.0.113.66'), proxyV2('203.0.113.66')]) {
      const c = await RawClient.open(server.mqttPort, '::1');
      c.send(Buffer.concat([header, connectPacket({ clientId: `${name}/spoof`, username: name, password: PASSWORD })]));
      expect(await c.connackCode()).toBe('closed');
    }
    await expect.poll(() => droppedConnections(server).filter((d) => d.address === '::1').length, { timeout: 10_000 }).toBeGreaterThanOrEqual(2);
    expect(server.output.some((l) => l.includes('203.0.113.66'))).toBe(false);
    // Its MQTT, as ever, is fine.
    const direct = await users.login(name);
    expect(await direct.request({ op: 'who', user: name })).toMatchObject({ ok: true });
  });
});

describe('MQTT over TLS from a trusted proxy', () => {
  /**
   * A TLS client behind a proxy: the header goes out on the TCP connection in the same write as the start of the TLS
   * handshake (so the server reads both in one chunk), and MQTT goes over the TLS connection.
   */
  async function tlsVia(header: Buffer | undefined, send: Buffer, host = '127.0.0.1'): Promise<{ packets: number[]; closed: boolean }> {
    const tcp: Socket = connect({ port: server.extraPorts.mqtts!, host });
    tcp.on('error', () => undefined);
    let first = header;
    const stream = new Duplex({
      write(chunk: Buffer, _enc, done) {
        tcp.write(first ? Buffer.concat([first, chunk]) : chunk, done);
        first = undefined;
      },
      read() {
        tcp.resume();
      },
      destroy(err, done) {
        tcp.destroy();
        done(err);
      },
    });
    tcp.on('data', (d: Buffer) => {
      if (!stream.push(d)) tcp.pause();
    });
    tcp.on('end', () => stream.push(null));
    tcp.on('close', () => stream.destroy());
    const tls = tlsConnect({ socket: stream, ca: readFileSync(ca), servername: 'localhost' });
    tls.on('error', () => undefined);
    let received = Buffer.alloc(0);
    return new Promise((resolve) => {
      const timer = setTimeout(() => finish(), 10_000);
      const finish = () => {
        clearTimeout(timer);
        tls.destroy();
        resolve({ packets: splitPackets(received).packets.map((p) => p.type), closed: tls.destroyed });
      };
      tls.on('secureConnect', () => tls.write(send));
      tls.on('data', (d: Buffer) => {
        received = Buffer.concat([received, d]);
        if (splitPackets(received).packets.length > 0) finish();
      });
      tls.on('close', finish);
    });
  }

  it('reads the header before the handshake, and knows the connection by the client it names', async () => {
    const name = await users.fresh('tia');
    const login = connectPacket({ clientId: `${name}/tls`, username: name, password: PASSWORD });
    expect((await tlsVia(proxyV2('2001:db8::99'), login)).packets).toEqual([2]);
    expect((await tlsVia(proxyV1('192.0.2.99'), login)).packets).toEqual([2]);
    await tlsVia(proxyV2('2001:db8::98'), PINGREQ);
    await dropLogged((d) => d.reason === 'first packet is not CONNECT' && d.address === '2001:db8::98');
    // Without a header, the proxy's connection is closed before TLS begins.
    expect((await tlsVia(undefined, login)).packets).toEqual([]);
    // A client that is no proxy connects over TLS as ever.
    expect((await tlsVia(undefined, login, '::1')).packets).toEqual([2]);
    // A proxied client that speaks no TLS after its header is closed, and concerns no one else.
    const plain = connect({ port: server.extraPorts.mqtts!, host: '127.0.0.1' });
    plain.on('error', () => undefined);
    plain.write(Buffer.concat([proxyV1('192.0.2.97'), login]));
    await new Promise((resolve) => plain.once('close', resolve));
    expect((await tlsVia(proxyV1('192.0.2.99'), login)).packets).toEqual([2]);
  });
});
