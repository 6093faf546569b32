import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { fillDisk, mountSmallDisk } from '../../../test/support/small-disk.js';
import { DataDirLock } from './data-dir-lock.js';
import { DataDirFullError } from './data-dir-space.js';
import { EmbeddedDatabase } from './embedded-database.js';

/**
 * Called after each file operation (here, in this process) with its name and first path: lets a test play other
 * processes' steps at an exact point of a take, as the scheduler might. Its own steps must use the actual `node:fs`.
 */
const interleave = vi.hoisted(() => ({ after: undefined as ((op: string, path: string) => void) | undefined }));
vi.mock('node:fs', async (importOriginal) => {
  const fs = await importOriginal<typeof import('node:fs')>();
  const observed =
    <A extends unknown[], R>(op: string, f: (...args: A) => R) =>
    (...args: A): R => {
      try {
        return f(...args);
      } finally {
        interleave.after?.(op, String(args[0]));
      }
    };
  return {
    ...fs,
    existsSync: observed('exists', fs.existsSync),
    linkSync: observed('link', fs.linkSync),
    // Node's recursive mkdir retries for ever (in native code, past any test timeout) under /proc: a test fails instead.
    mkdirSync: ((path: string, options?: { recursive?: boolean }) => {
      if (options?.recursive && String(path).startsWith('/proc/')) throw new Error(`a recursive mkdir of ${path} would never return`);
      return fs.mkdirSync(path, options);
    }) as typeof fs.mkdirSync,
    readFileSync: observed('read', fs.readFileSync),
    renameSync: observed('rename', fs.renameSync),
    rmSync: observed('rm', fs.rmSync),
    statSync: observed('stat', fs.statSync),
    writeFileSync: observed('write', fs.writeFileSync),
  };
});

const REPO_ROOT = fileURLToPath(new URL('../../..', import.meta.url));
const dirs: string[] = [];
const stops: (() => void)[] = [];
afterEach(() => {
  interleave.after = undefined;
  for (const stop of stops.splice(0)) stop();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function dataDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'parley-lock-'));
  dirs.push(d);
  return d;
}

/** A lock file as another holder would leave it. */
function holdAs(dir: string, pid: number, host = hostname(), boot?: string): string {
  const path = join(dir, 'parley.lock');
  writeFileSync(path, JSON.stringify({ pid, host, token: 'someone else', boot }));
  return path;
}

/** Where the `n`th process to take over the lock at `path`, as it reads now, claims the right to. */
function claimOn(path: string, n: number): string {
  return `${path}.takeover-${createHash('sha256').update(readFileSync(path, 'utf8')).digest('hex').slice(0, 16)}-${n}`;
}

/** Ages a lock file past the stale limit (30 s), as if its holder stopped refreshing it a minute ago. */
function lastRefreshedMinuteAgo(path: string): void {
  const longAgo = new Date(Date.now() - 60_000);
  utimesSync(path, longAgo, longAgo);
}

/** Another live process (its pid stands for a server that still runs). */
async function liveProcess(): Promise<{ pid: number; stop: () => Promise<void> }> {
  const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
  await new Promise((resolve) => child.once('spawn', resolve));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  stops.push(() => child.kill('SIGKILL'));
  return {
    pid: child.pid!,
    stop: async () => {
      child.kill('SIGKILL');
      await exited;
    },
  };
}

describe('DataDirLock', () => {
  it('takes a free directory, and gives it up on release', () => {
    const dir = dataDir();
    const lock = new DataDirLock(dir);
    expect(JSON.parse(readFileSync(join(dir, 'parley.lock'), 'utf8'))).toMatchObject({ pid: process.pid, host: hostname() });
    lock.release();
    expect(existsSync(join(dir, 'parley.lock'))).toBe(false);
  });

  it('refuses, saying why in words, a data directory that is a file or lies under one', () => {
    const file = join(dataDir(), 'file');
    writeFileSync(file, '');
    expect(() => DataDirLock.check(file)).toThrow(`cannot write to the data directory ${file}: it is a file, not a directory;`);
    expect(() => DataDirLock.check(join(file, 'data'))).toThrow(`${join(file, 'data')}: a part of its path is a file, not a directory;`);
  });

  it.runIf(process.platform === 'linux')('refuses, in words and without hanging, a data directory that cannot be made where its parent is', () => {
    // /proc is there, but no directory can be made in it (mkdir fails with ENOENT).
    for (const dir of ['/proc/parley-nope', '/proc/parley-nope/data']) {
      expect(() => DataDirLock.check(dir)).toThrow(`cannot write to the data directory ${dir}: no directory can be made there;`);
    }
  });

  it('makes a missing data directory and its missing parents', () => {
    const dir = join(dataDir(), 'a', 'b', 'c');
    DataDirLock.check(dir);
    expect(statSync(dir).isDirectory()).toBe(true);
    // And takes one that is there already.
    DataDirLock.check(dir);
  });

  it('tells when the server before it was last alive: its lock’s last refresh if it was killed, nothing after a clean release', async () => {
    const dir = dataDir();
    const first = new DataDirLock(dir);
    expect(first.previousHolderAliveAt).toBeNull();
    first.release();
    const afterClean = new DataDirLock(dir);
    expect(afterClean.previousHolderAliveAt).toBeNull();
    afterClean.release();
    const dead = await liveProcess();
    const path = holdAs(dir, dead.pid);
    await dead.stop();
    lastRefreshedMinuteAgo(path);
    const refreshed = Math.floor(statSync(path).mtimeMs);
    const lock = new DataDirLock(dir);
    // In whole milliseconds, as every time Parley shows.
    expect(lock.previousHolderAliveAt).toBe(refreshed);
    lock.release();
  });

  it('refuses a directory another live process on this host holds, naming it; takes it once that process is gone', async () => {
    const dir = dataDir();
    const other = await liveProcess();
    holdAs(dir, other.pid);
    expect(() => new DataDirLock(dir)).toThrow(`in use by process ${other.pid} on ${hostname()}`);
    await other.stop();
    const lock = new DataDirLock(dir);
    expect(JSON.parse(readFileSync(join(dir, 'parley.lock'), 'utf8'))).toMatchObject({ pid: process.pid });
    lock.release();
  });

  it('takes over a lock whose holder was killed and not yet reaped by its parent (a zombie still answers signals)', async () => {
    const dir = dataDir();
    // The shell starts a child that exits shortly, and meanwhile becomes a process that never waits for it (whatever the
    // shell): the child stays a zombie, as a server killed with -9 does until whatever started it collects it.
    const parent = spawn('sh', ['-c', 'sleep 0.3 & echo $!; exec sleep 30'], { stdio: ['ignore', 'pipe', 'ignore'] });
    stops.push(() => parent.kill('SIGKILL'));
    const pid = Number(await new Promise<string>((resolve) => parent.stdout.once('data', (d: Buffer) => resolve(d.toString()))));
    const isZombie = () => readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.startsWith('Z');
    await expect.poll(isZombie, { timeout: 5_000 }).toBe(true);
    expect(() => process.kill(pid, 0)).not.toThrow();
    holdAs(dir, pid);
    const lock = new DataDirLock(dir);
    expect(JSON.parse(readFileSync(join(dir, 'parley.lock'), 'utf8'))).toMatchObject({ pid: process.pid });
    lock.release();
  });

  it('takes over a lock from before this machine last booted, though its pid now names a live process', async () => {
    const dir = dataDir();
    const other = await liveProcess();
    const boot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    holdAs(dir, other.pid, hostname(), boot);
    expect(() => new DataDirLock(dir)).toThrow(`in use by process ${other.pid}`);
    holdAs(dir, other.pid, hostname(), 'a boot long ago');
    const lock = new DataDirLock(dir);
    expect(JSON.parse(readFileSync(join(dir, 'parley.lock'), 'utf8'))).toMatchObject({ pid: process.pid, boot });
    lock.release();
  });

  it('takes over a lock naming this very process (a container restarted with the same pid), and an unreadable one once it is old', () => {
    const dir = dataDir();
    holdAs(dir, process.pid);
    new DataDirLock(dir).release();
    const path = join(dir, 'parley.lock');
    writeFileSync(path, '{"pid": 12');
    expect(() => new DataDirLock(dir)).toThrow('is unreadable');
    lastRefreshedMinuteAgo(path);
    new DataDirLock(dir).release();
  });

  it('at each heartbeat: puts back a lock removed by hand, rides out one it cannot read, and notices another host took it over', () => {
    const dir = dataDir();
    const path = join(dir, 'parley.lock');
    const lost: unknown[] = [];
    // Beats are driven by hand here: the timer is set far out.
    const lock = new DataDirLock(dir, { heartbeatMs: 3_600_000, onLost: (holder) => lost.push(holder) });
    stops.push(() => lock.release());
    const beat = () => (lock as unknown as { beat(): void }).beat();
    const mine = readFileSync(path, 'utf8');
    rmSync(path);
    beat();
    expect(readFileSync(path, 'utf8')).toBe(mine);
    // Caught half-written, or unreadable for a moment: not a loss.
    writeFileSync(path, '{"pid": 12');
    beat();
    expect(lost).toEqual([]);
    holdAs(dir, 4242, 'another-host');
    beat();
    expect(lost).toEqual([expect.objectContaining({ pid: 4242, host: 'another-host' })]);
    // The lock is the other server's now; this one leaves it alone.
    expect(JSON.parse(readFileSync(path, 'utf8'))).toMatchObject({ host: 'another-host' });
  });

  it('lets exactly one of several servers starting at once take a directory: free, or left by a dead one, a silent host or a damaged lock', async () => {
    // Separate processes (as built by `npm run build`), each holding on to what it took until all have tried.
    const script = (dir: string) => `
      import { createInterface } from 'node:readline';
      import { DataDirLock } from './dist/libs/storage/src/data-dir-lock.js';
      const told = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
      process.stdout.write('ready\\n');
      const startAt = Number((await told.next()).value);
      // Asleep until just before the moment, then spinning only the last few milliseconds (not hogging the CPU).
      await new Promise((r) => setTimeout(r, Math.max(0, startAt - Date.now() - 5)));
      while (Date.now() < startAt) {}
      try { new DataDirLock(${JSON.stringify(dir)}); process.stdout.write('took\\n'); }
      catch { process.stdout.write('refused\\n'); }
      await told.next();`;
    /** The pids of the servers that took the directory, and the pid its lock names once all have tried. */
    const race = async (dir: string) => {
      const servers = Array.from({ length: 8 }, () => {
        const child = spawn(process.execPath, ['--input-type=module', '-e', script(dir)], { cwd: REPO_ROOT, stdio: ['pipe', 'pipe', 'inherit'] });
        stops.push(() => child.kill('SIGKILL'));
        const closed = new Promise((resolve) => child.once('close', resolve));
        const says = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
        return { child, closed, next: async () => (await says.next()).value as string | undefined };
      });
      expect(await Promise.all(servers.map((s) => s.next()))).toEqual(servers.map(() => 'ready'));
      // All try at the same moment, once every process has started (each hears of it within a few milliseconds).
      const startAt = Date.now() + 50;
      for (const s of servers) s.child.stdin.write(`${startAt}\n`);
      const outcomes = await Promise.all(servers.map((s) => s.next()));
      const holder = (JSON.parse(readFileSync(join(dir, 'parley.lock'), 'utf8')) as { pid: number }).pid;
      for (const s of servers) s.child.stdin.end();
      await Promise.all(servers.map((s) => s.closed));
      return { took: servers.filter((_, i) => outcomes[i] === 'took').map((s) => s.child.pid), holder };
    };
    const leftBy = {
      nobody: () => {},
      'a dead process': async (dir: string) => {
        const gone = await liveProcess();
        holdAs(dir, gone.pid);
        await gone.stop();
      },
      'a host silent for a minute': (dir: string) => lastRefreshedMinuteAgo(holdAs(dir, 1, 'another-host')),
      'a process that died writing it, a minute ago': (dir: string) => {
        writeFileSync(join(dir, 'parley.lock'), '{"pid": 12');
        lastRefreshedMinuteAgo(join(dir, 'parley.lock'));
      },
    };
    for (let round = 0; round < 3; round++) {
      for (const [by, leave] of Object.entries(leftBy)) {
        const dir = dataDir();
        await leave(dir);
        const { took, holder } = await race(dir);
        expect({ by, took }).toEqual({ by, took: [holder] });
        // Takeover claims go with the takeover.
        expect(readdirSync(dir)).toEqual(['parley.lock']);
      }
    }
  }, 60_000);

  it('leaves a lock another process took over after this one judged it stale, though a third then finds the path empty', async () => {
    const dir = dataDir();
    const path = join(dir, 'parley.lock');
    const fs = await vi.importActual<typeof import('node:fs')>('node:fs');
    const dead = await liveProcess();
    holdAs(dir, dead.pid);
    await dead.stop();
    const [a, c] = [await liveProcess(), await liveProcess()];
    const lockOf = (pid: number) => JSON.stringify({ pid, host: hostname(), token: `token of ${pid}` });
    let judged = false;
    interleave.after = (op, at) => {
      // Just after this process read the dead one's lock, A takes the directory over, as a whole.
      if (op === 'read' && at === path && !judged) {
        judged = true;
        fs.rmSync(path);
        fs.writeFileSync(path, lockOf(a.pid));
      }
      // And C, starting meanwhile, creates its lock as soon as it finds the path empty.
      if (!fs.existsSync(path)) fs.writeFileSync(path, lockOf(c.pid));
    };
    expect(() => new DataDirLock(dir)).toThrow(`in use by process ${a.pid} on ${hostname()}`);
    expect(judged).toBe(true);
    expect(readFileSync(path, 'utf8')).toBe(lockOf(a.pid));
    expect(readdirSync(dir)).toEqual(['parley.lock']);
  });

  it('refuses while another live process is taking over a stale lock, naming it; passes over a claim left by one that died', async () => {
    const dir = dataDir();
    const dead = await liveProcess();
    const path = holdAs(dir, dead.pid);
    await dead.stop();
    const taker = await liveProcess();
    writeFileSync(claimOn(path, 0), JSON.stringify({ pid: dead.pid, host: hostname(), token: 'a dead taker' }));
    writeFileSync(claimOn(path, 1), JSON.stringify({ pid: taker.pid, host: hostname(), token: 'a live taker' }));
    expect(() => new DataDirLock(dir)).toThrow(`in use by process ${taker.pid} on ${hostname()}`);
    expect(readdirSync(dir).sort()).toEqual(['parley.lock', basename(claimOn(path, 0)), basename(claimOn(path, 1))]);
    await taker.stop();
    const lock = new DataDirLock(dir);
    expect(JSON.parse(readFileSync(path, 'utf8'))).toMatchObject({ pid: process.pid });
    // The dead takers' claims on the lock that is gone are cleared away.
    expect(readdirSync(dir)).toEqual(['parley.lock']);
    lock.release();
  });

  it('refuses a lock from another host while it is refreshed, and takes it over once it is not', () => {
    const dir = dataDir();
    const path = holdAs(dir, 1, 'another-host');
    expect(() => new DataDirLock(dir)).toThrow('on another-host');
    lastRefreshedMinuteAgo(path);
    new DataDirLock(dir).release();
  });

  it('leaves alone, on release, a lock that is no longer its own', () => {
    const dir = dataDir();
    const lock = new DataDirLock(dir);
    const path = holdAs(dir, 1, 'another-host');
    lock.release();
    expect(existsSync(path)).toBe(true);
  });

  // A tmpfs of its own to fill (needs root; skipped otherwise).
  describe('on a full disk', () => {
    const disk = mountSmallDisk('1m');
    afterAll(() => disk?.unmount());
    /** Fills the disk to its last byte. */
    const fill = () => fillDisk(disk!.dir, [64 * 1024, 1024, 1]);
    afterEach(() => {
      if (disk) for (const f of readdirSync(disk.dir)) rmSync(join(disk.dir, f), { recursive: true, force: true });
    });

    it.skipIf(disk === null)('says so, leaving a stale lock as it was and no draft of its own behind', async () => {
      const dir = mkdtempSync(join(disk!.dir, 'data-'));
      const dead = await liveProcess();
      const path = holdAs(dir, dead.pid);
      await dead.stop();
      fill();
      const stale = readFileSync(path, 'utf8');
      expect(() => new DataDirLock(dir)).toThrow(DataDirFullError);
      expect(readdirSync(dir)).toEqual(['parley.lock']);
      expect(readFileSync(path, 'utf8')).toBe(stale);
    });

    it.skipIf(disk === null)('leaves a stale lock as it was when the store is opened on a disk with room for a lock but not to start', async () => {
      const dir = mkdtempSync(join(disk!.dir, 'data-'));
      const dead = await liveProcess();
      const path = holdAs(dir, dead.pid);
      await dead.stop();
      fill();
      // Room for a lock, not for what the store needs to start on.
      rmSync(join(disk!.dir, 'ballast-65536-0'));
      const stale = readFileSync(path, 'utf8');
      expect(() => new EmbeddedDatabase(dir)).toThrow(DataDirFullError);
      expect(readdirSync(dir)).toEqual(['parley.lock']);
      expect(readFileSync(path, 'utf8')).toBe(stale);
    });

    it.skipIf(disk === null)('still refuses a lock a live process holds as in use, not as a full disk', async () => {
      const dir = mkdtempSync(join(disk!.dir, 'data-'));
      const other = await liveProcess();
      holdAs(dir, other.pid);
      fill();
      expect(() => new DataDirLock(dir)).toThrow(`in use by process ${other.pid} on ${hostname()}`);
      expect(readdirSync(dir)).toEqual(['parley.lock']);
    });
  });
});
