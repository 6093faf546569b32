import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { existsSync, mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { DataDirLock } from './data-dir-lock.js';

const REPO_ROOT = fileURLToPath(new URL('../../..', import.meta.url));
const dirs: string[] = [];
const stops: (() => void)[] = [];
afterEach(() => {
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

  it('lets exactly one of several servers starting at once take a directory, free or left by a dead one', async () => {
    // Separate processes (as built by `npm run build`), each holding on to what it took while the others try.
    const script = (dir: string, startAt: number) => `
      import { DataDirLock } from './dist/libs/storage/src/data-dir-lock.js';
      // Asleep until just before the moment, then spinning only the last few milliseconds (not hogging the CPU).
      await new Promise((r) => setTimeout(r, Math.max(0, ${startAt} - Date.now() - 5)));
      while (Date.now() < ${startAt}) {}
      try { new DataDirLock(${JSON.stringify(dir)}); process.stdout.write('took'); setTimeout(() => {}, 600); }
      catch { process.stdout.write('refused'); }`;
    const race = async (dir: string) => {
      // All try at the same moment, once every process has started.
      const startAt = Date.now() + 800;
      const outcomes = await Promise.all(
        Array.from({ length: 5 }, () => {
          const child = spawn(process.execPath, ['--input-type=module', '-e', script(dir, startAt)], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
          stops.push(() => child.kill('SIGKILL'));
          let out = '';
          child.stdout.on('data', (d: Buffer) => (out += d.toString()));
          return new Promise<string>((resolve) => child.once('close', () => resolve(out)));
        }),
      );
      return outcomes.filter((o) => o === 'took').length;
    };
    for (let round = 0; round < 3; round++) {
      expect(await race(dataDir())).toBe(1);
      const left = dataDir();
      const gone = await liveProcess();
      holdAs(left, gone.pid);
      await gone.stop();
      expect(await race(left)).toBe(1);
    }
  }, 60_000);

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
});
