import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { DomainError, offerIdOf } from '#libs/protocol';
import { tempDatabases } from '../../../test/support/temp-databases.js';
import { EmbeddedFileBlobStore } from './embedded/embedded-file-blob.store.js';
import { EmbeddedFileOfferStore } from './embedded/embedded-file-offer.store.js';
import { FileOfferService } from './file-offer.service.js';
import type { FileOfferStore } from './file-offer.store.js';

const CHUNK = 4;
const freshDatabase = tempDatabases('parley-files-unit-');

function setup(limits: Partial<ConstructorParameters<typeof FileOfferService>[3]> = {}) {
  const db = freshDatabase();
  const clock = { now: 1_000 };
  const users = new Set(['ann', 'bob', 'cy']);
  const blobs = new EmbeddedFileBlobStore(db);
  const store = new EmbeddedFileOfferStore(db);
  // `meanwhile`, once set, runs after the next read of an offer and before that read is answered: what another request
  // does between this one's read and its write.
  const interleave = { meanwhile: null as (() => Promise<unknown>) | null };
  const offers: FileOfferStore = Object.assign(Object.create(store) as FileOfferStore, {
    get: async (id: string) => {
      const read = await store.get(id);
      const meanwhile = interleave.meanwhile;
      interleave.meanwhile = null;
      if (meanwhile) await meanwhile();
      return read;
    },
  });
  const service = new FileOfferService(
    offers,
    blobs,
    { exists: (u) => Promise.resolve(users.has(u)) },
    { maxFileBytes: 100, maxPendingOffers: 2, quotaBytes: 150, ttlMs: 10_000, chunkBytes: CHUNK, window: 8, ...limits },
    () => clock.now,
  );
  return { service, clock, blobs, interleave };
}

const describe_ = (data: Buffer, name = 'a.txt') => ({ name, size: data.length, sha256: createHash('sha256').update(data).digest('hex') });

async function upload(service: FileOfferService, id: string, data: Buffer) {
  const chunks = Math.ceil(data.length / CHUNK);
  for (let i = 0; i < chunks - 1; i++) await service.putChunk('ann', id, i, data.subarray(i * CHUNK, (i + 1) * CHUNK).toString('base64'));
  return service.putChunk('ann', id, chunks - 1, data.subarray((chunks - 1) * CHUNK).toString('base64'));
}

const code = (p: Promise<unknown>) =>
  p.then(
    () => 'ok',
    (e: unknown) => (e instanceof DomainError ? e.code : String(e)),
  );

describe('FileOfferService', () => {
  it('offers to every other member of a group, announces once uploaded, and tells the sender of each decision', async () => {
    const { service } = setup();
    const data = Buffer.from('0123456789');
    const made = await service.offer('ann', 'r1', { group: { id: 'g1', name: 'crew' }, members: ['ann', 'bob', 'cy'] }, describe_(data));
    expect(made.notify).toBeNull();
    const id = made.result.offer.id;
    expect(id).toBe(offerIdOf('ann', 'r1'));
    expect(made.result.offer).toMatchObject({ chunks: 3, uploaded: 0, type: 'application/octet-stream', recipients: { bob: 'pending', cy: 'pending' } });
    expect(await service.list('bob')).toEqual([]);
    const done = await upload(service, id, data);
    expect(done.notify).toMatchObject({ to: ['bob', 'cy'], event: { type: 'file', event: 'offered', offer: { id, uploaded: 3 } } });
    expect((await service.list('bob')).map((o) => o.id)).toEqual([id]);

    const accepted = await service.accept('bob', id);
    expect(accepted.notify).toMatchObject({ to: ['ann', 'bob'], event: { event: 'accepted', user: 'bob' } });
    expect((await service.accept('bob', id)).notify).toBeNull();
    const chunks = await Promise.all([0, 1, 2].map((i) => service.fetch('bob', id, i)));
    expect(Buffer.concat(chunks.map((c) => Buffer.from(c.data, 'base64')))).toEqual(data);
    expect(await code(service.fetch('cy', id, 0))).toBe('file_not_ready');
    expect((await service.confirm('bob', id)).notify).toMatchObject({ event: { event: 'received', user: 'bob' } });
    expect((await service.decline('cy', id)).notify).toMatchObject({ event: { event: 'declined', user: 'cy' } });
    expect(await code(service.decline('bob', id))).toBe('not_allowed');
    // Accepting or fetching again after receiving says so, rather than asking to accept first.
    await expect(service.accept('bob', id)).rejects.toThrow('received this file already');
    await expect(service.fetch('bob', id, 0)).rejects.toThrow('received this file already');
    // Settled: still listed for the sender, but no longer counted against it.
    expect((await service.list('ann'))[0]?.recipients).toEqual({ bob: 'received', cy: 'declined' });
    expect(await service.list('cy')).toEqual([]);
  });

  it('records which decisions the sender has been shown, so the sync stops presenting them as news', async () => {
    const { service } = setup();
    const data = Buffer.from('0123456789');
    const id = (await service.offer('ann', 'r1', { group: { id: 'g1', name: 'crew' }, members: ['ann', 'bob', 'cy'] }, describe_(data))).result.offer.id;
    await upload(service, id, data);
    await service.accept('bob', id);
    await service.decline('cy', id);
    expect((await service.syncEvent('ann'))!.offers[0]!.seen).toBeUndefined();

    // Only the sender may say so, and only of its receivers; a refusal changes nothing.
    expect(await code(service.seen('bob', id, { bob: 'accepted' }))).toBe('not_allowed');
    expect(await code(service.seen('ann', id, { dee: 'accepted' }))).toBe('bad_request');
    expect(await code(service.seen('ann', id, { ['constructor' as string]: 'declined' as const }))).toBe('bad_request');
    expect(await code(service.seen('ann', 'fnope', { bob: 'accepted' }))).toBe('unknown_file');
    expect((await service.syncEvent('ann'))!.offers[0]!.seen).toBeUndefined();

    // A state the receiver has moved on from is not recorded: the newer one is still news.
    const shown = await service.seen('ann', id, { bob: 'declined', cy: 'declined' });
    expect(shown.notify).toBeNull();
    expect(shown.result.offer.seen).toEqual({ cy: 'declined' });
    await service.seen('ann', id, { bob: 'accepted' });
    expect((await service.syncEvent('ann'))!.offers[0]!.seen).toEqual({ bob: 'accepted', cy: 'declined' });
    // What the sender has been shown is the sender's business: a receiver's view leaves it out.
    const bobs = (await service.syncEvent('bob'))!.offers[0]!;
    expect(bobs.id).toBe(id);
    expect(bobs).not.toHaveProperty('seen');

    await service.fetch('bob', id, 0);
    await service.confirm('bob', id);
    expect((await service.syncEvent('ann'))!.offers[0]).toMatchObject({ recipients: { bob: 'received' }, seen: { bob: 'accepted' } });
    expect((await service.seen('ann', id, { bob: 'received' })).result.offer.seen).toEqual({ bob: 'received', cy: 'declined' });
    // Every decision made and shown: nothing more to tell, so the sync leaves it out (the list still has it).
    expect(await service.syncEvent('ann')).toBeNull();
    expect((await service.list('ann')).map((o) => o.id)).toEqual([id]);
  });

  it('lets the sender withdraw an offer: its data goes, and only receivers still waiting are told', async () => {
    const { service, blobs } = setup();
    const data = Buffer.from('0123456789');
    const id = (await service.offer('ann', 'r1', { group: { id: 'g1', name: 'crew' }, members: ['ann', 'bob', 'cy'] }, describe_(data))).result.offer.id;
    await upload(service, id, data);
    await service.decline('cy', id);
    expect(await code(service.cancel('bob', id))).toBe('not_allowed');
    const withdrawn = await service.cancel('ann', id);
    expect(withdrawn.notify).toMatchObject({ to: ['ann', 'bob'], event: { type: 'file', event: 'withdrawn', offer: { id } } });
    // The sender still sees it, withdrawn, until it expires; the receivers do not; the data is gone.
    expect((await service.list('ann'))[0]?.recipients).toEqual({ bob: 'withdrawn', cy: 'declined' });
    expect(await service.list('bob')).toEqual([]);
    expect(await blobs.get(id, 0)).toBeNull();
    for (const act of [service.accept('bob', id), service.decline('bob', id), service.fetch('bob', id, 0), service.confirm('bob', id)])
      expect(await code(act)).toBe('unknown_file');
    // With the reason, for one who was downloading it.
    await expect(service.fetch('bob', id, 1)).rejects.toThrow(`ann withdrew file offer ${id} (a.txt)`);
    // A retry (RPC redelivery, the CLI after `unavailable`) gets the same answer and tells the same people again.
    expect((await service.cancel('ann', id)).notify).toMatchObject({ to: ['ann', 'bob'], event: { event: 'withdrawn' } });
    // An offer request with its id answers with it, withdrawn; offering the file again takes a new request id, a new offer.
    const crew = { group: { id: 'g1', name: 'crew' }, members: ['ann', 'bob', 'cy'] };
    expect((await service.offer('ann', 'r1', crew, describe_(data))).result.offer).toMatchObject({ id, recipients: { bob: 'withdrawn' } });
    const again = await service.offer('ann', 'r1-2', crew, describe_(data));
    expect(again.result.offer.id).not.toBe(id);
    expect(again.result.offer.recipients).toEqual({ bob: 'pending', cy: 'pending' });
    // An offer not uploaded in full was never announced: no receiver is told of its withdrawal.
    const half = (await service.offer('ann', 'r2', { to: 'bob' }, describe_(data))).result.offer.id;
    await service.putChunk('ann', half, 0, data.subarray(0, CHUNK).toString('base64'));
    expect((await service.cancel('ann', half)).notify?.to).toEqual(['ann']);
    // Nor can its upload go on; the uploader is told why, not that the offer may have expired.
    const next = service.putChunk('ann', half, 1, data.subarray(CHUNK, 2 * CHUNK).toString('base64'));
    await expect(next).rejects.toThrow(`you withdrew file offer ${half} (a.txt)`);
    expect(await code(next)).toBe('unknown_file');
  });

  it('of a receipt and a withdrawal at the same moment makes exactly one happen, and tells receiver and sender the same', async () => {
    const data = Buffer.from('0123456789');
    const ready = async () => {
      const ctx = setup();
      const id = (await ctx.service.offer('ann', 'r1', { to: 'bob' }, describe_(data))).result.offer.id;
      await upload(ctx.service, id, data);
      await ctx.service.accept('bob', id);
      return { ...ctx, id };
    };

    // Withdrawn between the receipt's read and its write: the receipt is refused with the reason, and the offer stays withdrawn.
    const late = await ready();
    let withdrawal: Awaited<ReturnType<FileOfferService['cancel']>> | undefined;
    late.interleave.meanwhile = async () => (withdrawal = await late.service.cancel('ann', late.id));
    await expect(late.service.confirm('bob', late.id)).rejects.toThrow(`ann withdrew file offer ${late.id} (a.txt)`);
    expect(withdrawal?.notify?.to).toEqual(['ann', 'bob']);
    expect((await late.service.list('ann'))[0]?.recipients).toEqual({ bob: 'withdrawn' });

    // Received between the withdrawal's read and its write: the receiver keeps the file, and is not told it was withdrawn.
    const early = await ready();
    let receipt: Awaited<ReturnType<FileOfferService['confirm']>> | undefined;
    early.interleave.meanwhile = async () => (receipt = await early.service.confirm('bob', early.id));
    const cancelled = await early.service.cancel('ann', early.id);
    expect(receipt?.result.offer.recipients).toEqual({ bob: 'received' });
    expect(cancelled.result.offer.recipients).toEqual({ bob: 'received' });
    expect(cancelled.notify?.to).toEqual(['ann']);
    expect((await early.service.list('ann'))[0]?.recipients).toEqual({ bob: 'received' });

    // An acceptance that loses to a withdrawal says why, rather than leaving an accepted receiver on a withdrawn offer.
    const ctx = setup();
    const id = (await ctx.service.offer('ann', 'r1', { to: 'bob' }, describe_(data))).result.offer.id;
    await upload(ctx.service, id, data);
    ctx.interleave.meanwhile = () => ctx.service.cancel('ann', id);
    await expect(ctx.service.accept('bob', id)).rejects.toThrow(`ann withdrew file offer ${id}`);
    expect((await ctx.service.list('ann'))[0]?.recipients).toEqual({ bob: 'withdrawn' });
  });

  it('knows a user called like a property every object has as no receiver', async () => {
    const { service } = setup();
    const data = Buffer.from('0123456789');
    const id = (await service.offer('ann', 'r1', { to: 'bob' }, describe_(data))).result.offer.id;
    await upload(service, id, data);
    for (const name of ['constructor', 'toString', '__proto__']) {
      expect(await code(service.decline(name, id))).toBe('unknown_file');
      expect(await code(service.accept(name, id))).toBe('unknown_file');
    }
    expect((await service.list('ann'))[0]?.recipients).toEqual({ bob: 'pending' });
  });

  it('tells sender and receivers who may do what to an offer they know of, and anyone else (or a receiver of a half-uploaded one) nothing', async () => {
    const { service } = setup();
    const data = Buffer.from('0123456789');
    const id = (await service.offer('ann', 'r1', { to: 'bob' }, describe_(data))).result.offer.id;
    await service.putChunk('ann', id, 0, data.subarray(0, 4).toString('base64'));
    // Half uploaded: to its receiver it does not exist yet.
    for (const act of [service.cancel('bob', id), service.seen('bob', id, {}), service.putChunk('bob', id, 1, 'AAAA'), service.accept('bob', id)])
      expect(await code(act)).toBe('unknown_file');
    await upload(service, id, data);
    const refusal = (p: Promise<unknown>) =>
      p.then(
        () => 'ok',
        (e: DomainError) => `${e.code}: ${e.message}`,
      );
    expect(await refusal(service.accept('ann', id))).toBe(`not_allowed: you sent file offer ${id} (a.txt); only its receivers accept it`);
    expect(await refusal(service.fetch('ann', id, 0))).toBe(`not_allowed: you sent file offer ${id} (a.txt); only its receivers fetch it`);
    expect(await code(service.decline('ann', id))).toBe('not_allowed');
    expect(await code(service.confirm('ann', id))).toBe('not_allowed');
    expect(await refusal(service.cancel('bob', id))).toBe(`not_allowed: ann sent file offer ${id} (a.txt); only its sender withdraws it; decline it instead`);
    expect(await code(service.putChunk('bob', id, 0, 'AAAA'))).toBe('not_allowed');
    // Someone else learns nothing, not even that it exists.
    for (const act of [
      service.accept('cy', id),
      service.fetch('cy', id, 0),
      service.cancel('cy', id),
      service.seen('cy', id, {}),
      service.putChunk('cy', id, 0, 'AAAA'),
    ])
      expect(await refusal(act)).toBe(`unknown_file: there is no file offer ${id} for you (it may have expired)`);
    // None of it changed anything.
    expect((await service.list('ann'))[0]).toMatchObject({ uploaded: 3, recipients: { bob: 'pending' } });
  });

  it('says of a chunk of an empty file that it has none, and is complete as offered', async () => {
    const { service } = setup();
    const made = await service.offer('ann', 'e1', { to: 'bob' }, describe_(Buffer.alloc(0), 'empty.txt'));
    expect(made.result.offer).toMatchObject({ chunks: 0, uploaded: 0 });
    expect(made.notify).toMatchObject({ to: ['bob'], event: { event: 'offered' } });
    const id = made.result.offer.id;
    const said = `chunk_out_of_range: file offer ${id} (empty.txt) is an empty file: it has no chunks, and is complete as offered`;
    const refusal = (p: Promise<unknown>) =>
      p.then(
        () => 'ok',
        (e: DomainError) => `${e.code}: ${e.message}`,
      );
    expect(await refusal(service.putChunk('ann', id, 0, ''))).toBe(said);
    await service.accept('bob', id);
    expect(await refusal(service.fetch('bob', id, 0))).toBe(said);
    expect((await service.confirm('bob', id)).result.offer.recipients).toEqual({ bob: 'received' });
  });

  it('is idempotent by request id, so an interrupted upload resumes where it stopped', async () => {
    const { service } = setup();
    const data = Buffer.from('abcdefghij');
    const { offer } = (await service.offer('ann', 'r1', { to: 'bob' }, describe_(data))).result;
    await service.putChunk('ann', offer.id, 0, data.subarray(0, 4).toString('base64'));
    const again = await service.offer('ann', 'r1', { to: 'bob' }, describe_(data));
    expect(again.result.offer).toMatchObject({ id: offer.id, uploaded: 1 });
    // The sender's view names the request that made it (to resume from any device); a receiver's view does not.
    expect(offer.request).toBe('r1');
    expect((await service.list('ann'))[0]?.request).toBe('r1');
    expect(await service.putChunk('ann', offer.id, 0, 'AAAA')).toMatchObject({ result: { uploaded: 1 }, notify: null });
    expect(await code(service.putChunk('ann', offer.id, 2, 'AAAA'))).toBe('bad_chunk');
    expect(await code(service.putChunk('ann', offer.id, 1, 'AA=='))).toBe('bad_chunk');
    expect(await code(service.putChunk('ann', offer.id, 3, 'AAAA'))).toBe('chunk_out_of_range');
    expect(await code(service.putChunk('bob', offer.id, 1, 'AAAA'))).toBe('unknown_file');
    // The chunk that completes the upload announces the offer, once: once its publisher says the announcement has
    // left, the last chunk again is answered as the first time, and tells the receivers nothing, however often it comes.
    await service.putChunk('ann', offer.id, 1, data.subarray(4, 8).toString('base64'));
    const completed = await service.putChunk('ann', offer.id, 2, data.subarray(8).toString('base64'));
    expect(completed.notify).toMatchObject({ to: ['bob'], event: { event: 'offered' } });
    expect(completed.notify?.event.offer).not.toHaveProperty('request');
    expect(completed.notify?.event.offer).not.toHaveProperty('announced');
    expect(completed.announces).toBe(offer.id);
    await service.announced(offer.id);
    const { announces: _, ...answer } = completed;
    for (const repeat of [data.subarray(8).toString('base64'), 'AAA=', ''])
      expect(await service.putChunk('ann', offer.id, 2, repeat)).toEqual({ ...answer, notify: null });
    expect((await service.list('bob'))[0]).not.toHaveProperty('request');
    expect((await service.accept('bob', offer.id)).result.offer).not.toHaveProperty('request');
    expect((await service.putChunk('ann', offer.id, 1, 'AAAA')).notify).toBeNull();
  });

  it('announces a complete upload again, by its last chunk sent again, until its announcement is known to have left', async () => {
    // The gateway that had the announcement died before relaying it: its sender, with no answer, sends the last chunk again.
    const { service, blobs } = setup();
    const data = Buffer.from('abcdefghij');
    const members = ['ann', 'bob', 'cy'];
    const { offer } = (await service.offer('ann', 'g1', { group: { id: 'g1', name: 'crew' }, members }, describe_(data))).result;
    const completed = await upload(service, offer.id, data);
    expect(completed.notify?.to).toEqual(['bob', 'cy']);
    // Another chunk again tells no one; the last one announces it again, to whoever has not decided yet.
    expect((await service.putChunk('ann', offer.id, 1, 'AAAA')).notify).toBeNull();
    await service.decline('cy', offer.id);
    const again = await service.putChunk('ann', offer.id, 2, 'AAA=');
    expect(again.notify).toMatchObject({ to: ['bob'], event: { event: 'offered', offer: { id: offer.id } } });
    expect(again.announces).toBe(offer.id);
    expect(again.result).toEqual(completed.result);
    // Once it has left, no more; and what is stored is checked again first (a crash may have cut the check short).
    await service.announced(offer.id);
    expect(await service.putChunk('ann', offer.id, 2, 'AAA=')).toEqual({ result: completed.result, notify: null });
    const other = (await service.offer('ann', 'g2', { to: 'bob' }, describe_(data))).result.offer;
    await upload(service, other.id, data);
    await blobs.put(other.id, 0, Buffer.from('XXXX'));
    expect(await code(service.putChunk('ann', other.id, 2, 'AAA='))).toBe('checksum_mismatch');
    // An empty file is announced by its offer: a retry of it, the same way.
    const empty = await service.offer('ann', 'e1', { to: 'bob' }, describe_(Buffer.alloc(0), 'empty.txt'));
    expect(empty.announces).toBe(empty.result.offer.id);
    expect((await service.offer('ann', 'e1', { to: 'bob' }, describe_(Buffer.alloc(0), 'empty.txt'))).notify?.to).toEqual(['bob']);
    await service.announced(empty.result.offer.id);
    expect((await service.offer('ann', 'e1', { to: 'bob' }, describe_(Buffer.alloc(0), 'empty.txt'))).notify).toBeNull();
  });

  it('answers the last chunk again as the first time when the last receiver yet to decide declines while it is announced again', async () => {
    const { service, interleave } = setup();
    const data = Buffer.from('abcdefghij');
    const { offer } = (await service.offer('ann', 'd1', { to: 'bob' }, describe_(data))).result;
    const completed = await upload(service, offer.id, data);
    // Bob declines between the read of the offer (bob still to decide) and the check of what is stored, whose data the
    // decline deletes: there is no one left to tell, and the chunk was stored; it is not "no file offer".
    interleave.meanwhile = () => service.decline('bob', offer.id);
    expect(await service.putChunk('ann', offer.id, 2, 'AAA=')).toEqual({ result: completed.result, notify: null });
    expect((await service.list('ann'))[0]?.recipients).toEqual({ bob: 'declined' });
  });

  it('takes two uploads of one offer at once (a resume while the first still runs): each chunk stored once, none failing', async () => {
    const { service, blobs } = setup();
    const data = Buffer.from('abcdefghijklmnopqrstuvwx');
    const { offer } = (await service.offer('ann', 'r1', { to: 'bob' }, describe_(data))).result;
    const chunk = (i: number) => data.subarray(i * CHUNK, (i + 1) * CHUNK).toString('base64');
    // Both send every chunk in order without waiting, as two clients each with a window of chunks in flight.
    const first = [0, 1, 2, 3, 4, 5].map((i) => service.putChunk('ann', offer.id, i, chunk(i)));
    const second = [0, 1, 2, 3, 4, 5].map((i) => service.putChunk('ann', offer.id, i, chunk(i)));
    const answers = await Promise.all([...first, ...second]);
    expect(answers.map((a) => a.result.uploaded)).toEqual([1, 2, 3, 4, 5, 6, 6, 6, 6, 6, 6, 6]);
    // The receivers are told by the upload that completed it, and by the other's last chunk only because that came
    // before the announcement was known to have left (a client shows an offer once).
    expect(answers.map((a) => a.notify?.event.event ?? null)).toEqual([null, null, null, null, null, 'offered', null, null, null, null, null, 'offered']);
    await service.announced(offer.id);
    expect((await service.putChunk('ann', offer.id, 5, chunk(5))).notify).toBeNull();
    const stored = await Promise.all([0, 1, 2, 3, 4, 5].map((i) => blobs.get(offer.id, i)));
    expect(Buffer.concat(stored.map((b) => b!))).toEqual(data);
  });

  it('takes a name spelled with decomposed accents (as macOS spells it), or with spaces at its ends, as the one name it is', async () => {
    const { service } = setup();
    const small = describe_(Buffer.from('x'));
    const { offer } = (await service.offer('ann', 'nfd', { to: 'bob' }, { ...small, name: ' cafe\u0301 notes.txt ' })).result;
    expect(offer.name).toBe('caf\u00e9 notes.txt');
    expect((await service.list('ann')).map((o) => o.name)).toEqual(['caf\u00e9 notes.txt']);
  });

  it('refuses bad names, sizes, receivers and what is over the limits, changing nothing', async () => {
    const { service } = setup();
    const small = describe_(Buffer.from('x'));
    expect(await code(service.offer('ann', 'a', { to: 'bob' }, { ...small, name: '../x' }))).toBe('invalid_file_name');
    // A name that displays as another: refused, saying why.
    await expect(service.offer('ann', 'a2', { to: 'bob' }, { ...small, name: 'invoice\u202egpj.exe' })).rejects.toThrow(/bidirectional controls/);
    expect(await code(service.offer('ann', 'a3', { to: 'bob' }, { ...small, name: 'a\u2067b.txt' }))).toBe('invalid_file_name');
    // Half of a surrogate pair is no character: it would be stored as U+FFFD, another name than the one answered.
    expect(await code(service.offer('ann', 'a5', { to: 'bob' }, { ...small, name: 'a\udc00b.txt' }))).toBe('invalid_file_name');
    // A content type with a terminal escape, or one that reorders text, or half of a surrogate pair.
    for (const type of ['text/html\u001b[31m', 'text/plain\u202e', 'text/\ud800'])
      await expect(service.offer('ann', 'a4', { to: 'bob' }, { ...small, type }), type).rejects.toMatchObject({
        code: 'bad_request',
        message: 'a content type may not hold control characters, bidirectional controls (U+202A–U+202E, U+2066–U+2069) or half of a surrogate pair',
      });
    expect(await code(service.offer('ann', 'b', { to: 'bob' }, { ...small, size: 101 }))).toBe('file_too_large');
    expect(await code(service.offer('ann', 'c', { to: 'zed' }, small))).toBe('unknown_user');
    expect(await code(service.offer('ann', 'd', { to: 'ann' }, small))).toBe('bad_request');
    expect(await code(service.offer('ann', 'e', { group: { id: 'g', name: 'solo' }, members: ['ann'] }, small))).toBe('bad_request');
    expect(await service.list('ann')).toEqual([]);
    await service.offer('ann', 'f', { to: 'bob' }, { ...small, size: 100 });
    expect(await code(service.offer('ann', 'g', { to: 'bob' }, { ...small, size: 51 }))).toBe('quota_exceeded');
    await service.offer('ann', 'h', { to: 'bob' }, { ...small, size: 50 });
    expect(await code(service.offer('ann', 'i', { to: 'bob' }, { ...small, size: 0 }))).toBe('too_many_offers');
    expect(await service.list('ann')).toHaveLength(2);
  });

  it('says sizes over a limit in units people read, with the limit, and how to make room, without any client’s commands', async () => {
    const MiB = 1024 * 1024;
    const { service } = setup({ maxFileBytes: 10 * MiB, quotaBytes: 15 * MiB, maxPendingOffers: 2 });
    const small = describe_(Buffer.from('x'));
    await expect(service.offer('ann', 'a', { to: 'bob' }, { ...small, size: 12.5 * MiB })).rejects.toMatchObject({
      code: 'file_too_large',
      message: 'the file is 12.5 MiB; the largest allowed is 10.0 MiB',
    });
    await expect(service.offer('ann', 'b', { to: 'bob' }, { ...small, size: 10 * MiB + 1 })).rejects.toMatchObject({
      message: 'the file is 10.0 MiB (10485761 bytes); the largest allowed is 10.0 MiB (10485760 bytes)',
    });
    await service.offer('ann', 'c', { to: 'bob' }, { ...small, size: 9 * MiB });
    await expect(service.offer('ann', 'd', { to: 'bob' }, { ...small, size: 7 * MiB })).rejects.toMatchObject({
      code: 'quota_exceeded',
      message:
        'this file (7.0 MiB) would take your open file offers over the 15.0 MiB the server holds for you; wait for them to be taken, let them expire, or withdraw one',
    });
    await service.offer('ann', 'e', { to: 'bob' }, describe_(Buffer.alloc(0)));
    await expect(service.offer('ann', 'f', { to: 'bob' }, describe_(Buffer.alloc(0)))).rejects.toMatchObject({
      code: 'too_many_offers',
      message: 'you have 2 file offers not yet taken or declined, the most allowed; wait for them, let them expire, or withdraw one',
    });
  });

  it('deletes an offer whose bytes do not match its SHA-256', async () => {
    const { service, blobs } = setup();
    const data = Buffer.from('12345678');
    const { offer } = (await service.offer('ann', 'r', { to: 'bob' }, { ...describe_(data), sha256: '0'.repeat(64) })).result;
    await service.putChunk('ann', offer.id, 0, data.subarray(0, 4).toString('base64'));
    expect(await code(service.putChunk('ann', offer.id, 1, data.subarray(4).toString('base64')))).toBe('checksum_mismatch');
    expect(await service.list('ann')).toEqual([]);
    expect(await blobs.get(offer.id, 0)).toBeNull();
  });

  it('expires an unanswered offer with its data, and frees its place', async () => {
    const { service, clock, blobs } = setup({ maxPendingOffers: 1 });
    const data = Buffer.from('abc');
    const { offer } = (await service.offer('ann', 'r', { to: 'bob' }, describe_(data))).result;
    await upload(service, offer.id, data);
    clock.now += 9_999;
    expect(await service.list('bob')).toHaveLength(1);
    clock.now += 1;
    expect(await service.list('bob')).toEqual([]);
    expect(await service.sweep()).toBe(1);
    expect(await blobs.get(offer.id, 0)).toBeNull();
    expect(await code(service.accept('bob', offer.id))).toBe('unknown_file');
    expect(await code(service.offer('ann', 'r2', { to: 'bob' }, describe_(data)))).toBe('ok');
  });
});
