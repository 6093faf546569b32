import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { DeviceLock } from './process-lock.js';
import { UsageError } from './settings.js';

describe('DeviceLock', () => {
  const before = process.env.TMPDIR;
  afterEach(() => {
    if (before === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = before;
  });

  it('takes and gives back a device in the temporary directory', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'parley-lock-'));
    try {
      process.env.TMPDIR = dir;
      const lock = await DeviceLock.take('ann', 'laptop');
      await expect(DeviceLock.take('ann', 'laptop')).rejects.toThrow(/device laptop is in use/);
      // Another user's device of that name, or another device of this user, is another lock.
      await (await DeviceLock.take('bob', 'laptop')).release();
      await (await DeviceLock.take('ann', 'phone')).release();
      await lock.release();
      await (await DeviceLock.take('ann', 'laptop')).release();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('says what to do when the temporary directory cannot hold its lock, instead of a raw ENOENT on a draft file', async () => {
    const dir = join(tmpdir(), `parley-lock-gone-${process.pid}`);
    process.env.TMPDIR = dir;
    const failed = await DeviceLock.take('ann', 'laptop').catch((e: unknown) => e);
    expect(failed).toBeInstanceOf(UsageError);
    expect((failed as Error).message).toMatch(
      new RegExp(`^--device keeps a lock file in the temporary directory ${dir}, which failed \\(ENOENT: .*\\); set TMPDIR to a directory of your own$`),
    );
  });
});
