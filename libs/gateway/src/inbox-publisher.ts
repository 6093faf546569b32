import { randomUUID } from 'node:crypto';
import type { Aedes, Client, PublishPacket } from 'aedes';
import type { InboxEvent } from '#libs/protocol';

const DIRECT_ID = `direct:${randomUUID()}`;
let directCounter = 0;

/**
 * A packet to write straight to one connection (`client.publish`), bypassing the emitter. It is stamped in a series of
 * its own: Aedes drops a packet whose stamp is below one the client already got in the same series, and a direct write
 * reaches the client at once, ahead of emitted packets stamped before it (see EmitOrder in broker-backplane.ts).
 */
export function directPacket(topic: string, event: InboxEvent, qos: 0 | 1 = 1): PublishPacket {
  const packet = { cmd: 'publish' as const, topic, payload: Buffer.from(JSON.stringify(event)), qos, retain: false, dup: false };
  return Object.assign(packet, { brokerId: DIRECT_ID, brokerCounter: ++directCounter });
}

/**
 * The gateway is the only publisher to inboxes. Events are published at QoS 1,
 * never retained: an inbox is a stream, and the durable record of a message
 * is the conversation log, not the broker.
 */
export class InboxPublisher {
  constructor(private readonly broker: Aedes) {}

  publish(topic: string, event: InboxEvent): Promise<void> {
    return this.publishToAll([topic], event);
  }

  /**
   * Sends an event on an inbox topic to one connection only, as a publish there would reach it, when that connection
   * is subscribed to it. A connection that is not (it only publishes, like `mosquitto_pub`) gets nothing directly: the
   * event is then published on the topic as usual, for the user's other connections.
   */
  publishTo(client: Client, topic: string, event: InboxEvent): Promise<void> {
    const subscription = (client as unknown as { subscriptions: Record<string, { qos: number } | undefined> }).subscriptions[topic];
    if (!subscription) return this.publish(topic, event);
    if (client.closed) return Promise.resolve();
    const packet = directPacket(topic, event, Math.min(1, subscription.qos) as 0 | 1);
    return new Promise((resolve, reject) => client.publish(packet, (err?: Error) => (err ? reject(err) : resolve())));
  }

  /** Publishes one event to several inboxes; it is encoded once, however many members receive it. */
  async publishToAll(inboxTopics: readonly string[], event: InboxEvent): Promise<void> {
    const payload = Buffer.from(JSON.stringify(event));
    await Promise.all(
      inboxTopics.map(
        (topic) =>
          new Promise<void>((resolve, reject) => {
            this.broker.publish({ cmd: 'publish', topic, payload, qos: 1, retain: false, dup: false }, (err?: Error) => (err ? reject(err) : resolve()));
          }),
      ),
    );
  }
}
