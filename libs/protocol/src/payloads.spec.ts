import { describe, expect, it } from 'vitest';
import { parseRequest } from './payloads.js';
import { directConversationId, directPeer, principalFor } from './topics.js';

const LIMIT = 65_536;

describe('parseRequest', () => {
  it('accepts each well-formed request', () => {
    expect(parseRequest('{"op":"send","id":"m1","to":"bob","text":"hi"}', LIMIT)).toEqual({
      ok: true,
      request: { op: 'send', id: 'm1', to: 'bob', text: 'hi' },
    });
    expect(parseRequest(Buffer.from('{"op":"group.list","id":"x"}'), LIMIT)).toMatchObject({ ok: true });
  });

  it.each([
    ['not JSON', '{oops', 'bad_request', null],
    ['an array', '[1,2]', 'bad_request', null],
    ['a string', '"send"', 'bad_request', null],
    ['no op', '{"id":"a1"}', 'bad_request', 'a1'],
    ['a bad id', '{"op":"send","id":"has space","to":"b","text":"t"}', 'bad_request', null],
    ['a wrong type', '{"op":"send","id":"a2","to":"b","text":5}', 'bad_request', 'a2'],
    ['an extra field (a client naming its sender)', '{"op":"send","id":"a3","to":"b","text":"t","from":"alice"}', 'bad_request', 'a3'],
  ])('refuses %s without throwing', (_what, payload, code, id) => {
    const r = parseRequest(payload, LIMIT);
    expect(r).toMatchObject({ ok: false, id, error: { code } });
  });

  it("gives a number too big for a field the field's own bound, not that of every whole number", () => {
    for (const limit of ['501', '1e300', '9007199254740993']) {
      const r = parseRequest(`{"op":"history","id":"b1","with":"bob","limit":${limit}}`, LIMIT);
      expect(r).toMatchObject({ ok: false, error: { code: 'bad_request', message: 'limit: Too big: expected number to be <=500' } });
    }
    // A field with no bound of its own has that one.
    expect(parseRequest('{"op":"history","id":"b2","with":"bob","before":1e300}', LIMIT)).toMatchObject({
      ok: false,
      error: { message: 'before: Too big: expected int to be <=9007199254740991' },
    });
  });

  it("writes out control and bidirectional characters the request put in the error's message, rather than echoing them", () => {
    const unknown = parseRequest(JSON.stringify({ op: 'se\u0000nd', id: 'c1' }), LIMIT);
    expect(unknown).toMatchObject({ ok: false, error: { code: 'unknown_op' } });
    const key = parseRequest(JSON.stringify({ op: 'send', id: 'c2', to: 'bob', text: 'hi', 'k\u001b[31m\u202e': 1 }), LIMIT);
    expect(key).toMatchObject({ ok: false, error: { code: 'bad_request' } });
    const messages = [unknown, key].map((r) => (r.ok ? '' : r.error.message));
    expect(messages[0]).toContain('unknown op "se\\u0000nd"');
    expect(messages[1]).toContain('"k\\u001b[31m\\u202e"');
    // eslint-disable-next-line no-control-regex
    for (const m of messages) expect(m).not.toMatch(/[\u0000-\u001f\u202e]/);
  });

  it('refuses a payload that is not well-formed UTF-8, naming its id, instead of reading U+FFFD into it; takes a U+FFFD sent as such', () => {
    const send = (bytes: number[]) => Buffer.concat([Buffer.from('{"op":"send","id":"u1","to":"bob","text":"hi '), Buffer.from(bytes), Buffer.from('"}')]);
    // A byte that starts no character, an encoded surrogate (CESU-8), an overlong NUL, a sequence cut short.
    for (const bytes of [
      [0xff, 0xfe],
      [0xed, 0xa0, 0x80],
      [0xc0, 0x80],
      [0xe2, 0x82],
    ]) {
      expect(parseRequest(send(bytes), LIMIT)).toMatchObject({
        ok: false,
        id: 'u1',
        op: 'send',
        error: { code: 'bad_request', message: expect.stringMatching(/not valid UTF-8/) as string },
      });
    }
    expect(parseRequest(Buffer.from('{"op":"who","id":"u2","user":"b\xffob"}', 'latin1'), LIMIT)).toMatchObject({
      ok: false,
      id: 'u2',
      error: { code: 'bad_request' },
    });
    // Not JSON either: still told it is the encoding.
    expect(parseRequest(Buffer.from([0xff, 0xfe, 0x00]), LIMIT)).toMatchObject({
      ok: false,
      id: null,
      error: { message: expect.stringMatching(/not valid UTF-8/) as string },
    });
    // A U+FFFD the client sent as such, encoded (EF BF BD) or escaped, is text like any other.
    for (const payload of [
      Buffer.from('{"op":"send","id":"r1","to":"bob","text":"a \ufffd b"}'),
      Buffer.from('{"op":"send","id":"r1","to":"bob","text":"a \\ufffd b"}'),
    ]) {
      expect(parseRequest(payload, LIMIT)).toEqual({ ok: true, request: { op: 'send', id: 'r1', to: 'bob', text: 'a \ufffd b' } });
    }
  });

  it('keeps the id of an unknown op, so the client can match the error', () => {
    expect(parseRequest('{"op":"teleport","id":"t1"}', LIMIT)).toMatchObject({ ok: false, id: 't1', op: 'teleport', error: { code: 'unknown_op' } });
  });

  it('answers a request too large to parse with its op and id when they come first, at the top level', () => {
    const pad = 'y'.repeat(200);
    expect(parseRequest(`{"op":"send","id":"big-1","to":"bob","text":"${pad}"}`, 100)).toMatchObject({
      ok: false,
      id: 'big-1',
      op: 'send',
      error: { code: 'payload_too_large' },
    });
    // Not a nested one's, not one past the first bytes, not one that is no request id.
    expect(parseRequest(`{"group":{"id":"g1"},"op":"send","text":"${pad}"}`, 100)).toMatchObject({ id: null, error: { code: 'payload_too_large' } });
    expect(parseRequest(`{"op":"send","text":"${'z'.repeat(300)}","id":"late"}`, 100)).toMatchObject({ op: 'send', id: null });
    expect(parseRequest(`{"id":"${'i'.repeat(100)}","op":"who","pad":"${pad}"}`, 100)).toMatchObject({ op: 'who', id: null });
  });

  it('measures the limit in bytes', () => {
    expect(parseRequest('x'.repeat(101), 100)).toMatchObject({ ok: false, error: { code: 'payload_too_large' } });
    expect(parseRequest('é'.repeat(60), 100)).toMatchObject({ ok: false, error: { code: 'payload_too_large' } });
  });

  it('survives nesting deep enough to overflow a recursive parser', () => {
    const deep = '['.repeat(200_000) + ']'.repeat(200_000);
    expect(parseRequest(deep, 1_000_000)).toMatchObject({ ok: false, error: { code: 'bad_request' } });
    const inside = `{"op":"who","id":"d1","user":"bob","x":${'['.repeat(200_000)}{"__proto__":1}${']'.repeat(200_000)}}`;
    expect(parseRequest(inside, 1_000_000)).toMatchObject({ ok: false, id: 'd1', error: { code: 'bad_request' } });
  });

  it('refuses a key named __proto__ anywhere, which the parsed request would silently drop (naming no one, passing the strict check)', () => {
    const seen = '{"op":"file.seen","id":"s1","offer":"fabc","states":{"__proto__":"received"}}';
    expect(parseRequest(seen, LIMIT)).toEqual({
      ok: false,
      id: 's1',
      op: 'file.seen',
      error: expect.objectContaining({ code: 'bad_request', message: 'states.__proto__: no field or name may be "__proto__"' }),
    });
    // However it is spelled in JSON.
    expect(parseRequest('{"op":"file.seen","id":"s2","offer":"fabc","states":{"bob":"accepted","\\u005f_proto__":"declined"}}', LIMIT)).toMatchObject({
      ok: false,
      error: { code: 'bad_request' },
    });
    expect(parseRequest('{"op":"who","id":"w1","user":"bob","__proto__":{"x":1}}', LIMIT)).toMatchObject({ ok: false, error: { code: 'bad_request' } });
    // As a value it is text like any other.
    expect(parseRequest('{"op":"send","id":"m2","to":"bob","text":"__proto__"}', LIMIT)).toMatchObject({ ok: true });
  });
});

describe('client ids and conversation ids', () => {
  it('lets a user use its own name or name/device, and nothing else', () => {
    expect(principalFor('alice', 'alice')).toEqual({ kind: 'user', user: 'alice', device: null });
    expect(principalFor('alice/phone-1', 'alice')).toEqual({ kind: 'user', user: 'alice', device: 'phone-1' });
    expect(principalFor('bob', 'alice')).toBeNull();
    expect(principalFor('bob/phone', 'alice')).toBeNull();
    expect(principalFor('alice/', 'alice')).toBeNull();
    expect(principalFor('alice/a/b', 'alice')).toBeNull();
    expect(principalFor('', 'alice')).toBeNull();
  });

  it('refuses user names with wildcards, separators, capitals or control characters', () => {
    for (const bad of ['a+b', 'a#', 'a/b', 'Alice', 'al\u0000ice', 'a', 'x'.repeat(33), 'anon.x']) expect(principalFor(bad, bad)).toBeNull();
  });

  it('lets anonymous connections in only as anon.<nonce>', () => {
    expect(principalFor('anon.abcdefgh', undefined)).toEqual({ kind: 'anonymous', nonce: 'abcdefgh' });
    expect(principalFor('anon.short', undefined)).toBeNull();
    expect(principalFor('alice', undefined)).toBeNull();
    expect(principalFor('anon.abcdefgh', 'alice')).toBeNull();
  });

  it('names a direct conversation the same from both sides', () => {
    expect(directConversationId('bob', 'alice')).toBe(directConversationId('alice', 'bob'));
    expect(directPeer('dm:alice:bob', 'alice')).toBe('bob');
    expect(directPeer('dm:alice:bob', 'carol')).toBeNull();
  });
});
