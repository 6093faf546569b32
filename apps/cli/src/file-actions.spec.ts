import { createHash, randomUUID } from 'node:crypto';
import { chmodSync, chownSync, linkSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { EmbeddedFileBlobStore, EmbeddedFileOfferStore, FileOfferService } from '#libs/file-offer';
import { DomainError, formatBytes, MAX_FILE_NAME_BYTES, type FileOffer } from '#libs/protocol';
import { EmbeddedDatabase } from '#libs/storage';
import { lockPathOf } from './process-lock.js';
import { acceptFile, offeredRecord, offeredText, offerFile } from './file-actions.js';
import { keptPathOf, partPathOf } from './file-transfer.js';
import { Printer } from './output.js';
import { RequestError, type ParleyClient } from './parley-client.js';

// Saving fails (as on a full or failing disk) while `failLinks` is set.
const fsControl = vi.hoisted(() => ({ failLinks: false }));
vi.mock('node:fs/promises', async (importOriginal) => {
  const fs = await importOriginal<typeof import('node:fs/promises')>();
  const link: typeof fs.link = (from, to) =>
    fsControl.failLinks && String(to).includes('.parley-') === false
      ? Promise.reject(Object.assign(new Error(`EIO: i/o error, link '${String(from)}' -> '${String(to)}'`), { code: 'EIO' }))
      : fs.link(from, to);
  return { ...fs, link, default: { ...fs, link } };
});

const CHUNK = 8;
const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  fsControl.failLinks = false;
  for (const c of cleanups.splice(0).reverse()) await c();
});

const temp = (prefix: string) => {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
};
const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');
const quiet = new Printer(
  false,
  () => undefined,
  () => undefined,
);
const noBar = { stream: { isTTY: false, write: () => true } };

type Hook = (op: string, fields: Record<string, unknown>) => Promise<void> | void;

/**
 * The file-offer service in process (LMDB in a temp dir) behind clients that answer as the server's would: results,
 * or RequestError with the service's code and message, in the order asked. `before` runs before a request reaches the service, `after`
 * once it has been carried out (it may throw, as when the answer is lost), `refused` when the service refused it.
 */
function server() {
  const db = new EmbeddedDatabase(temp('parley-cli-files-db-'));
  cleanups.push(() => db.close());
  const service = new FileOfferService(
    new EmbeddedFileOfferStore(db),
    new EmbeddedFileBlobStore(db),
    { exists: () => Promise.resolve(true) },
    { maxFileBytes: 1 << 20, maxPendingOffers: 1000, quotaBytes: 1 << 30, ttlMs: 60_000, chunkBytes: CHUNK, window: 4 },
  );
  const hooks: { before?: Hook; after?: Hook; refused?: Hook } = {};
  const requests: { user: string; op: string; id: string }[] = [];
  let queue: Promise<unknown> = Promise.resolve();
  const client = (user: string) =>
    ({
      user,
      async request(op: string, fields: Record<string, unknown> = {}, id: string = randomUUID()) {
        requests.push({ user, op, id });
        await hooks.before?.(op, fields);
        let result: unknown;
        // One at a time, in the order asked, as the server takes a connection's requests.
        const done = queue.then(() => call(user, op, fields, id));
        queue = done.catch(() => undefined);
        try {
          result = await done;
        } catch (e) {
          await hooks.refused?.(op, fields);
          if (e instanceof DomainError) throw new RequestError(e.code, e.message);
          throw e;
        }
        await hooks.after?.(op, fields);
        return result;
      },
    }) as unknown as ParleyClient;
  const call = async (user: string, op: string, f: Record<string, unknown>, id: string): Promise<unknown> => {
    const offer = f.offer as string;
    switch (op) {
      case 'file.offer':
        return (
          await service.offer(
            user,
            id,
            { to: f.to as string },
            { name: f.name as string, size: f.size as number, type: f.type as string, sha256: f.sha256 as string },
          )
        ).result;
      case 'file.chunk':
        return (await service.putChunk(user, offer, f.index as number, f.data as string)).result;
      case 'file.accept':
        return (await service.accept(user, offer)).result;
      case 'file.decline':
        return (await service.decline(user, offer)).result;
      case 'file.fetch':
        return service.fetch(user, offer, f.index as number);
      case 'file.received':
        return (await service.confirm(user, offer)).result;
      case 'file.cancel':
        return (await service.cancel(user, offer)).result;
      case 'file.list':
        return { offers: await service.list(user) };
      default:
        throw new Error(`unexpected request ${op}`);
    }
  };
  /** Offers `data` as `name` from ann to bob and uploads it (over raw requests, as another client would). */
  const offered = async (name: string, data: Buffer): Promise<FileOffer> => {
    const { offer } = (await service.offer('ann', randomUUID(), { to: 'bob' }, { name, size: data.length, sha256: sha256(data) })).result;
    for (let i = 0; i < offer.chunks; i++) await service.putChunk('ann', offer.id, i, data.subarray(i * CHUNK, (i + 1) * CHUNK).toString('base64'));
    return offer;
  };
  return { service, client, hooks, requests, offered };
}

/** A hook that fails the upload of chunk `index` once, as a dropped connection would. */
function dropOnceAtChunk(index: number): Hook {
  let cut = false;
  return (op, fields) => {
    if (op === 'file.chunk' && fields.index === index && !cut) {
      cut = true;
      throw new Error('the connection dropped');
    }
  };
}

const failureOf = (p: Promise<unknown>) =>
  p.then(
    () => null,
    (e: unknown) => e as Error & { code?: string },
  );

describe('acceptFile', () => {
  it('saves a file whose name is at the 255-byte limit again and again in one folder, shortening the numbered names', async () => {
    const { client, offered } = server();
    const into = temp('parley-cli-files-');
    const name = `${'L'.repeat(MAX_FILE_NAME_BYTES - 4)}.txt`;
    const saved: string[] = [];
    for (let i = 0; i < 3; i++) {
      const offer = await offered(name, Buffer.from(`long ${i}\n`));
      saved.push((await acceptFile(client('bob'), quiet, offer.id, into, noBar)).path);
    }
    expect(saved).toEqual([name, `${'L'.repeat(247)} (1).txt`, `${'L'.repeat(247)} (2).txt`].map((n) => join(into, n)));
    expect(saved.map((p) => readFileSync(p, 'utf8'))).toEqual(['long 0\n', 'long 1\n', 'long 2\n']);
    // Nothing hidden is left behind.
    expect(readdirSync(into).sort()).toEqual(saved.map((p) => p.slice(into.length + 1)).sort());
  });

  it('names its hidden files within any file system\u2019s limit, and never after something that is not an offer id', () => {
    // The longest offer id there can be.
    const longest = `f${'x'.repeat(63)}`;
    const names = [partPathOf('/d', longest), keptPathOf('/d', longest), lockPathOf('/d', longest)].map((p) => p.slice('/d/'.length));
    expect(names.map((n) => Buffer.byteLength(n))).toEqual([77, 81, 77]);
    expect(() => partPathOf('/d', '../../etc/passwd')).toThrow(/not a file offer id/);
  });

  it('does not save a file withdrawn as its download ends: the part file goes, and the error says who withdrew it', async () => {
    const { service, client, hooks, offered } = server();
    const into = temp('parley-cli-files-');
    const offer = await offered('late.txt', Buffer.from('withdrawn at the last moment'));
    // The sender withdraws it after the last chunk came and before the receiver says it has it.
    hooks.before = async (op) => {
      if (op === 'file.received') await service.cancel('ann', offer.id);
    };
    const failed = await failureOf(acceptFile(client('bob'), quiet, offer.id, into, noBar));
    expect(failed).toBeInstanceOf(RequestError);
    expect(failed).toMatchObject({ code: 'unknown_file', message: `ann withdrew file offer ${offer.id} (late.txt)` });
    expect(readdirSync(into)).toEqual([]);
    // The sender and the server agree: withdrawn.
    expect((await service.list('ann'))[0]?.recipients).toEqual({ bob: 'withdrawn' });
  });

  it('keeps a received file it could not save, says where, and saves it when accepted again', async () => {
    const { service, client, offered } = server();
    const into = temp('parley-cli-files-');
    const data = Buffer.from('a file the disk would not take');
    const offer = await offered('report.pdf', data);
    fsControl.failLinks = true;
    const failed = await failureOf(acceptFile(client('bob'), quiet, offer.id, into, noBar));
    expect(failed).toMatchObject({ name: 'TransferError', code: 'not_saved' });
    const kept = keptPathOf(into, offer.id);
    expect(failed?.message).toContain('report.pdf from ann is received and verified, but could not be saved');
    expect(failed?.message).toContain(`EIO: i/o error`);
    expect(failed?.message).toContain(`it is kept as ${kept}: accept it again to save it, or move that file yourself`);
    expect(readFileSync(kept)).toEqual(data);
    // The server was told first: the sender sees it received.
    expect((await service.list('ann'))[0]?.recipients).toEqual({ bob: 'received' });

    fsControl.failLinks = false;
    const again = await acceptFile(client('bob'), quiet, offer.id, into, noBar);
    expect(again.path).toBe(join(into, 'report.pdf'));
    expect(again.offer.recipients).toEqual({ bob: 'received' });
    expect(readFileSync(again.path)).toEqual(data);
    expect(readdirSync(into)).toEqual(['report.pdf']);
  });

  it('saves a file whose receipt the server recorded but whose answer was lost, when accepted again', async () => {
    const { client, hooks, offered } = server();
    const into = temp('parley-cli-files-');
    const offer = await offered('notes.txt', Buffer.from('the answer never came'));
    hooks.after = (op) => {
      if (op === 'file.received') throw new Error('no answer from the server within 10 s');
    };
    expect((await failureOf(acceptFile(client('bob'), quiet, offer.id, into, noBar)))?.message).toMatch(/no answer/);
    expect(readdirSync(into)).toEqual([`.${offer.id}.parley-part`]);
    hooks.after = undefined;
    expect((await acceptFile(client('bob'), quiet, offer.id, into, noBar)).path).toBe(join(into, 'notes.txt'));
    expect(readdirSync(into)).toEqual(['notes.txt']);
    // What was declined stays declined, part file or not: the refusal stands.
    const declined = await offered('no.txt', Buffer.from('declined'));
    await client('bob').request('file.decline', { offer: declined.id });
    writeFileSync(partPathOf(into, declined.id), 'decl');
    expect(await failureOf(acceptFile(client('bob'), quiet, declined.id, into, noBar))).toMatchObject({
      code: 'not_allowed',
      message: 'you declined this file',
    });
  });

  it('never writes a download through a symbolic link planted under its part file name: nothing outside the folder changes', async () => {
    const { client, offered } = server();
    const [shared, outside] = [temp('parley-cli-files-'), temp('parley-cli-files-')];
    const victim = join(outside, 'precious.txt');
    writeFileSync(victim, 'precious');
    const offer = await offered('notes.txt', Buffer.from('what the sender sent'));
    // Whoever knows the offer's id (its sender, another member of its group) and may write into the folder.
    symlinkSync(victim, partPathOf(shared, offer.id));
    const planted = await failureOf(acceptFile(client('bob'), quiet, offer.id, shared, noBar));
    expect(planted).toMatchObject({ name: 'TransferError', code: 'failed' });
    expect(planted?.message).toContain(`${partPathOf(shared, offer.id)} is not a file parley made; remove it`);
    expect(readFileSync(victim, 'utf8')).toBe('precious');
    // A link to a file not there yet does not make it either.
    rmSync(partPathOf(shared, offer.id));
    symlinkSync(join(outside, 'new.txt'), partPathOf(shared, offer.id));
    expect(await failureOf(acceptFile(client('bob'), quiet, offer.id, shared, noBar))).toMatchObject({ code: 'failed' });
    expect(readdirSync(outside)).toEqual(['precious.txt']);
    // Once it is gone, the download runs.
    rmSync(partPathOf(shared, offer.id));
    const saved = await acceptFile(client('bob'), quiet, offer.id, shared, noBar);
    expect(readFileSync(saved.path, 'utf8')).toBe('what the sender sent');
    // Nor is a link planted under the name of a received file kept unsaved saved as that file (a link to a file its
    // planter may change once it was checked).
    const twin = join(outside, 'twin.txt');
    writeFileSync(twin, 'what the sender sent');
    symlinkSync(twin, keptPathOf(shared, offer.id));
    expect(await failureOf(acceptFile(client('bob'), quiet, offer.id, shared, noBar))).toMatchObject({ code: 'not_allowed' });
    expect(readdirSync(shared).sort()).toEqual([`.${offer.id}.parley-received`, 'notes.txt']);
  });

  it('never writes a download into a second name of another file planted under its part file name', async () => {
    const { client, offered } = server();
    const into = temp('parley-cli-files-');
    const data = Buffer.from('what the sender sent, in chunks');
    const offer = await offered('notes.txt', data);
    // A file of the user's, given the part file's name as well (a hard link, as anyone may make where links to others'
    // files are allowed): resuming into it would overwrite the file.
    const mine = join(into, 'mine.txt');
    writeFileSync(mine, data.subarray(0, CHUNK));
    linkSync(mine, partPathOf(into, offer.id));
    const again = `parley file accept ${offer.id} --to ${into}`;
    const refused = await failureOf(acceptFile(client('bob'), quiet, offer.id, into, noBar));
    expect(refused).toMatchObject({ name: 'TransferError', code: 'failed' });
    expect(refused?.message).toBe(`${partPathOf(into, offer.id)} is not a file parley made; remove it, then ${again}`);
    expect(readFileSync(mine)).toEqual(data.subarray(0, CHUNK));
    expect(readdirSync(into).sort()).toEqual([`.${offer.id}.parley-part`, 'mine.txt']);
  });

  it.skipIf(process.getuid?.() !== 0)('never writes a download into, nor saves, a file of someone else\u2019s planted under its names', async () => {
    const { client, hooks, offered } = server();
    const into = temp('parley-cli-files-');
    const data = Buffer.from('private content, in chunks of eight');
    const offer = await offered('secret.txt', data);
    // Someone else who knows the offer's id (its sender, say) makes the part file, theirs and writable by all.
    const part = partPathOf(into, offer.id);
    writeFileSync(part, data.subarray(0, CHUNK));
    chmodSync(part, 0o666);
    chownSync(part, 65534, 65534);
    const refused = await failureOf(acceptFile(client('bob'), quiet, offer.id, into, noBar));
    expect(refused?.message).toBe(`${part} is not a file parley made; remove it, then parley file accept ${offer.id} --to ${into}`);
    // Nothing of what came was written into it.
    expect(readFileSync(part)).toEqual(data.subarray(0, CHUNK));

    // Nor is a whole copy of theirs saved as the received file, under the name of a kept one, when the receipt's answer
    // was lost.
    rmSync(part);
    hooks.after = (op) => {
      if (op === 'file.received') throw new Error('no answer from the server within 10 s');
    };
    await failureOf(acceptFile(client('bob'), quiet, offer.id, into, noBar));
    hooks.after = undefined;
    rmSync(part);
    const kept = keptPathOf(into, offer.id);
    writeFileSync(kept, data);
    chownSync(kept, 65534, 65534);
    expect(await failureOf(acceptFile(client('bob'), quiet, offer.id, into, noBar))).toMatchObject({ code: 'not_allowed' });
    expect(readdirSync(into)).toEqual([`.${offer.id}.parley-received`]);
  });

  it('keeps a download private while it is written, resumes the user\u2019s own part file, and saves the file as the user makes files', async () => {
    const { client, hooks, requests, offered } = server();
    const into = temp('parley-cli-files-');
    const data = Buffer.alloc(6 * CHUNK + 3, 5);
    const offer = await offered('photo.png', data);
    // A download cut short after two chunks.
    writeFileSync(partPathOf(into, offer.id), data.subarray(0, 2 * CHUNK));
    const before = requests.length;
    const resumed = await acceptFile(client('bob'), quiet, offer.id, into, noBar);
    expect(readFileSync(resumed.path)).toEqual(data);
    expect(requests.slice(before).filter((r) => r.op === 'file.fetch')).toHaveLength(7 - 2);

    const fresh = await offered('photo.png', data);
    const modes: number[] = [];
    hooks.before = (op) => {
      if (op === 'file.fetch' || op === 'file.received') modes.push(statSync(partPathOf(into, fresh.id)).mode & 0o777);
    };
    const saved = await acceptFile(client('bob'), quiet, fresh.id, into, noBar);
    expect(new Set(modes)).toEqual(new Set([0o600]));
    expect(saved.path).toBe(join(into, 'photo (1).png'));
    expect(statSync(saved.path).mode & 0o777).toBe(0o666 & ~process.umask());
  });

  it('deletes a download cut short once the file is declined or received on another device: it can never be finished', async () => {
    const { client, offered } = server();
    const [here, elsewhere] = [temp('parley-cli-files-'), temp('parley-cli-files-')];
    const data = Buffer.from('sixteen bytes, then some more');
    // A download here stopped after its first chunk; then the same user took the file on another device.
    const received = await offered('taken.txt', data);
    writeFileSync(partPathOf(here, received.id), data.subarray(0, CHUNK));
    expect((await acceptFile(client('bob'), quiet, received.id, elsewhere, noBar)).path).toBe(join(elsewhere, 'taken.txt'));
    expect(await failureOf(acceptFile(client('bob'), quiet, received.id, here, noBar))).toMatchObject({ code: 'not_allowed' });
    expect(readdirSync(here)).toEqual([]);
    // Or declined it there.
    const declined = await offered('refused.txt', data);
    await client('bob').request('file.accept', { offer: declined.id });
    writeFileSync(partPathOf(here, declined.id), data.subarray(0, CHUNK));
    await client('bob').request('file.decline', { offer: declined.id });
    expect(await failureOf(acceptFile(client('bob'), quiet, declined.id, here, noBar))).toMatchObject({
      code: 'not_allowed',
      message: 'you declined this file',
    });
    expect(readdirSync(here)).toEqual([]);
  });

  it('runs one download of an offer into a folder at a time: a second one at once is refused, saying so, and changes nothing', async () => {
    const { client, hooks, offered } = server();
    const into = temp('parley-cli-files-');
    const data = Buffer.alloc(50 * CHUNK, 7);
    const offer = await offered('big.bin', data);
    // The second starts while the first is fetching.
    let second: Promise<unknown> | undefined;
    hooks.before = (op) => {
      if (op === 'file.fetch' && !second) second = failureOf(acceptFile(client('bob'), quiet, offer.id, into, noBar));
    };
    const first = await acceptFile(client('bob'), quiet, offer.id, into, noBar);
    const refused = (await second) as Error & { code?: string };
    expect(refused).toMatchObject({ name: 'TransferError', code: 'download_in_progress' });
    expect(refused.message).toBe(
      `another download of ${offer.id} into ${into} is under way (process ${process.pid}); wait for it to end (it saves the file), or accept it into another directory`,
    );
    expect(readFileSync(first.path)).toEqual(data);
    expect(readdirSync(into)).toEqual(['big.bin']);
  });

  it('takes over the lock of a download whose process is gone', async () => {
    const { client, offered } = server();
    const into = temp('parley-cli-files-');
    const offer = await offered('after-crash.txt', Buffer.from('the first download was killed'));
    // A pid far above any real one (pid_max is at most 2^22).
    writeFileSync(join(into, `.${offer.id}.parley-lock`), JSON.stringify({ pid: 2 ** 30, host: (await import('node:os')).hostname(), token: 'dead' }));
    expect((await acceptFile(client('bob'), quiet, offer.id, into, noBar)).path).toBe(join(into, 'after-crash.txt'));
    expect(readdirSync(into)).toEqual(['after-crash.txt']);
  });
});

describe('offerFile', () => {
  it('makes a new offer for each send of a file whose last offer is settled, with one offer request each, however many came before', async () => {
    const { service, client, requests } = server();
    const path = join(temp('parley-cli-files-'), 'sticker.txt');
    writeFileSync(path, 'sticker\n');
    const into = temp('parley-cli-files-');
    const ids = new Set<string>();
    for (let i = 0; i < 101; i++) {
      const before = requests.length;
      const { offer } = await offerFile(client('ann'), quiet, { to: 'bob' }, path, noBar);
      const made = requests.slice(before).filter((r) => r.op !== 'file.chunk');
      // However many offers of it came before: one offer request, and one look at the list.
      expect(
        made.filter((r) => r.op === 'file.offer'),
        `send ${i + 1}`,
      ).toHaveLength(1);
      expect(made.length).toBeLessThanOrEqual(2);
      expect(ids.has(offer.id), `send ${i + 1} offered ${offer.id} again`).toBe(false);
      ids.add(offer.id);
      expect(offer.recipients).toEqual({ bob: 'pending' });
      // Settled each way there is: declined, received, withdrawn.
      if (i % 3 === 0) await service.decline('bob', offer.id);
      else if (i % 3 === 1) await acceptFile(client('bob'), quiet, offer.id, into, noBar);
      else await service.cancel('ann', offer.id);
    }
  });

  it('resumes an upload cut short from the last acknowledged chunk, and gives an offer not yet decided on rather than another', async () => {
    const { service, client, hooks, requests } = server();
    const data = Buffer.alloc(20 * CHUNK + 3, 1);
    const path = join(temp('parley-cli-files-'), 'big.bin');
    writeFileSync(path, data);
    hooks.before = dropOnceAtChunk(9);
    await expect(offerFile(client('ann'), quiet, { to: 'bob' }, path, noBar)).rejects.toThrow('the connection dropped');
    const [cutShort] = await service.list('ann');
    expect(cutShort?.uploaded).toBe(9);

    // Another device of the same sender goes on from chunk 9.
    const before = requests.length;
    const { offer: resumed, earlier } = await offerFile(client('ann'), quiet, { to: 'bob' }, path, noBar);
    expect(resumed.id).toBe(cutShort!.id);
    expect(earlier).toMatchObject({ id: cutShort!.id, uploaded: 9 });
    expect(offeredText({ offer: resumed, earlier })).toBe(
      `offered big.bin (${formatBytes(data.length)}) to bob: ${resumed.id} (its upload went on from where it stopped)`,
    );
    expect(offeredRecord({ offer: resumed, earlier })).toEqual({ type: 'offered', offer: resumed, again: 'resumed' });
    const chunks = requests.slice(before).filter((r) => r.op === 'file.chunk');
    expect(chunks).toHaveLength(21 - 9);
    expect((await service.list('bob')).map((o) => o.id)).toEqual([resumed.id]);
    // Sent again while bob has not decided: the same offer (its last chunk again, which announces it again should the
    // first announcement not be known to have left), and said so.
    const { offer: again, earlier: taken } = await offerFile(client('ann'), quiet, { to: 'bob' }, path, noBar);
    expect(again.id).toBe(resumed.id);
    expect(offeredText({ offer: again, earlier: taken })).toBe(
      `already offered big.bin (${formatBytes(data.length)}) to bob: ${again.id}, waiting for bob to decide`,
    );
    expect(offeredRecord({ offer: again, earlier: taken })).toEqual({ type: 'offered', offer: again, again: 'already' });
    expect((await service.list('ann')).map((o) => o.id)).toEqual([resumed.id]);
    // To someone else, it is an offer of its own.
    expect((await offerFile(client('ann'), quiet, { to: 'cy' }, path, noBar)).offer.id).not.toBe(resumed.id);
  });

  it('goes on with an upload from where the server stands after a chunk stays unavailable through the client\u2019s retries (a failover)', async () => {
    const { service, client, hooks } = server();
    const data = Buffer.alloc(10 * CHUNK, 7);
    const path = join(temp('parley-cli-files-'), 'failover.bin');
    writeFileSync(path, data);
    let failures = 0;
    hooks.before = (op, fields) => {
      if (op === 'file.chunk' && fields.index === 3 && failures++ === 0)
        throw new RequestError('unavailable', 'the server could not complete this request right now');
    };
    const { offer } = await offerFile(client('ann'), quiet, { to: 'bob' }, path, noBar);
    expect(failures).toBe(2);
    expect((await service.list('ann')).find((o) => o.id === offer.id)?.uploaded).toBe(10);
  });

  it('gives up an upload with the error of the chunk the server could not store, not the refusals of the chunks behind it', async () => {
    const { service, client, hooks } = server();
    const path = join(temp('parley-cli-files-'), 'full.bin');
    writeFileSync(path, Buffer.alloc(10 * CHUNK, 1));
    // Chunk 3 is answered, each time it is sent (after the client's retries), only once the chunk behind it was refused
    // as out of order.
    let refused: () => void = () => undefined;
    hooks.before = async (op, fields) => {
      if (op !== 'file.chunk' || fields.index !== 3) return;
      await new Promise<void>((resolve) => (refused = resolve));
      throw new RequestError('unavailable', 'the server is out of storage space');
    };
    hooks.refused = (op, fields) => {
      if (op === 'file.chunk' && fields.index === 4) refused();
    };
    const failed = offerFile(client('ann'), quiet, { to: 'bob' }, path, noBar);
    await expect(failed).rejects.toMatchObject({ code: 'unavailable', message: 'the server is out of storage space' });
    expect((await service.list('ann'))[0]?.uploaded).toBe(3);
  });

  it('tells of an unfinished upload of another file of the same name to the same receiver, and withdraws nothing', async () => {
    const { service, client, hooks } = server();
    const path = join(temp('parley-cli-files-'), 'notes.bin');
    writeFileSync(path, Buffer.alloc(10 * CHUNK, 1));
    hooks.before = dropOnceAtChunk(3);
    await expect(offerFile(client('ann'), quiet, { to: 'bob' }, path, noBar)).rejects.toThrow('the connection dropped');
    const [earlier] = await service.list('ann');
    expect(earlier?.uploaded).toBe(3);
    // Neither a complete offer of the same name, nor an unfinished one to someone else, is worth a word.
    const other = join(temp('parley-cli-files-'), 'notes.bin');
    writeFileSync(other, Buffer.alloc(CHUNK, 3));
    await offerFile(client('ann'), quiet, { to: 'bob' }, other, noBar);
    await service.offer('ann', 'half-to-cy', { to: 'cy' }, { name: 'notes.bin', size: 2 * CHUNK, sha256: 'ab'.repeat(32) });

    // The file changed since its upload was cut short (or another one shares its name; or it is being sent right now).
    writeFileSync(path, Buffer.alloc(10 * CHUNK, 2));
    const notes: string[] = [];
    const printer = new Printer(
      false,
      () => undefined,
      (line) => notes.push(line),
    );
    const { offer: changed } = await offerFile(client('ann'), printer, { to: 'bob' }, path, noBar);
    expect(changed.id).not.toBe(earlier!.id);
    expect(notes).toEqual([
      `* your upload of another notes.bin to bob is unfinished (${earlier!.id}, 3 of 10 chunks); parley file cancel ${earlier!.id} withdraws it`,
    ]);
    expect((await service.list('ann')).find((o) => o.id === earlier!.id)?.recipients).toEqual({ bob: 'pending' });
  });
});
