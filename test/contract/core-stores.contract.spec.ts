import { spawn } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { EmbeddedAccountStore, RedisAccountStore, type AccountStore } from '#libs/accounts';
import { EmbeddedConversationLogStore, NotAWriter, RedisConversationLogStore, type AppendInput, type ConversationLogStore } from '#libs/messaging';
import { adapterFor, EmbeddedDatabase, type StorageBackend } from '#libs/storage';
import { REPO_ROOT } from '../support/parley-server.js';
import { embeddedFixture, redisFixture } from './backends.js';

/** Contract suites of the account and conversation-log stores: every clause of each port's doc comments, on both adapters. */
const fixtures = [embeddedFixture(), redisFixture()];
afterAll(async () => {
  for (const f of fixtures) await f.teardown();
});

const accountsOf = (b: StorageBackend) =>
  adapterFor<AccountStore>(b, { embedded: (db) => new EmbeddedAccountStore(db), redis: (r) => new RedisAccountStore(r) });
const logOf = (b: StorageBackend) =>
  adapterFor<ConversationLogStore>(b, { embedded: (db) => new EmbeddedConversationLogStore(db), redis: (r) => new RedisConversationLogStore(r) });
const text = (from: string, id: string, t = `text ${id}`, ts = 1000): AppendInput => ({ from, id, ts, kind: 'text', text: t });

describe.each(fixtures)('AccountStore on $name', (fixture) => {
  const account = (user: string, hash = 'h1') => ({ user, passwordHash: hash, createdAt: 1 });

  it('creates a free name once and never overwrites it', async () => {
    const { backend, reopen } = await fixture.open();
    const store = accountsOf(backend);
    expect(await store.get('ann')).toBeUndefined();
    expect(await store.create(account('ann'))).toBe(true);
    expect(await store.create(account('ann', 'other'))).toBe(false);
    expect(await accountsOf(await reopen()).get('ann')).toEqual(account('ann'));
  });

  it('lets exactly one of many concurrent creates of a name win', async () => {
    const { backend } = await fixture.open();
    const store = accountsOf(backend);
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => store.create(account('race', `h${i}`))));
    expect(results.filter(Boolean)).toHaveLength(1);
    const winner = results.indexOf(true);
    expect((await store.get('race'))?.passwordHash).toBe(`h${winner}`);
  });

  it('replaces a hash only while it is the one expected, keeping the rest of the account, durably', async () => {
    const { backend, reopen } = await fixture.open();
    const store = accountsOf(backend);
    // Hashes as the hasher writes them ($, / and + included), and a request id that mentions a hash in its own text.
    const [h1, h2, h3] = ['scrypt$1024$8$1$c2FsdA==$a/b+c', 'scrypt$32768$8$1$bmV3$d/e+f', 'scrypt$32768$8$1$dGhpcmQ=$g/h+i'];
    const full = { user: 'hal', passwordHash: h1, createdAt: 1_765_000_000_123, request: `"passwordHash":"${h1}"` };
    expect(await store.create(full)).toBe(true);
    expect(await store.replaceHash('hal', 'not-the-hash', h2)).toBe(false);
    expect(await store.replaceHash('nobody', h1, h2)).toBe(false);
    expect(await store.get('nobody')).toBeUndefined();
    expect(await store.get('hal')).toEqual(full);
    // Of two replacements of one hash under way at once, one wins and the other changes nothing.
    const results = await Promise.all([store.replaceHash('hal', h1, h2), store.replaceHash('hal', h1, h3)]);
    expect(results.filter(Boolean)).toHaveLength(1);
    const winner = results[0] ? h2 : h3;
    expect(await accountsOf(await reopen()).get('hal')).toEqual({ ...full, passwordHash: winner });
  });
});

describe.each(fixtures)('ConversationLogStore on $name', (fixture) => {
  it('numbers entries from 1 without gaps and reads ranges back', async () => {
    const { backend, reopen } = await fixture.open();
    const log = logOf(backend);
    expect(await log.lastSeq('dm:a:b')).toBe(0);
    expect(await log.readAfter('dm:a:b', 0, 10)).toEqual([]);
    for (let i = 1; i <= 5; i++) expect((await log.append('dm:a:b', text('a', `m${i}`))).entry.seq).toBe(i);
    const again = logOf(await reopen());
    expect(await again.lastSeq('dm:a:b')).toBe(5);
    expect((await again.readAfter('dm:a:b', 1, 2)).map((e) => e.seq)).toEqual([2, 3]);
    expect((await again.readAfter('dm:a:b', 4, 10)).map((e) => e.seq)).toEqual([5]);
    expect(await again.readAfter('dm:a:b', 5, 10)).toEqual([]);
    expect((await again.readBefore('dm:a:b', 6, 2)).map((e) => e.seq)).toEqual([4, 5]);
    expect((await again.readBefore('dm:a:b', 3, 10)).map((e) => e.seq)).toEqual([1, 2]);
    expect(await again.readBefore('dm:a:b', 1, 10)).toEqual([]);
    // A `before` past the end still reads the newest entries.
    expect((await again.readBefore('dm:a:b', 100, 2)).map((e) => e.seq)).toEqual([4, 5]);
    expect((await again.readAfter('dm:a:b', 0, 1))[0]).toEqual({ seq: 1, ...text('a', 'm1') });
  });

  it('keeps the last seq of conversations whose ids extend one another apart, and numbers on from it after a reopen', async () => {
    const { backend, reopen } = await fixture.open();
    const log = logOf(backend);
    for (let i = 0; i < 3; i++) await log.append('dm:a:b', text('a', `short${i}`));
    await log.append('dm:a:bc', text('a', 'long0'));
    expect([await log.lastSeq('dm:a:b'), await log.lastSeq('dm:a:bc'), await log.lastSeq('dm:a:'), await log.lastSeq('dm:a:bcd')]).toEqual([3, 1, 0, 0]);
    const again = logOf(await reopen());
    expect((await again.append('dm:a:b', text('a', 'short3'))).entry.seq).toBe(4);
    expect((await again.append('dm:a:bc', text('a', 'long1'))).entry.seq).toBe(2);
    expect(await again.lastSeq('dm:a:b')).toBe(4);
  });

  it('never lets an entry’s time go back along the seqs: one given an earlier time takes the last one’s, stored and answered', async () => {
    const { backend, reopen } = await fixture.open();
    const log = logOf(backend);
    expect((await log.append('dm:a:b', text('a', 't1', 'first', 1_800_000_000_500))).entry.ts).toBe(1_800_000_000_500);
    // Another gateway's clock a little behind, or its append reaching the store later than one stamped after it.
    expect((await log.append('dm:a:b', text('b', 't2', 'second', 1_800_000_000_450))).entry).toMatchObject({ seq: 2, ts: 1_800_000_000_500 });
    expect((await log.append('dm:a:b', text('a', 't3', 'third', 1_800_000_000_600))).entry.ts).toBe(1_800_000_000_600);
    // Other conversations keep their own times; and after a reopen, the last time is still known.
    expect((await log.append('dm:a:c', text('a', 't4', 'elsewhere', 1_800_000_000_000))).entry.ts).toBe(1_800_000_000_000);
    const again = logOf(await reopen());
    expect((await again.append('dm:a:b', text('b', 't5', 'late', 1_800_000_000_001))).entry.ts).toBe(1_800_000_000_600);
    expect((await again.readAfter('dm:a:b', 0, 10)).map((e) => [e.seq, e.ts, e.kind === 'text' ? e.text : null])).toEqual([
      [1, 1_800_000_000_500, 'first'],
      [2, 1_800_000_000_500, 'second'],
      [3, 1_800_000_000_600, 'third'],
      [4, 1_800_000_000_600, 'late'],
    ]);
  });

  it('is idempotent by (from, id): a repeat returns the original and writes nothing', async () => {
    const { backend } = await fixture.open();
    const log = logOf(backend);
    const first = await log.append('c1', text('a', 'x', 'original', 10));
    const repeat = await log.append('c1', text('a', 'x', 'changed', 20));
    expect(repeat).toEqual({ entry: first.entry, duplicate: true });
    expect(await log.lastSeq('c1')).toBe(1);
    expect(await log.findById('c1', 'a', 'x')).toEqual(first.entry);
    expect(await log.findById('c1', 'b', 'x')).toBeUndefined();
    // The same id from another sender is another message.
    expect(await log.append('c1', text('b', 'x'))).toMatchObject({ entry: { seq: 2, from: 'b' }, duplicate: false });
  });

  it('applies concurrent appends in call order, and keeps conversations apart', async () => {
    const { backend } = await fixture.open();
    const log = logOf(backend);
    const results = await Promise.all(Array.from({ length: 50 }, (_, i) => log.append(i % 2 ? 'odd' : 'even', text('a', `k${i}`))));
    const even = results.filter((_, i) => i % 2 === 0).map((r) => r.entry.seq);
    expect(even).toEqual(Array.from({ length: 25 }, (_, i) => i + 1));
    expect((await log.readAfter('odd', 0, 100)).map((e) => e.id)).toEqual(Array.from({ length: 25 }, (_, i) => `k${2 * i + 1}`));
  });

  it('treats a retry issued while its original is still being written as a duplicate, and numbers on past appends in flight', async () => {
    const { backend } = await fixture.open();
    const log = logOf(backend);
    // Issued in one turn: none of them is durable when the next is issued.
    const [first, retry, second, retryOfSecond] = await Promise.all([
      log.append('inflight', text('a', 'x', 'original', 10)),
      log.append('inflight', text('a', 'x', 'changed', 20)),
      log.append('inflight', text('b', 'y')),
      log.append('inflight', text('b', 'y', 'changed')),
    ]);
    expect(first).toMatchObject({ entry: { seq: 1, text: 'original' }, duplicate: false });
    expect(retry).toEqual({ entry: first.entry, duplicate: true });
    expect(second).toMatchObject({ entry: { seq: 2, from: 'b' }, duplicate: false });
    expect(retryOfSecond).toEqual({ entry: second.entry, duplicate: true });
    // Once those are durable, numbering continues from what was stored.
    expect((await log.append('inflight', text('a', 'z'))).entry.seq).toBe(3);
    expect((await log.readAfter('inflight', 0, 10)).map((e) => [e.seq, e.from, e.id])).toEqual([
      [1, 'a', 'x'],
      [2, 'b', 'y'],
      [3, 'a', 'z'],
    ]);
  });

  it('checks a sender against the writers the log keeps, in the append, and writes nothing for one who is not', async () => {
    const { backend, reopen } = await fixture.open();
    const log = logOf(backend);
    const change = (id: string, writers: string[]) =>
      log.append('grp:w', { from: 'o', id, ts: 1, kind: 'event', event: { kind: 'renamed', oldName: 'a', name: id } }, { writers });
    // A conversation that never had writers set is not checked, whatever seq the caller checked against.
    expect(await log.append('grp:w', text('x', 'before'), { writersSince: 0 })).toEqual({ entry: expect.objectContaining({ seq: 1 }), duplicate: false });
    await change('c2', ['o', 'a', 'b']); // 2
    expect(await log.append('grp:w', text('a', 'p3'), { writersSince: 2 })).toMatchObject({
      entry: { seq: 3 },
      writers: expect.arrayContaining(['o', 'a', 'b']),
    });
    expect((await log.append('grp:w', text('a', 'p4'), { writersSince: 2 })).writers).toHaveLength(3);
    // b checked at #2, and removed by #5 before the append: refused, nothing written, the seq not taken.
    await change('c5', ['o', 'a']); // 5
    await expect(log.append('grp:w', text('b', 'late'), { writersSince: 2 })).rejects.toBeInstanceOf(NotAWriter);
    expect(await log.lastSeq('grp:w')).toBe(5);
    expect(await log.findById('grp:w', 'b', 'late')).toBeUndefined();
    // A repeat of what b wrote while a writer is still the duplicate it is.
    await change('c6', ['o', 'a', 'b']); // 6
    const kept = await log.append('grp:w', text('b', 'p7'), { writersSince: 6 }); // 7
    await change('c8', ['o']); // 8
    expect(await log.append('grp:w', text('b', 'p7'), { writersSince: 8 })).toEqual({ entry: kept.entry, duplicate: true });
    // Writers set before the seq the caller checked against (a change by a version that kept none) are not checked.
    expect(await log.append('grp:w', text('z', 'p9'), { writersSince: 9 })).toEqual({ entry: expect.objectContaining({ seq: 9 }), duplicate: false });
    // No writers at all (a deleted group) refuses everyone; what was set is kept across a reopen.
    await change('c10', []); // 10
    const again = logOf(await reopen());
    await expect(again.append('grp:w', text('o', 'p11'), { writersSince: 10 })).rejects.toBeInstanceOf(NotAWriter);
    await again.append('grp:w', { from: 'o', id: 'c11', ts: 1, kind: 'event', event: { kind: 'renamed', oldName: 'a', name: 'b' } }, { writers: ['q'] });
    expect(await again.append('grp:w', text('q', 'p12'), { writersSince: 11 })).toMatchObject({ entry: { seq: 12 }, writers: ['q'] });
  });

  it('checks appends issued in one turn against the writers set by those before them', async () => {
    const { backend } = await fixture.open();
    const log = logOf(backend);
    const event = (id: string) => ({ from: 'o', id, ts: 1, kind: 'event' as const, event: { kind: 'renamed' as const, oldName: 'a', name: id } });
    const results = await Promise.allSettled([
      log.append('grp:t', event('c1'), { writers: ['o', 'a'] }),
      log.append('grp:t', text('a', 'p2'), { writersSince: 1 }),
      log.append('grp:t', event('c3'), { writers: ['o'] }),
      log.append('grp:t', text('a', 'p4'), { writersSince: 1 }),
      log.append('grp:t', text('o', 'p4'), { writersSince: 1 }),
    ]);
    expect(results.map((r) => (r.status === 'fulfilled' ? r.value.entry.seq : 'refused'))).toEqual([1, 2, 3, 'refused', 4]);
  });

  it('stores group events as well as text', async () => {
    const { backend } = await fixture.open();
    const log = logOf(backend);
    const change = { kind: 'renamed' as const, oldName: 'a', name: 'b' };
    const { entry } = await log.append('grp:g', { from: 'o', id: 'r1', ts: 5, kind: 'event', event: change });
    expect(await log.readAfter('grp:g', 0, 1)).toEqual([{ seq: entry.seq, from: 'o', id: 'r1', ts: 5, kind: 'event', event: change }]);
  });
});

describe('the embedded store, when a write of a turn fails', () => {
  const fixture = embeddedFixture();
  afterAll(() => fixture.teardown());

  it('checks a post against the writers the transaction sees: a change whose write failed never let anyone in', async () => {
    const log = logOf((await fixture.open()).backend);
    const change = (id: string, extra: object = {}) => ({
      from: 'o',
      id,
      ts: 1,
      kind: 'event' as const,
      event: { kind: 'renamed' as const, oldName: 'a', name: id, ...extra },
    });
    await log.append('grp:f', change('c1'), { writers: ['o', 'a'] }); // 1
    // In one turn: a change letting cy in whose write fails (a value the store cannot encode), and posts checked against it.
    const [failed, byCy, byA] = await Promise.allSettled([
      log.append('grp:f', change('c2', { poison: Symbol('cannot be stored') }), { writers: ['o', 'a', 'cy'] }),
      log.append('grp:f', text('cy', 'p1'), { writersSince: 1 }),
      log.append('grp:f', text('a', 'p2'), { writersSince: 1 }),
    ]);
    expect(failed.status).toBe('rejected');
    expect(byCy).toMatchObject({ status: 'rejected', reason: expect.any(NotAWriter) });
    expect(await log.findById('grp:f', 'cy', 'p1')).toBeUndefined();
    // a's post is stored, and goes to the writers there are, not to cy.
    expect(byA).toMatchObject({ status: 'fulfilled', value: { writers: ['o', 'a'] } });
  });
});

describe('the embedded store keeps what it accepted across kill -9', () => {
  const fixture = embeddedFixture();
  afterAll(() => fixture.teardown());

  it('reads back every entry a killed writer reported as appended', async () => {
    const { backend } = await fixture.open();
    if (backend.kind !== 'embedded') throw new Error('unreachable');
    const dir = backend.db.dataDir;
    await backend.db.close();
    // A separate process appends through the adapter (as built by \`npm run build\`), reports each append once it
    // resolved, and is killed mid-stream.
    const script = `
      import { EmbeddedDatabase } from '#libs/storage';
      import { EmbeddedConversationLogStore } from '#libs/messaging';
      const log = new EmbeddedConversationLogStore(new EmbeddedDatabase(${JSON.stringify(dir)}));
      for (let i = 1; ; i++) {
        const { entry } = await log.append('dm:k:l', { from: 'k', id: 'n' + i, ts: i, kind: 'text', text: 'n' + i });
        process.stdout.write(entry.seq + '\\n');
      }`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let reported = 0;
    let errors = '';
    child.stderr.on('data', (d: Buffer) => (errors += d.toString()));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`writer reported nothing: ${errors}`)), 20_000);
      child.stdout.on('data', (d: Buffer) => {
        reported = Math.max(reported, ...d.toString().trim().split('\n').map(Number));
        if (reported >= 200) {
          clearTimeout(timer);
          child.kill('SIGKILL');
          resolve();
        }
      });
      child.once('exit', () => reject(new Error(`writer exited early: ${errors}`)));
    });
    await new Promise((r) => child.once('close', r));
    const reopened = new EmbeddedDatabase(dir);
    try {
      const log = new EmbeddedConversationLogStore(reopened);
      const last = await log.lastSeq('dm:k:l');
      expect(last).toBeGreaterThanOrEqual(reported);
      const entries = await log.readAfter('dm:k:l', 0, last);
      expect(entries.map((e) => e.seq)).toEqual(Array.from({ length: last }, (_, i) => i + 1));
    } finally {
      await reopened.close();
    }
  });
});
