import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
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
