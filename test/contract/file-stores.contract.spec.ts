import { afterAll, describe, expect, it } from 'vitest';
import { adapterFor, type StorageBackend } from '#libs/storage';
import {
  EmbeddedFileBlobStore,
  EmbeddedFileOfferStore,
  RedisFileBlobStore,
  RedisFileOfferStore,
  type FileBlobStore,
  type FileOfferStore,
  type StoredOffer,
} from '#libs/file-offer';
import { embeddedFixture, redisFixture } from './backends.js';

/** Contract suites of the file offer and file blob stores: every clause of the ports' doc comments, on both adapters. */
const fixtures = [embeddedFixture(), redisFixture()];
afterAll(async () => {
  for (const f of fixtures) await f.teardown();
});

const offersOf = (b: StorageBackend) =>
  adapterFor<FileOfferStore>(b, { embedded: (db) => new EmbeddedFileOfferStore(db), redis: (r) => new RedisFileOfferStore(r) });
const blobsOf = (b: StorageBackend) =>
  adapterFor<FileBlobStore>(b, { embedded: (db) => new EmbeddedFileBlobStore(db), redis: (r) => new RedisFileBlobStore(r) });

const LIMITS = { maxOpen: 3, quotaBytes: 1000 };

function offer(id: string, fields: Partial<StoredOffer> = {}): StoredOffer {
  return {
    id,
    from: 'ann',
    name: 'notes.txt',
    size: 100,
    type: 'text/plain',
    sha256: 'a'.repeat(64),
    chunkSize: 40,
    chunks: 3,
    uploaded: 0,
    createdAt: 1000,
    expiresAt: 5000,
    recipients: { bob: 'pending', cy: 'pending' },
    open: true,
    ...fields,
  };
}

describe.each(fixtures)('FileOfferStore on $name', (fixture) => {
  it('creates an offer once, and lists it for its sender and each receiver', async () => {
    const { backend, reopen } = await fixture.open();
    const store = offersOf(backend);
    const group = { id: 'g1', name: 'class' };
    expect(await store.create(offer('f1', { group, request: 'file-1' }), LIMITS)).toBe('created');
    expect(await store.create(offer('f1', { name: 'other.txt' }), LIMITS)).toBe('exists');
    const again = offersOf(await reopen());
    expect(await again.get('f1')).toEqual(offer('f1', { group, request: 'file-1' }));
    expect(await again.get('nope')).toBeNull();
    for (const user of ['ann', 'bob', 'cy']) expect((await again.listOf(user)).map((o) => o.id)).toEqual(['f1']);
    expect(await again.listOf('dee')).toEqual([]);
  });

  it('refuses, changing nothing, an offer over the sender\u2019s count or byte limits; closed offers no longer count', async () => {
    const { backend } = await fixture.open();
    const store = offersOf(backend);
    expect(await store.create(offer('a1', { size: 600 }), LIMITS)).toBe('created');
    expect(await store.create(offer('a2', { size: 401 }), LIMITS)).toBe('quota_exceeded');
    expect(await store.get('a2')).toBeNull();
    expect(await store.create(offer('a2', { size: 200 }), LIMITS)).toBe('created');
    expect(await store.create(offer('a3', { size: 200 }), LIMITS)).toBe('created');
    expect(await store.create(offer('a4', { size: 0 }), LIMITS)).toBe('too_many_offers');
    expect(await store.create(offer('z1', { from: 'zed', size: 900 }), LIMITS)).toBe('created');
    await store.close('a1');
    await store.close('a1');
    expect((await store.get('a1'))?.open).toBe(false);
    expect(await store.create(offer('a4', { size: 600 }), LIMITS)).toBe('created');
    expect(await store.create(offer('a5', { size: 0 }), LIMITS)).toBe('too_many_offers');
    // Removing an open offer releases it; removing a closed one does not release twice.
    expect((await store.remove('a2'))?.id).toBe('a2');
    expect(await store.remove('a1')).not.toBeNull();
    expect(await store.create(offer('a5', { size: 200 }), LIMITS)).toBe('created');
    expect(await store.create(offer('a6', { size: 0 }), LIMITS)).toBe('too_many_offers');
  });

  it('moves the upload forward only, and says whether this call moved it', async () => {
    const { backend } = await fixture.open();
    const store = offersOf(backend);
    await store.create(offer('u1'), LIMITS);
    expect(await store.advance('u1', 2)).toEqual({ uploaded: 2, moved: true });
    expect(await store.advance('u1', 1)).toEqual({ uploaded: 2, moved: false });
    expect(await store.advance('u1', 2)).toEqual({ uploaded: 2, moved: false });
    expect(await store.advance('u1', 3)).toEqual({ uploaded: 3, moved: true });
    expect((await store.get('u1'))?.uploaded).toBe(3);
    expect(await store.advance('nope', 1)).toBeNull();
    // Of calls racing to the same count (the last chunk stored twice at once), exactly one moved it: only it announces.
    await store.create(offer('u2'), LIMITS);
    const raced = await Promise.all(Array.from({ length: 10 }, () => store.advance('u2', 3)));
    expect(raced.filter((r) => r?.moved)).toHaveLength(1);
    expect(raced.every((r) => r?.uploaded === 3)).toBe(true);
  });

  it('sets a receiver\u2019s state, and changes nothing for someone who is not one', async () => {
    const { backend } = await fixture.open();
    const store = offersOf(backend);
    await store.create(offer('r1'), LIMITS);
    expect((await store.setRecipient('r1', 'bob', 'accepted', ['pending']))?.recipients).toEqual({ bob: 'accepted', cy: 'pending' });
    expect((await store.setRecipient('r1', 'cy', 'declined', ['pending', 'accepted']))?.recipients).toEqual({ bob: 'accepted', cy: 'declined' });
    expect(await store.setRecipient('r1', 'eve', 'accepted', ['pending'])).toBeNull();
    // A user may be called like a property every object has.
    expect(await store.setRecipient('r1', 'constructor', 'declined', ['pending'])).toBeNull();
    expect(await store.setRecipient('nope', 'bob', 'accepted', ['pending'])).toBeNull();
    expect((await store.get('r1'))?.recipients).toEqual({ bob: 'accepted', cy: 'declined' });
  });

  it('sets a receiver\u2019s state only from the states given, so of two racing changes one is made and the other changes nothing', async () => {
    const { backend } = await fixture.open();
    const store = offersOf(backend);
    await store.create(offer('c1'), LIMITS);
    await store.setRecipient('c1', 'bob', 'accepted', ['pending']);
    // A withdrawal and a receipt at once: whichever comes second finds the state moved on.
    const [withdrawn, received] = await Promise.all([
      store.setRecipient('c1', 'bob', 'withdrawn', ['pending', 'accepted']),
      store.setRecipient('c1', 'bob', 'received', ['accepted']),
    ]);
    const final = (await store.get('c1'))!.recipients.bob;
    expect(['withdrawn', 'received']).toContain(final);
    // Each answer is the offer afterwards: the one that lost sees the winner's state.
    expect(withdrawn?.recipients.bob === 'withdrawn' || received?.recipients.bob === 'received').toBe(true);
    expect(withdrawn?.recipients.bob === 'withdrawn' && received?.recipients.bob === 'received').toBe(false);
    // From a state not listed: nothing changes, and the answer says how it stands.
    expect((await store.setRecipient('c1', 'cy', 'received', ['accepted']))?.recipients).toEqual({ bob: final, cy: 'pending' });
    expect((await store.get('c1'))?.recipients.cy).toBe('pending');
  });

  it('records which receivers\u2019 states the sender has seen, merged, durably, only while current, ignoring names that are not receivers', async () => {
    const { backend, reopen } = await fixture.open();
    const store = offersOf(backend);
    await store.create(offer('s1'), LIMITS);
    await store.setRecipient('s1', 'bob', 'accepted', ['pending']);
    await store.setRecipient('s1', 'cy', 'declined', ['pending']);
    expect((await store.get('s1'))?.seen).toBeUndefined();
    expect((await store.markSeen('s1', { bob: 'accepted', eve: 'declined', ['constructor' as string]: 'declined' as const }))?.seen).toEqual({
      bob: 'accepted',
    });
    expect((await store.markSeen('s1', { cy: 'declined' }))?.seen).toEqual({ bob: 'accepted', cy: 'declined' });
    await store.setRecipient('s1', 'bob', 'received', ['accepted']);
    // A report of a state the receiver has moved on from (racing the newer decision) records nothing.
    expect((await store.markSeen('s1', { bob: 'accepted' }))?.seen).toEqual({ bob: 'accepted', cy: 'declined' });
    expect((await store.markSeen('s1', { bob: 'received' }))?.seen).toEqual({ bob: 'received', cy: 'declined' });
    expect(await store.markSeen('nope', { bob: 'accepted' })).toBeNull();
    const again = offersOf(await reopen());
    expect(await again.get('s1')).toEqual(offer('s1', { recipients: { bob: 'received', cy: 'declined' }, seen: { bob: 'received', cy: 'declined' } }));
  });

  it('records that an offer was announced, durably, without bringing back one removed meanwhile', async () => {
    const { backend, reopen } = await fixture.open();
    const store = offersOf(backend);
    await store.create(offer('n1'), LIMITS);
    expect((await store.get('n1'))?.announced).toBeUndefined();
    await store.markAnnounced('n1');
    await store.markAnnounced('n1');
    expect(await store.get('n1')).toEqual({ ...offer('n1'), announced: true });
    await store.create(offer('n2'), LIMITS);
    await store.remove('n2');
    await store.markAnnounced('n2');
    await store.markAnnounced('never');
    // Nothing of them is left behind: the same ids are free for new offers (a stray key would make them 'exists').
    expect(await store.create(offer('n2'), LIMITS)).toBe('created');
    expect(await store.get('n2')).toEqual(offer('n2'));
    expect(await store.remove('n2')).not.toBeNull();
    expect(await store.create(offer('never', { from: 'zed' }), LIMITS)).toBe('created');
    expect(await store.remove('never')).not.toBeNull();
    const again = offersOf(await reopen());
    expect(await again.get('n1')).toEqual({ ...offer('n1'), announced: true });
    expect(await again.get('n2')).toBeNull();
    expect(await again.get('never')).toBeNull();
    expect((await again.listOf('ann')).map((o) => o.id)).toEqual(['n1']);
  });

  it('removes an offer from every list, and names what expires, soonest first', async () => {
    const { backend } = await fixture.open();
    const store = offersOf(backend);
    await store.create(offer('e1', { expiresAt: 3000 }), LIMITS);
    await store.create(offer('e2', { expiresAt: 2000 }), LIMITS);
    await store.create(offer('e3', { expiresAt: 9000 }), LIMITS);
    expect(await store.dueBy(1999, 10)).toEqual([]);
    expect(await store.dueBy(3000, 10)).toEqual(['e2', 'e1']);
    expect(await store.dueBy(3000, 1)).toEqual(['e2']);
    expect((await store.remove('e2'))?.id).toBe('e2');
    expect(await store.remove('e2')).toBeNull();
    expect(await store.get('e2')).toBeNull();
    expect(await store.dueBy(3000, 10)).toEqual(['e1']);
    expect((await store.listOf('bob')).map((o) => o.id)).toEqual(['e1', 'e3']);
  });
});

describe.each(fixtures)('FileBlobStore on $name', (fixture) => {
  it('keeps chunks durably, replaces a chunk of the same index, and deletes all of an offer\u2019s chunks', async () => {
    const { backend, reopen } = await fixture.open();
    const blobs = blobsOf(backend);
    const far = Date.now() + 3_600_000;
    const binary = Buffer.from([0, 255, 1, 254, 10, 13]);
    await blobs.put('fA', 0, binary, far);
    await blobs.put('fA', 1, Buffer.from('second'), far);
    await blobs.put('fA', 1, Buffer.from('SECOND'), far);
    await blobs.put('fB', 0, Buffer.from('other'), far);
    const again = blobsOf(await reopen());
    expect(await again.get('fA', 0)).toEqual(binary);
    expect((await again.get('fA', 1))?.toString()).toBe('SECOND');
    expect(await again.get('fA', 2)).toBeNull();
    await again.delete('fA', 2);
    await again.delete('fA', 2);
    expect(await again.get('fA', 0)).toBeNull();
    expect(await again.get('fA', 1)).toBeNull();
    expect((await again.get('fB', 0))?.toString()).toBe('other');
  });
});
