import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { offerIdOf, type FileOffer } from '#libs/protocol';
import { RequestError, RequestTimeout, type ParleyClient } from './parley-client.js';
import { downloadFile, placeFile, sendChunks, uploadFile } from './file-transfer.js';

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

describe('sendChunks', () => {
  /** Sends a 64-byte file in 8 chunks, `uploaded` of them on the server already, through `client`. */
  async function sendEight(client: ParleyClient, uploaded: number, window: number, progress: (bytes: number) => void, uploadedNow: () => Promise<number>) {
    const dir = mkdtempSync(join(tmpdir(), 'parley-upload-'));
    dirs.push(dir);
    const path = join(dir, 'big.bin');
    writeFileSync(path, Buffer.alloc(8 * 8, 'x'));
    const upload = { id: 'fAAAAAAAAAAAAAAAAAAAAAA', size: 64, chunkSize: 8, chunks: 8, uploaded } as FileOffer;
    const handle = await open(path, 'r');
    try {
      await sendChunks(client, handle, upload, window, progress, uploadedNow);
    } finally {
      await handle.close();
    }
  }

  it('goes on from the last chunk the server acknowledged when it cannot be asked where it stands (a file service down)', async () => {
    const sent: number[] = [];
    const shown: number[] = [];
    // The service goes away after chunk 3, and is back once the client has tried to ask where the upload stands.
    let down = false;
    let asked = 0;
    const client = {
      request: (op: string, fields: Record<string, unknown>) => {
        const index = fields.index as number;
        sent.push(index);
        if (index === 4 && asked === 0) down = true;
        if (down) return Promise.reject(new RequestTimeout(true, 'no answer from the server within 10 s: it may or may not have been done'));
        return Promise.resolve({ uploaded: index + 1 });
      },
    } as unknown as ParleyClient;
    await sendEight(
      client,
      0,
      2,
      (bytes) => shown.push(bytes),
      () => {
        asked++;
        down = false;
        return Promise.reject(new RequestTimeout(true, 'no answer from the server within 10 s: it may or may not have been done'));
      },
    );
    expect(shown).toEqual([...shown].sort((a, b) => a - b));
    expect(shown.at(-1)).toBe(64);
    expect(sent.filter((i) => i < 4)).toEqual([0, 1, 2, 3]);
  });

  it('sends no chunk the server says it holds already', async () => {
    const sent: number[] = [];
    // Chunks up to 5 arrived in a start whose answers were lost: the server answers for what it holds.
    const client = {
      request: (_op: string, fields: Record<string, unknown>) => {
        sent.push(fields.index as number);
        return Promise.resolve({ uploaded: Math.max(6, (fields.index as number) + 1) });
      },
    } as unknown as ParleyClient;
    await sendEight(
      client,
      2,
      1,
      () => undefined,
      () => Promise.resolve(2),
    );
    expect(sent).toEqual([2, 6, 7]);
  });
});

describe('downloadFile', () => {
  const data = Buffer.from('0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ!?');
  const download = {
    ...{ id: 'fBBBBBBBBBBBBBBBBBBBBBB', from: 'ann', name: 'notes.txt', size: data.length, type: 'text/plain' },
    ...{ sha256: createHash('sha256').update(data).digest('hex'), chunkSize: 8, chunks: 8, uploaded: 8, createdAt: 1, expiresAt: 2 },
    recipients: { bob: 'accepted' },
  } as FileOffer;
  const chunk = (index: number) => ({ offer: download.id, index, data: data.subarray(index * 8, index * 8 + 8).toString('base64') });

  it('rides out a file service that does not answer for a while, and goes on from its last whole chunk', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'parley-download-'));
    dirs.push(dir);
    const fetched: number[] = [];
    // The service goes away at chunk 3 and is back for the next start.
    let down = 0;
    const client = {
      request: (op: string, fields: Record<string, unknown> = {}) => {
        if (op === 'file.received') return Promise.resolve({ offer: { ...download, recipients: { bob: 'received' } } });
        const index = fields.index as number;
        fetched.push(index);
        if (index === 3 && down === 0) down = 1;
        if (down === 1) {
          if (index === 7) down = 2;
          return Promise.reject(new RequestTimeout(true, 'no answer from the server within 10 s: it may or may not have been done'));
        }
        return Promise.resolve(chunk(index));
      },
    } as unknown as ParleyClient;
    const { path } = await downloadFile(client, download, dir, 8, () => undefined);
    expect(readFileSync(path)).toEqual(data);
    expect(fetched.filter((i) => i < 3)).toEqual([0, 1, 2]);
  });

  it('gives up after three starts that get no further, saying how much is saved and how to go on', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'parley-download-'));
    dirs.push(dir);
    let starts = 0;
    // The service answers chunks 0 to 2, then never again.
    const client = {
      request: (_op: string, fields: Record<string, unknown> = {}) => {
        const index = fields.index as number;
        if (index === 3) starts++;
        if (index >= 3) return Promise.reject(new RequestTimeout(true, 'no answer from the server within 10 s: it may or may not have been done'));
        return Promise.resolve(chunk(index));
      },
    } as unknown as ParleyClient;
    const failed = await downloadFile(client, download, dir, 1, () => undefined).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(failed).toBeInstanceOf(RequestTimeout);
    expect((failed as Error).message).toMatch(
      new RegExp(
        `^no answer from the server within 10 s: it may or may not have been done; 24 B of .*notes\\.txt.* is saved in ${dir}; run accept it again to go on from there$`,
      ),
    );
    // The first start and three that got no further.
    expect(starts).toBe(4);
    expect(readdirSync(dir).map((f) => statSync(join(dir, f)).size)).toEqual([24]);
  });

  it('writes no chunk that overtook one before it, which then failed: the part file stays a whole prefix', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'parley-download-'));
    dirs.push(dir);
    // Chunk 1's answer comes after the others' (it was retried) and is a refusal; the next start fetches it again.
    let first = true;
    const client = {
      request: (op: string, fields: Record<string, unknown> = {}) => {
        if (op === 'file.received') return Promise.resolve({ offer: { ...download, recipients: { bob: 'received' } } });
        const index = fields.index as number;
        if (index !== 1 || !first) return Promise.resolve(chunk(index));
        first = false;
        return new Promise((_, reject) => setTimeout(() => reject(new RequestError('unavailable', 'the server could not do this right now')), 20));
      },
    } as unknown as ParleyClient;
    const { path } = await downloadFile(client, download, dir, 8, () => undefined);
    expect(readFileSync(path)).toEqual(data);
  });
});
