import { describe, expect, it } from 'vitest';
import { directConversationId } from '#libs/protocol';
import { tempDatabases } from '../../../test/support/temp-databases.js';
import type { ConversationIndexStore } from './conversation-index.store.js';
import type { ConversationLogStore } from './conversation-log.store.js';
import { EmbeddedConversationIndexStore } from './embedded/embedded-conversation-index.store.js';
import { EmbeddedConversationLogStore } from './embedded/embedded-conversation-log.store.js';
import { MessagingService } from './messaging.service.js';

const freshDatabase = tempDatabases('parley-messaging-unit-');

/**
 * A messaging service on the real embedded stores, with an index that can lose its entries and move to a new
 * generation, as a Redis restarted without persistence does (the process sees a reconnect), and an append that can be
 * held back.
 */
function setup(knownPairs?: number) {
  const db = freshDatabase();
  const realIndex = new EmbeddedConversationIndexStore(db);
  const realLog = new EmbeddedConversationLogStore(db);
  const entries = db.open<true, [string, string]>('conv-index');
  let generation = 0;
  let holdAppend: Promise<void> | null = null;
  let appending: () => void = () => undefined;
  /** Every index write, `user conv`: a pair taken as indexed is not written. */
  const added: string[] = [];
  const index: ConversationIndexStore = Object.assign(Object.create(realIndex) as ConversationIndexStore, {
    generation: () => generation,
    add: (user: string, c: string) => (added.push(`${user} ${c}`), realIndex.add(user, c)),
  });
  const log: ConversationLogStore = Object.assign(Object.create(realLog) as ConversationLogStore, {
    append: async (...args: Parameters<ConversationLogStore['append']>) => {
      if (holdAppend) {
        appending();
        await holdAppend;
      }
      return realLog.append(...args);
    },
  });
  const service = new MessagingService(log, index, { exists: () => Promise.resolve(true) }, { maxTextLength: 100 }, Date.now, knownPairs);
  /** The index loses everything it held, and the process learns of a new generation (a reconnect). */
  const loseIndex = async () => {
    for (const key of entries.getKeys()) await entries.remove(key);
    generation++;
  };
  const hold = () => {
    let release!: () => void;
    holdAppend = new Promise<void>((resolve) => (release = resolve));
    const started = new Promise<void>((resolve) => (appending = resolve));
    return { started, release: () => ((holdAppend = null), release()) };
  };
  return { service, index, loseIndex, hold, added };
}

describe('MessagingService', () => {
  const conv = directConversationId('ann', 'bob');

  it('answers a retry as the first time, and refuses an id used for another text, storing and delivering nothing', async () => {
    const { service } = setup();
    const first = await service.send({ from: 'ann', id: 'm1', to: 'bob', text: 'lunch at noon?' });
    expect(await service.send({ from: 'ann', id: 'm1', to: 'bob', text: 'lunch at noon?' })).toEqual({ ...first, duplicate: true });
    // Both at once, before the first is durable: the second is still refused.
    const [again, other] = await Promise.allSettled([
      service.send({ from: 'ann', id: 'm2', to: 'bob', text: 'see you' }),
      service.send({ from: 'ann', id: 'm2', to: 'bob', text: 'see you there' }),
    ]);
    expect(again).toMatchObject({ status: 'fulfilled', value: { accepted: { seq: 2 } } });
    expect(other).toMatchObject({ status: 'rejected', reason: { code: 'bad_request' } });
    await expect(service.send({ from: 'ann', id: 'm1', to: 'bob', text: 'lunch at one?' })).rejects.toMatchObject({
      code: 'bad_request',
      message: 'the id "m1" was used for another message in this conversation (#1): a new message needs an id of its own',
    });
    // The same id from the other member, or to someone else, is another message.
    expect((await service.send({ from: 'bob', id: 'm1', to: 'ann', text: 'yes' })).accepted.seq).toBe(3);
    expect((await service.history({ user: 'ann', with: 'bob' })).messages.map((m) => m.text)).toEqual(['lunch at noon?', 'see you', 'yes']);
  });

  it('answers a message retried after the text limit was lowered as the first time; a new message of that text is refused, storing nothing', async () => {
    const db = freshDatabase();
    const [log, index] = [new EmbeddedConversationLogStore(db), new EmbeddedConversationIndexStore(db)];
    const users = { exists: () => Promise.resolve(true) };
    const text = 'x'.repeat(50);
    const first = await new MessagingService(log, index, users, { maxTextLength: 100 }).send({ from: 'ann', id: 'm1', to: 'bob', text });
    // Restarted with a lower limit: the retry of a message it stored is still that message, not a refused one.
    const lowered = new MessagingService(log, index, users, { maxTextLength: 20 });
    let issued = false;
    expect(await lowered.send({ from: 'ann', id: 'm1', to: 'bob', text }, () => (issued = true))).toEqual({ ...first, duplicate: true });
    expect(issued).toBe(true);
    await expect(lowered.send({ from: 'ann', id: 'm2', to: 'bob', text })).rejects.toMatchObject({ code: 'text_too_long' });
    // The same id with another text that is too long now: refused for its text, as any new message of it is.
    await expect(lowered.send({ from: 'ann', id: 'm1', to: 'bob', text: 'y'.repeat(50) })).rejects.toMatchObject({ code: 'text_too_long' });
    expect((await lowered.history({ user: 'bob', with: 'ann' })).messages.map((m) => m.seq)).toEqual([1]);
  });

  it('writes the index again in a new generation of the store, where the entries it knew of may be gone', async () => {
    const { service, index, loseIndex } = setup();
    await service.send({ from: 'ann', id: 'm1', to: 'bob', text: 'one' });
    await loseIndex();
    await service.send({ from: 'ann', id: 'm2', to: 'bob', text: 'two' });
    expect(await index.list('bob')).toEqual([conv]);
    expect(await index.list('ann')).toEqual([conv]);
  });

  it('writes the index again before answering when the store moved to a new generation during the append', async () => {
    const { service, index, loseIndex, hold } = setup();
    await service.send({ from: 'ann', id: 'm1', to: 'bob', text: 'one' });
    const held = hold();
    const sending = service.send({ from: 'ann', id: 'm2', to: 'bob', text: 'two' });
    await held.started;
    // The index was taken as known; the store loses it while the append is under way.
    await loseIndex();
    held.release();
    expect((await sending).accepted.seq).toBe(2);
    expect(await index.list('bob')).toEqual([conv]);
    expect(await index.list('ann')).toEqual([conv]);
  });

  it('remembers at most so many conversations as indexed, so a long-running server does not keep every one it wrote to', async () => {
    const { service, added } = setup(4);
    for (const to of ['bob', 'cy', 'dee', 'eve', 'fay']) await service.send({ from: 'ann', id: `m-${to}`, to, text: 'hi' });
    const remembered = (service as unknown as { indexed: Map<string, number> }).indexed;
    // Five conversations, two users each: the four noted last are kept.
    expect(remembered.size).toBe(4);
    // A conversation still remembered is not written again; one let go is, once, and is remembered again.
    added.length = 0;
    await service.send({ from: 'fay', id: 'f1', to: 'ann', text: 'hi' });
    expect(added).toEqual([]);
    await service.send({ from: 'ann', id: 'b2', to: 'bob', text: 'again' });
    await service.send({ from: 'ann', id: 'b3', to: 'bob', text: 'and again' });
    const bob = directConversationId('ann', 'bob');
    expect(added).toEqual([`ann ${bob}`, `bob ${bob}`]);
    expect(remembered.size).toBe(4);
  });
});
