import { describe, expect, it } from 'vitest';
import { EmbeddedConversationIndexStore, EmbeddedConversationLogStore, type ConversationLogStore } from '#libs/messaging';
import { tempDatabases } from '../../../test/support/temp-databases.js';
import { EmbeddedGroupLocks } from './embedded/embedded-group-locks.js';
import { EmbeddedGroupStore } from './embedded/embedded-group.store.js';
import { groupConv, MAX_NOOP_REQUESTS, type GroupState } from './group-state.js';
import { GroupService } from './group.service.js';
import type { GroupStore } from './group.store.js';

const freshDatabase = tempDatabases('parley-groups-unit-');

function gate(): { wait: Promise<void>; open: () => void } {
  let open!: () => void;
  return { wait: new Promise<void>((resolve) => (open = resolve)), open };
}

/**
 * A group service on the real embedded stores, with two seams for the test: appends to the log can be held back, and
 * so can saves of the group state while `holdSaves` is on.
 */
function setup() {
  const db = freshDatabase();
  const realStore = new EmbeddedGroupStore(db);
  const realLog = new EmbeddedConversationLogStore(db);
  const seams = {
    appendGate: null as Promise<void> | null,
    appending: gate(),
    holdSaves: false,
    held: [] as (() => void)[],
    /** Run before a message's append (not a change's), once: what lands between a post's check and its append. */
    beforePost: null as (() => Promise<unknown>) | null,
    /** Run after a message's append has been answered (or refused), once. */
    afterPost: null as (() => Promise<unknown>) | null,
  };
  const store: GroupStore = Object.assign(Object.create(realStore) as GroupStore, {
    save: async (g: GroupState) => {
      if (seams.holdSaves) await new Promise<void>((resolve) => seams.held.push(resolve));
      return realStore.save(g);
    },
  });
  const log: ConversationLogStore = Object.assign(Object.create(realLog) as ConversationLogStore, {
    append: async (...args: Parameters<ConversationLogStore['append']>) => {
      const [beforePost, afterPost] = args[1].kind === 'text' ? [seams.beforePost, seams.afterPost] : [null, null];
      if (args[1].kind === 'text') seams.beforePost = seams.afterPost = null;
      if (beforePost) await beforePost();
      if (seams.appendGate) {
        seams.appending.open();
        await seams.appendGate;
      }
      const appended = realLog.append(...args);
      await appended.then(afterPost, afterPost);
      return appended;
    },
  });
  const index = new EmbeddedConversationIndexStore(db);
  const serviceWith = (maxTextLength: number) =>
    new GroupService(
      store,
      new EmbeddedGroupLocks(),
      log,
      index,
      { exists: () => Promise.resolve(true) },
      { maxMembers: 10, maxNameLength: 64, maxTextLength },
    );
  const service = serviceWith(1000);
  /** The same stores served with another text limit, as after a restart with the setting changed. */
  return { service, realStore, seams, serviceWith };
}

describe('GroupService', () => {
  it('a read during a change never saves a state from before the change over the one after it', async () => {
    const { service, realStore, seams } = setup();
    const { group } = await service.create('ann', 'c1', 'old name', ['bob']);

    // The rename has marked the state pending and is appending its event, held back.
    const release = gate();
    seams.appendGate = release.wait;
    const renamed = service.rename('ann', 'r1', group.id, 'new name');
    await seams.appending.wait;
    // Meanwhile a reader looks at the group; any save it made would be held back until after the rename has saved.
    seams.holdSaves = true;
    const listed = service.list('bob');
    await new Promise((resolve) => setImmediate(resolve));
    seams.holdSaves = false;
    release.open();
    await renamed;
    for (const resume of seams.held.splice(0)) resume();
    // The reader saw the group as it stood before or after the rename, never a mix; and it saved nothing.
    expect(['old name', 'new name']).toContain((await listed)[0]?.name);
    expect(await realStore.get(group.id)).toMatchObject({ name: 'new name', pending: null });
  });

  it('shows a change cut short between its append and its save to readers at once, and saves the repair with the next change', async () => {
    const { service, realStore } = setup();
    const { group } = await service.create('ann', 'c1', 'crew', ['bob']);
    const state = (await realStore.get(group.id))!;
    // As if the process died after appending a rename: the state still says pending, the log has the event.
    await realStore.save({ ...state, pending: 'r1' });
    await (service as unknown as { log: ConversationLogStore }).log.append(groupConv(group.id), {
      from: 'ann',
      id: 'r1',
      ts: 5,
      kind: 'event',
      event: { kind: 'renamed', oldName: 'crew', name: 'the crew' },
    });
    expect((await service.list('bob')).map((g) => g.name)).toEqual(['the crew']);
    // A reader saves nothing (it holds no lock); the next change repairs the state under the lock, then makes its own.
    expect(await realStore.get(group.id)).toMatchObject({ name: 'crew', pending: 'r1' });
    await service.add('ann', 'a1', group.id, ['cy']);
    expect(await realStore.get(group.id)).toMatchObject({ name: 'the crew', pending: null, members: [{ user: 'ann' }, { user: 'bob' }, { user: 'cy' }] });
  });

  it('counts among a message’s readers only members who could see it: not one removed then and added back since', async () => {
    const { service } = setup();
    const { group } = await service.create('ann', 'c1', 'trio', ['bob', 'dan']);
    await service.remove('ann', 'r1', group.id, ['dan']);
    const { accepted } = await service.post('ann', 'p1', group.id, 'while dan is out');
    await service.add('ann', 'a1', group.id, ['dan']);
    expect((await service.entryAt('ann', group.id, accepted.seq)).members).toEqual(['ann', 'bob']);
    const later = await service.post('ann', 'p2', group.id, 'dan is back');
    expect((await service.entryAt('ann', group.id, later.accepted.seq)).members).toEqual(['ann', 'bob', 'dan']);
  });

  it('a member added back sees their earlier time in the group in history, and not what was said while they were out', async () => {
    const { service } = setup();
    const { group } = await service.create('ann', 'c1', 'trio', ['bob']); // 1
    await service.post('bob', 'b1', group.id, 'bob before'); // 2
    await service.remove('ann', 'r1', group.id, ['bob']); // 3
    await service.post('ann', 'p1', group.id, 'while bob is out'); // 4
    await service.add('ann', 'a1', group.id, ['bob']); // 5
    await service.post('ann', 'p2', group.id, 'welcome back'); // 6
    const seen = (h: { events: { seq: number }[] }) => h.events.map((e) => e.seq);
    expect(seen(await service.history('bob', group.id, undefined, 50))).toEqual([1, 2, 3, 5, 6]);
    // Pages run across the gap: the latest `limit` entries the user may see before `before`.
    expect(seen(await service.history('bob', group.id, undefined, 3))).toEqual([3, 5, 6]);
    expect(seen(await service.history('bob', group.id, 5, 3))).toEqual([1, 2, 3]);
    expect(seen(await service.history('bob', group.id, 4, 50))).toEqual([1, 2, 3]);
    expect(seen(await service.history('ann', group.id, undefined, 50))).toEqual([1, 2, 3, 4, 5, 6]);
    // Who has read: bob counts for what he could see, also from his first time; what he was out for is not his to ask.
    expect((await service.entryAt('ann', group.id, 2)).members).toEqual(['ann', 'bob']);
    expect((await service.entryAt('ann', group.id, 4)).members).toEqual(['ann']);
    await expect(service.entryAt('bob', group.id, 4)).rejects.toMatchObject({ code: 'no_such_message' });
    expect((await service.entryAt('bob', group.id, 2)).entry).toMatchObject({ text: 'bob before' });
    // The inbox sync's view: the backlog skips the stretch he was out for.
    expect(await service.visibleRange(groupConv(group.id), 'bob')).toMatchObject({ after: 0, last: 6, hidden: [{ after: 3, upTo: 4 }] });
  });

  it('a member who joined later cannot ask who read what was said before', async () => {
    const { service } = setup();
    const { group } = await service.create('ann', 'c1', 'duo', ['bob']); // 1
    const { accepted } = await service.post('ann', 'p1', group.id, 'before cy'); // 2
    await service.add('ann', 'a1', group.id, ['cy']); // 3
    await expect(service.entryAt('cy', group.id, accepted.seq)).rejects.toMatchObject({ code: 'no_such_message' });
    // A change to the group is not a message anyone read.
    await expect(service.entryAt('ann', group.id, 3)).rejects.toMatchObject({
      code: 'no_such_message',
      message: expect.stringContaining('a change to the group'),
    });
    await expect(service.history('cy', group.id, undefined, 50)).resolves.toMatchObject({ events: [{ seq: 3 }] });
  });

  it('folds a state saved before earlier spans were kept again from the log at its first read, under the lock, once', async () => {
    const { service, realStore } = setup();
    const { group } = await service.create('ann', 'c1', 'trio', ['bob']); // 1
    await service.post('bob', 'b1', group.id, 'bob before'); // 2
    await service.remove('ann', 'r1', group.id, ['bob']); // 3
    await service.add('ann', 'a1', group.id, ['bob']); // 4
    // What the previous version saved: no `earlier`, so bob's first time in the group was forgotten.
    const { earlier: _, ...old } = (await realStore.get(group.id))!;
    await realStore.save(old);
    // Read before any change is made to the group (an upgrade's first days): bob's first time, his own message in it, is his.
    expect((await service.history('bob', group.id, undefined, 50)).events.map((e) => e.seq)).toEqual([1, 2, 3, 4]);
    expect(await realStore.get(group.id)).toMatchObject({ appliedSeq: 4, earlier: { bob: [{ joined: 1, left: 3 }] }, pending: null });
    await service.rename('ann', 'n1', group.id, 'the trio');
    expect((await service.history('bob', group.id, undefined, 50)).events.map((e) => e.seq)).toEqual([1, 2, 3, 4, 5]);
    expect(await realStore.get(group.id)).toMatchObject({ name: 'the trio', appliedSeq: 5, earlier: { bob: [{ joined: 1, left: 3 }] }, pending: null });
  });

  it('refuses a group name that looks like a group id (ids win when a group is named), and names nothing invisible', async () => {
    const { service } = setup();
    const { group } = await service.create('ann', 'c1', 'crew', ['bob']);
    await expect(service.create('bob', 'c2', group.id, [])).rejects.toMatchObject({ code: 'invalid_group_name' });
    await expect(service.rename('ann', 'r1', group.id, 'gAAAAAAAAAAAAAA')).rejects.toMatchObject({ code: 'invalid_group_name' });
    await expect(service.create('bob', 'c6', `${group.id}\u200b`, [])).rejects.toMatchObject({ code: 'invalid_group_name' });
    await expect(service.create('bob', 'c7', `${group.id}\u2800`, [])).rejects.toMatchObject({ code: 'invalid_group_name' });
    await expect(service.create('bob', 'c3', '\u200b\u2060', [])).rejects.toMatchObject({ code: 'invalid_group_name' });
    // Half of a surrogate pair: stored as U+FFFD, the group could not be found by the name it was answered with.
    await expect(service.create('bob', 'c5', 'y\udead', [])).rejects.toMatchObject({ code: 'invalid_group_name' });
    // Close to an id is a name like any other.
    expect((await service.create('bob', 'c4', 'g2024 reunion', [])).group.name).toBe('g2024 reunion');
  });

  it('answers a post retried after the text limit was lowered as the first time; a new post of that text is refused, storing nothing', async () => {
    const { service, serviceWith } = setup();
    const { group } = await service.create('ann', 'c1', 'crew', ['bob']);
    const text = 'x'.repeat(50);
    const posted = await service.post('bob', 'p1', group.id, text);
    const lowered = serviceWith(20);
    const again = await lowered.post('bob', 'p1', group.id, text);
    expect(again.accepted).toEqual(posted.accepted);
    expect(again.duplicate).toBe(true);
    await expect(lowered.post('bob', 'p2', group.id, text)).rejects.toMatchObject({ code: 'text_too_long' });
    // The same id with another text that is too long now: refused for its text, as any new post of it is.
    await expect(lowered.post('bob', 'p1', group.id, 'y'.repeat(50))).rejects.toMatchObject({ code: 'text_too_long' });
    expect((await service.history('ann', group.id, undefined, 50)).events.map((e) => e.seq)).toEqual([1, 2]);
  });

  it('answers a retried leave, delete, rename or post by name as the first time, though the name leads nowhere now', async () => {
    const { service } = setup();
    // The same answer: the group and the change (members had the change the first time).
    const same = (o: { group: unknown; event: unknown }) => ({ group: o.group, event: o.event });
    const { group } = await service.create('ann', 'c1', 'crew', ['bob', 'cy']);
    const posted = await service.post('bob', 'p1', 'crew', 'hello');
    const left = await service.leave('bob', 'l1', 'crew');
    // bob is out of crew: "crew" names none of his groups, yet his retries are the same requests, done once.
    expect(same(await service.leave('bob', 'l1', 'crew'))).toEqual(same(left));
    expect((await service.post('bob', 'p1', 'crew', 'hello')).accepted).toEqual(posted.accepted);
    await expect(service.leave('bob', 'l2', 'crew')).rejects.toMatchObject({ code: 'unknown_group' });
    const renamed = await service.rename('ann', 'r1', 'crew', 'team');
    expect(same(await service.rename('ann', 'r1', 'crew', 'team'))).toEqual(same(renamed));
    const deleted = await service.delete('ann', 'd1', 'team');
    expect(same(await service.delete('ann', 'd1', 'team'))).toEqual(same(deleted));
    await expect(service.delete('ann', 'd2', 'team')).rejects.toMatchObject({ code: 'unknown_group' });
    expect((await service.history('ann', group.id, undefined, 50)).events.map((e) => e.seq)).toEqual([1, 2, 3, 4, 5]);
  });

  it('answers a post or change retried by a name that has come to mean another group as the first time, and does not make it there', async () => {
    const { service } = setup();
    const first = await service.create('ann', 'c1', 'crew', ['bob']);
    const posted = await service.post('bob', 'p1', 'crew', 'for the first crew');
    const added = await service.add('ann', 'a1', 'crew', ['cy']);
    await service.rename('ann', 'r1', first.group.id, 'old crew');
    // "crew" now names another group of both: the retries are still the requests made in the first.
    const second = await service.create('dan', 'c2', 'crew', ['ann', 'bob']);
    const retried = await service.post('bob', 'p1', 'crew', 'for the first crew');
    expect(retried).toMatchObject({ duplicate: true, accepted: posted.accepted });
    expect(retried.deliverTo.sort()).toEqual(['ann', 'bob']);
    expect((await service.add('ann', 'a1', 'crew', ['cy'])).group.id).toBe(added.group.id);
    // Nothing of them reached the second group, nor anyone in it.
    expect((await service.history('dan', second.group.id, undefined, 50)).events.map((e) => e.type)).toEqual(['group']);
    expect((await service.info('dan', second.group.id)).members.sort()).toEqual(['ann', 'bob', 'dan']);
    // A new request by that name goes to the group it names now, and an unknown name is still unknown.
    expect((await service.post('bob', 'p2', 'crew', 'for the second crew')).accepted.conv).toBe(groupConv(second.group.id));
    await expect(service.post('bob', 'p3', 'nobody', 'lost')).rejects.toMatchObject({ code: 'unknown_group' });
    // With two groups of that name, a retry is still the request it was, not ambiguous_group (it was accepted).
    await service.rename('ann', 'r2', first.group.id, 'crew');
    expect(await service.post('bob', 'p1', 'crew', 'for the first crew')).toMatchObject({ duplicate: true, accepted: posted.accepted });
    await expect(service.post('bob', 'p4', 'crew', 'which one?')).rejects.toMatchObject({ code: 'ambiguous_group' });
    // A leave retried by its name once another group of that name is the leaver's leaves nothing else.
    const left = await service.leave('cy', 'l1', 'crew');
    const third = await service.create('dan', 'c3', 'crew', ['cy']);
    expect((await service.leave('cy', 'l1', 'crew')).group.id).toBe(left.group.id);
    expect((await service.info('cy', third.group.id)).members).toContain('cy');
  });

  it('answers a post retried after its group was deleted as the first time: it was posted, to the sender alone again', async () => {
    const { service } = setup();
    const { group } = await service.create('ann', 'c1', 'crew', ['bob']);
    const posted = await service.post('bob', 'p1', group.id, 'hello');
    const byName = await service.post('bob', 'p2', 'crew', 'hello again');
    await service.delete('ann', 'd1', group.id);
    for (const [id, ref, text, first] of [
      ['p1', group.id, 'hello', posted],
      ['p2', 'crew', 'hello again', byName],
    ] as const) {
      const retried = await service.post('bob', id, ref, text);
      expect(retried).toMatchObject({ duplicate: true, accepted: first.accepted, group: { id: group.id, name: 'crew' } });
      expect(retried.deliverTo).toEqual(['bob']);
    }
    // Anything new is still refused, and the retry of a message with another text too.
    await expect(service.post('bob', 'p3', group.id, 'anyone?')).rejects.toMatchObject({
      code: 'unknown_group',
      message: `the group crew (${group.id}) was deleted`,
    });
    await expect(service.post('bob', 'p1', group.id, 'other text')).rejects.toMatchObject({ code: 'bad_request' });
    await expect(service.post('cy', 'p1', group.id, 'hello')).rejects.toMatchObject({ code: 'unknown_group' });
  });

  it('tells one who was in a deleted group, named by its id, that it was deleted (still unknown_group); anyone else that there is no such group', async () => {
    const { service } = setup();
    const { group } = await service.create('ann', 'c1', 'crew', ['bob', 'cy', 'dan']);
    await service.leave('dan', 'l1', group.id);
    await service.rename('ann', 'r1', group.id, 'team');
    await service.delete('ann', 'd1', group.id);
    const deleted = { code: 'unknown_group', message: `the group team (${group.id}) was deleted` };
    await expect(service.post('bob', 'p1', group.id, 'anyone?')).rejects.toMatchObject(deleted);
    await expect(service.info('bob', group.id)).rejects.toMatchObject(deleted);
    await expect(service.delete('ann', 'd2', group.id)).rejects.toMatchObject(deleted);
    await expect(service.entryAt('cy', group.id, 1)).rejects.toMatchObject(deleted);
    // Dan left before the rename and the deletion: he is told he is out of the group he knew, and nothing later.
    await expect(service.info('dan', group.id)).rejects.toMatchObject({ code: 'unknown_group', message: `you are no longer a member of crew (${group.id})` });
    await expect(service.info('zed', group.id)).rejects.toMatchObject({ code: 'unknown_group', message: `you have no group "${group.id}"` });
  });

  it('answers a create retried after the group was deleted with the group marked deleted, not as a group of no one', async () => {
    const { service } = setup();
    const { group } = await service.create('ann', 'c1', 'crew', ['bob', 'cy']);
    await service.leave('cy', 'l1', group.id);
    await service.delete('ann', 'd1', group.id);
    expect((await service.create('ann', 'c1', 'crew', ['bob', 'cy'])).group).toEqual({ ...group, members: [], deleted: true });
    // cy went out before the deletion: her retry shows the group as she left it, and nothing of what came after.
    expect((await service.leave('cy', 'l1', group.id)).group).toEqual({ ...group, members: ['ann', 'bob'] });
  });

  it('refuses a group name with bidirectional controls, which would let it show as another name, and leaves the group as it was', async () => {
    const { service } = setup();
    const { group } = await service.create('ann', 'c1', 'crew', ['bob']);
    for (const [i, name] of ['team \u202eecila\u202c', 'a\u202ab', 'x\u2066y\u2069', 'tab\there'].entries()) {
      await expect(service.create('ann', `c-${i}`, name, [])).rejects.toMatchObject({ code: 'invalid_group_name' });
      await expect(service.rename('ann', `r-${i}`, group.id, name)).rejects.toMatchObject({ code: 'invalid_group_name' });
    }
    expect((await service.list('ann')).map((g) => g.name)).toEqual(['crew']);
    // Right-to-left text itself is a name like any other.
    expect((await service.rename('ann', 'r-ok', group.id, 'צוות')).group.name).toBe('צוות');
  });

  it('refuses a request whose id the actor used for another request in the group, and changes nothing, rather than take it for a retry', async () => {
    const { service } = setup();
    const { group } = await service.create('ann', 'k1', 'reuse', ['bob']);
    await expect(service.post('ann', 'k1', group.id, 'lost message')).rejects.toMatchObject({ code: 'bad_request' });
    await service.add('ann', 'k2', group.id, ['cy']);
    await expect(service.rename('ann', 'k2', group.id, 'renamed')).rejects.toMatchObject({ code: 'bad_request' });
    await service.post('ann', 'k3', group.id, 'hello');
    await expect(service.delete('ann', 'k3', group.id)).rejects.toMatchObject({ code: 'bad_request' });
    // A leave is no retry of a delete (both end in a "deleted" change; only the last member's leave makes one).
    const { group: other } = await service.create('ann', 'k4', 'other', ['bob']);
    await service.delete('ann', 'k5', other.id);
    await expect(service.leave('ann', 'k5', other.id)).rejects.toMatchObject({ code: 'bad_request' });
    // Nothing of the refused requests was stored; the retries of the first ones are answered as before.
    expect((await service.history('ann', group.id, undefined, 50)).events.map((e) => (e.type === 'message' ? e.text : e.change.kind))).toEqual([
      'created',
      'member_added',
      'hello',
    ]);
    expect((await service.info('ann', group.id)).name).toBe('reuse');
    expect((await service.add('ann', 'k2', group.id, ['cy'])).group.members).toEqual(['ann', 'bob', 'cy']);
    // A post's id is the same: its retry is answered as the first time, another text with it is refused.
    expect((await service.post('ann', 'k3', group.id, 'hello')).duplicate).toBe(true);
    await expect(service.post('ann', 'k3', group.id, 'hello all')).rejects.toMatchObject({ code: 'bad_request', message: expect.stringContaining('(#3)') });
    expect((await service.history('ann', group.id, undefined, 50)).events).toHaveLength(3);
  });

  it('keeps the id of a request that changed nothing: its retry gets the same answer, another request with that id is refused, members see nothing', async () => {
    const { service } = setup();
    const { group } = await service.create('ann', 'n0', 'same', ['bob']);
    const kinds = async () => (await service.history('bob', group.id, undefined, 50)).events.map((e) => (e.type === 'message' ? e.text : e.change.kind));
    // A rename to the name it has, adding a member, handing the group to its owner: each answered, none stored as a change.
    for (const [id, noop] of [
      ['n1', () => service.rename('ann', 'n1', group.id, 'same')],
      ['n2', () => service.add('ann', 'n2', group.id, ['bob'])],
      ['n3', () => service.handOver('ann', 'n3', group.id, 'ann')],
    ] as const) {
      expect(await noop(), id).toEqual({ group: expect.objectContaining({ name: 'same', owner: 'ann', members: ['ann', 'bob'] }), event: null, deliverTo: [] });
    }
    expect(await kinds()).toEqual(['created']);

    // Another request with a used id is refused, as one with the id of a stored change is, and stores nothing.
    await expect(service.rename('ann', 'n2', group.id, 'other')).rejects.toMatchObject({ code: 'bad_request' });
    await expect(service.add('ann', 'n1', group.id, ['cy'])).rejects.toMatchObject({ code: 'bad_request' });
    await expect(service.handOver('ann', 'n1', group.id, 'bob')).rejects.toMatchObject({ code: 'bad_request' });
    await expect(service.remove('ann', 'n3', group.id, ['bob'])).rejects.toMatchObject({ code: 'bad_request' });
    await expect(service.post('ann', 'n1', group.id, 'hello')).rejects.toMatchObject({ code: 'bad_request' });
    await expect(service.delete('ann', 'n2', group.id)).rejects.toMatchObject({ code: 'bad_request' });
    expect(await kinds()).toEqual(['created']);
    expect(await service.info('ann', group.id)).toMatchObject({ name: 'same', owner: 'ann', members: ['ann', 'bob'] });

    // A retry, after real changes by other ids, and by the name it had then: answered as the first time, nothing done
    // (the rename back, the add, the handover are not made now: they were not made then).
    await service.rename('ann', 'r1', group.id, 'other');
    await service.add('ann', 'r2', group.id, ['cy']);
    await service.remove('ann', 'r3', group.id, ['bob']);
    const now = { name: 'other', owner: 'ann', members: ['ann', 'cy'] };
    expect(await service.rename('ann', 'n1', 'same', 'same')).toEqual({ group: expect.objectContaining(now), event: null, deliverTo: [] });
    expect(await service.add('ann', 'n2', group.id, ['bob'])).toEqual({ group: expect.objectContaining(now), event: null, deliverTo: [] });
    expect(await service.handOver('ann', 'n3', group.id, 'ann')).toEqual({ group: expect.objectContaining(now), event: null, deliverTo: [] });
    expect(await kinds()).toEqual(['created', 'renamed', 'member_added', 'member_removed']);
  });

  it(`keeps the ids of a group's last ${MAX_NOOP_REQUESTS} requests that changed nothing, and forgets older ones`, async () => {
    const { service, realStore } = setup();
    const { group } = await service.create('ann', 'm0', 'kept', ['bob']);
    for (let i = 0; i <= MAX_NOOP_REQUESTS; i++) await service.rename('ann', `m${i + 1}`, group.id, 'kept');
    expect((await realStore.get(group.id))?.noops).toHaveLength(MAX_NOOP_REQUESTS);
    // The oldest is forgotten: its id is free again. The newest is still refused for another request.
    await expect(service.add('ann', `m${MAX_NOOP_REQUESTS + 1}`, group.id, ['cy'])).rejects.toMatchObject({ code: 'bad_request' });
    expect((await service.add('ann', 'm1', group.id, ['cy'])).event).not.toBeNull();
  });

  it('lists a user\u2019s groups by name, as a person looks for one (case aside, numbers as numbers), then oldest first', async () => {
    const { service } = setup();
    for (const [i, name] of ['team 10', 'Lunch', 'team 9', 'book club', 'apples'].entries()) await service.create('ann', `c${i}`, name, []);
    expect((await service.list('ann')).map((g) => g.name)).toEqual(['apples', 'book club', 'Lunch', 'team 9', 'team 10']);
  });

  it('names, among who was in a group, those who left with when they went, for what they had; a later member is not told of them', async () => {
    const { service } = setup();
    const { group } = await service.create('ann', 'c1', 'crew', ['bob', 'cy']); // 1
    const { accepted } = await service.post('ann', 'p1', group.id, 'before anyone left'); // 2
    await service.leave('cy', 'l1', group.id); // 3
    await service.remove('ann', 'r1', group.id, ['bob']); // 4
    await service.add('ann', 'a1', group.id, ['dan']); // 5
    const conv = groupConv(group.id);
    expect(await service.membersOf(conv, 'ann')).toEqual([
      { user: 'ann', joined: 1 },
      { user: 'dan', joined: 5 },
      { user: 'cy', joined: 1, left: 3 },
      { user: 'bob', joined: 1, left: 4 },
    ]);
    // Dan was never in the group with them.
    expect(await service.membersOf(conv, 'dan')).toEqual([
      { user: 'ann', joined: 1 },
      { user: 'dan', joined: 5 },
    ]);
    // Who could have read ann's message: those who were in the group when it was said, gone since or not.
    expect((await service.entryAt('ann', group.id, accepted.seq)).members).toEqual(['ann', 'cy', 'bob']);
    // Deleted, the group still knows who was in it.
    await service.delete('ann', 'd1', group.id); // 6
    expect(await service.membersOf(conv, 'ann')).toEqual([
      { user: 'cy', joined: 1, left: 3 },
      { user: 'bob', joined: 1, left: 4 },
      { user: 'ann', joined: 1, left: 6 },
      { user: 'dan', joined: 5, left: 6 },
    ]);
  });

  it('sends a post to those in the group at its seq, though a change landed between its check of the members and its append', async () => {
    const { service, seams } = setup();
    const { group } = await service.create('ann', 'c1', 'crew', ['bob', 'cy']); // 1
    seams.beforePost = () => service.remove('ann', 'r1', group.id, ['cy']); // 2
    const first = await service.post('bob', 'p1', group.id, 'cy was in when I pressed send');
    expect(first.accepted.seq).toBe(3);
    expect(first.deliverTo.sort()).toEqual(['ann', 'bob']);
    seams.beforePost = () => service.add('ann', 'a1', group.id, ['dan']); // 4
    const second = await service.post('bob', 'p2', group.id, 'dan came in just before');
    expect(second.deliverTo.sort()).toEqual(['ann', 'bob', 'dan']);
    // A retry of the first, after dan came in: to those who were in the group at #3, neither cy (out at #2) nor dan (in at #4).
    const retried = await service.post('bob', 'p1', group.id, 'cy was in when I pressed send');
    expect(retried).toMatchObject({ duplicate: true, accepted: { seq: 3 } });
    expect(retried.deliverTo.sort()).toEqual(['ann', 'bob']);
    await service.rename('ann', 'n1', group.id, 'renamed'); // 6
    await service.remove('ann', 'r2', group.id, ['bob']); // 7
    await service.rename('ann', 'n2', group.id, 'renamed after bob left'); // 8
    // bob, out now, retries his second: his answer and its event name the group as he knew it, and only he is sent it
    // again (those in the group have it; one who is out learns no later name from it).
    const late = await service.post('bob', 'p2', group.id, 'dan came in just before');
    expect(late.group.name).toBe('renamed');
    expect(late.message.group?.name).toBe('renamed');
    expect(late.deliverTo).toEqual(['bob']);
    // ann's retry of that post goes again to those who had it and are in the group still, not to bob.
    const annPost = await service.post('ann', 'q1', group.id, 'to those in the group');
    await service.remove('ann', 'r3', group.id, ['dan']);
    const annAgain = await service.post('ann', 'q1', group.id, 'to those in the group');
    expect(annAgain).toMatchObject({ duplicate: true, accepted: annPost.accepted });
    expect(annAgain.deliverTo).toEqual(['ann']);
  });

  it('refuses a post whose sender was removed between its check of the members and its append, and stores nothing', async () => {
    const { service, seams } = setup();
    const { group } = await service.create('ann', 'c1', 'crew', ['bob', 'cy']); // 1
    const conv = groupConv(group.id);
    seams.beforePost = () => service.remove('ann', 'r1', group.id, ['bob']); // 2
    await expect(service.post('bob', 'p1', group.id, 'pressed send just before I was removed')).rejects.toMatchObject({
      code: 'not_member',
      message: 'you are no longer a member of crew',
    });
    expect((await service.history('ann', group.id, undefined, 10)).events.map((e) => e.seq)).toEqual([1, 2]);
    // Removed and added back before the append: a member when it is stored, so it is stored.
    seams.beforePost = async () => {
      await service.remove('ann', 'r2', group.id, ['cy']); // 3
      await service.add('ann', 'a2', group.id, ['cy']); // 4
    };
    const back = await service.post('cy', 'p2', group.id, 'sent while I was being added back');
    expect(back).toMatchObject({ duplicate: false, accepted: { conv, seq: 5 } });
    expect(back.deliverTo.sort()).toEqual(['ann', 'cy']);
    // Removed before the append, and added back before the refusal is told: refused, and told why.
    seams.beforePost = () => service.remove('ann', 'r3', group.id, ['cy']); // 6
    seams.afterPost = () => service.add('ann', 'a3', group.id, ['cy']); // 7
    await expect(service.post('cy', 'p3', group.id, 'on its way while I was out')).rejects.toMatchObject({
      code: 'not_member',
      message: 'you were out of crew when this message reached it; send it again',
    });
    // Sent again, it is stored.
    expect((await service.post('cy', 'p3', group.id, 'on its way while I was out')).accepted.seq).toBe(8);
  });

  it('answers the retry of a change by one who is out of the group now with the group as it stood when they went out', async () => {
    const { service } = setup();
    const { group } = await service.create('ann', 'c1', 'crew', ['bob', 'cy']); // 1
    expect((await service.rename('ann', 'same', group.id, 'crew')).event).toBeNull(); // changed nothing
    await service.add('ann', 'a1', group.id, ['eve']); // 2
    await service.handOver('ann', 'o1', group.id, 'bob'); // 3
    await service.remove('bob', 'r1', group.id, ['ann']); // 4
    await service.rename('bob', 'n1', group.id, 'secret plans'); // 5
    await service.add('bob', 'a2', group.id, ['dan']); // 6
    await service.handOver('bob', 'o2', group.id, 'cy'); // 7
    const asLeft = { id: group.id, name: 'crew', owner: 'bob', members: ['bob', 'cy', 'eve'] };
    for (const retry of [
      () => service.rename('ann', 'same', group.id, 'crew'),
      () => service.add('ann', 'a1', group.id, ['eve']),
      () => service.handOver('ann', 'o1', group.id, 'bob'),
    ]) {
      const answer = await retry();
      expect(answer.group).toMatchObject(asLeft);
      if (answer.event) {
        expect(answer.event.group?.name).toBe('crew');
        expect(answer.deliverTo).toEqual(['ann']);
      }
    }
    // A member's retry of a change goes again to those who had it and are in the group still.
    await service.remove('cy', 'r2', group.id, ['eve']); // 8
    const again = await service.rename('bob', 'n1', group.id, 'secret plans');
    expect(again.group).toMatchObject({ name: 'secret plans', owner: 'cy', members: ['bob', 'cy', 'dan'] });
    expect(again.deliverTo.sort()).toEqual(['bob', 'cy']);
  });

  it('tells one who is out of a group of it as it stood when they went out: not its later name, members or changes', async () => {
    const { service } = setup();
    const { group } = await service.create('ann', 'c1', 'crew', ['bob', 'cy', 'eve']); // 1
    await service.leave('eve', 'l1', group.id); // 2
    await service.remove('ann', 'r1', group.id, ['cy']); // 3
    await service.rename('ann', 'n1', group.id, 'renamed after cy left'); // 4
    await service.add('ann', 'a1', group.id, ['dan']); // 5
    await service.remove('ann', 'r2', group.id, ['bob']); // 6
    const conv = groupConv(group.id);
    // Bob, removed after cy, is still a member as far as cy knows; dan came later; eve went before, while cy was in.
    expect(await service.membersOf(conv, 'cy')).toEqual([
      { user: 'ann', joined: 1, upTo: 3 },
      { user: 'eve', joined: 1, left: 2, upTo: 3 },
      { user: 'cy', joined: 1, left: 3, upTo: 3 },
      { user: 'bob', joined: 1, upTo: 3 },
    ]);
    expect((await service.visibleRange(conv, 'cy'))?.group).toEqual({ id: group.id, name: 'crew' });
    await expect(service.info('cy', group.id)).rejects.toMatchObject({ code: 'not_member', message: 'you are no longer a member of crew' });
    // A change asked for by one who was in the group says so too (leaving again, renaming); to a stranger there is no group.
    await expect(service.leave('cy', 'l9', group.id)).rejects.toMatchObject({ code: 'not_member', message: 'you are no longer a member of crew' });
    await expect(service.rename('cy', 'n9', group.id, 'mine now')).rejects.toMatchObject({ code: 'not_member' });
    await expect(service.leave('zed', 'l9', group.id)).rejects.toMatchObject({ code: 'unknown_group' });
    // Bob went out after the rename: he knows the new name, and dan.
    expect((await service.visibleRange(conv, 'bob'))?.group).toEqual({ id: group.id, name: 'renamed after cy left' });
    expect((await service.membersOf(conv, 'bob'))?.map((m) => m.user)).toEqual(['ann', 'dan', 'eve', 'cy', 'bob']);
  });

  it('takes a group name however it is spelled in Unicode: stored composed, found by either spelling', async () => {
    const { service } = setup();
    const { group } = await service.create('ann', 'c1', 'Cafe\u0301 crew', ['bob']);
    expect(group.name).toBe('Caf\u00e9 crew');
    expect(await service.resolve('bob', 'Caf\u00e9 crew')).toBe(group.id);
    expect(await service.resolve('bob', 'Cafe\u0301 crew')).toBe(group.id);
  });

  it('finds a name as it looks: one that differs only by what shows as nothing is the same name, and two such are ambiguous', async () => {
    const { service } = setup();
    const { group: real } = await service.create('ann', 'c1', 'crew', ['bob']);
    const { group: real2 } = await service.create('ann', 'c3', 'the crew', ['bob']);
    // Zero-width space, soft hyphen, word joiner, Hangul filler: each shows as "crew"; a no-break space or two spaces as one.
    const lookalikes = ['crew\u200b', '\u200bcrew', 'cr\u00adew', 'crew\u2060', 'crew\u3164', 'crew\u2800', 'the\u00a0crew', 'the  crew'];
    for (const [i, name] of lookalikes.entries()) {
      const { group: fake } = await service.create('eve', `f${i}`, name, ['bob']);
      // Eve, in the lookalike only, finds it by the name it shows; bob, in both, cannot have one pass for the other.
      const [shown, genuine] = name.includes('the') ? ['the crew', real2] : ['crew', real];
      expect(await service.resolve('eve', shown)).toBe(fake.id);
      await expect(service.resolve('bob', shown)).rejects.toMatchObject({ code: 'ambiguous_group' });
      await expect(service.resolve('bob', name)).rejects.toMatchObject({ code: 'ambiguous_group' });
      await service.delete('eve', `d${i}`, fake.id);
      expect(await service.resolve('bob', shown)).toBe(genuine.id);
    }
    // Letters of another script drawn as Latin ones (Cyrillic с and е, Greek lunate sigma), and full-width ones, are the Latin letters.
    for (const [i, name] of ['\u0441r\u0435w', 'cr\u0435w', 'the \u03f2rew', '\uff43\uff52\uff45\uff57'].entries()) {
      const { group: fake } = await service.create('eve', `s${i}`, name, ['bob']);
      const shown = name.startsWith('the') ? 'the crew' : 'crew';
      expect(await service.resolve('eve', shown)).toBe(fake.id);
      await expect(service.resolve('bob', shown)).rejects.toMatchObject({ code: 'ambiguous_group' });
      await service.delete('eve', `sd${i}`, fake.id);
    }
    // A name in another script with a letter drawn as no Latin one is a name of its own, even where its other letters
    // look Latin: Сад (Cyrillic) is not "Cag", and a Cyrillic name is found by what was typed.
    const { group: garden } = await service.create('ann', 'c4', '\u0421\u0430\u0434', ['bob']);
    expect(await service.resolve('bob', '\u0421\u0430\u0434')).toBe(garden.id);
    await expect(service.resolve('bob', 'Cag')).rejects.toMatchObject({ code: 'unknown_group' });
    // One whose every letter is drawn as a Latin one cannot be told from that Latin name, whatever its script: сор
    // (Cyrillic) is "cop".
    const { group: cop } = await service.create('ann', 'c5', '\u0441\u043e\u0440', ['bob']);
    expect(await service.resolve('bob', 'cop')).toBe(cop.id);
    // A joiner that makes an emoji sequence is kept in the name, which stays found by what was typed.
    const { group: family } = await service.create('ann', 'c2', '\u{1F468}\u200d\u{1F469}\u200d\u{1F467}', []);
    expect(family.name).toBe('\u{1F468}\u200d\u{1F469}\u200d\u{1F467}');
    expect(await service.resolve('ann', family.name)).toBe(family.id);
  });
});
