import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { topics, type ErrorReply, type MessageEvent, type OkReply } from '#libs/protocol';
import { startParley, type ParleyServer } from '../support/parley-server.js';
import { connectClient, MqttUser, registerUser, subscribeCodes } from '../support/mqtt-user.js';
import { startRedis, type RedisServer } from '../support/redis-server.js';

const PASSWORD = 'correct horse battery';
const backends = ['embedded', 'redis'] as const;

describe.each(backends)('1:1 chat end to end on the %s store', (backend) => {
  let redis: RedisServer | undefined;
  let server: ParleyServer;
  const opened: MqttUser[] = [];
  const name = (base: string) => `${base}${randomBytes(3).toString('hex')}`;

  beforeAll(async () => {
    if (backend === 'redis') redis = await startRedis();
    server = await startParley({ env: redis ? { REDIS_URL: redis.url, PARLEY_REDIS_PREFIX: `t${randomBytes(4).toString('hex')}:` } : {} });
  });
  afterAll(async () => {
    await Promise.all(opened.map((u) => u.close()));
    await server?.dispose();
    await redis?.stop();
  });

  async function user(url: string, base: string): Promise<MqttUser> {
    const u = name(base);
    const reg = await registerUser(url, u, PASSWORD);
    expect(reg).toMatchObject({ ok: true, result: { user: u } });
    const client = await MqttUser.connect(url, u, PASSWORD);
    opened.push(client);
    return client;
  }

  describe.each([
    ['IPv4', () => server.mqttUrl],
    ['IPv6', () => server.mqttUrl6],
  ])('over %s', (_family, url) => {
    it('two users chat both ways, each seeing sender, timestamp and text', async () => {
      const alice = await user(url(), 'alice');
      const bob = await user(url(), 'bob');

      const before = Date.now();
      const sent = (await alice.request({ op: 'send', to: bob.user, text: 'hello bob' })) as OkReply;
      expect(sent).toMatchObject({ ok: true, op: 'send', result: { status: 'accepted', seq: 1 } });
      const got = (await bob.waitFor((e) => e.type === 'message' && e.text === 'hello bob')) as MessageEvent;
      expect(got).toMatchObject({ from: alice.user, to: bob.user, seq: 1 });
      expect(got.ts).toBeGreaterThanOrEqual(before - 1000);
      expect(got.ts).toBe((sent.result as { ts: number }).ts);

      const back = await bob.request({ op: 'send', to: alice.user, text: 'hi alice' });
      expect(back).toMatchObject({ ok: true, result: { status: 'accepted', seq: 2 } });
      await alice.waitFor((e) => e.type === 'message' && e.from === bob.user && e.text === 'hi alice');
    });

    it('three pairs chat at once and no message reaches the wrong user', async () => {
      const pairs = await Promise.all([0, 1, 2].map(async (i) => [await user(url(), `p${i}a`), await user(url(), `p${i}b`)] as const));
      const perDirection = 20;
      await Promise.all(
        pairs.flatMap(([a, b]) => [
          ...Array.from({ length: perDirection }, (_, n) => a.request({ op: 'send', to: b.user, text: `${a.user}->${b.user} #${n}` })),
          ...Array.from({ length: perDirection }, (_, n) => b.request({ op: 'send', to: a.user, text: `${b.user}->${a.user} #${n}` })),
        ]),
      );
      for (const [a, b] of pairs) {
        const toB = (await b.waitForCount((e) => e.type === 'message' && e.to === b.user, perDirection)) as MessageEvent[];
        const toA = (await a.waitForCount((e) => e.type === 'message' && e.to === a.user, perDirection)) as MessageEvent[];
        expect(toB.every((m) => m.from === a.user && m.text.startsWith(`${a.user}->${b.user} `))).toBe(true);
        expect(toA.every((m) => m.from === b.user && m.text.startsWith(`${b.user}->${a.user} `))).toBe(true);
        // Every message a user holds belongs to its own conversation.
        for (const u of [a, b]) {
          const foreign = u.events.filter((e) => e.type === 'message' && e.from !== u.user && e.to !== u.user);
          expect(foreign).toEqual([]);
        }
        // A sender's messages are numbered in the order it sent them.
        const seqs = toB.map((m) => Number(m.text.split('#')[1]));
        expect(seqs).toEqual([...seqs].sort((x, y) => x - y));
      }
    });

    it('a burst on one connection is stored, delivered and answered in the order sent; a history in it sees what came before', async () => {
      const alice = await user(url(), 'alice');
      const bob = await user(url(), 'bob');
      const count = 150;
      const historyAfter = 99; // a history request published right after message #99, before the rest
      const pending: Promise<unknown>[] = [];
      for (let n = 0; n < count; n++) {
        pending.push(alice.request({ op: 'send', id: `burst-${n}`, to: bob.user, text: `#${n}` }, 30_000));
        if (n === historyAfter) pending.push(alice.request({ op: 'history', id: 'burst-history', with: bob.user, limit: count }, 30_000));
      }
      const answers = (await Promise.all(pending)) as OkReply[];
      expect(answers.every((a) => a.ok)).toBe(true);

      // Stored in the order sent: message #n has seq n + 1.
      const sends = answers.filter((a) => a.op === 'send');
      expect(sends.map((a) => (a.result as { seq: number }).seq)).toEqual(Array.from({ length: count }, (_, n) => n + 1));
      // Answered in the order sent, the history in its place.
      const replyIds = alice.events.filter((e) => e.type === 'reply' && String(e.id).startsWith('burst-')).map((e) => (e as OkReply).id);
      const expectedIds = Array.from({ length: count }, (_, n) => `burst-${n}`);
      expectedIds.splice(historyAfter + 1, 0, 'burst-history');
      expect(replyIds).toEqual(expectedIds);
      // The history sees every message sent before it.
      const history = answers.find((a) => a.op === 'history')!.result as { messages: MessageEvent[] };
      expect(history.messages.slice(0, historyAfter + 1).map((m) => m.text)).toEqual(Array.from({ length: historyAfter + 1 }, (_, n) => `#${n}`));
      // Delivered to both sides in the order sent (arrival order, not sorted).
      const texts = Array.from({ length: count }, (_, n) => `#${n}`);
      const atBob = (await bob.waitForCount((e) => e.type === 'message' && e.from === alice.user, count, 30_000)) as MessageEvent[];
      expect(atBob.map((m) => m.text)).toEqual(texts);
      const atAlice = (await alice.waitForCount((e) => e.type === 'message' && e.from === alice.user, count, 30_000)) as MessageEvent[];
      expect(atAlice.map((m) => m.text)).toEqual(texts);
    });

    it('a retry with the same message id gets the same answer and is stored once', async () => {
      const alice = await user(url(), 'alice');
      const bob = await user(url(), 'bob');
      const first = await alice.request({ op: 'send', id: 'retry-1', to: bob.user, text: 'only once' });
      const again = await alice.request({ op: 'send', id: 'retry-1', to: bob.user, text: 'only once' });
      // The same message (conv, seq, ts): only the recipient's presence is read again for the retry's answer (bob's
      // connection may have reached presence in between), as docs/topics.md says.
      const withoutPresence = (r: OkReply | ErrorReply) => ({ ...r, result: { ...((r as OkReply).result as object), recipient: undefined } });
      expect(withoutPresence(again)).toEqual(withoutPresence(first));
      expect((again as OkReply).result).toHaveProperty('recipient.state');
      const history = (await bob.request({ op: 'history', with: alice.user })) as OkReply;
      expect((history.result as { messages: MessageEvent[] }).messages.filter((m) => m.text === 'only once')).toHaveLength(1);
    });

    it('refuses a wrong password and another user\u2019s client id at CONNACK', async () => {
      const alice = await user(url(), 'alice');
      await expect(connectClient(url(), { username: alice.user, password: 'wrong password', clientId: alice.user })).rejects.toMatchObject({ code: 4 });
      const mallory = await user(url(), 'mallory');
      await expect(connectClient(url(), { username: mallory.user, password: PASSWORD, clientId: alice.user })).rejects.toMatchObject({ code: 2 });
      await expect(connectClient(url(), { username: mallory.user, password: PASSWORD, clientId: `${alice.user}/phone` })).rejects.toMatchObject({ code: 2 });
      // Alice's own session was not taken over.
      expect(alice.client.connected).toBe(true);
    });

    it('a user cannot read another inbox or publish as another user', async () => {
      const alice = await user(url(), 'alice');
      const mallory = await user(url(), 'mallory');
      const codes = await subscribeCodes(mallory.client, [
        topics.inbox(alice.user),
        'parley/v1/users/+/inbox',
        '#',
        topics.requests(alice.user),
        topics.inbox(mallory.user),
      ]);
      expect(codes).toEqual([128, 128, 128, 128, 0]);

      // Publishing to Alice's requests topic closes Mallory's connection [MQTT-3.3.5-2] and does nothing.
      const closed = new Promise<void>((resolve) => mallory.client.once('close', () => resolve()));
      mallory.client.publish(topics.requests(alice.user), JSON.stringify({ op: 'send', id: 'spoof', to: mallory.user, text: 'I am alice' }), { qos: 1 });
      await closed;
      // Nor can a client stamp another sender: the server refuses a `from` field.
      const impostor = await user(url(), 'impostor');
      const reply = await impostor.request({ op: 'send', to: alice.user, text: 'hi', from: alice.user });
      expect(reply).toMatchObject({ ok: false, error: { code: 'bad_request' } });
      const history = (await alice.request({ op: 'history', with: mallory.user })) as OkReply;
      expect((history.result as { messages: unknown[] }).messages).toEqual([]);
    });

    it('answers each bad input with a clear error and keeps serving', async () => {
      const alice = await user(url(), 'alice');
      const bob = await user(url(), 'bob');
      const raw = async (payload: string | Buffer) => {
        const marker = alice.events.length;
        await alice.client.publishAsync(topics.requests(alice.user), payload, { qos: 1 });
        return alice.waitFor((e) => e.type === 'reply' && alice.events.indexOf(e) >= marker);
      };
      expect(await raw('{not json')).toMatchObject({ ok: false, id: null, error: { code: 'bad_request' } });
      expect(await raw(JSON.stringify({ op: 'teleport', id: 'x1' }))).toMatchObject({ ok: false, id: 'x1', error: { code: 'unknown_op' } });
      expect(await raw(Buffer.alloc(70_000, 'a'))).toMatchObject({ ok: false, error: { code: 'payload_too_large' } });
      expect(await raw('['.repeat(50_000))).toMatchObject({ ok: false, error: { code: 'bad_request' } });
      expect(await alice.request({ op: 'send', to: 'nobody-here', text: 'hi' })).toMatchObject({ ok: false, error: { code: 'unknown_user' } });
      expect(await alice.request({ op: 'send', to: bob.user, text: '   ' })).toMatchObject({ ok: false, error: { code: 'empty_text' } });
      // Nothing visible (a zero-width space, a word joiner, a direction override, a Hangul filler, a blank Braille cell, a
      // variation selector or accents with nothing under them) is no text either.
      for (const text of ['\u200b', ' \u2060 ', '\u202e', '\ufeff\n', '\u3164', '\u2800', '\u115f', '\ufe0f', '\u034f', '\u0301\u0301'])
        expect(await alice.request({ op: 'send', to: bob.user, text })).toMatchObject({ ok: false, error: { code: 'empty_text' } });
      // A terminal acts on control characters (escape codes, carriage returns, bells): refused; tab and new line are text.
      for (const text of ['red \u001b[31mtext', 'over\rwrite', 'ding\u0007', 'c1 \u009b'])
        expect(await alice.request({ op: 'send', to: bob.user, text })).toMatchObject({ ok: false, error: { code: 'bad_request' } });
      // Half of a surrogate pair alone is no character (UTF-8 cannot carry it).
      for (const text of ['half \ud83d', '\ude00 after'])
        expect(await alice.request({ op: 'send', to: bob.user, text })).toMatchObject({ ok: false, error: { code: 'bad_request' } });
      for (const name of ['\u200b', '\u3164\u3164'])
        expect(await alice.request({ op: 'group.create', name })).toMatchObject({ ok: false, error: { code: 'invalid_group_name' } });
      expect(await alice.request({ op: 'send', to: bob.user, text: 'x'.repeat(4001) })).toMatchObject({ ok: false, error: { code: 'text_too_long' } });
      expect(await alice.request({ op: 'send', to: bob.user, text: 42 })).toMatchObject({ ok: false, error: { code: 'bad_request' } });
      // None of it was stored or delivered, and the server still serves.
      const ok = await alice.request({ op: 'send', to: bob.user, text: 'still here\n\tand a second line 👨‍👩‍👧' });
      expect(ok).toMatchObject({ ok: true, result: { seq: 1 } });
      await bob.waitFor((e) => e.type === 'message' && e.text === 'still here\n\tand a second line 👨‍👩‍👧');
      expect(bob.events.filter((e) => e.type === 'message')).toHaveLength(1);
      // The longest text allowed, of the widest characters (4 bytes each), fits a request.
      const widest = '😀'.repeat(4000);
      expect(await alice.request({ op: 'send', to: bob.user, text: widest })).toMatchObject({ ok: true, result: { seq: 2 } });
    });
  });
});
