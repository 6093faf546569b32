import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { offerIdOf, type FileOffer } from '#libs/protocol';
import type { ParleyClient } from './parley-client.js';
import { placeFile, uploadFile } from './file-transfer.js';

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

describe('uploadFile', () => {
  it('resumes an upload cut short on a server from before offers kept their request id, found by its id, and offers nothing new', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'parley-upload-'));
    dirs.push(dir);
    const path = join(dir, 'big.bin');
    const data = Buffer.alloc(4 * 8, 'x');
    writeFileSync(path, data);
    const sha256 = createHash('sha256').update(data).digest('hex');
    const key = createHash('sha256')
      .update(JSON.stringify([{ to: 'bob' }, 'big.bin', sha256]))
      .digest('hex')
      .slice(0, 40);
    // What a CLI of then left, its second offer of the file: half uploaded, no `request` listed.
    const earlier = {
      ...{ id: offerIdOf('ann', `file-${key}-2`), from: 'ann', name: 'big.bin', size: data.length, type: 'application/octet-stream', sha256 },
      ...{ chunkSize: 8, chunks: 4, uploaded: 2, createdAt: 1, expiresAt: 2, recipients: { bob: 'pending' } },
    } as FileOffer;
    // And its first, left unsettled too (listed first: the list is oldest first). The newest is taken up, as for offers
    // that list their request id.
    const first = { ...earlier, id: offerIdOf('ann', `file-${key}`), uploaded: 1 };
    const asked: { op: string; id?: string; index?: unknown }[] = [];
    const client = {
      user: 'ann',
      request: (op: string, fields: Record<string, unknown> = {}, id?: string) => {
        asked.push({ op, id, index: fields.index });
        if (op === 'file.list') return Promise.resolve({ offers: [first, earlier] });
        if (op === 'file.offer') {
          // The server finds an offer by the id it makes of the request id: only the one that made it names it.
          const known = id === `file-${key}-2`;
          return Promise.resolve({ offer: known ? earlier : { ...earlier, id: offerIdOf('ann', id!), uploaded: 0, request: id }, window: 4 });
        }
        return Promise.resolve({ uploaded: (fields.index as number) + 1 });
      },
    } as unknown as ParleyClient;
    const sent = await uploadFile(client, { to: 'bob' }, path, () => undefined);
    expect(sent.id).toBe(earlier.id);
    expect(asked.filter((a) => a.op === 'file.offer').map((a) => a.id)).toEqual([`file-${key}-2`]);
    expect(asked.filter((a) => a.op === 'file.chunk').map((a) => a.index)).toEqual([2, 3]);
  });
});
