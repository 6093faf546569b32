import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import request from 'supertest';
import { afterAll, describe, expect, it } from 'vitest';
import { formatBytes } from '#libs/protocol';
import { DATA_DIR_FULL_EXIT, START_ROOM_BYTES } from '#libs/storage';
import { runCli } from '../support/cli.js';
import { runServerToExit, startParley, type ParleyServer } from '../support/parley-server.js';
import { fillDisk, mountSmallDisk } from '../support/small-disk.js';
import { TestUsers } from '../support/test-users.js';

/** A floor of free space small enough for the small disks of these tests (the default is 64 MiB). */
const FLOOR = { PARLEY_MIN_FREE_DISK_BYTES: String(2 * 1024 * 1024) };

/**
 * The standalone server on a disk that fills: every request that would write is refused (`unavailable`), the server
 * stays up and says it is not ready, and it takes writes again once the disk has room. A file offer refused so ended
 * the process (lmdb-js left promises of its own to reject unhandled); and a write LMDB itself found the disk full for
 * could end it with a corrupted heap (lmdb-js overflows the buffer of its own error report): writes are now refused
 * under a floor of free space, before LMDB meets the full disk.
 */
describe('standalone, on a full disk', () => {
  const disk = mountSmallDisk('24m');
  let server: ParleyServer | undefined;
  afterAll(async () => {
    await server?.dispose();
    disk?.unmount();
  });

  it.skipIf(disk === null)('refuses writes of every kind without going down, and takes them again once the disk has room', { timeout: 90_000 }, async () => {
    server = await startParley({ dataDir: join(disk!.dir, 'data'), env: { ...FLOOR, PARLEY_MAX_PENDING_OFFERS: '1000' } });
    const users = new TestUsers(() => [server!.mqttUrl], 'full disk password');
    const [a, b] = [await users.fresh('alice'), await users.fresh('bob')];
    const alice = await users.login(a);
    expect(await alice.request({ op: 'send', to: b, text: 'before' })).toMatchObject({ ok: true });

    // Everything the disk has left goes to ballast, then messages until one is refused.
    const ballast = fillDisk(disk!.dir, [256 * 1024]);
    let refused: { ok: boolean; error?: { code: string } } | undefined;
    for (let i = 0; i < 2000 && !refused; i++) {
      const r = (await alice.request({ op: 'send', to: b, text: 'x'.repeat(1000) })) as { ok: boolean; error?: { code: string } };
      if (!r.ok) refused = r;
    }
    expect(refused).toMatchObject({ ok: false, error: { code: 'unavailable' } });

    // Writes through lmdb-js's own commits: file offers, until one is refused (LMDB may still have a free page or two).
    const offer = (i: number) => ({ op: 'file.offer', to: b, name: `notes-${i}.txt`, size: 50, type: 'text/plain', sha256: 'a'.repeat(64) });
    let offerRefused: { ok: boolean; error?: { code: string } } | undefined;
    for (let i = 0; i < 500 && !offerRefused; i++) {
      const r = (await alice.request(offer(i))) as { ok: boolean; error?: { code: string } };
      if (!r.ok) offerRefused = r;
    }
    expect(offerRefused).toMatchObject({ ok: false, error: { code: 'unavailable' } });
    // Still up, and answering.
    expect(await alice.request({ op: 'who', user: b })).toMatchObject({ ok: true });
    expect(server.process.exitCode).toBeNull();
    await request(server.httpUrl).get('/healthz').expect(200);
    await request(server.httpUrl).get('/readyz').expect(503);

    for (const path of ballast) rmSync(path);
    await expect.poll(async () => (await request(server!.httpUrl).get('/readyz')).status, { timeout: 10_000, interval: 250 }).toBe(200);
    expect(await alice.request({ op: 'send', to: b, text: 'after' })).toMatchObject({ ok: true });
    expect(await alice.request(offer(1000))).toMatchObject({ ok: true });
    await users.closeAll();

    // The log stays parseable: stdout holds only JSON lines. LMDB never met the full disk: nothing of its native code's
    // reports of a failed write (`Write error: …`) is on stderr. (Node's own warnings, `(node:<pid>) …`, may be.)
    for (const line of server.stdout) expect(() => JSON.parse(line) as unknown, line).not.toThrow();
    expect(server.stderr.filter((l) => !l.startsWith('(node:'))).toEqual([]);
  });
});

/** Runs the standalone server on `dataDir` expecting it to refuse to start; its exit code and every line it printed. */
async function runToExit(dataDir: string): Promise<{ code: number | null; stdout: string[]; stderr: string[] }> {
  const { code, stdout, stderr } = await runServerToExit({ PARLEY_DATA_DIR: dataDir });
  const lines = (text: string) => text.split('\n').filter((l) => l !== '');
  return { code, stdout: lines(stdout), stderr: lines(stderr) };
}

/**
 * A restart on a disk that is still full: refused in one JSON log line that says so (the directory, its free space),
 * with an exit status of its own, touching nothing; a live server's lock is still refused as in use. It used to fail
 * at writing the lock, with a stack trace about the lock and a draft lock file left behind; on a disk with a few pages
 * left, LMDB ended the process with SIGSEGV and no word at all.
 */
describe('standalone, restarted on a full disk', () => {
  const disk = mountSmallDisk('8m');
  const servers: ParleyServer[] = [];
  afterAll(async () => {
    for (const s of servers) await s.dispose();
    disk?.unmount();
  });

  it.skipIf(disk === null)(
    'refuses to start, saying the disk is full, leaves the directory as it was, and starts once there is room',
    { timeout: 90_000 },
    async () => {
      const dataDir = join(disk!.dir, 'data');
      const first = await startParley({ dataDir, env: FLOOR });
      servers.push(first);
      const users = new TestUsers(() => [first.mqttUrl], 'full disk password');
      const [a, b] = [await users.fresh('alice'), await users.fresh('bob')];
      const alice = await users.login(a);
      expect(await alice.request({ op: 'send', to: b, text: 'accepted before the disk filled' })).toMatchObject({ ok: true });
      await users.closeAll();

      const ballast = fillDisk(disk!.dir);
      // A server that still runs keeps its directory, full disk or not: the newcomer is refused as before.
      const beside = await runToExit(dataDir);
      expect(beside.code).toBe(1);
      expect(beside.stderr.join('\n')).toMatch(`is in use by process ${first.pid} on ${hostname()}`);
      expect(first.process.exitCode).toBeNull();

      // Killed, so its lock is left behind naming a process that is gone; the disk is still full.
      await first.kill9();
      const before = readdirSync(dataDir).sort();
      const lockBefore = readFileSync(join(dataDir, 'parley.lock'), 'utf8');
      const refused = await runToExit(dataDir);
      expect(refused.code).toBe(DATA_DIR_FULL_EXIT);
      const printed = [...refused.stdout, ...refused.stderr];
      expect(printed).toHaveLength(1);
      const line = JSON.parse(printed[0]!) as { level: string; message: Record<string, unknown> };
      expect(line).toMatchObject({ level: 'fatal', message: { event: 'data_dir_full', dataDir, neededBytes: START_ROOM_BYTES } });
      expect(line.message.availableBytes).toBeLessThan(START_ROOM_BYTES);
      expect(line.message.totalBytes).toBe(8 * 1024 * 1024);
      expect(line.message.error).toMatch(new RegExp(`^the disk holding the data directory ${dataDir} is full \\(\\d+(\\.\\d)? (B|KiB) free of 8\\.0 MiB`));
      expect(printed[0]).not.toMatch(/lock/);
      // Nothing taken, nothing left behind: the stale lock is the dead server's still, and no draft of a new one lies about.
      expect(readdirSync(dataDir).sort()).toEqual(before);
      expect(readFileSync(join(dataDir, 'parley.lock'), 'utf8')).toBe(lockBefore);

      // Room again: the next start takes the directory over, with what was accepted before.
      for (const path of ballast) rmSync(path);
      const again = await startParley({ dataDir, env: FLOOR });
      servers.push(again);
      const bob = await new TestUsers(() => [again.mqttUrl], 'full disk password').login(b);
      const history = (await bob.request({ op: 'history', with: a })) as { ok: boolean; result?: { messages: { text?: string }[] } };
      expect(history.result?.messages.map((m) => m.text)).toEqual(['accepted before the disk filled']);
      await bob.close();
    },
  );
});

/**
 * `parley file accept` into a download directory on a disk that fills: it says so in words (which disk, how much is
 * saved, what to run again), keeps the part file, and the same command goes on from there once there is room.
 */
describe('parley file accept, into a directory on a full disk', () => {
  const disk = mountSmallDisk('8m');
  let server: ParleyServer | undefined;
  let scratch: string | undefined;
  afterAll(async () => {
    await server?.dispose();
    disk?.unmount();
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });

  it.skipIf(disk === null)('says the disk is full and how much is saved, keeps the part file, and resumes when run again', { timeout: 120_000 }, async () => {
    scratch = mkdtempSync(join(tmpdir(), 'parley-full-download-'));
    server = await startParley();
    const users = new TestUsers(() => [server!.mqttUrl], 'full download password');
    const [a, b] = [await users.fresh('alice'), await users.fresh('bob')];
    const as = (user: string) => ({ PARLEY_SERVER: server!.mqttUrl, PARLEY_USER: user, PARLEY_PASSWORD: users.password });
    const data = randomBytes(6 * 1024 * 1024 + 123);
    writeFileSync(join(scratch, 'big.bin'), data);
    const sent = await runCli(['--json', 'file', 'send', b, join(scratch, 'big.bin')], as(a), { timeoutMs: 60_000 });
    expect(sent.code, sent.stdout).toBe(0);
    const offer = (sent.json.find((l) => l.type === 'offered')?.offer as { id: string; chunkSize: number }) ?? expect.fail(sent.stdout);

    // Half of the disk is taken already: the download fills the rest.
    const ballast = join(disk!.dir, 'ballast');
    writeFileSync(ballast, Buffer.alloc(4 * 1024 * 1024));
    const into = join(disk!.dir, 'downloads');
    mkdirSync(into);
    const accept = ['file', 'accept', offer.id, '--to', into];
    const full = await runCli(accept, as(b), { timeoutMs: 60_000 });
    expect(full.code).toBe(1);
    const part = join(into, `.${offer.id}.parley-part`);
    const saved = statSync(part).size;
    // Whole chunks only, and some of them.
    expect(saved).toBeGreaterThan(0);
    expect(saved % offer.chunkSize).toBe(0);
    expect(full.stderr.trim()).toBe(
      `error: disk_full: the disk holding ${into} is full: ${formatBytes(saved)} of big.bin (6.0 MiB) from ${a} is saved there; ` +
        `make room and run parley file accept ${offer.id} --to ${into} to go on from there`,
    );
    expect(readdirSync(into)).toEqual([`.${offer.id}.parley-part`]);

    // Room again: the same command goes on from what was saved, not from the start.
    rmSync(ballast);
    const resumed = await runCli(['--json', ...accept], as(b), { timeoutMs: 60_000 });
    expect(resumed.code, resumed.stdout).toBe(0);
    expect(resumed.json.find((l) => l.type === 'progress')).toMatchObject({ bytes: saved });
    expect(readFileSync(join(into, 'big.bin')).equals(data)).toBe(true);
    expect(readdirSync(into)).toEqual(['big.bin']);
    await users.closeAll();
  });
});
