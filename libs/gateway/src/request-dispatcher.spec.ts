import type { Client } from 'aedes';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { Metrics } from '#libs/health';
import { InboxPublisher } from './inbox-publisher.js';
import type { MqttBroker } from './mqtt-broker.js';
import { heldBack, RequestDispatcher } from './request-dispatcher.js';

describe('heldBack', () => {
  afterEach(() => void vi.useRealTimers());

  it('waits from when the request came, not from when the one before it was done', async () => {
    vi.useFakeTimers();
    const settled: string[] = [];
    let release!: () => void;
    const before = new Promise<void>((resolve) => (release = resolve));
    void heldBack(before, 1500, () => Date.now()).then(() => settled.push('held'));
    // The request before it takes a second; this one's budget covers it half a second after that.
    await vi.advanceTimersByTimeAsync(1000);
    release();
    await vi.advanceTimersByTimeAsync(499);
    expect(settled).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    expect(settled).toEqual(['held']);
  });

  it('goes at once when the requests before it took longer than its hold', async () => {
    vi.useFakeTimers();
    const settled: string[] = [];
    let release!: () => void;
    const before = new Promise<void>((resolve) => (release = resolve));
    void heldBack(before, 500, () => Date.now()).then(() => settled.push('held'));
    await vi.advanceTimersByTimeAsync(2000);
    release();
    await vi.advanceTimersByTimeAsync(0);
    expect(settled).toEqual(['held']);
  });
});

/**
 * A dispatcher on a gateway with others (a broker whose relays stay on their way until `relay.send()`), its fakes, what
 * it writes to its own connections, and what it relays.
 */
function gatewayWithOthers(messagingOverride?: object) {
  type Written = { topic: string; event: Record<string, unknown> };
  const written: Written[] = [];
  const relayed: Written[] = [];
  const read = (topic: string, payload: Buffer): Written => ({ topic, event: JSON.parse(payload.toString()) as Record<string, unknown> });
  let pending: { promise: Promise<void>; resolve: () => void } | undefined;
  const broker = {
    inboxes: { write: (topic: string, payload: Buffer) => written.push(read(topic, payload)) },
    relay: (topics: readonly string[], payload: Buffer) => {
      for (const topic of topics) relayed.push(read(topic, payload));
      if (pending) return;
      let resolve!: () => void;
      const promise = new Promise<void>((r) => (resolve = r));
      pending = { promise, resolve };
    },
    relayed: () => pending?.promise,
  };
  const relay = {
    send: () => {
      pending?.resolve();
      pending = undefined;
    },
  };
  const messaging = {
    send: (cmd: { from: string; id: string; to: string; text: string }, issued?: () => void) => {
      issued?.();
      const conv = `dm:${[cmd.from, cmd.to].sort().join(':')}`;
      const message = { type: 'message', conv, seq: 1, from: cmd.from, to: cmd.to, ts: 5, id: cmd.id, text: cmd.text };
      return Promise.resolve({ accepted: { conv, seq: 1, ts: 5 }, message, duplicate: false });
    },
  };
  const presence = {
    stateOf: () => Promise.resolve(undefined),
    who: (user: string) => Promise.resolve({ user, state: 'online', lastSeen: null }),
  };
  const inbox = new InboxPublisher(broker as unknown as MqttBroker);
  const dispatcher = new RequestDispatcher(
    {} as never,
    (messagingOverride ?? messaging) as never,
    presence as never,
    {} as never,
    {} as never,
    inbox,
    new Metrics(),
    { maxRequestBytes: 65_536 },
    {} as never,
  );
  const connection = (user: string) => ({ closed: false, clean: true, subscriptions: {}, user }) as unknown as Client;
  const request = (client: Client, user: string, body: object) =>
    dispatcher.enqueue(client, { kind: 'user', user, device: null }, Buffer.from(JSON.stringify(body)));
  const replies = () => written.filter((w) => w.event.type === 'reply').map((w) => `${w.topic} ${String(w.event.id)}`);
  return { written, relayed, relay, connection, request, replies };
}

describe('RequestDispatcher on a gateway with others', () => {
  afterEach(() => void vi.useRealTimers());

  it('delivers a send on this gateway and answers it only once its delivery has reached the other gateways (Redis has it)', async () => {
    const { written, relayed, relay, connection, request } = gatewayWithOthers();
    request(connection('ann'), 'ann', { id: 's1', op: 'send', to: 'bob', text: 'hi' });
    await vi.waitFor(() => expect(relayed.map((w) => w.topic)).toEqual(['parley/v1/users/bob/inbox', 'parley/v1/users/ann/inbox']));
    // Relayed, and neither written to this gateway's connections nor answered while the relay is on its way.
    for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
    expect(written).toEqual([]);
    relay.send();
    // Then this gateway's recipients get it as the others' do, and the sender its copy and the answer together.
    await vi.waitFor(() => expect(written.map((w) => `${w.topic} ${String(w.event.type)}`)).toHaveLength(3));
    expect(written.map((w) => `${w.topic} ${String(w.event.type)}`)).toEqual([
      'parley/v1/users/bob/inbox message',
      'parley/v1/users/ann/inbox message',
      'parley/v1/users/ann/inbox reply',
    ]);
  });

  it('delivers and answers after a second all the same when Redis does not answer, and a request that delivered nothing waits for no one', async () => {
    vi.useFakeTimers();
    const { written, relay, connection, request, replies } = gatewayWithOthers();
    const ann = connection('ann');
    request(ann, 'ann', { id: 's1', op: 'send', to: 'bob', text: 'hi' });
    request(ann, 'ann', { id: 's2', op: 'send', to: 'bob', text: 'again' });
    // Another connection's `who` while ann's relay is on its way: it delivered nothing, and is answered at once.
    request(connection('cy'), 'cy', { id: 'w1', op: 'who', user: 'bob' });
    await vi.advanceTimersByTimeAsync(0);
    expect(replies()).toEqual(['parley/v1/users/cy/inbox w1']);
    await vi.advanceTimersByTimeAsync(999);
    expect(replies()).toEqual(['parley/v1/users/cy/inbox w1']);
    // Each answer's second counts from when its request was done, not from the answer before it: a pipeline is not
    // answered one second at a time.
    expect(written.filter((w) => w.event.type === 'message')).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    expect(replies()).toEqual(['parley/v1/users/cy/inbox w1', 'parley/v1/users/ann/inbox s1', 'parley/v1/users/ann/inbox s2']);
    // The two messages were written to this gateway's connections before their answers, in order.
    expect(written.map((w) => `${w.topic} ${String(w.event.id)}`)).toEqual([
      'parley/v1/users/cy/inbox w1',
      'parley/v1/users/bob/inbox s1',
      'parley/v1/users/ann/inbox s1',
      'parley/v1/users/bob/inbox s2',
      'parley/v1/users/ann/inbox s2',
      'parley/v1/users/ann/inbox s1',
      'parley/v1/users/ann/inbox s2',
    ]);
    relay.send();
  });
});

describe('RequestDispatcher, two members sending to each other at once', () => {
  it('hands their messages over in the order their appends were issued (seq order), whichever append settles first', async () => {
    // A store whose appends are numbered as they are issued and settle when the test says.
    let seq = 0;
    const settle: (() => void)[] = [];
    const messaging = {
      send: (cmd: { from: string; id: string; to: string; text: string }, issued?: () => void) => {
        const conv = `dm:${[cmd.from, cmd.to].sort().join(':')}`;
        const mine = ++seq;
        issued?.();
        const message = { type: 'message', conv, seq: mine, from: cmd.from, to: cmd.to, ts: mine, id: cmd.id, text: cmd.text };
        return new Promise((resolve) => settle.push(() => resolve({ accepted: { conv, seq: mine, ts: mine }, message, duplicate: false })));
      },
    };
    const { written, relayed, relay, connection, request } = gatewayWithOthers(messaging);
    request(connection('ann'), 'ann', { id: 'a1', op: 'send', to: 'bob', text: 'one' });
    request(connection('bob'), 'bob', { id: 'b1', op: 'send', to: 'ann', text: 'two' });
    await vi.waitFor(() => expect(settle).toHaveLength(2));
    // Bob's append (#2) settles before Ann's (#1): it waits for #1 to be handed over.
    settle[1]!();
    for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
    const seqsOn = (list: typeof written, user: string) =>
      list.filter((w) => w.topic === `parley/v1/users/${user}/inbox` && w.event.type === 'message').map((w) => w.event.seq);
    expect(seqsOn(relayed, 'ann')).toEqual([]);
    settle[0]!();
    await vi.waitFor(() => expect(seqsOn(relayed, 'ann')).toEqual([1, 2]));
    expect(seqsOn(relayed, 'bob')).toEqual([1, 2]);
    // Written to this gateway's connections in the same order, once relayed.
    relay.send();
    await vi.waitFor(() => expect(seqsOn(written, 'ann')).toEqual([1, 2]));
    expect(seqsOn(written, 'bob')).toEqual([1, 2]);
  });
});
