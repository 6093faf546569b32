import { afterAll, describe, expect, it } from 'vitest';
import { adapterFor, type StorageBackend } from '#libs/storage';
import {
  EmbeddedConversationIndexStore,
  EmbeddedConversationLogStore,
  RedisConversationIndexStore,
  RedisConversationLogStore,
  type ConversationIndexStore,
  type ConversationLogStore,
} from '#libs/messaging';
import { EmbeddedPresenceStore, RedisPresenceStore, type PresenceStore } from '#libs/presence';
import {
  EmbeddedCursorStore,
  EmbeddedDeviceCursorStore,
  RedisCursorStore,
  RedisDeviceCursorStore,
  type CursorStore,
  type DeviceCursorStore,
} from '#libs/receipts';
import {
  EmbeddedGroupLocks,
  EmbeddedGroupStore,
  GroupService,
  RedisGroupLocks,
  RedisGroupStore,
  skeleton,
  type GroupLocks,
  type GroupStore,
} from '#libs/group';
import { embeddedFixture, redisFixture } from './backends.js';

/**
 * Contract suites of the presence, cursor, conversation-index and group
 * stores: every clause of each port's doc comments, on both adapters.
 */
const fixtures = [embeddedFixture(), redisFixture()];
afterAll(async () => {
  for (const f of fixtures) await f.teardown();
});

const presenceOf = (b: StorageBackend) =>
  adapterFor<PresenceStore>(b, { embedded: (db) => new EmbeddedPresenceStore(db), redis: (r) => new RedisPresenceStore(r) });
const cursorsOf = (b: StorageBackend) => adapterFor<CursorStore>(b, { embedded: (db) => new EmbeddedCursorStore(db), redis: (r) => new RedisCursorStore(r) });
const devicesOf = (b: StorageBackend) =>
  adapterFor<DeviceCursorStore>(b, { embedded: (db) => new EmbeddedDeviceCursorStore(db), redis: (r) => new RedisDeviceCursorStore(r) });
const indexOf = (b: StorageBackend) =>
  adapterFor<ConversationIndexStore>(b, { embedded: (db) => new EmbeddedConversationIndexStore(db), redis: (r) => new RedisConversationIndexStore(r) });
const locksOf = (b: StorageBackend) =>
  adapterFor<GroupLocks>(b, { embedded: () => new EmbeddedGroupLocks(), redis: (r) => new RedisGroupLocks(r, { leaseMs: 300, waitMs: 3000 }) });
const groupsOf = (b: StorageBackend) => adapterFor<GroupStore>(b, { embedded: (db) => new EmbeddedGroupStore(db), redis: (r) => new RedisGroupStore(r) });
const logOf = (b: StorageBackend) =>
  adapterFor<ConversationLogStore>(b, { embedded: (db) => new EmbeddedConversationLogStore(db), redis: (r) => new RedisConversationLogStore(r) });
/** The group service on a backend's real stores, as a process started on it would make it. */
const groupServiceOf = (b: StorageBackend) =>
  new GroupService(
    groupsOf(b),
    locksOf(b),
    logOf(b),
    indexOf(b),
    { exists: () => Promise.resolve(true) },
    { maxMembers: 10, maxNameLength: 64, maxTextLength: 1000 },
  );

describe.each(fixtures)('PresenceStore on $name', (fixture) => {
  const conn = (user: string, connId: string, gatewayId = 'gw1') => ({ user, connId, gatewayId });

  it('is online while any connection is up and offline with lastSeen when the last one closes', async () => {
    const { backend } = await fixture.open();
    const store = presenceOf(backend);
    expect(await store.get('ann')).toEqual({ state: 'offline', lastSeen: null });
    expect(await store.connect(conn('ann', 'c1'), 1000)).toEqual({ wentOnline: true });
    expect(await store.connect(conn('ann', 'c2'), 1100)).toEqual({ wentOnline: false });
    expect(await store.get('ann')).toEqual({ state: 'online', lastSeen: 1100 });
    expect(await store.disconnect(conn('ann', 'c1'), 1200)).toEqual({ wentOffline: false });
    expect((await store.get('ann')).state).toBe('online');
    expect(await store.disconnect(conn('ann', 'c2'), 1300)).toEqual({ wentOffline: true });
    expect(await store.get('ann')).toEqual({ state: 'offline', lastSeen: 1300 });
  });

  it('answers a read taken while a change is being committed with the state before or after it, and the change once it is committed', async () => {
    const { backend } = await fixture.open();
    const store = presenceOf(backend);
    const connecting = store.connect(conn('eve', 'c1'), 500);
    expect(['online', 'offline']).toContain((await store.get('eve')).state);
    await connecting;
    expect(await store.get('eve')).toEqual({ state: 'online', lastSeen: 500 });
    const leaving = store.disconnect(conn('eve', 'c1'), 600);
    await store.get('eve');
    await leaving;
    expect(await store.get('eve')).toEqual({ state: 'offline', lastSeen: 600 });
  });

  it('is idempotent per connection id, and ignores unknown ones', async () => {
    const { backend } = await fixture.open();
    const store = presenceOf(backend);
    await store.connect(conn('bo', 'c1'), 10);
    expect(await store.connect(conn('bo', 'c1'), 20)).toEqual({ wentOnline: false });
    expect(await store.disconnect(conn('bo', 'nope'), 30)).toEqual({ wentOffline: false });
    expect(await store.disconnect(conn('bo', 'c1'), 40)).toEqual({ wentOffline: true });
    expect(await store.disconnect(conn('bo', 'c1'), 50)).toEqual({ wentOffline: false });
    expect(await store.get('bo')).toEqual({ state: 'offline', lastSeen: 40 });
  });

  it('drops a gone gateway\u2019s connections only, and survives a reopen', async () => {
    const { backend, reopen } = await fixture.open();
    const store = presenceOf(backend);
    await store.connect(conn('cy', 'a', 'gw1'), 1);
    await store.connect(conn('di', 'b', 'gw1'), 1);
    await store.connect(conn('di', 'c', 'gw2'), 1);
    const again = presenceOf(await reopen());
    // Read first, so that an adapter that keeps what it read must let go of it.
    expect(await again.get('cy')).toEqual({ state: 'online', lastSeen: 1 });
    expect((await again.get('di')).state).toBe('online');
    expect((await again.dropGateway('gw1', 99)).sort()).toEqual(['cy']);
    expect(await again.get('cy')).toEqual({ state: 'offline', lastSeen: 99 });
    expect((await again.get('di')).state).toBe('online');
    // A retry (its first call's answer may have been lost) names again who that drop took offline and still is.
    expect(await again.dropGateway('gw1', 99)).toEqual(['cy']);
    expect(await again.get('cy')).toEqual({ state: 'offline', lastSeen: 99 });
    // A later sweep of a gateway of that id (it came back and died again) is not a retry: it names only its own.
    expect(await again.dropGateway('gw1', 500)).toEqual([]);
  });

  it('records changes at the time given, closing connections that ended unseen then, never moving a user\u2019s last seen back', async () => {
    const { backend } = await fixture.open();
    const store = presenceOf(backend);
    await store.connect(conn('ko', 'dead', 'gw1'), 10);
    await store.connect(conn('lu', 'dead', 'gw1'), 10);
    await store.connect(conn('lu', 'later', 'gw2'), 30);
    await store.disconnect(conn('lu', 'later', 'gw2'), 40);
    await store.connect(conn('mo', 'dead', 'gw3'), 10);
    // gw1 restarts after a crash: what it held closes at its last sign of life (20), not at its restart (90).
    expect((await store.setGateway('gw1', [{ user: 'ko', connId: 'new' }], 90, 20)).sort()).toEqual(['lu']);
    expect(await store.get('ko')).toEqual({ state: 'online', lastSeen: 90 });
    // Lu was online elsewhere until 40: the later time stays.
    expect(await store.get('lu')).toEqual({ state: 'offline', lastSeen: 40 });
    expect(await store.dropGateway('gw3', 25)).toEqual(['mo']);
    expect(await store.get('mo')).toEqual({ state: 'offline', lastSeen: 25 });
    // A start reported late (it waited for presence) does not move last seen back either.
    expect(await store.connect(conn('lu', 'held-back', 'gw2'), 35)).toEqual({ wentOnline: true });
    expect(await store.get('lu')).toEqual({ state: 'online', lastSeen: 40 });
  });

  it('brings a gateway\u2019s records in line with what it holds: adds the missing, closes the rest, leaves other gateways alone', async () => {
    const { backend } = await fixture.open();
    const store = presenceOf(backend);
    await store.connect(conn('fa', 'stale', 'gw1'), 1); // its end was never recorded
    await store.connect(conn('gu', 'old', 'gw1'), 1); // ended, while a newer connection of gu was never recorded
    await store.connect(conn('ha', 'kept', 'gw1'), 1);
    await store.connect(conn('ha', 'elsewhere', 'gw2'), 1);
    await store.connect(conn('iv', 'gone', 'gw1'), 1);
    await store.connect(conn('iv', 'there', 'gw2'), 1);
    // Read first, so that an adapter that keeps what it read must let go of it.
    for (const u of ['fa', 'gu', 'ha', 'iv', 'jo']) await store.get(u);
    const held = [
      { user: 'gu', connId: 'new' },
      { user: 'ha', connId: 'kept' },
      { user: 'jo', connId: 'unrecorded' },
    ];
    expect((await store.setGateway('gw1', held, 50)).sort()).toEqual(['fa', 'jo']);
    expect(await store.get('fa')).toEqual({ state: 'offline', lastSeen: 50 });
    expect(await store.get('jo')).toEqual({ state: 'online', lastSeen: 50 });
    expect((await store.get('gu')).state).toBe('online');
    expect((await store.get('ha')).state).toBe('online');
    expect((await store.get('iv')).state).toBe('online');
    // Exactly what was held is left: closing it closes the user, and a second run changes nothing.
    expect(await store.setGateway('gw1', held, 60)).toEqual([]);
    expect(await store.disconnect(conn('gu', 'new'), 70)).toEqual({ wentOffline: true });
    expect(await store.disconnect(conn('jo', 'unrecorded'), 70)).toEqual({ wentOffline: true });
    expect((await store.setGateway('gw1', [], 80)).sort()).toEqual([]);
    expect((await store.get('ha')).state).toBe('online'); // still up on gw2
    expect(await store.dropGateway('gw2', 90)).toEqual(expect.arrayContaining(['ha', 'iv']));
  });
});

describe.each(fixtures)('DeviceCursorStore on $name', (fixture) => {
  it('knows a device from its start, complete once filled in, moves its positions forward only, and survives a reopen', async () => {
    const { backend, reopen } = await fixture.open();
    const store = devicesOf(backend);
    expect(await store.get('ann', 'ann/laptop')).toBeNull();
    // Not known yet: a receipt, a catch-up or a filling in of it records nothing.
    expect(await store.advance('ann', 'ann/laptop', 'dm:a:b', 4, 5)).toEqual({ moved: false });
    await store.touch('ann', 'ann/laptop', 5);
    expect(await store.fill('ann', 'ann/laptop', { 'dm:a:b': 1 })).toBeNull();
    expect(await store.get('ann', 'ann/laptop')).toBeNull();
    expect(await store.start('ann', 'ann/laptop', 10, 5, false)).toEqual([]);
    expect(await store.get('ann', 'ann/laptop')).toEqual({ cursors: {}, usedAt: 10, complete: false });
    // A receipt between the start and the filling in counts: the larger position stays.
    expect(await store.advance('ann', 'ann/laptop', 'dm:a:b', 3, 15)).toEqual({ moved: true });
    expect(await store.fill('ann', 'ann/laptop', { 'dm:a:b': 2, 'g:1': 0 })).toEqual({ 'dm:a:b': 3, 'g:1': 0 });
    expect(await store.advance('ann', 'ann/laptop', 'dm:a:b', 7, 20)).toEqual({ moved: true });
    expect(await store.advance('ann', 'ann/laptop', 'dm:a:b', 3, 30)).toEqual({ moved: false });
    expect(await store.advance('ann', 'ann/laptop', 'g:2', 1, 40)).toEqual({ moved: true });
    const again = devicesOf(await reopen());
    // A position of 0 is as good as none: nothing is stored for it.
    expect(await again.get('ann', 'ann/laptop')).toEqual({ cursors: { 'dm:a:b': 7, 'g:2': 1 }, usedAt: 40, complete: true });
    await again.touch('ann', 'ann/laptop', 50);
    expect((await again.get('ann', 'ann/laptop'))?.usedAt).toBe(50);
    // Started again: not complete until filled in, keeping its positions; started fresh, without them.
    await again.start('ann', 'ann/laptop', 60, 5, false);
    expect(await again.get('ann', 'ann/laptop')).toEqual({ cursors: { 'dm:a:b': 7, 'g:2': 1 }, usedAt: 60, complete: false });
    await again.start('ann', 'ann/laptop', 70, 5, true);
    expect(await again.fill('ann', 'ann/laptop', { 'dm:a:b': 9 })).toEqual({ 'dm:a:b': 9 });
    expect(await again.get('ann', 'ann/laptop')).toEqual({ cursors: { 'dm:a:b': 9 }, usedAt: 70, complete: true });
  });

  it('keeps at most so many devices per user, forgetting the least recently used others', async () => {
    const { backend } = await fixture.open();
    const store = devicesOf(backend);
    const started = async (user: string, device: string, c: number, at: number, keep: number) => {
      const forgotten = await store.start(user, device, at, keep, true);
      await store.fill(user, device, { c });
      return forgotten;
    };
    await started('bo', 'bo/a', 1, 10, 2);
    await started('bo', 'bo/b', 2, 20, 2);
    await started('cy', 'cy/a', 3, 5, 2);
    await store.touch('bo', 'bo/a', 30);
    // bo/b was used least recently; another user's device is not counted.
    expect(await started('bo', 'bo/c', 4, 40, 2)).toEqual(['bo/b']);
    expect(await store.get('bo', 'bo/b')).toBeNull();
    expect(await store.get('bo', 'bo/a')).toEqual({ cursors: { c: 1 }, usedAt: 30, complete: true });
    expect(await store.get('cy', 'cy/a')).toEqual({ cursors: { c: 3 }, usedAt: 5, complete: true });
    // A device forgotten and started again starts from what it is given, not from what it had.
    await started('bo', 'bo/b', 1, 50, 3);
    expect(await store.get('bo', 'bo/b')).toEqual({ cursors: { c: 1 }, usedAt: 50, complete: true });
  });
});

describe('RedisPresenceStore', () => {
  const fixture = fixtures.find((f) => f.name === 'redis')!;

  it('answers a burst of reads of one user with one command, and a read asked for after a change with the change', async () => {
    const { backend } = await fixture.open();
    if (backend.kind !== 'redis') throw new Error('a Redis backend was expected');
    const store = new RedisPresenceStore(backend.redis);
    const scriptCalls = async () => Number(/cmdstat_evalsha:calls=(\d+)/.exec(await backend.redis.client.info('commandstats'))?.[1] ?? 0);
    // Loads the script (a first call may go as EVAL).
    await store.get('gil');
    const before = await scriptCalls();
    const burst = await Promise.all(Array.from({ length: 20 }, () => store.get('gil')));
    expect(burst.every((s) => s.state === 'offline' && s.lastSeen === null)).toBe(true);
    expect((await scriptCalls()) - before).toBe(1);
    // A read under way when a change is issued answers with the state before it; one asked for after it, with it.
    const underWay = store.get('gil');
    const connecting = store.connect({ user: 'gil', connId: 'c1', gatewayId: 'gw1' }, 900);
    const after = store.get('gil');
    expect(await underWay).toEqual({ state: 'offline', lastSeen: null });
    expect(await after).toEqual({ state: 'online', lastSeen: 900 });
    await connecting;
    const leaving = store.disconnect({ user: 'gil', connId: 'c1', gatewayId: 'gw1' }, 950);
    expect(await store.get('gil')).toEqual({ state: 'offline', lastSeen: 950 });
    await leaving;
  });

  it('answers a drop of a gateway dropped before with the users that one took offline and who are still offline', async () => {
    const { backend } = await fixture.open();
    if (backend.kind !== 'redis') throw new Error('a Redis backend was expected');
    const store = new RedisPresenceStore(backend.redis);
    for (const user of ['hal', 'ivy']) await store.connect({ user, connId: `${user}-1`, gatewayId: 'gw-gone' }, 100);
    // The first drop did the work, but whoever asked never heard its answer (it waited in the service's stream).
    expect((await store.dropGateway('gw-gone', 200)).sort()).toEqual(['hal', 'ivy']);
    // ivy is back, on another gateway, announced online then; hal is still offline, and a retry names him again.
    await store.connect({ user: 'ivy', connId: 'ivy-2', gatewayId: 'gw-live' }, 300);
    expect(await store.dropGateway('gw-gone', 200)).toEqual(['hal']);
    expect(await store.dropGateway('gw-gone', 400)).toEqual([]);
    expect(await store.get('hal')).toEqual({ state: 'offline', lastSeen: 200 });
  });
});

describe.each(fixtures)('CursorStore on $name', (fixture) => {
  it('moves forward only, read implies delivered, and records when each seq was first reached', async () => {
    const { backend, reopen } = await fixture.open();
    const store = cursorsOf(backend);
    expect(await store.get('dm:a:b', 'a')).toEqual({ delivered: 0, deliveredAt: null, read: 0, readAt: null });
    expect(await store.advance('dm:a:b', 'a', 'delivered', 5, 100)).toEqual({
      moved: true,
      cursors: { delivered: 5, deliveredAt: 100, read: 0, readAt: null },
      from: 0,
    });
    expect(await store.advance('dm:a:b', 'a', 'delivered', 3, 200)).toMatchObject({ moved: false, cursors: { delivered: 5, deliveredAt: 100 }, from: 5 });
    // `from` is the cursor of the receipt's own status: read stood at 0.
    expect(await store.advance('dm:a:b', 'a', 'read', 7, 300)).toEqual({
      moved: true,
      cursors: { delivered: 7, deliveredAt: 300, read: 7, readAt: 300 },
      from: 0,
    });
    expect(await store.advance('dm:a:b', 'a', 'read', 7, 400)).toMatchObject({ moved: false, from: 7 });
    const again = cursorsOf(await reopen());
    expect(await again.reachedAt('dm:a:b', 'a', 'delivered', 4)).toBe(100);
    expect(await again.reachedAt('dm:a:b', 'a', 'delivered', 6)).toBe(300);
    expect(await again.reachedAt('dm:a:b', 'a', 'read', 2)).toBe(300);
    expect(await again.reachedAt('dm:a:b', 'a', 'read', 8)).toBeNull();
    // Members and conversations are separate.
    expect((await again.get('dm:a:b', 'b')).delivered).toBe(0);
    expect((await again.get('dm:a:c', 'a')).delivered).toBe(0);
  });

  it('never moves back under concurrent receipts', async () => {
    const { backend } = await fixture.open();
    const store = cursorsOf(backend);
    await Promise.all(Array.from({ length: 50 }, (_, i) => store.advance('grp:x', 'u', i % 2 ? 'read' : 'delivered', 50 - i, i)));
    const c = await store.get('grp:x', 'u');
    expect(c.delivered).toBe(50);
    expect(c.read).toBe(49);
  });
});

describe.each(fixtures)('ConversationIndexStore on $name', (fixture) => {
  it('lists each conversation of a user once, durably, and per user', async () => {
    const { backend, reopen } = await fixture.open();
    const store = indexOf(backend);
    expect(await store.list('ed')).toEqual([]);
    await store.add('ed', 'dm:ed:fi');
    await store.add('ed', 'grp:g1');
    await store.add('ed', 'dm:ed:fi');
    await store.add('fi', 'dm:ed:fi');
    const again = indexOf(await reopen());
    expect((await again.list('ed')).sort()).toEqual(['dm:ed:fi', 'grp:g1']);
    expect(await again.list('fi')).toEqual(['dm:ed:fi']);
    expect(await again.list('e')).toEqual([]);
  });
});

describe.each(fixtures)('GroupStore on $name', (fixture) => {
  it('saves and replaces a group\u2019s state durably', async () => {
    const { backend, reopen } = await fixture.open();
    const store = groupsOf(backend);
    expect(await store.get('g1')).toBeUndefined();
    const state = { ...skeleton('g1', 'req'), name: 'band', owner: 'amy', members: [{ user: 'amy', joined: 1 }], appliedSeq: 1 };
    await store.save(state);
    await store.save({ ...state, name: 'the band', pending: null });
    const again = groupsOf(await reopen());
    expect(await again.get('g1')).toEqual({ ...state, name: 'the band', pending: null });
    expect(await again.get('g2')).toBeUndefined();
    // The requests that changed nothing are kept with it, in order.
    const noops = [
      { actor: 'amy', id: 'n1', op: 'rename' as const },
      { actor: 'amy', id: 'n2', op: 'add' as const },
    ];
    await again.save({ ...state, noops });
    expect((await groupsOf(await reopen()).get('g1'))?.noops).toEqual(noops);
  });
});

describe.each(fixtures)('GroupService on $name: a request that changed nothing', (fixture) => {
  it('keeps its id across a restart: a retry gets the same answer, another request with the id is refused, members see no change', async () => {
    const { backend, reopen } = await fixture.open();
    const before = groupServiceOf(backend);
    const { group } = await before.create('amy', 'c1', 'band', ['ben']);
    const first = await before.rename('amy', 'n1', group.id, 'band');
    expect(first).toEqual({ group: expect.objectContaining({ name: 'band' }), event: null, deliverTo: [] });

    const after = groupServiceOf(await reopen());
    expect(await after.rename('amy', 'n1', group.id, 'band')).toEqual(first);
    await expect(after.add('amy', 'n1', group.id, ['cat'])).rejects.toMatchObject({ code: 'bad_request' });
    await expect(after.post('amy', 'n1', group.id, 'hello')).rejects.toMatchObject({ code: 'bad_request' });
    const seen = await after.history('ben', group.id, undefined, 10);
    expect(seen.events.map((e) => (e.type === 'message' ? e.text : e.change.kind))).toEqual(['created']);
    expect(await after.info('ben', group.id)).toMatchObject({ name: 'band', members: ['amy', 'ben'] });
  });
});

describe.each(fixtures)('GroupService on $name: a post and a change that took its sender out', (fixture) => {
  it('never stores the post after that change: refused when the change landed between the post\u2019s check and its append', async () => {
    const { backend } = await fixture.open();
    const log = logOf(backend);
    // What lands between a post's check of the members and its append, once.
    let beforePost: (() => Promise<unknown>) | null = null;
    const seamed: ConversationLogStore = Object.assign(Object.create(log) as ConversationLogStore, {
      append: async (...args: Parameters<ConversationLogStore['append']>) => {
        const run = args[1].kind === 'text' ? beforePost : null;
        if (run) beforePost = null;
        await run?.();
        return log.append(...args);
      },
    });
    const service = new GroupService(
      groupsOf(backend),
      locksOf(backend),
      seamed,
      indexOf(backend),
      { exists: () => Promise.resolve(true) },
      { maxMembers: 10, maxNameLength: 64, maxTextLength: 1000 },
    );
    const { group } = await service.create('amy', 'c1', 'band', ['ben', 'cat']); // 1
    beforePost = () => service.remove('amy', 'r1', group.id, ['ben']); // 2
    await expect(service.post('ben', 'p1', group.id, 'pressed send as I was removed')).rejects.toMatchObject({ code: 'not_member' });
    // One who is in the group still is not held up by it: their post goes to those in the group then.
    beforePost = () => service.remove('amy', 'r2', group.id, ['cat']); // 3
    const kept = await service.post('amy', 'p2', group.id, 'to those in the group');
    expect(kept).toMatchObject({ duplicate: false, accepted: { seq: 4 } });
    expect(kept.deliverTo).toEqual(['amy']);
    const seen = await service.history('amy', group.id, undefined, 10);
    expect(seen.events.map((e) => (e.type === 'message' ? `${e.from}: ${e.text}` : e.change.kind))).toEqual([
      'created',
      'member_removed',
      'member_removed',
      'amy: to those in the group',
    ]);
  });
});

/** Work that records how many holders are inside at once, and yields to the event loop so overlaps can happen. */
const probe = () => {
  let inside = 0;
  let most = 0;
  const order: number[] = [];
  const work = (n: number) => async () => {
    inside++;
    most = Math.max(most, inside);
    await new Promise((resolve) => setTimeout(resolve, 2));
    order.push(n);
    inside--;
    return n;
  };
  return { work, most: () => most, order };
};

describe.each(fixtures)('GroupLocks on $name', (fixture) => {
  it('runs calls for one group one at a time, in call order, and passes on results and errors', async () => {
    const { backend } = await fixture.open();
    const locks = locksOf(backend);
    const p = probe();
    const results = await Promise.all([1, 2, 3, 4, 5].map((n) => locks.withLock('g1', p.work(n))));
    expect(results).toEqual([1, 2, 3, 4, 5]);
    expect(p.most()).toBe(1);
    expect(p.order).toEqual([1, 2, 3, 4, 5]);
    await expect(locks.withLock('g1', () => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
    // A failed holder released the lock.
    expect(await locks.withLock('g1', () => Promise.resolve('after'))).toBe('after');
  });

  it('does not make different groups wait for each other', async () => {
    const { backend } = await fixture.open();
    const locks = locksOf(backend);
    let release!: () => void;
    const held = locks.withLock('slow', () => new Promise<void>((resolve) => (release = resolve)));
    expect(await locks.withLock('other', () => Promise.resolve('ran'))).toBe('ran');
    release();
    await held;
  });
});

describe('GroupLocks across processes on redis', () => {
  const redis = fixtures.find((f) => f.name === 'redis')!;
  it('excludes across processes (separate connections), and frees a dead holder’s lock after its lease', async () => {
    const { backend, reopen } = await redis.open();
    const [one, two] = [locksOf(backend), locksOf(await reopen())];
    const p = probe();
    await Promise.all([1, 2, 3, 4, 5, 6].map((n) => (n % 2 ? one : two).withLock('shared', p.work(n))));
    expect(p.most()).toBe(1);
    expect(p.order.sort()).toEqual([1, 2, 3, 4, 5, 6]);

    // A holder that died leaves its lease behind: the lock is free again once it expires (300 ms here).
    if (backend.kind !== 'redis') throw new Error('redis only');
    await backend.redis.client.set(backend.redis.key('group-lock', 'orphan'), 'dead-holder', 'PX', 300);
    expect(await two.withLock('orphan', () => Promise.resolve('taken over'))).toBe('taken over');
  });
});
