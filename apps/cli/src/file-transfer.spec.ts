import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { FileOffer } from '#libs/protocol';
import { placeFile } from './file-transfer.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

const offer = { id: 'fAAAAAAAAAAAAAAAAAAAAAA', from: 'ann', name: 'notes.txt' } as FileOffer;

/** A link() as a file system without hard links answers it (FAT says EPERM). */
const noHardLinks = () => Promise.reject(Object.assign(new Error('operation not permitted'), { code: 'EPERM' }));

describe('placeFile', () => {
  it('copies the file, under a name of its own, where the file system has no hard links; nothing is overwritten', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'parley-place-'));
    dirs.push(dir);
    const kept = join(dir, `.${offer.id}.parley-received`);
    // Larger than the copy's buffer, so it takes more than one read.
    const content = Buffer.alloc(3 * (1 << 20) + 5, 'x');
    content.write('the start', 0);
    writeFileSync(kept, content, { mode: 0o640 });
    writeFileSync(join(dir, 'notes.txt'), 'someone else’s');
    const handle = await open(kept, 'r+');
    try {
      const saved = await placeFile(handle, kept, dir, offer, noHardLinks);
      expect(saved).toBe(join(dir, 'notes (1).txt'));
      expect(readFileSync(saved).equals(content)).toBe(true);
      expect(statSync(saved).mode & 0o777).toBe(0o640);
    } finally {
      await handle.close();
    }
    expect(readFileSync(join(dir, 'notes.txt'), 'utf8')).toBe('someone else’s');
    expect(readdirSync(dir).sort()).toEqual(['notes (1).txt', 'notes.txt']);
  });

  it('says the file is kept when link() fails for another reason', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'parley-place-'));
    dirs.push(dir);
    const kept = join(dir, `.${offer.id}.parley-received`);
    writeFileSync(kept, 'hi');
    const handle = await open(kept, 'r+');
    try {
      const denied = () => Promise.reject(Object.assign(new Error('permission denied'), { code: 'EACCES' }));
      await expect(placeFile(handle, kept, dir, offer, denied)).rejects.toMatchObject({ code: 'not_saved' });
    } finally {
      await handle.close();
    }
    expect(readdirSync(dir)).toEqual([`.${offer.id}.parley-received`]);
  });
});
