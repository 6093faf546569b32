import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Server } from 'node:net';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT, runServerToExit, startParley, type ParleyServer } from '../support/parley-server.js';
import { EmbeddedAccountStore } from '#libs/accounts';
import type { WhoResult } from '#libs/protocol';
import { EmbeddedDatabase } from '#libs/storage';
import { MqttUser, okResult, registerUser } from '../support/mqtt-user.js';

/**
 * Whether the server can be run as another user (nobody): only as root, and only from a checkout that user may read (a
 * clone in a directory of mode 0700, as mktemp makes, is not).
 */
const nobodyCanRun =
  process.getuid?.() === 0 &&
  spawnSync(process.execPath, ['-e', `require('node:fs').accessSync(${JSON.stringify(join(REPO_ROOT, 'dist/apps/gateway/src/main.js'))})`], {
    uid: 65534,
    gid: 65534,
  }).status === 0;

/** Runs the server expecting it to refuse to start (on a data directory of its own, unless given another's); returns its exit code and what it printed. */
async function runToExit(env: Record<string, string>, dataDirOfAnother?: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const dataDir = dataDirOfAnother ?? mkdtempSync(join(tmpdir(), 'parley-start-'));
  try {
    return await runServerToExit({ PARLEY_DATA_DIR: dataDir, ...env });
  } finally {
    if (!dataDirOfAnother) rmSync(dataDir, { recursive: true, force: true });
  }
}

describe('server start-up and configuration', () => {
  it.each([
    ['PARLEY_MQTT_PORT', 'abc'],
    ['PARLEY_MQTT_PORT', '70000'],
    ['PARLEY_HTTP_PORT', '-1'],
    ['REDIS_URL', 'http://nope'],
    ['PARLEY_MAX_TEXT_LENGTH', '0'],
    // ioredis would send SELECT NaN for it, and die of the uncaught reply with a stack trace.
    ['REDIS_URL', 'redis://127.0.0.1:1/abc'],
    // Looked up as a host name, it failed only once the store was open, as getaddrinfo's "ENOTFOUND  ::".
    ['PARLEY_MQTT_HOST', ' ::'],
  ])('refuses %s=%s with one clear line and exit code 2', async (key, value) => {
    const { code, stderr } = await runToExit({ [key]: value });
    expect(code).toBe(2);
    const lines = stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(key);
    expect(lines[0]).toContain(`"${value}"`);
    expect(stderr).not.toMatch(/\n\s+at /);
  });

  let blocker: Server;
  beforeAll(async () => {
    blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen({ host: '::', port: 0, ipv6Only: false }, () => resolve()));
  });
  afterAll(() => new Promise<void>((resolve) => blocker.close(() => resolve())));

  it('says in one line, without a stack trace, that the MQTT port is in use', async () => {
    const port = (blocker.address() as { port: number }).port;
    const { code, stderr } = await runToExit({ PARLEY_MQTT_PORT: String(port) });
    expect(code).toBe(1);
    expect(stderr.trim()).toBe(`parley: cannot listen for MQTT on [::]:${port}: the port is already in use`);
  });

  it('refuses, in one line, a data directory another running server holds; starts on it once that one is gone', async () => {
    const first = await startParley();
    try {
      const { code, stderr } = await runToExit({}, first.dataDir);
      expect(code).toBe(1);
      expect(stderr.trim()).toBe(
        `parley: the data directory ${first.dataDir} is in use by process ${first.pid} on ${hostname()}: stop that server, or give this one another PARLEY_DATA_DIR`,
      );
      // Refused without touching it: the first server still serves.
      expect(await registerUser(first.mqttUrl, `lock${Date.now() % 100000}`, 'a password for the lock test')).toMatchObject({ ok: true });
      await first.kill9();
      // Killed, so its lock is left behind, naming a process that is gone: the next server takes the directory.
      const second = await startParley({ dataDir: first.dataDir });
      await second.dispose();
    } finally {
      await first.dispose();
    }
  });

  it('refuses, with exit code 2, two of its own listeners on one port, rather than call it a port another process holds', async () => {
    const { code, stderr } = await runToExit({ PARLEY_MQTT_PORT: '1883', PARLEY_HTTP_PORT: '1883' });
    expect(code).toBe(2);
    expect(stderr.trim()).toBe(
      'parley: invalid configuration: PARLEY_MQTT_PORT and PARLEY_HTTP_PORT are both 1883 (on :: and ::); give each listener a port of its own',
    );
  });

  it('says the same for the WebSocket port', async () => {
    const port = (blocker.address() as { port: number }).port;
    const { code, stderr } = await runToExit({ PARLEY_WS_PORT: String(port) });
    expect(code).toBe(1);
    expect(stderr.trim()).toBe(`parley: cannot listen for MQTT over WebSocket on [::]:${port}: the port is already in use`);
  });

  it('refuses, in one line that names it, a data directory it cannot write to', async () => {
    const parent = mkdtempSync(join(tmpdir(), 'parley-start-'));
    try {
      writeFileSync(join(parent, 'file'), '');
      const dir = join(parent, 'file', 'data');
      const { code, stderr } = await runToExit({ PARLEY_DATA_DIR: dir });
      expect(code).toBe(1);
      expect(stderr.trim()).toBe(
        `parley: cannot write to the data directory ${dir}: a part of its path is a file, not a directory; give this server a directory it may write to (PARLEY_DATA_DIR)`,
      );
    } finally {
      rmSync(parent, { recursive: true, force: true });
    }
  });

  it.runIf(nobodyCanRun)('refuses, in one line that names the file, a data directory whose store files another user made', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'parley-start-'));
    try {
      // As after a first run as root: the directory is anyone's to write, the store's files root's alone.
      chmodSync(dir, 0o777);
      writeFileSync(join(dir, 'parley.lmdb'), '', { mode: 0o644 });
      const nobody = { uid: 65534, gid: 65534 };
      const { code, stdout, stderr } = await runServerToExit({ PARLEY_DATA_DIR: dir }, nobody);
      expect(code).toBe(1);
      expect(stderr.trim()).toBe(
        `parley: cannot write to the data directory ${dir}: its file parley.lmdb: permission denied (another user's?); give this server a directory it may write to (PARLEY_DATA_DIR)`,
      );
      expect(stdout).not.toMatch(/"level":"error"/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('says the same for the HTTP port', async () => {
    const port = (blocker.address() as { port: number }).port;
    const { code, stderr } = await runToExit({ PARLEY_HTTP_PORT: String(port) });
    expect(code).toBe(1);
    expect(stderr.trim()).toBe(`parley: cannot listen for HTTP on [::]:${port}: the port is already in use`);
  });
});

describe('health, readiness and metrics over HTTP', () => {
  let server: ParleyServer;
  beforeAll(async () => {
    // A misspelt setting, and one of the CLI's, which a server started from the CLI's shell has for good reason.
    server = await startParley({ env: { PARLEY_MQTT_HOTS: '::', PARLEY_USER: 'alice' } });
  });
  afterAll(() => server?.dispose());

  it('warns at start of PARLEY_* names that are no setting, and says where its HTTP listener is', () => {
    const logged = server.stdout.map((l) => (JSON.parse(l) as { message?: { event?: string; names?: string[]; http?: object } }).message);
    expect(logged.filter((m) => m?.event === 'unknown_settings').map((m) => m?.names)).toEqual([['PARLEY_MQTT_HOTS']]);
    expect(logged.find((m) => m?.event === 'listening')?.http).toEqual({ host: '::', port: server.httpPort });
  });

  it('serves /healthz and /readyz', async () => {
    await request(server.httpUrl).get('/healthz').expect(200, { status: 'ok' });
    const ready = await request(server.httpUrl).get('/readyz').expect(200);
    expect(ready.body).toEqual({ status: 'ready', checks: { mqtt: true, storage: true }, degraded: [] });
  });

  it('closes an HTTP connection that sends nothing, or stops halfway through its request, at the connect timeout', async () => {
    const own = await startParley({ env: { PARLEY_CONNECT_TIMEOUT_MS: '1000' } });
    try {
      const closedAfter = (bytes: string) =>
        new Promise<number>((resolve, reject) => {
          const socket = connect({ port: own.httpPort, host: '127.0.0.1' }, () => socket.write(bytes));
          const openedAt = Date.now();
          socket.on('error', () => undefined);
          socket.once('close', () => resolve(Date.now() - openedAt));
          // Before, neither was closed at all (Node keeps a silent connection open for as long as the client likes).
          setTimeout(() => reject(new Error('still open after 10 s')), 10_000).unref();
        });
      for (const ms of await Promise.all([closedAfter(''), closedAfter('GET /healthz HTTP/1.1\r\nHost: x\r\n')])) expect(ms).toBeLessThan(5000);
      // A request is answered as before.
      await request(own.httpUrl).get('/healthz').expect(200, { status: 'ok' });
    } finally {
      await own.dispose();
    }
  });

  it('counts connections and accepted messages in Prometheus /metrics', async () => {
    await registerUser(server.mqttUrl, 'metrica', 'password123');
    await registerUser(server.mqttUrl, 'metricb', 'password123');
    const a = await MqttUser.connect(server.mqttUrl, 'metrica', 'password123');
    try {
      expect(await a.request({ op: 'send', to: 'metricb', text: 'count me' })).toMatchObject({ ok: true });
      const res = await request(server.httpUrl)
        .get('/metrics')
        .expect(200)
        .expect('content-type', /text\/plain/);
      expect(res.text).toMatch(/^parley_mqtt_connections 1$/m);
      expect(res.text).toMatch(/^parley_messages_accepted_total 1$/m);
      expect(res.text).toMatch(/^parley_requests_total\{op="send",outcome="ok"\} 1$/m);
      // The send's append was a synced commit of the embedded store, timed.
      expect(res.text).toMatch(/^parley_store_commit_duration_seconds_count [1-9]\d*$/m);
    } finally {
      await a.close();
    }
  });

  it('hashes a new password at PARLEY_PASSWORD_COST, and keeps one hashed at another cost at the new cost from its next login', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'parley-cost-'));
    /** The stored hash's scrypt N, read with the server stopped. */
    const storedN = async (user: string) => {
      const db = new EmbeddedDatabase(dataDir);
      try {
        return (await new EmbeddedAccountStore(db).get(user))?.passwordHash.split('$')[1];
      } finally {
        await db.close();
      }
    };
    try {
      const cheap = await startParley({ dataDir, env: { PARLEY_PASSWORD_COST: '10' } });
      expect((await registerUser(cheap.mqttUrl, 'ada', 'password123')).ok).toBe(true);
      await cheap.dispose();
      expect(await storedN('ada')).toBe('1024');
      // 15 is the default, named here so that the test says what it checks.
      const raised = await startParley({ dataDir, env: { PARLEY_PASSWORD_COST: '15' } });
      await (await MqttUser.connect(raised.mqttUrl, 'ada', 'password123')).close();
      expect((await registerUser(raised.mqttUrl, 'bea', 'password123')).ok).toBe(true);
      // A clean stop waits for the login's new hash to be kept.
      await raised.dispose();
      expect([await storedN('ada'), await storedN('bea')]).toEqual(['32768', '32768']);
      const again = await startParley({ dataDir, env: { PARLEY_PASSWORD_COST: '15' } });
      try {
        await (await MqttUser.connect(again.mqttUrl, 'ada', 'password123')).close();
        await expect(MqttUser.connect(again.mqttUrl, 'ada', 'password124')).rejects.toThrow(/bad username or password/i);
      } finally {
        await again.dispose();
      }
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  it('stops cleanly on SIGTERM', async () => {
    const s = await startParley();
    const exit = new Promise<number | null>((resolve) => s.process.once('exit', (code) => resolve(code)));
    s.process.kill('SIGTERM');
    expect(await exit).toBe(0);
    await s.dispose();
  });

  it('records the users a clean stop disconnects as offline since the stop, and logs no failure doing so', async () => {
    const s = await startParley();
    try {
      await registerUser(s.mqttUrl, 'leaver', 'password123');
      await registerUser(s.mqttUrl, 'asker', 'password123');
      const leaver = await MqttUser.connect(s.mqttUrl, 'leaver', 'password123');
      await s.stop();
      const stoppedAt = Date.now();
      await leaver.close();
      expect(s.output.filter((l) => /presence_report_failed|No transaction/.test(l))).toEqual([]);
      // Restarted on the same data: its presence comes from what the stop recorded, not from clearing up after it.
      const again = await startParley({ dataDir: s.dataDir });
      try {
        const asker = await MqttUser.connect(again.mqttUrl, 'asker', 'password123');
        const who = await okResult<WhoResult>(asker.request({ op: 'who', user: 'leaver' }));
        await asker.close();
        expect(who.state).toBe('offline');
        expect(who.lastSeen).toBeLessThanOrEqual(stoppedAt);
      } finally {
        await again.dispose();
      }
    } finally {
      await s.dispose();
    }
  });
});

describe('readiness while Redis is unreachable', () => {
  let server: ParleyServer;
  beforeAll(async () => {
    // Port 1 on loopback: nothing listens there, so every Redis call fails fast.
    server = await startParley({ env: { REDIS_URL: 'redis://127.0.0.1:1' } });
  });
  afterAll(() => server?.dispose());

  it('answers 503 on /readyz and refuses logins with "server unavailable"', async () => {
    const res = await request(server.httpUrl).get('/readyz').expect(503);
    expect(res.body).toMatchObject({ status: 'not ready', checks: { storage: false } });
    await expect(registerUser(server.mqttUrl, 'nobody', 'password123')).resolves.toMatchObject({ ok: false, error: { code: 'unavailable' } });
  });
});
