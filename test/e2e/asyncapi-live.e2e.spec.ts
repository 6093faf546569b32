import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Ajv, type ValidateFunction } from 'ajv';
import addFormatsModule from 'ajv-formats';
import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REQUEST_OPS, topics } from '#libs/protocol';
import { REPO_ROOT } from '../support/parley-server.js';
import { connectClient, endClient } from '../support/mqtt-user.js';
import { startTopology, type Mode, type Topology } from '../support/topology.js';
import { waitForMatches } from '../support/wait-for-events.js';

// ajv-formats is CommonJS: under ESM its plugin is the `default` of the default import (which is the plugin too).
const addFormats = addFormatsModule.default;

type Json = Record<string, unknown>;
type Doc = {
  channels: Record<string, { messages: Record<string, { $ref: string }> }>;
  components: { messages: Record<string, { payload: { $ref: string } }>; schemas: Record<string, Json> };
};

const doc = JSON.parse(readFileSync(join(REPO_ROOT, 'docs/asyncapi.json'), 'utf8')) as Doc;
const CHUNK = 1024;
const PASSWORD = 'asyncapi live password';

/** One payload as it came off the wire: who got it, on which topic, and its bytes as text. */
interface Received {
  client: string;
  topic: string;
  text: string;
}

/**
 * The document's schemas, compiled from the document itself (an ok reply refers to its op's result schema): strict, so
 * that a keyword the document uses and JSON Schema draft 7 (which its schemas declare, through z.toJSONSchema's
 * `draft-7` target) does not know fails here instead of passing unchecked.
 */
function compileDocument(): (path: string) => ValidateFunction {
  const ajv = new Ajv({ allErrors: true, strict: true });
  addFormats(ajv);
  // zod's base64 strings: ajv-formats calls this format `byte`.
  ajv.addFormat('base64', /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/);
  // The document's own fields, around its schemas: not JSON Schema keywords.
  ajv.addVocabulary(['asyncapi', 'info', 'servers', 'defaultContentType', 'channels', 'operations', 'components']);
  ajv.addSchema(doc, 'asyncapi.json');
  return (path) => ajv.getSchema(`asyncapi.json#/components/schemas/${path}`)!;
}

/** The messages the document lists for a channel, by their names. */
function messagesOf(channel: string): string[] {
  return Object.values(doc.channels[channel]!.messages).map((m) => m.$ref.split('/').pop()!);
}

/** Which channel of the document a topic is. */
function channelOf(topic: string): string {
  if (/^parley\/v1\/users\/[^/]+\/inbox$/.test(topic)) return 'inbox';
  if (/^parley\/v1\/users\/[^/]+\/replies$/.test(topic)) return 'replies';
  if (/^parley\/v1\/presence\/[^/]+$/.test(topic)) return 'presence';
  if (/^parley\/v1\/anon\/[^/]+\/inbox$/.test(topic)) return 'anonInbox';
  throw new Error(`a payload on ${topic}, which is no channel of docs/asyncapi.json`);
}

/** A connection that records every payload it receives, on whatever topic, and asks the server things. */
class Recorder {
  readonly events: Json[] = [];
  private readonly listeners = new Set<() => void>();

  private constructor(
    readonly name: string,
    readonly client: MqttClient,
    private readonly requestTopic: string,
  ) {}

  static async connect(url: string, all: Received[], opts: { user?: string; clientId: string; subscribe: string[]; requests: string }): Promise<Recorder> {
    let r!: Recorder;
    const client = await connectClient(url, { username: opts.user, password: opts.user ? PASSWORD : undefined, clientId: opts.clientId }, (c) => {
      r = new Recorder(opts.clientId, c, opts.requests);
      c.on('message', (topic, payload) => {
        const text = payload.toString();
        all.push({ client: opts.clientId, topic, text });
        try {
          r.events.push({ ...(JSON.parse(text) as Json), topic });
        } catch {
          /* not JSON: the validation below reports it */
        }
        for (const l of r.listeners) l();
      });
    });
    await client.subscribeAsync(opts.subscribe, { qos: 1 });
    return r;
  }

  waitFor(match: (e: Json) => boolean, what: string, timeoutMs = 10_000): Promise<Json> {
    const timedOut = () => new Error(`${this.name}: timed out waiting for ${what}; last: ${JSON.stringify(this.events.slice(-3))}`);
    return waitForMatches(this.events, this.listeners, match, 1, timeoutMs, timedOut).then((found) => found[0]!);
  }

  /** Publishes a request (or raw bytes) and resolves with its reply, as it came. */
  async ask(fields: Json | string, id: string | null = typeof fields === 'string' ? null : ((fields.id as string | undefined) ?? randomUUID())): Promise<Json> {
    const payload = typeof fields === 'string' ? fields : JSON.stringify({ ...fields, id });
    const seen = this.events.length;
    const reply = this.waitFor((e) => this.events.indexOf(e) >= seen && e.type === 'reply' && e.id === id, `reply to ${payload.slice(0, 80)}`);
    // Should the publish fail, its error is the one to report, and the wait for a reply left behind must not reject unheard.
    reply.catch(() => undefined);
    await this.client.publishAsync(this.requestTopic, payload, { qos: 1 });
    return reply;
  }

  /** Asks, expecting success; returns the result. */
  async ok<T = Json>(fields: Json): Promise<T> {
    const r = await this.ask(fields);
    expect(r, JSON.stringify(r)).toMatchObject({ ok: true });
    return r.result as T;
  }

  /** Asks, expecting the error `code`. */
  async fails(fields: Json | string, code: string, id?: string | null): Promise<void> {
    const r = await this.ask(fields, id);
    expect(r, JSON.stringify(r)).toMatchObject({ ok: false, error: { code } });
  }

  close(): Promise<void> {
    return endClient(this.client);
  }
}

/**
 * The document against live traffic: a real server, real MQTT.js clients, a broad run of every request and the events
 * they cause, and every payload any client received checked against the message the document gives for its channel.
 */
describe.each<Mode>(['embedded', 'distributed'])('docs/asyncapi.json against what the server sends (%s)', (mode) => {
  let topo: Topology;
  const received: Received[] = [];
  const open: Recorder[] = [];
  const validatorAt = compileDocument();
  const validators = Object.fromEntries(Object.keys(doc.components.schemas).map((name) => [name, validatorAt(name)]));

  beforeAll(async () => {
    // A connection's burst small enough that one burst of requests goes over it (the rest of the run stays well below).
    topo = await startTopology(mode, { PARLEY_PASSWORD_COST: '10', PARLEY_FILE_CHUNK_BYTES: String(CHUNK), PARLEY_CONNECTION_BURST: '200' });
  });
  afterAll(async () => {
    await Promise.all(open.map((r) => r.close()));
    await topo?.dispose();
  });

  /** Registers over an anonymous connection (recorded too), expecting `code` or success. */
  function register(user: string, password = PASSWORD, code?: string): Promise<void> {
    return anonymous({ op: 'register', user, password }, code);
  }

  /** Asks on an anonymous connection of its own, expecting `code` or success. */
  async function anonymous(fields: Json, code?: string): Promise<void> {
    const nonce = randomBytes(8).toString('hex');
    const anon = await Recorder.connect(topo.server.mqttUrl, received, {
      clientId: `anon.${nonce}`,
      subscribe: [topics.anonInbox(nonce)],
      requests: topics.anonRequests(nonce),
    });
    try {
      // An id of its own: a registration retried with the same id and password is answered ok again.
      const r = await anon.ask({ ...fields, id: `anon-${nonce}` });
      expect(r, JSON.stringify(r)).toMatchObject(code ? { ok: false, error: { code } } : { ok: true });
    } finally {
      await anon.close();
    }
  }

  /** Logs in subscribed to the inbox and to everyone's presence (or to the replies topic only). */
  async function login(user: string, device: string, subscribe: 'inbox' | 'replies' = 'inbox'): Promise<Recorder> {
    const r = await Recorder.connect(topo.server.mqttUrl, received, {
      user,
      clientId: `${user}/${device}`,
      subscribe: subscribe === 'inbox' ? [topics.inbox(user), 'parley/v1/presence/+'] : [topics.replies(user)],
      requests: topics.requests(user),
    });
    open.push(r);
    return r;
  }

  async function logout(r: Recorder): Promise<void> {
    open.splice(open.indexOf(r), 1);
    await r.close();
  }

  const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

  /** Offers `data` and uploads it whole; returns the offer's id. */
  async function offerFile(from: Recorder, target: Json, data: Buffer, name = 'notes.txt'): Promise<string> {
    const { offer } = await from.ok<{ offer: { id: string; chunks: number } }>({
      op: 'file.offer',
      ...target,
      name,
      size: data.length,
      type: 'text/plain',
      sha256: sha256(data),
    });
    for (let i = 0; i < offer.chunks; i++) {
      await from.ok({ op: 'file.chunk', offer: offer.id, index: i, data: data.subarray(i * CHUNK, (i + 1) * CHUNK).toString('base64') });
    }
    return offer.id;
  }

  it('sends only payloads the document describes, with fields of the documented types', async () => {
    const tag = randomBytes(3).toString('hex');
    const [alice, bob, carol, dave] = ['alice', 'bob', 'carol', 'dave'].map((n) => `${n}${tag}`) as [string, string, string, string];
    for (const u of [alice, bob, carol, dave]) await register(u);
    await register(alice, PASSWORD, 'user_exists');
    await register('X', PASSWORD, 'invalid_username');
    await register(`eve${tag}`, 'short', 'weak_password');
    await anonymous({ op: 'who', user: alice }, 'not_allowed'); // an anonymous connection only registers

    const a = await login(alice, 'phone');
    const aTool = await login(alice, '.tool', 'replies');
    const b = await login(bob, 'phone');
    const b2 = await login(bob, 'laptop');
    const c = await login(carol, 'phone');
    await a.waitFor((e) => e.type === 'presence' && e.user === carol && e.state === 'online', `${carol} online`);

    // 1:1: to a user online, then to one who has never been online (dave), who gets it in his catch-up.
    const sent = await a.ok<{ conv: string; seq: number }>({ op: 'send', to: bob, text: 'hello bob' });
    await b.waitFor((e) => e.type === 'message' && e.seq === sent.seq && e.conv === sent.conv, 'the message');
    const toDave = await aTool.ok<{ conv: string; seq: number }>({ op: 'send', to: dave, text: 'hello dave' });
    await a.ok({ op: 'send', id: `retry-${tag}`, to: bob, text: 'once' });
    await a.ok({ op: 'send', id: `retry-${tag}`, to: bob, text: 'once' });
    await b.ok({ op: 'send', to: alice, text: 'hi alice\nsecond line' });

    // Receipts: delivered, then read (to alice, and to bob's other device).
    await b.ok({ op: 'receipt', conv: sent.conv, seq: sent.seq, status: 'delivered' });
    await a.waitFor((e) => e.type === 'receipt' && e.status === 'delivered' && e.user === bob, 'delivered receipt');
    await b.ok({ op: 'receipt', conv: sent.conv, seq: sent.seq + 2, status: 'read' });
    await b2.waitFor((e) => e.type === 'receipt' && e.status === 'read', 'read receipt on the other device');
    await b.ok({ op: 'receipt', conv: sent.conv, seq: 1, status: 'read' }); // below the cursor: moved false
    await b.fails({ op: 'receipt', conv: sent.conv, seq: 99, status: 'read' }, 'no_such_message');
    await b.fails({ op: 'receipt', conv: `dm:${alice}:${carol}`, seq: 1, status: 'read' }, 'not_member');
    await b.fails({ op: 'receipt', conv: `dm:${bob}:zz${tag}`, seq: 1, status: 'read' }, 'unknown_user');

    await a.ok({ op: 'history', with: bob, limit: 10 });
    await aTool.ok({ op: 'history', with: dave, before: toDave.seq + 1 });
    await a.ok({ op: 'who', user: bob });
    await a.ok({ op: 'who', user: dave }); // never online: lastSeen null

    // Groups: every change kind, a member out and back (hidden stretches, former peers), a post, info.
    const g = await a.ok<{ id: string }>({ op: 'group.create', name: `class ${tag}`, members: [bob, carol] });
    await c.waitFor((e) => e.type === 'group' && (e.change as Json).kind === 'created', 'created');
    await a.ok({ op: 'group.rename', group: g.id, name: `class 5b ${tag}` });
    await a.ok({ op: 'group.add', group: g.id, members: [dave] });
    await a.ok({ op: 'group.remove', group: g.id, members: [dave] });
    const post = await a.ok<{ seq: number }>({ op: 'send', group: g.id, text: 'while dave is out' });
    await a.ok({ op: 'group.add', group: g.id, members: [dave] });
    await b.ok({ op: 'receipt', conv: `grp:${g.id}`, seq: post.seq, status: 'read' });
    await a.ok({ op: 'info', group: g.id, seq: post.seq });
    await a.ok({ op: 'group.members', group: g.id });
    await a.ok({ op: 'group.list' });
    await a.ok({ op: 'group.owner', group: g.id, user: bob });
    await a.fails({ op: 'group.owner', group: g.id, user: alice }, 'not_group_owner');
    await b.ok({ op: 'group.owner', group: g.id, user: alice });
    await a.ok({ op: 'group.leave', group: g.id }); // the owner leaves: newOwner
    await c.ok({ op: 'history', group: g.id });
    await a.ok({ op: 'history', group: g.id }); // a former member, shown the group as it stood
    await a.fails({ op: 'send', group: g.id, text: 'still here?' }, 'not_member');
    await a.fails({ op: 'info', group: g.id, seq: 1 }, 'not_member');
    await c.fails({ op: 'group.rename', group: g.id, name: 'mine' }, 'not_group_owner');
    await c.fails({ op: 'group.create', name: 'g0123456789abcd' }, 'invalid_group_name');
    await c.fails({ op: 'group.add', group: `nope ${tag}`, members: [alice] }, 'unknown_group');

    const g2 = await c.ok<{ id: string }>({ op: 'group.create', name: `pair ${tag}`, members: [bob] });
    await c.ok({ op: 'group.leave', group: g2.id });
    await b.ok({ op: 'group.leave', group: g2.id }); // the last member: deleted
    const g3 = await c.ok<{ id: string }>({ op: 'group.create', name: `doomed ${tag}` });
    await c.ok({ op: 'group.delete', group: g3.id });
    await c.ok({ op: 'group.create', id: `again-${tag}`, name: `twice ${tag}` });
    await c.ok({ op: 'group.delete', group: `twice ${tag}` });
    await c.ok({ op: 'group.create', id: `again-${tag}`, name: `twice ${tag}` }); // retried after deletion: deleted: true

    // Files: received, declined, withdrawn, to a group; listed and seen.
    const data = randomBytes(CHUNK * 2 + 100);
    const f1 = await offerFile(a, { to: bob }, data);
    await b.waitFor((e) => e.type === 'file' && e.event === 'offered' && (e.offer as Json).id === f1, 'offered');
    await b.fails({ op: 'file.fetch', offer: f1, index: 0 }, 'file_not_ready');
    await b.ok({ op: 'file.accept', offer: f1 });
    for (let i = 0; i < 3; i++) await b.ok({ op: 'file.fetch', offer: f1, index: i });
    await b.fails({ op: 'file.fetch', offer: f1, index: 3 }, 'chunk_out_of_range');
    await b.ok({ op: 'file.received', offer: f1 });
    await a.waitFor((e) => e.type === 'file' && e.event === 'received', 'received');
    await a.ok({ op: 'file.seen', offer: f1, states: { [bob]: 'received' } });
    const again = { op: 'file.offer', id: `resume-${tag}`, to: bob, name: 'resumed.bin', size: CHUNK + 1, sha256: sha256(Buffer.alloc(CHUNK + 1)) };
    const resumed = await a.ok<{ offer: { id: string } }>(again);
    await a.ok({ op: 'file.chunk', offer: resumed.offer.id, index: 0, data: Buffer.alloc(CHUNK).toString('base64') });
    await a.ok(again); // the same offer, with how far its upload got
    await a.fails({ op: 'file.chunk', offer: resumed.offer.id, index: 1, data: 'AAAA' }, 'bad_chunk');
    const f2 = await offerFile(a, { to: bob }, Buffer.from('no thanks'));
    await b.ok({ op: 'file.decline', offer: f2 });
    await a.waitFor((e) => e.type === 'file' && e.event === 'declined', 'declined');
    const f3 = await offerFile(b, { group: g.id }, Buffer.from('for the class'), 'class.txt');
    await c.waitFor((e) => e.type === 'file' && e.event === 'offered' && (e.offer as Json).id === f3, 'group offer');
    await c.ok({ op: 'file.accept', offer: f3 });
    await b.ok({ op: 'file.list' });
    await c.ok({ op: 'file.list' });
    await b.ok({ op: 'file.cancel', offer: f3 });
    await c.waitFor((e) => e.type === 'file' && e.event === 'withdrawn', 'withdrawn');
    await offerFile(c, { to: dave }, Buffer.alloc(0), 'empty.txt'); // open for dave, in his catch-up
    await b.fails({ op: 'file.cancel', offer: f2 }, 'not_allowed');
    await b.fails({ op: 'file.accept', offer: 'fnope' }, 'unknown_file');
    await a.fails({ op: 'file.offer', to: bob, name: '../x', size: 1, sha256: '0'.repeat(64) }, 'invalid_file_name');
    await c.fails({ op: 'file.chunk', offer: f3, index: 0, data: 'AAAA' }, 'unknown_file');

    // Broken requests: every error shape there is, down to one with no id at all.
    await a.fails('not json', 'bad_request', null);
    await a.fails('[1]', 'bad_request', null);
    await a.fails({ op: 'send', id: 'x', to: bob, group: g.id, text: 'both' }, 'bad_request');
    await a.fails({ op: 'send', to: bob, text: 'hi', from: carol }, 'bad_request');
    await a.fails({ op: 'fly' }, 'unknown_op');
    await a.fails({ op: 'send', to: `zz${tag}`, text: 'hi' }, 'unknown_user');
    await a.fails({ op: 'send', to: bob, text: '\u200b ' }, 'empty_text');
    await a.fails({ op: 'send', to: bob, text: 'x'.repeat(4001) }, 'text_too_long');
    await a.fails({ op: 'who', user: `zz${tag}` }, 'unknown_user');
    await a.fails(JSON.stringify({ op: 'send', id: `big-${tag}`, to: bob, text: 'x'.repeat(70_000) }), 'payload_too_large', `big-${tag}`);
    await aTool.fails({ op: 'who', user: `zz${tag}` }, 'unknown_user');

    // A Will on the requests topic is carried out when its connection drops; its reply reaches the user's other devices.
    const will = { op: 'send', id: `will-${tag}`, to: bob, text: 'from my will' };
    const dropped = await connectClient(topo.server.mqttUrl, {
      username: alice,
      password: PASSWORD,
      clientId: `${alice}/will`,
      will: { topic: topics.requests(alice), payload: Buffer.from(JSON.stringify(will)), qos: 1, retain: false },
    });
    dropped.stream.destroy();
    await a.waitFor((e) => e.type === 'reply' && e.id === will.id && e.ok === true, 'the reply to the will');
    dropped.end(true);

    // Catch-ups: dave's first (a backlog, group changes, a hidden stretch, an open file offer); bob's again (peers
    // and former peers); and presence going offline.
    const d = await login(dave, 'phone');
    const synced = await d.waitFor((e) => e.type === 'synced', 'synced');
    // `messages` counts the backlog's entries, group changes included (docs/topics.md).
    const backlog = d.events.slice(
      d.events.findIndex((e) => e.type === 'sync'),
      d.events.indexOf(synced),
    );
    expect(synced.messages).toBe(backlog.filter((e) => e.type === 'message' || e.type === 'group').length);
    expect(backlog.filter((e) => e.type === 'group').length).toBeGreaterThan(0);
    await d.waitFor((e) => e.type === 'message' && e.seq === toDave.seq, 'the message sent while away');
    const b3 = await login(bob, 'tablet');
    await b3.waitFor((e) => e.type === 'synced', 'synced');
    await logout(b3);
    await logout(b2);
    await logout(b);
    await c.waitFor((e) => e.type === 'presence' && e.user === bob && e.state === 'offline', `${bob} offline`);
    await c.ok({ op: 'who', user: bob });

    // A catch-up that cannot be run yet (a service it needs is down) is announced: only a distributed server has a
    // service of its own to be down.
    if (mode === 'distributed') {
      await topo.stopService('receipts');
      const late = await login(carol, 'laptop');
      await late.waitFor((e) => e.type === 'sync_delayed', 'sync_delayed', 30_000);
      await logout(late);
      await topo.restartService('receipts', 'stop');
    }

    // Over the rate limit: a burst of requests at once, some of them refused.
    const burst = await Promise.all(Array.from({ length: 300 }, () => d.ask({ op: 'who', user: alice })));
    expect(burst.some((r) => (r.error as Json | undefined)?.code === 'rate_limited')).toBe(true);

    // Every payload against its channel's messages in the document.
    const problems: string[] = [];
    const seen = new Set<string>();
    const kinds = new Set<string>();
    const okOps = new Set<string>();
    for (const { client, topic, text } of received) {
      const where = `${client} on ${topic}: ${text.length > 300 ? `${text.slice(0, 300)}…` : text}`;
      let payload: Json;
      try {
        payload = JSON.parse(text) as Json;
      } catch {
        problems.push(`not JSON — ${where}`);
        continue;
      }
      const candidates = messagesOf(channelOf(topic));
      const fits = candidates.filter((name) => validators[name]!(payload));
      if (fits.length === 0) {
        // The message meant (its `type`, and for a reply its `ok`), to say what is wrong with it.
        const meant = candidates.filter((name) => {
          const schema = doc.components.schemas[name]!;
          // An ok reply is one alternative per op: any of them says what a reply is.
          const props = ((schema.oneOf as Json[] | undefined)?.[0] ?? schema).properties as Record<string, { const?: unknown }>;
          return props.type?.const === payload.type && (props.ok === undefined || props.ok.const === payload.ok);
        });
        const why = meant.map((name) => {
          // An ok reply's errors are those of the alternative for its op, not of all of them.
          const alternative = name === 'OkReply' ? (doc.components.schemas.OkReply!.oneOf as Json[]).findIndex((a) => a.title === payload.op) : -1;
          const validate = alternative >= 0 ? validatorAt(`OkReply/oneOf/${alternative}`) : validators[name]!;
          validate(payload);
          return `${name}: ${JSON.stringify(validate.errors?.slice(0, 4))}`;
        });
        problems.push(
          `${meant.length === 0 ? `type ${JSON.stringify(payload.type)} is no message of the ${channelOf(topic)} channel` : why.join('; ')} — ${where}`,
        );
        continue;
      }
      for (const name of fits) seen.add(name);
      if (payload.type === 'group') kinds.add(`group:${(payload.change as Json).kind as string}`);
      if (payload.type === 'file') kinds.add(`file:${payload.event as string}`);
      if (payload.type === 'reply' && payload.ok === false) {
        // The code is open in the schema (a later server may add codes), but this server sends only the listed ones.
        const code = (payload.error as Json).code as string;
        const listed = ((validators.ErrorReply!.schema as Json).properties as Json).error as { properties: { code: { examples: string[] } } };
        if (!listed.properties.code.examples.includes(code)) problems.push(`error code ${code} is not among those documented — ${where}`);
      }
      if (payload.type === 'reply' && payload.ok === true) okOps.add(payload.op as string);
    }
    expect(problems).toEqual([]);

    // The run must have reached what it checks: every message of the document, every change kind and file event, and
    // a success of every op.
    expect([...seen].sort()).toEqual(
      Object.keys(doc.components.messages)
        .filter((n) => !n.endsWith('Request') && (mode === 'distributed' || n !== 'SyncDelayedEvent'))
        .sort(),
    );
    for (const kind of ['created', 'renamed', 'member_added', 'member_removed', 'member_left', 'owner_changed', 'deleted'])
      expect(kinds).toContain(`group:${kind}`);
    for (const event of ['offered', 'accepted', 'declined', 'received', 'withdrawn']) expect(kinds).toContain(`file:${event}`);
    expect([...okOps].sort()).toEqual([...REQUEST_OPS].sort());
  }, 90_000);
});
