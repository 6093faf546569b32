import type { Aedes, Client } from 'aedes';
import { DELIVERY_QOS, type InboxEvent } from '#libs/protocol';

/**
 * The gateway is the only publisher to inboxes. Events are published at QoS 0
 * (DELIVERY_QOS), never retained: an inbox is a stream, the durable record of
 * a message is the conversation log, not the broker, and a client acknowledges
 * what it got with receipts, not PUBACKs.
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
    if (!isSubscribed(client, topic)) return this.publish(topic, event);
    if (client.closed) return Promise.resolve();
    return writeTo(client, topic, event);
  }

  /** Publishes one event to several inboxes; it is encoded once, however many members receive it. */
  async publishToAll(inboxTopics: readonly string[], event: InboxEvent): Promise<void> {
    const payload = Buffer.from(JSON.stringify(event));
    await Promise.all(
      inboxTopics.map(
        (topic) =>
          new Promise<void>((resolve, reject) => {
            this.broker.publish({ cmd: 'publish', topic, payload, qos: DELIVERY_QOS, retain: false, dup: false }, (err?: Error) =>
              err ? reject(err) : resolve(),
            );
          }),
      ),
    );
  }
}

/** Whether a connection is subscribed to exactly this topic (its inbox). */
export function isSubscribed(client: Client, topic: string): boolean {
  return (client as unknown as { subscriptions: Record<string, unknown> }).subscriptions[topic] !== undefined;
}

/** Writes one inbox event to one connection, as the broker would deliver it there (at DELIVERY_QOS, as everything). */
export function writeTo(client: Client, topic: string, event: InboxEvent): Promise<void> {
  const payload = Buffer.from(JSON.stringify(event));
  return new Promise((resolve, reject) =>
    client.publish({ cmd: 'publish', topic, payload, qos: DELIVERY_QOS, retain: false, dup: false }, (err?: Error) => (err ? reject(err) : resolve())),
  );
}
