import { mkdirSync, readdirSync, statfsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { EmbeddedDatabase } from '#libs/storage';
import { mountSmallDisk } from '../../../../test/support/small-disk.js';
import { tempDatabases } from '../../../../test/support/temp-databases.js';
import { EmbeddedFileBlobStore } from './embedded-file-blob.store.js';

const freshDatabase = tempDatabases('parley-blobs-unit-');

describe('EmbeddedFileBlobStore', () => {
  it('stores a chunk whole or not at all, and a write that fails leaves no temp file behind', async () => {
    const db = freshDatabase();
    const blobs = new EmbeddedFileBlobStore(db);
    await blobs.put('fOffer1', 0, Buffer.from('first'));
    expect(await blobs.get('fOffer1', 0)).toEqual(Buffer.from('first'));
    // Chunk 1's place is taken by a directory that is not empty: the rename onto it fails, as a failing disk would.
    const dir = join(db.dataDir, 'files', 'fOffer1');
    mkdirSync(join(dir, '1'));
    writeFileSync(join(dir, '1', 'in-the-way'), 'x');
    await expect(blobs.put('fOffer1', 1, Buffer.from('second'))).rejects.toThrow();
    await expect(blobs.put('fOffer1', 1, Buffer.from('second'))).rejects.toThrow();
    expect(readdirSync(dir).sort()).toEqual(['0', '1']);
  });
});

describe('EmbeddedFileBlobStore on a disk near the store’s floor of free space', () => {
  const disk = mountSmallDisk('3m');
  afterAll(() => disk?.unmount());

  it.skipIf(disk === null)('refuses a chunk that would take the disk under the floor, as a full disk would, and stores one that fits', async () => {
    const db = new EmbeddedDatabase(join(disk!.dir, 'data'), { minFreeBytes: 1024 * 1024 });
    try {
      const blobs = new EmbeddedFileBlobStore(db);
      await blobs.put('fNear', 0, Buffer.alloc(512 * 1024, 1));
      // What is left above the floor is less than this chunk: refused, nothing written.
      const free = statfsSync(disk!.dir).bavail * statfsSync(disk!.dir).bsize;
      await expect(blobs.put('fNear', 1, Buffer.alloc(free - 1024 * 1024 + 4096, 2))).rejects.toMatchObject({ code: 'ENOSPC' });
      expect(await blobs.get('fNear', 1)).toBeNull();
      expect(readdirSync(join(db.dataDir, 'files', 'fNear'))).toEqual(['0']);
    } finally {
      await db.close();
    }
  });
});
