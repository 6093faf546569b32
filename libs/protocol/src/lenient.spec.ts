import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { lenient, readInboxEvent, readPresenceEvent, readResult } from './lenient.js';
import { InboxEvent, MessageEvent, PresenceEvent, REQUEST_OPS, RESULT_SCHEMAS } from './payloads.js';

/** Whether an object anywhere in the schema still refuses fields it does not know. */
function strictSomewhere(schema: z.ZodType): boolean {
  const def = (schema as unknown as { _zod: { def: Record<string, unknown> & { type: string } } })._zod.def;
  const inner = [def.element, def.innerType, def.valueType, ...((def.options as unknown[]) ?? []), ...Object.values((def.shape as object) ?? {})];
  if (def.type === 'object' && (def.catchall as { _zod: { def: { type: string } } } | undefined)?._zod.def.type === 'never') return true;
  return inner.some((s) => s !== undefined && strictSomewhere(s as z.ZodType));
}

const message = {
  type: 'message',
  conv: 'g:1',
  seq: 3,
  from: 'ann',
  group: { id: 'g1', name: 'team' },
  ts: 1_700_000_000_000,
  id: 'm-3',
  text: 'hi',
};

const offer = {
  id: 'o1',
  from: 'ann',
  name: 'a.txt',
  size: 3,
  type: 'text/plain',
  sha256: 'abc',
  chunkSize: 65536,
  chunks: 1,
  uploaded: 1,
  createdAt: 1,
  expiresAt: 2,
  recipients: { bob: 'pending' },
};

describe('reading what a newer server sends', () => {
  it('keeps an event whose fields a newer server added, at the top and nested, and leaves those fields out', () => {
    const event = readInboxEvent({ ...message, edited: true, group: { ...message.group, avatar: 'x.png' } });
    expect(event).toEqual(message);
    // The server itself is held to the exact schema.
    expect(InboxEvent.safeParse({ ...message, edited: true }).success).toBe(false);

    const file = readInboxEvent({ type: 'file', event: 'offered', offer: { ...offer, thumbnail: 'data' }, ts: 5 });
    expect(file).toEqual({ type: 'file', event: 'offered', offer, ts: 5 });
    const deleted = readInboxEvent({ ...message, type: 'group', change: { kind: 'deleted', by: 'retention' } });
    expect(deleted).toMatchObject({ type: 'group', change: { kind: 'deleted' } });
  });

  it('still drops what it cannot use: a field it needs missing or of the wrong type, or an event of a kind it does not know', () => {
    const { seq: _seq, ...noSeq } = message;
    expect(readInboxEvent(noSeq)).toBeUndefined();
    expect(readInboxEvent({ ...message, seq: 'three' })).toBeUndefined();
    expect(readInboxEvent({ ...message, group: { id: 'g1' } })).toBeUndefined();
    expect(readInboxEvent({ type: 'typing', user: 'ann' })).toBeUndefined();
    expect(readInboxEvent('not an object')).toBeUndefined();
  });

  it("reads a reply's result for the op that was asked, so a loosened result never passes for another op's", () => {
    const reply = readInboxEvent({ type: 'reply', id: 'r1', op: 'who', ok: true, result: { user: 'bob', state: 'online', lastSeen: null, device: 'phone' } });
    expect(reply).toMatchObject({ type: 'reply', ok: true });
    const result = reply?.type === 'reply' && reply.ok ? reply.result : undefined;
    expect(readResult('who', result)).toEqual({ user: 'bob', state: 'online', lastSeen: null });
    // `{ user }` alone is a register result, not a who result.
    expect(() => readResult('who', { user: 'bob' })).toThrow(/who/);
    expect(readResult('register', { user: 'bob', welcome: 'hi' })).toEqual({ user: 'bob' });
  });

  it('reads an error reply whose code this client does not know yet, with its message', () => {
    const reply = readInboxEvent({ type: 'reply', id: 'r2', op: 'send', ok: false, error: { code: 'quota_exceeded', message: 'over the quota', hint: 'x' } });
    expect(reply).toEqual({ type: 'reply', id: 'r2', op: 'send', ok: false, error: { code: 'quota_exceeded', message: 'over the quota' } });
  });

  it('reads presence leniently too', () => {
    expect(readPresenceEvent({ type: 'presence', user: 'bob', state: 'offline', lastSeen: 9, status: 'away' })).toEqual({
      type: 'presence',
      user: 'bob',
      state: 'offline',
      lastSeen: 9,
    });
    expect(readPresenceEvent({ type: 'presence', user: 'bob' })).toBeUndefined();
  });

  it('loosens every object of every payload a server sends, at any depth', () => {
    for (const schema of [InboxEvent, PresenceEvent, ...Object.values(RESULT_SCHEMAS)]) {
      expect(strictSomewhere(schema)).toBe(true);
      expect(strictSomewhere(lenient(schema))).toBe(false);
    }
  });

  it('reads nested additions in arrays, records and unions: a history page, a sync', () => {
    const page = {
      conv: 'g:1',
      group: { id: 'g1', name: 'team', color: 'red' },
      messages: [
        { ...message, reactions: [] },
        { ...message, seq: 4, type: 'group', change: { kind: 'renamed', oldName: 'a', name: 'team', by: 'ann' } },
      ],
      peers: { bob: { delivered: 4, deliveredAt: 5, read: 3, readAt: 6, device: 'phone' } },
      cursorNote: 'x',
    };
    const read = readResult('history', page);
    expect(read.messages).toHaveLength(2);
    expect(read.messages[0]).toEqual(message);
    expect(read.messages[1]).toMatchObject({ type: 'group', change: { kind: 'renamed', oldName: 'a', name: 'team' } });
    expect(read.messages[1]).not.toHaveProperty('change.by');
    expect(read.peers.bob).toEqual({ delivered: 4, deliveredAt: 5, read: 3, readAt: 6 });
    expect(read.group).toEqual({ id: 'g1', name: 'team' });

    const cursors = { delivered: 1, deliveredAt: 1, read: 1, readAt: 1 };
    const sync = readInboxEvent({
      type: 'sync',
      conversations: [{ conv: 'dm:a:b', after: 0, last: 1, mine: { ...cursors, x: 1 }, peers: { b: cursors }, muted: true }],
    });
    expect(sync).toEqual({ type: 'sync', conversations: [{ conv: 'dm:a:b', after: 0, last: 1, mine: cursors, peers: { b: cursors } }] });
  });

  it('refuses, loudly, a schema it could not loosen without losing something', () => {
    expect(() => lenient(z.strictObject({ a: z.string() }).refine(() => true))).toThrow(/refinements/);
    expect(() => lenient(z.strictObject({ a: z.string() }).transform((v) => v))).toThrow(/pipe/);
  });

  it('has a result schema for every op, and loosening keeps what a schema checks of a field', () => {
    expect(Object.keys(RESULT_SCHEMAS).sort()).toEqual([...REQUEST_OPS].sort());
    const loose = lenient(MessageEvent);
    expect(loose.safeParse({ ...message, seq: 0 }).success).toBe(false);
    expect(loose.safeParse({ ...message, seq: 1.5 }).success).toBe(false);
  });
});
