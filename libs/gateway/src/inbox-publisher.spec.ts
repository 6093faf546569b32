import { afterEach, describe, expect, it, vi } from 'vitest';
import type { InboxEvent } from '#libs/protocol';
import { InboxPublisher, RELAY_WAIT_MS } from './inbox-publisher.js';
import type { MqttBroker } from './mqtt-broker.js';

const event = (seq: number) => ({ type: 'message', conv: 'dm:ann:bob', seq, from: 'ann', ts: seq, id: `m${seq}`, text: 'hi' }) as InboxEvent;

/**
 * A publisher on a broker whose relays go out in batches, as the Redis backplane's do: each batch is answered when the
 * test says, in order (`leave`); `others` false is a standalone broker, which relays nothing.
 */
function publisherOn(others: boolean) {
  const written: string[] = [];
  const batches: { promise: Promise<boolean>; resolve: (sent: boolean) => void }[] = [];
  let open: Promise<boolean> | undefined;
  const broker = {
    inboxes: { write: (topic: string, payload: Buffer) => written.push(`${topic.split('/')[3]} ${(JSON.parse(payload.toString()) as { seq: number }).seq}`) },
    relay: () => {
      if (!others || open) return;
      let resolve!: (sent: boolean) => void;
      open = new Promise<boolean>((r) => (resolve = r));
      batches.push({ promise: open, resolve });
    },
    relayed: () => open,
  };
  /** The batch gathered so far goes out: the next relay starts another. */
  const flush = () => void (open = undefined);
  const leave = (i: number) => batches[i]!.resolve(true);
  return { publisher: new InboxPublisher(broker as unknown as MqttBroker), written, flush, leave };
}

const inboxes = (...users: string[]) => users.map((u) => `parley/v1/users/${u}/inbox`);

describe('InboxPublisher.publishToAll', () => {
  afterEach(() => void vi.useRealTimers());

  it('writes at once on a gateway alone, with no relay to wait for', () => {
    const { publisher, written } = publisherOn(false);
    expect(publisher.publishToAll(inboxes('bob', 'ann'), event(1))).toBeUndefined();
    expect(written).toEqual(['bob 1', 'ann 1']);
  });

  it("writes to this gateway's connections once the event's batch has left for the others, batch by batch, in order", async () => {
    const { publisher, written, flush, leave } = publisherOn(true);
    const first = publisher.publishToAll(inboxes('bob', 'ann'), event(1));
    const same = publisher.publishToAll(inboxes('bob', 'ann'), event(2));
    flush();
    const second = publisher.publishToAll(inboxes('bob'), event(3));
    expect(same).toBe(first);
    expect(written).toEqual([]);
    leave(0);
    await expect(first).resolves.toBe(true);
    expect(written).toEqual(['bob 1', 'ann 1', 'bob 2', 'ann 2']);
    leave(1);
    await expect(second).resolves.toBe(true);
    expect(written).toEqual(['bob 1', 'ann 1', 'bob 2', 'ann 2', 'bob 3']);
  });

  it('writes after RELAY_WAIT_MS all the same when Redis does not answer, and says the relay is not known to have left', async () => {
    vi.useFakeTimers();
    const { publisher, written } = publisherOn(true);
    const relayed = publisher.publishToAll(inboxes('bob'), event(1));
    const outcome = relayed!.then(
      () => 'left',
      () => 'unknown',
    );
    await vi.advanceTimersByTimeAsync(RELAY_WAIT_MS - 1);
    expect(written).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    expect(written).toEqual(['bob 1']);
    expect(await outcome).toBe('unknown');
  });
});
