import { describe, expect, it } from 'vitest';
import { lenient, readInboxEvent, readPresenceEvent, readResult, RESULT_SCHEMAS } from './lenient.js';
import { InboxEvent, MessageEvent, REQUEST_OPS } from './payloads.js';

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
    const deleted = readInboxEvent({ ...message, type: 'group', change: { kind: 'deleted', reason: 'last_member_left' } });
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

  it('has a result schema for every op, and loosening keeps what a schema checks of a field', () => {
    expect(Object.keys(RESULT_SCHEMAS).sort()).toEqual([...REQUEST_OPS].sort());
    const loose = lenient(MessageEvent);
    expect(loose.safeParse({ ...message, seq: 0 }).success).toBe(false);
    expect(loose.safeParse({ ...message, seq: 1.5 }).success).toBe(false);
  });
});
