import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as netConnect } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CliProcess, runCli } from '../support/cli.js';
import { startParley, type ParleyServer } from '../support/parley-server.js';
import { connectPacket } from '../support/raw-mqtt.js';
import { droppedConnections } from '../support/proxy-protocol.js';
import { makeCertificates } from '../support/certificates.js';

/**
 * MQTT over TLS, over WebSocket and over secure WebSocket, each on its own
 * port next to plain MQTT, with a certificate made for this run by a CA made
 * for this run. The CLI reaches the server over each of them.
 */
let dir: string;
let server: ParleyServer;
let ca: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'parley-tls-'));
  const files = makeCertificates(dir);
  ca = files.ca;
  server = await startParley({
    env: { PARLEY_MQTTS_PORT: '0', PARLEY_WS_PORT: '0', PARLEY_WSS_PORT: '0', PARLEY_TLS_CERT: files.cert, PARLEY_TLS_KEY: files.key },
  });
});

afterAll(async () => {
  await server?.dispose();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const PASSWORD = 'transport password';

describe('transports', () => {
  it('opens each configured listener on its own port', () => {
    const { mqtts, ws, wss } = server.extraPorts;
    expect(new Set([server.mqttPort, mqtts, ws, wss]).size).toBe(4);
  });

  it('the CLI registers, sends and listens over mqtts://, ws:// and wss://, trusting the CA given with --ca or PARLEY_CA', { timeout: 60_000 }, async () => {
    const { mqtts, ws, wss } = server.extraPorts;
    const urls = { mqtts: `mqtts://localhost:${mqtts}`, ws: `ws://127.0.0.1:${ws}`, wss: `wss://[::1]:${wss}` };
    const stamp = Date.now().toString(36).slice(-5);
    const [amy, ben] = [`amy${stamp}`, `ben${stamp}`];
    expect((await runCli(['register', '--ca', ca], { PARLEY_SERVER: urls.mqtts, PARLEY_USER: amy, PARLEY_PASSWORD: PASSWORD })).code).toBe(0);
    expect((await runCli(['register'], { PARLEY_SERVER: urls.ws, PARLEY_USER: ben, PARLEY_PASSWORD: PASSWORD })).code).toBe(0);

    const listen = CliProcess.start(['listen', '--json'], { PARLEY_SERVER: urls.wss, PARLEY_CA: ca, PARLEY_USER: ben, PARLEY_PASSWORD: PASSWORD });
    try {
      await listen.waitForLine(/"type":"ready"/, 20_000);
      const sent = await runCli(['send', ben, 'over TLS', '--json'], { PARLEY_SERVER: urls.mqtts, PARLEY_CA: ca, PARLEY_USER: amy, PARLEY_PASSWORD: PASSWORD });
      expect(sent.code).toBe(0);
      await listen.waitForLine(/"text":"over TLS"/);
      const viaWs = await runCli(['send', amy, 'over a WebSocket'], { PARLEY_SERVER: urls.ws, PARLEY_USER: ben, PARLEY_PASSWORD: PASSWORD });
      expect(viaWs.code).toBe(0);
      const history = await runCli(['history', ben, '--json'], { PARLEY_SERVER: urls.wss, PARLEY_CA: ca, PARLEY_USER: amy, PARLEY_PASSWORD: PASSWORD });
      expect(history.json.filter((l) => l.type === 'message').map((l) => l.text)).toEqual(['over TLS', 'over a WebSocket']);
    } finally {
      await listen.stop();
    }
  });

  it('the CLI refuses an untrusted certificate with a clear reason, and a server URL of an unknown scheme', async () => {
    const untrusted = await runCli(['send', 'bob', 'hi'], {
      PARLEY_SERVER: `mqtts://localhost:${server.extraPorts.mqtts}`,
      PARLEY_USER: 'amy',
      PARLEY_PASSWORD: PASSWORD,
    });
    expect(untrusted.code).toBe(1);
    expect(untrusted.stderr).toMatch(/not trusted.*--ca/);
    // With the CA given: a name the certificate is not for says so, and a CA file with no certificate in it is refused.
    const login = { PARLEY_USER: 'amy', PARLEY_PASSWORD: PASSWORD };
    const otherName = await runCli(['--ca', ca, 'send', 'bob', 'hi'], { ...login, PARLEY_SERVER: `mqtts://127.0.0.2:${server.extraPorts.mqtts}` });
    expect(otherName.code).toBe(1);
    expect(otherName.stderr).toMatch(/certificate is for another host name/);
    expect(otherName.stderr).not.toMatch(/--ca/);
    const notCa = await runCli(['--ca', join(dir, 'server.key'), 'send', 'bob', 'hi'], {
      ...login,
      PARLEY_SERVER: `mqtts://localhost:${server.extraPorts.mqtts}`,
    });
    expect(notCa.code).toBe(1);
    expect(notCa.stderr).toMatch(/holds no PEM certificate/);
    // TLS spoken to the plain WebSocket port.
    const noTls = await runCli(['--ca', ca, 'send', 'bob', 'hi'], { ...login, PARLEY_SERVER: `wss://localhost:${server.extraPorts.ws}` });
    expect(noTls.code).toBe(1);
    expect(noTls.stderr).toMatch(/does not speak TLS on that port/);
    const badScheme = await runCli(['send', 'bob', 'hi'], { PARLEY_SERVER: 'http://localhost:1', PARLEY_USER: 'amy', PARLEY_PASSWORD: PASSWORD });
    expect(badScheme.code).toBe(2);
    expect(badScheme.stderr).toMatch(/mqtt:\/\/, mqtts:\/\/, ws:\/\/ or wss:\/\//);
  });

  it('the CLI says that a plain MQTT URL names a WebSocket port (it answers in HTTP), and to use ws:// or wss:// there, at once', async () => {
    const login = { PARLEY_USER: 'amy', PARLEY_PASSWORD: PASSWORD };
    const plain = `mqtt://127.0.0.1:${server.extraPorts.ws}`;
    const viaPlain = await runCli(['send', 'bob', 'hi'], { ...login, PARLEY_SERVER: plain });
    expect(viaPlain.code).toBe(1);
    expect(viaPlain.stderr.trim()).toBe(
      `error: connect: cannot reach ${plain}: it speaks HTTP (WebSocket), not MQTT, on that port: use ws://127.0.0.1:${server.extraPorts.ws}`,
    );
    // A file transfer rides out dropped connections, but this is no drop: it is told at once (it would try for 10 s).
    const file = join(dir, 'to-send.txt');
    writeFileSync(file, 'a file');
    const sending = await runCli(['--json', 'file', 'send', 'bob', file], { ...login, PARLEY_SERVER: plain }, { timeoutMs: 8000 });
    expect(sending.code).toBe(1);
    expect(sending.json).toEqual([
      {
        type: 'error',
        code: 'connect',
        message: `cannot reach ${plain}: it speaks HTTP (WebSocket), not MQTT, on that port: use ws://127.0.0.1:${server.extraPorts.ws}`,
      },
    ]);
    // MQTT over TLS to the secure WebSocket port: the TLS is right, what follows is not.
    const secure = `mqtts://localhost:${server.extraPorts.wss}`;
    const viaTls = await runCli(['--ca', ca, 'send', 'bob', 'hi'], { ...login, PARLEY_SERVER: secure });
    expect(viaTls.code).toBe(1);
    expect(viaTls.stderr.trim()).toBe(
      `error: connect: cannot reach ${secure}: it speaks HTTP (WebSocket), not MQTT, on that port: use wss://localhost:${server.extraPorts.wss}`,
    );
  });

  it('the CLI tells the health and metrics port (HTTP, but no WebSocket) from a WebSocket port, and says MQTT is elsewhere', async () => {
    const login = { PARLEY_USER: 'amy', PARLEY_PASSWORD: PASSWORD };
    const health = `mqtt://127.0.0.1:${server.httpPort}`;
    const viaMqtt = await runCli(['who', 'bob'], { ...login, PARLEY_SERVER: health });
    expect(viaMqtt.code).toBe(1);
    expect(viaMqtt.stderr.trim()).toBe(
      `error: connect: cannot reach ${health}: it speaks HTTP, not MQTT, on that port: it is a Parley health and metrics port (/healthz, /metrics); MQTT (PARLEY_MQTT_PORT, 1883 by default) is on another port`,
    );
    // Nor does it take a WebSocket: it closes on the upgrade request.
    const viaWs = await runCli(['who', 'bob'], { ...login, PARLEY_SERVER: `ws://127.0.0.1:${server.httpPort}` });
    expect(viaWs.code).toBe(1);
    expect(viaWs.stderr).toMatch(
      /it takes no WebSocket on that port: it is a Parley health and metrics port .*MQTT over WebSocket \(PARLEY_WS_PORT\) is on another port/,
    );
  });

  it('the CLI says that a plain MQTT port speaks no TLS and no WebSocket, and to use mqtt:// there', async () => {
    const login = { PARLEY_USER: 'amy', PARLEY_PASSWORD: PASSWORD };
    const mqtt = `mqtt://localhost:${server.mqttPort}`;
    for (const scheme of ['mqtts', 'wss']) {
      const url = `${scheme}://localhost:${server.mqttPort}`;
      const r = await runCli(['--ca', ca, 'who', 'bob'], { ...login, PARLEY_SERVER: url });
      expect(r.code, scheme).toBe(1);
      expect(r.stderr.trim(), scheme).toBe(`error: connect: cannot reach ${url}: it does not speak TLS on that port, but plain MQTT: use ${mqtt}`);
    }
    const ws = `ws://localhost:${server.mqttPort}`;
    const viaWs = await runCli(['--json', 'who', 'bob'], { ...login, PARLEY_SERVER: ws });
    expect(viaWs.code).toBe(1);
    expect(viaWs.json).toEqual([{ type: 'error', code: 'connect', message: `cannot reach ${ws}: it speaks MQTT, not WebSocket, on that port: use ${mqtt}` }]);
    // And the TLS ports the other way round: secure WebSocket to the MQTT-over-TLS port.
    const wss = `wss://localhost:${server.extraPorts.mqtts}`;
    const viaWss = await runCli(['--ca', ca, 'who', 'bob'], { ...login, PARLEY_SERVER: wss });
    expect(viaWss.stderr.trim()).toBe(
      `error: connect: cannot reach ${wss}: it speaks MQTT, not WebSocket, on that port: use mqtts://localhost:${server.extraPorts.mqtts}`,
    );
  });

  it('the CLI says that a TLS port speaks TLS, and to use mqtts:// or wss:// there, at once (not trusting its certificate yet)', async () => {
    const login = { PARLEY_USER: 'amy', PARLEY_PASSWORD: PASSWORD };
    const { mqtts, wss } = server.extraPorts;
    const cases: [string, string][] = [
      [`mqtt://localhost:${mqtts}`, `it speaks MQTT over TLS on that port: use mqtts://localhost:${mqtts}`],
      [`ws://localhost:${wss}`, `it speaks WebSocket over TLS on that port: use wss://localhost:${wss}`],
      [`mqtt://127.0.0.1:${wss}`, `it speaks HTTP (WebSocket) over TLS, not MQTT, on that port: use wss://127.0.0.1:${wss}`],
      [`ws://127.0.0.1:${mqtts}`, `it speaks MQTT over TLS, not WebSocket, on that port: use mqtts://127.0.0.1:${mqtts}`],
    ];
    for (const [url, hint] of cases) {
      const r = await runCli(['who', 'bob'], { ...login, PARLEY_SERVER: url });
      expect(r.code, url).toBe(1);
      expect(r.stderr.trim(), url).toBe(`error: connect: cannot reach ${url}: ${hint}`);
    }
    // A file transfer rides out dropped connections, but a TLS port's close is no drop: it is told at once (it would try for 10 s).
    const file = join(dir, 'to-send-tls.txt');
    writeFileSync(file, 'a file');
    const url = `mqtt://localhost:${mqtts}`;
    const sending = await runCli(['--json', 'file', 'send', 'bob', file], { ...login, PARLEY_SERVER: url }, { timeoutMs: 8000 });
    expect(sending.json).toEqual([{ type: 'error', code: 'connect', message: `cannot reach ${url}: ${cases[0]![1]}` }]);
  });

  it('holds TLS clients to the same rules: a huge first packet is cut off at once', async () => {
    const socket = tlsConnect({ port: server.extraPorts.mqtts!, host: '127.0.0.1', servername: 'localhost', ca: readFileSync(ca) });
    await new Promise<void>((resolve, reject) => socket.once('secureConnect', resolve).once('error', reject));
    socket.on('error', () => undefined);
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    socket.write(Buffer.from([0x10, 0xff, 0xff, 0xff, 0x7f]));
    socket.write(Buffer.alloc(1024, 0x41));
    await closed;
    // A well-formed login over TLS still works.
    const ok = tlsConnect({ port: server.extraPorts.mqtts!, host: '127.0.0.1', servername: 'localhost', ca: readFileSync(ca) });
    const connack = await new Promise<Buffer>((resolve, reject) => {
      let got = Buffer.alloc(0);
      ok.on('data', (d: Buffer) => {
        got = Buffer.concat([got, d]);
        if (got.length >= 4) resolve(got);
      });
      ok.once('error', reject);
      ok.write(connectPacket({ clientId: 'anon.tlsprobe01' }));
    });
    expect([...connack]).toEqual([0x20, 0x02, 0x00, 0x00]);
    ok.destroy();
  });

  it('closes a connection that never finishes its TLS handshake or WebSocket upgrade at the connect timeout, logging each, and stops at once beside one', async () => {
    const files = makeCertificates(mkdtempSync(join(tmpdir(), 'parley-tls-stall-')));
    const stalled = await startParley({
      env: {
        PARLEY_CONNECT_TIMEOUT_MS: '1500',
        PARLEY_MQTTS_PORT: '0',
        PARLEY_WS_PORT: '0',
        PARLEY_WSS_PORT: '0',
        PARLEY_TLS_CERT: files.cert,
        PARLEY_TLS_KEY: files.key,
      },
    });
    try {
      const { mqtts, ws, wss } = stalled.extraPorts;
      /** A TCP connection that sends `bytes` (or nothing) and then nothing more; resolves when the server closes it. */
      const silent = async (port: number, bytes?: Buffer) => {
        const socket = netConnect({ port, host: '127.0.0.1' });
        socket.on('error', () => undefined);
        await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
        if (bytes) socket.write(bytes);
        const openedAt = Date.now();
        await new Promise<void>((resolve) => socket.once('close', () => resolve()));
        return Date.now() - openedAt;
      };
      const halfHello = Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]);
      const halfUpgrade = Buffer.from('GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n');
      const waits = await Promise.all([
        silent(mqtts!),
        silent(mqtts!, halfHello),
        silent(ws!),
        silent(ws!, halfUpgrade),
        silent(wss!),
        silent(wss!, halfHello),
        // Plain MQTT on the TLS port: the handshake fails at once.
        silent(mqtts!, connectPacket({ clientId: 'anon.tlsprobe02' })),
      ]);
      for (const ms of waits) expect(ms).toBeLessThan(10_000);
      // Each is logged, once, as the guard logs the connections it drops (a handshake that fails included).
      const drops = () => droppedConnections(stalled).map((m) => m.reason.replace(/^(TLS handshake failed): .*/, '$1'));
      await expect
        .poll(() => drops().sort(), { timeout: 10_000 })
        .toEqual([
          'TLS handshake failed',
          'no TLS handshake and WebSocket upgrade in time',
          'no TLS handshake and WebSocket upgrade in time',
          'no TLS handshake in time',
          'no TLS handshake in time',
          'no WebSocket upgrade in time',
          'no WebSocket upgrade in time',
        ]);

      // One stays, with nothing sent: a stop does not wait for it.
      const lingering = netConnect({ port: mqtts!, host: '127.0.0.1' });
      lingering.on('error', () => undefined);
      await new Promise<void>((resolve) => lingering.once('connect', () => resolve()));
      const stopping = Date.now();
      await stalled.stop();
      // Not the 15 s a stop waits at most before it gives up (exit 1).
      expect(Date.now() - stopping).toBeLessThan(10_000);
      expect({ code: stalled.process.exitCode, signal: stalled.process.signalCode }).toEqual({ code: 0, signal: null });
      lingering.destroy();
    } finally {
      await stalled.dispose();
    }
  });

  it('binds each TLS listener where told, apart from plain MQTT: plain kept to IPv4 loopback, TLS on every address', async () => {
    const files = makeCertificates(mkdtempSync(join(tmpdir(), 'parley-tls-host-')));
    const split = await startParley({
      env: { PARLEY_MQTT_HOST: '127.0.0.1', PARLEY_MQTTS_PORT: '0', PARLEY_MQTTS_HOST: '::', PARLEY_TLS_CERT: files.cert, PARLEY_TLS_KEY: files.key },
    });
    try {
      const reaches = (port: number, host: string) =>
        new Promise<boolean>((resolve) => {
          const socket = netConnect({ port, host });
          socket.once('connect', () => (socket.destroy(), resolve(true)));
          socket.once('error', () => resolve(false));
        });
      expect(await reaches(split.mqttPort, '127.0.0.1')).toBe(true);
      expect(await reaches(split.mqttPort, '::1')).toBe(false);
      expect(await reaches(split.extraPorts.mqtts!, '::1')).toBe(true);
      expect(await reaches(split.extraPorts.mqtts!, '127.0.0.1')).toBe(true);
    } finally {
      await split.dispose();
    }
  });

  it('says that a certificate given without a TLS listener is not used', async () => {
    const files = makeCertificates(mkdtempSync(join(tmpdir(), 'parley-tls-unused-')));
    const plain = await startParley({ env: { PARLEY_TLS_CERT: files.cert, PARLEY_TLS_KEY: files.key } });
    try {
      expect(plain.stdout.filter((l) => (JSON.parse(l) as { message?: { event?: string } }).message?.event === 'tls_unused')).toHaveLength(1);
      expect(plain.extraPorts).toEqual({});
    } finally {
      await plain.dispose();
    }
  });

  it('refuses to start a TLS listener without a certificate, in one line', async () => {
    await expect(startParley({ env: { PARLEY_MQTTS_PORT: '0' }, timeoutMs: 10_000 })).rejects.toThrow(
      /PARLEY_MQTTS_PORT needs PARLEY_TLS_CERT and PARLEY_TLS_KEY/,
    );
  });

  it('refuses, in one line naming the files, a certificate or key that is not PEM', async () => {
    const notPem = join(dir, 'not-a-cert.txt');
    writeFileSync(notPem, 'hello, I am no certificate\n');
    const key = join(dir, 'server.key');
    await expect(startParley({ env: { PARLEY_MQTTS_PORT: '0', PARLEY_TLS_CERT: notPem, PARLEY_TLS_KEY: key }, timeoutMs: 10_000 })).rejects.toThrow(
      new RegExp(`PARLEY_TLS_CERT ${notPem.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} and PARLEY_TLS_KEY .* are not a PEM certificate and its key`),
    );
    // A setting naming a directory is named, with the path, not just the system's error.
    await expect(
      startParley({ env: { PARLEY_MQTTS_PORT: '0', PARLEY_TLS_CERT: join(dir, 'server.pem'), PARLEY_TLS_KEY: dir }, timeoutMs: 10_000 }),
    ).rejects.toThrow(`cannot read PARLEY_TLS_KEY ${dir} (EISDIR)`);
  });

  it('warns at start of a certificate that expires soon (the test CA signs for one day)', () => {
    const warning = server.output.find((l) => l.includes('certificate_not_valid'));
    expect(warning).toMatch(/"state":"expires soon"/);
  });
});
