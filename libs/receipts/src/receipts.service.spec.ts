import { describe, expect, it } from 'vitest';
import { tempDatabases } from '../../../test/support/temp-databases.js';
import { EmbeddedCursorStore } from './embedded/embedded-cursor.store.js';
import { EmbeddedDeviceCursorStore } from './embedded/embedded-device-cursor.store.js';
import { DEVICE_IDLE_MS, ReceiptsService, type ConversationDirectory } from './receipts.service.js';

const freshDatabase = tempDatabases('parley-receipts-unit-');

/**
 * A group `g:1` of ann, bob and cy with 5 messages (by ann, bob, cy, bob, bob); `dan` left it after message 3, cy joined
 * at 2; fay joined at 1, was out of it for 2 and 3, and is back since 4. `dm:bob:cy` is empty; there is no user zed.
 */
function setup() {
  const db = freshDatabase();
  const clock = { now: 1_000 };
  const members = ['ann', 'bob', 'cy'];
  const lookups = { views: 0 };
  const authors = ['ann', 'bob', 'cy', 'bob', 'bob'];
  const directory: ConversationDirectory = {
    // As the group service tells one who is out of the group (dan) of it: as it stood when they went out.
    membersOf: (conv, viewer) =>
      Promise.resolve(
        conv !== 'g:1'
          ? null
          : viewer === 'dan'
            ? [...members, 'dan'].map((user) => ({ user, joined: user === 'cy' ? 2 : 1, ...(user === 'dan' ? { left: 3 } : {}), upTo: 3 }))
            : members.map((user) => ({ user, joined: user === 'cy' ? 2 : 1 })),
      ),
    viewOf: (conv, user) => {
      lookups.views++;
      if (conv === 'dm:bob:cy' || conv === 'dm:bob:zed') return Promise.resolve({ after: 0, last: 0, hidden: [], members: conv.slice(3).split(':') });
      if (conv !== 'g:1') return Promise.resolve(null);
      if (user === 'fay') return Promise.resolve({ after: 0, last: 5, hidden: [{ after: 1, upTo: 3 }], members: [...members, 'fay'] });
      if (members.includes(user)) return Promise.resolve({ after: user === 'cy' ? 1 : 0, last: 5, hidden: [], members: [...members] });
      return Promise.resolve(user === 'dan' ? { after: 0, last: 3, hidden: [], members: [...members] } : null);
    },
    userExists: (user) => Promise.resolve(user !== 'zed'),
    othersWroteIn: (_conv, user, after, upTo) => Promise.resolve(authors.slice(after, upTo).some((a) => a !== user)),
  };
  const devices = { store: new EmbeddedDeviceCursorStore(db), keepPerUser: 50 };
  // Another instance of the service on the same store (distributed mode runs several).
  const another = () => new ReceiptsService(new EmbeddedCursorStore(db), directory, () => clock.now, devices);
  return { service: another(), another, clock, lookups };
}

describe('ReceiptsService', () => {
  it('announces a move to the other members, and a read to the reader’s own devices too, with the time it moved, after one look at the conversation', async () => {
    const { service, lookups } = setup();
    const outcome = await service.record({ user: 'bob', conv: 'g:1', seq: 4, status: 'read' });
    expect(outcome.result).toMatchObject({ moved: true, cursors: { read: 4, readAt: 1_000, delivered: 4 } });
    expect(outcome.notify).toEqual({ to: ['ann', 'bob', 'cy'], event: { type: 'receipt', conv: 'g:1', user: 'bob', status: 'read', seq: 4, ts: 1_000 } });
    expect(lookups.views).toBe(1);
    // That a message reached one of cy's devices is nothing to cy's others.
    expect((await service.record({ user: 'cy', conv: 'g:1', seq: 4, status: 'delivered' })).notify?.to).toEqual(['ann', 'bob']);
  });

  it('announces a retry of the receipt that moved the cursor again, with the time of the move, not of the retry', async () => {
    const { service, clock } = setup();
    await service.record({ user: 'bob', conv: 'g:1', seq: 4, status: 'read' });
    clock.now = 9_000;
    const retry = await service.record({ user: 'bob', conv: 'g:1', seq: 4, status: 'read' });
    expect(retry.result.moved).toBe(false);
    expect(retry.notify?.event).toMatchObject({ seq: 4, ts: 1_000 });
    // A receipt behind the cursor is news to no one.
    expect((await service.record({ user: 'bob', conv: 'g:1', seq: 2, status: 'read' })).notify).toBeNull();
  });

  it('announces a receipt at the cursor from another request (a second clean-session device) only when it cannot tell', async () => {
    const { service } = setup();
    const laptop = await service.record({ user: 'bob', conv: 'g:1', seq: 3, status: 'delivered', requestId: 'laptop-1' });
    expect(laptop.notify?.event).toMatchObject({ status: 'delivered', seq: 3 });
    // The phone acknowledges the same message with a request of its own: it moved nothing, and the laptop's was told.
    expect((await service.record({ user: 'bob', conv: 'g:1', seq: 3, status: 'delivered', requestId: 'phone-1' })).notify).toBeNull();
    // The laptop's own retry is announced again, as its answer may have been lost; and one without an id, unknown.
    expect((await service.record({ user: 'bob', conv: 'g:1', seq: 3, status: 'delivered', requestId: 'laptop-1' })).notify).not.toBeNull();
    expect((await service.record({ user: 'bob', conv: 'g:1', seq: 3, status: 'delivered' })).notify).not.toBeNull();
    // A move not remembered (made before a restart): any receipt at the cursor may be its retry, and is announced.
    const { service: restarted } = setup();
    await restarted.record({ user: 'bob', conv: 'g:1', seq: 3, status: 'delivered' });
    expect((await restarted.record({ user: 'bob', conv: 'g:1', seq: 3, status: 'delivered', requestId: 'phone-2' })).notify).not.toBeNull();
  });

  it('announces a retry of a move another instance made, though this one remembers the mover of an earlier seq', async () => {
    const { service: a, another } = setup();
    const b = another();
    await a.record({ user: 'bob', conv: 'g:1', seq: 3, status: 'delivered', requestId: 'laptop-1' });
    // Instance b moves bob's cursor on; its answer is lost, and the retry is taken by instance a.
    await b.record({ user: 'bob', conv: 'g:1', seq: 5, status: 'delivered', requestId: 'laptop-2' });
    const retry = await a.record({ user: 'bob', conv: 'g:1', seq: 5, status: 'delivered', requestId: 'laptop-2' });
    expect(retry.notify?.event).toMatchObject({ status: 'delivered', seq: 5 });
  });

  it('does not announce a delivered receipt at a cursor a read already passed: the others would see it after the read', async () => {
    const { service } = setup();
    // Bob's phone reads #4 (which moves his delivered cursor to #4 too, announced as the read).
    expect((await service.record({ user: 'bob', conv: 'g:1', seq: 4, status: 'read' })).notify?.event).toMatchObject({ status: 'read', seq: 4 });
    // His laptop, a clean session that showed #4 meanwhile, acknowledges it as delivered: news to no one.
    const late = await service.record({ user: 'bob', conv: 'g:1', seq: 4, status: 'delivered' });
    expect(late.result).toMatchObject({ moved: false, cursors: { delivered: 4, read: 4 } });
    expect(late.notify).toBeNull();
    // Likewise a retry of a delivered receipt that moved the cursor, once a read has passed it.
    await service.record({ user: 'cy', conv: 'g:1', seq: 5, status: 'delivered' });
    await service.record({ user: 'cy', conv: 'g:1', seq: 5, status: 'read' });
    expect((await service.record({ user: 'cy', conv: 'g:1', seq: 5, status: 'delivered' })).notify).toBeNull();
  });

  it('tells no one of a move past only the mover’s own messages', async () => {
    const { service } = setup();
    await service.record({ user: 'bob', conv: 'g:1', seq: 3, status: 'read' });
    // #4 and #5 are bob's own: his client acknowledges them as it shows them, which is news to no one.
    const own = await service.record({ user: 'bob', conv: 'g:1', seq: 5, status: 'read' });
    expect(own).toMatchObject({ result: { moved: true, cursors: { read: 5 } }, notify: null });
    // cy's move past bob's messages is news to bob and ann.
    expect((await service.record({ user: 'cy', conv: 'g:1', seq: 5, status: 'delivered' })).notify?.to).toEqual(['ann', 'bob']);
  });

  it('does not announce a repeated receipt of a move past only the user’s own messages, which was never announced', async () => {
    const { service } = setup();
    // ann wrote only #1: her receipt for it moves past her own message, and tells no one; so does its repetition.
    expect((await service.record({ user: 'ann', conv: 'g:1', seq: 1, status: 'read' })).notify).toBeNull();
    expect((await service.record({ user: 'ann', conv: 'g:1', seq: 1, status: 'read' })).notify).toBeNull();
  });

  it('lets a former member move its cursors up to what it could see, and tells no one', async () => {
    const { service } = setup();
    const outcome = await service.record({ user: 'dan', conv: 'g:1', seq: 3, status: 'delivered' });
    expect(outcome).toMatchObject({ result: { moved: true, cursors: { delivered: 3 } }, notify: null });
    await expect(service.record({ user: 'dan', conv: 'g:1', seq: 4, status: 'delivered' })).rejects.toMatchObject({ code: 'no_such_message' });
    await expect(service.record({ user: 'eve', conv: 'g:1', seq: 1, status: 'read' })).rejects.toMatchObject({ code: 'not_member' });
  });

  it('names a direct conversation back as it is when a receipt names it with its two names out of order, and changes nothing', async () => {
    const { service } = setup();
    await expect(service.record({ user: 'bob', conv: 'dm:bob:ann', seq: 1, status: 'read' })).rejects.toMatchObject({
      code: 'not_member',
      message: 'there is no conversation dm:bob:ann: yours with ann is dm:ann:bob',
    });
    // Someone else's, or one with a name no user can have, is simply not the user's.
    for (const conv of ['dm:ann:cy', 'dm:bob:Ann'])
      await expect(service.record({ user: 'bob', conv, seq: 1, status: 'read' })).rejects.toMatchObject({ message: `you are not a member of ${conv}` });
    // A name of no conversation at all is not one the user could be in: the answer says there is none.
    await expect(service.record({ user: 'bob', conv: 'bogus', seq: 1, status: 'read' })).rejects.toMatchObject({
      code: 'not_member',
      message: 'there is no conversation bogus',
    });
    expect(await service.cursorsOf('dm:ann:bob', 'bob')).toMatchObject({ delivered: 0, read: 0 });
  });

  it('says there is no such user for a direct conversation with a name no one has, and that a real but empty one has no messages yet', async () => {
    const { service } = setup();
    await expect(service.record({ user: 'bob', conv: 'dm:bob:zed', seq: 1, status: 'read' })).rejects.toMatchObject({
      code: 'unknown_user',
      message: 'there is no user "zed"',
    });
    await expect(service.record({ user: 'bob', conv: 'dm:bob:cy', seq: 1, status: 'read' })).rejects.toMatchObject({
      code: 'no_such_message',
      message: 'dm:bob:cy has no message 1 you can see (the last is 0)',
    });
  });

  it('refuses a receipt for a seq said before the user joined the group, or while it was out of it, and tells no one of it', async () => {
    const { service } = setup();
    // cy joined at 2: #1 was never cy's, and "cy read up to #1" would tell the others it had it.
    await expect(service.record({ user: 'cy', conv: 'g:1', seq: 1, status: 'read' })).rejects.toMatchObject({
      code: 'no_such_message',
      message: 'g:1 has no message 1 you can see: it is from before you joined (your first is 2)',
    });
    // fay was out of the group for #2 and #3.
    for (const seq of [2, 3])
      await expect(service.record({ user: 'fay', conv: 'g:1', seq, status: 'delivered' })).rejects.toMatchObject({
        code: 'no_such_message',
        message: `g:1 has no message ${seq} you can see: it is from while you were out of the group (#2 to #3)`,
      });
    expect(await service.cursorsOf('g:1', 'cy')).toMatchObject({ delivered: 0, read: 0 });
    expect(await service.cursorsOf('g:1', 'fay')).toMatchObject({ delivered: 0, read: 0 });
    // Up to a seq of theirs is theirs, whatever came before it: fay's #1, and #4 past the stretch she was out for.
    expect((await service.record({ user: 'fay', conv: 'g:1', seq: 1, status: 'delivered' })).result.moved).toBe(true);
    expect((await service.record({ user: 'fay', conv: 'g:1', seq: 4, status: 'delivered' })).notify?.event).toMatchObject({ user: 'fay', seq: 4 });
    expect((await service.record({ user: 'cy', conv: 'g:1', seq: 2, status: 'read' })).notify?.event).toMatchObject({ user: 'cy', seq: 2 });
  });

  it('gives the other members\u2019 cursors with the seq each joined at, so a client counts a member only for what it could have', async () => {
    const { service, clock } = setup();
    await service.record({ user: 'cy', conv: 'g:1', seq: 5, status: 'delivered' });
    expect(await service.peersOf('g:1', 'ann')).toEqual({
      bob: { delivered: 0, deliveredAt: null, read: 0, readAt: null, joined: 1 },
      cy: { delivered: 5, deliveredAt: clock.now, read: 0, readAt: null, joined: 2 },
    });
  });

  it('gives one who is out of the group the others’ cursors only as far as they could see, with when each got that far', async () => {
    const { service, clock } = setup();
    await service.record({ user: 'cy', conv: 'g:1', seq: 2, status: 'delivered' });
    clock.now = 2_000;
    await service.record({ user: 'cy', conv: 'g:1', seq: 5, status: 'delivered' });
    await service.record({ user: 'bob', conv: 'g:1', seq: 5, status: 'read' });
    expect(await service.peersOf('g:1', 'dan')).toEqual({
      ann: { delivered: 0, deliveredAt: null, read: 0, readAt: null, joined: 1 },
      bob: { delivered: 3, deliveredAt: 2_000, read: 3, readAt: 2_000, joined: 1 },
      cy: { delivered: 3, deliveredAt: 2_000, read: 0, readAt: null, joined: 2 },
    });
  });

  it('brings a device that keeps a session up to date from its own positions, and one unknown or long unused from the user’s', async () => {
    const { service, clock } = setup();
    await service.record({ user: 'bob', conv: 'g:1', seq: 2, status: 'delivered' });
    // Unknown: it starts where the user stands, and is known from then on.
    expect(await service.deviceStart('bob', 'bob/laptop', ['g:1'])).toEqual({ 'g:1': 2 });
    // Its receipts move its own position as well as the user's; another device's move only the user's.
    await service.record({ user: 'bob', conv: 'g:1', seq: 3, status: 'delivered', device: 'bob/laptop' });
    await service.record({ user: 'bob', conv: 'g:1', seq: 5, status: 'read' });
    expect((await service.cursorsOf('g:1', 'bob')).delivered).toBe(5);
    // Back, it starts at its own 3; in a conversation new to it, from the start.
    expect(await service.deviceStart('bob', 'bob/laptop', ['g:1', 'dm:bob:cy'])).toEqual({ 'g:1': 3, 'dm:bob:cy': 0 });
    // Unused for longer than devices are kept: it starts over from the user's positions.
    clock.now += DEVICE_IDLE_MS + 1;
    expect(await service.deviceStart('bob', 'bob/laptop', ['g:1'])).toEqual({ 'g:1': 5 });
  });

  it('does not announce again a receipt by which a device only caught up with what another device acknowledged', async () => {
    const { service } = setup();
    await service.deviceStart('bob', 'bob/laptop', ['g:1']);
    // The phone's receipt moves Bob's cursor to 3 and is announced.
    expect((await service.record({ user: 'bob', conv: 'g:1', seq: 3, status: 'delivered' })).notify).not.toBeNull();
    // The laptop, catching up, acknowledges the same 3: its own position moves, Bob's cursor does not; no news.
    const caughtUp = await service.record({ user: 'bob', conv: 'g:1', seq: 3, status: 'delivered', device: 'bob/laptop' });
    expect(caughtUp.result.moved).toBe(false);
    expect(caughtUp.notify).toBeNull();
    // The laptop's own retry of it, its answer lost: announced again, as any retry of the receipt that set the cursor.
    expect((await service.record({ user: 'bob', conv: 'g:1', seq: 3, status: 'delivered', device: 'bob/laptop' })).notify).not.toBeNull();
  });
});
