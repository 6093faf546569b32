import { mkdtempSync, rmSync, statfsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { fillDisk, mountSmallDisk } from '../../../test/support/small-disk.js';
import { EmbeddedDatabase, StoreFullError } from './embedded-database.js';

describe('EmbeddedDatabase.atTurnEnd', () => {
  const dirs: string[] = [];
  const opened: EmbeddedDatabase[] = [];
  const fresh = (): EmbeddedDatabase => {
    const dir = mkdtempSync(join(tmpdir(), 'parley-edb-'));
    dirs.push(dir);
    const db = new EmbeddedDatabase(dir);
    opened.push(db);
    return db;
  };
  afterEach(async () => {
    for (const db of opened.splice(0)) await db.close().catch(() => undefined);
    for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
  });

  it('commits a turn’s writes together, after the turn, in call order; nothing is readable before', async () => {
    const db = fresh();
    const kv = db.open<number, string>('kv');
    const done = [1, 2, 3].map((n) => db.atTurnEnd(() => kv.putSync('k', n)));
    done.push(db.atTurnEnd(() => kv.putSync('other', 7)));
    // Still this turn: nothing is committed yet.
    expect(kv.get('k')).toBeUndefined();
    await Promise.all(done);
    expect(kv.get('k')).toBe(3); // the last write of the turn wins: they ran in call order
    expect(kv.get('other')).toBe(7);
  });

  it('fails only the write that throws; the rest of its turn is stored', async () => {
    const db = fresh();
    const kv = db.open<string, string>('kv');
    const before = db.atTurnEnd(() => kv.putSync('a', 'stored'));
    const bad = db.atTurnEnd(() => {
      kv.putSync('half', 'never stored');
      throw new Error('this write is refused');
    });
    const after = db.atTurnEnd(() => kv.putSync('b', 'stored too'));
    await expect(bad).rejects.toThrow('this write is refused');
    await Promise.all([before, after]);
    expect(kv.get('a')).toBe('stored');
    expect(kv.get('b')).toBe('stored too');
    expect(kv.get('half')).toBeUndefined(); // the failed write's own transaction was rolled back
  });

  it('tells its observer how long each synced commit took: once per turn, not once per write', async () => {
    const db = fresh();
    const kv = db.open<number, string>('kv');
    const commits: number[] = [];
    db.observeCommits((seconds) => commits.push(seconds));
    await Promise.all([1, 2, 3].map((n) => db.atTurnEnd(() => kv.putSync(`k${n}`, n))));
    expect(commits).toHaveLength(1);
    expect(commits[0]).toBeGreaterThan(0);
    await db.atTurnEnd(() => kv.putSync('k4', 4));
    expect(commits).toHaveLength(2);
    // A turn whose shared transaction fails is committed again write by write: each attempt held the loop, each is told.
    const refused = db.atTurnEnd(() => {
      throw new Error('refused');
    });
    const kept = db.atTurnEnd(() => kv.putSync('k5', 5));
    await expect(refused).rejects.toThrow('refused');
    await kept;
    expect(commits).toHaveLength(5);
    expect(commits.every((s) => Number.isFinite(s) && s >= 0)).toBe(true);
  });

  it('commits writes handed over in the turn the database is closed in', async () => {
    const db = fresh();
    const kv = db.open<string, string>('kv');
    const written = db.atTurnEnd(() => kv.putSync('k', 'kept'));
    await db.close();
    await written;
    const reopened = new EmbeddedDatabase(db.dataDir);
    opened.push(reopened);
    expect(reopened.open<string, string>('kv').get('k')).toBe('kept');
  });
});

describe('EmbeddedDatabase.writable', () => {
  const disk = mountSmallDisk('3m');
  afterAll(() => disk?.unmount());

  it.skipIf(disk === null)('commits a transaction it took above the floor whole, though the disk went under the floor before its callback ran', async () => {
    const db = new EmbeddedDatabase(join(disk!.dir, 'transaction'), { minFreeBytes: 1024 * 1024 });
    try {
      const kv = db.open<string, number>('kv');
      let ran = false;
      // lmdb-js runs a transaction's callback later, when its turn comes: the disk is filled before then.
      const done = kv.transaction(() => {
        ran = true;
        void kv.put(1, 'a');
        void kv.put(2, 'b');
      });
      expect(ran).toBe(false);
      const ballast = fillDisk(disk!.dir, [64 * 1024]);
      await done;
      expect([kv.get(1), kv.get(2)]).toEqual(['a', 'b']);
      for (const path of ballast) rmSync(path);
    } finally {
      await db.close().catch(() => undefined);
    }
  });

  it.skipIf(disk === null)('refuses writes under its floor of free space, before LMDB meets a full disk, and takes them again once there is room', async () => {
    const db = new EmbeddedDatabase(join(disk!.dir, 'data'), { minFreeBytes: 1024 * 1024 });
    try {
      const kv = db.open<string, number>('kv');
      await db.atTurnEnd(() => kv.putSync(0, 'before'));
      expect(db.writable()).toBe(true);
      // The disk fills (files, say): under the floor, with room to spare for LMDB, nothing is handed to it.
      const ballast = fillDisk(disk!.dir, [64 * 1024]);
      expect(statfsSync(disk!.dir).bavail * statfsSync(disk!.dir).bsize).toBeLessThan(1024 * 1024);
      await expect(db.atTurnEnd(() => kv.putSync(1, 'x'))).rejects.toBeInstanceOf(StoreFullError);
      await expect(kv.put(2, 'x')).rejects.toMatchObject({ code: 'ENOSPC' });
      expect(db.writable()).toBe(false);
      expect([kv.get(1), kv.get(2)]).toEqual([undefined, undefined]);
      // A write nobody waits for (`void put`, as lmdb-js's own failed ones) is refused without an unhandled rejection.
      void kv.put(3, 'x');
      await new Promise((resolve) => setImmediate(resolve));
      expect(kv.get(3)).toBeUndefined();
      for (const path of ballast) rmSync(path);
      // Probed again a second later (not at every readiness check).
      expect(db.writable(performance.now() + 1500)).toBe(true);
      await db.atTurnEnd(() => kv.putSync(-1, 'after'));
      await kv.put(-2, 'after');
      expect([kv.get(0), kv.get(-1), kv.get(-2)]).toEqual(['before', 'after', 'after']);
    } finally {
      await db.close().catch(() => undefined);
    }
  });
});
