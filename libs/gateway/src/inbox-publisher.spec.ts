import { describe, expect, it } from 'vitest';
import { InboxPublisher } from './inbox-publisher.js';
import type { MqttBroker } from './mqtt-broker.js';

/** A broker that records what it relays, and says the relays are on their way until `sent` is called. */
function brokerOnRedis() {
  const relays: string[] = [];
  let sent!: () => void;
  let pending: Promise<void> | undefined;
  const broker = {
    inboxes: { write: () => undefined },
    relay: (topic: string) => {
      relays.push(topic);
      pending ??= new Promise<void>((resolve) => (sent = () => ((pending = undefined), resolve())));
    },
    relayed: () => pending,
  };
  return { broker: broker as unknown as MqttBroker, relays, sent: () => sent() };
}

describe('InboxPublisher.relayedSince', () => {
  it('waits for the relay of the events published since the mark, and for nothing when none was', async () => {
    const { broker, relays, sent } = brokerOnRedis();
    const inbox = new InboxPublisher(broker);
    const mark = inbox.eventsPublished;
    expect(inbox.relayedSince(mark)).toBeUndefined();
    inbox.publishToAll(['parley/v1/users/ann/inbox', 'parley/v1/users/bob/inbox'], { type: 'presence', user: 'cy', state: 'online', lastSeen: null });
    expect(relays).toEqual(['parley/v1/users/ann/inbox', 'parley/v1/users/bob/inbox']);
    const relayed = inbox.relayedSince(mark);
    expect(relayed).toBeInstanceOf(Promise);
    let settled = false;
    void relayed!.then(() => (settled = true));
    await Promise.resolve();
    expect(settled).toBe(false);
    sent();
    await relayed;
    expect(settled).toBe(true);
    // A later request that published nothing waits for nothing, although the relay of others' events may be on its way.
    const next = inbox.eventsPublished;
    inbox.publishToAll([], { type: 'presence', user: 'cy', state: 'offline', lastSeen: 2 });
    expect(inbox.relayedSince(next)).toBeUndefined();
  });
});
