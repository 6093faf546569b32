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
    return writeTo(client, topic, Buffer.from(JSON.stringify(event)));
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

/** The connection's subscription to exactly this topic (its inbox), if it has one. */
function subscriptionOf(client: Client, topic: string): { qos: number } | undefined {
  return (client as unknown as { subscriptions: Record<string, { qos: number } | undefined> }).subscriptions[topic];
}

export function isSubscribed(client: Client, topic: string): boolean {
  return subscriptionOf(client, topic) !== undefined;
}

/** Writes one inbox packet to one connection, as the broker would deliver it there: at the QoS of its subscription. */
export function writeTo(client: Client, topic: string, payload: Buffer): Promise<void> {
  const qos = Math.min(DELIVERY_QOS, subscriptionOf(client, topic)?.qos ?? 0) as 0 | 1;
  return new Promise((resolve, reject) =>
    client.publish({ cmd: 'publish', topic, payload, qos, retain: false, dup: false }, (err?: Error) => (err ? reject(err) : resolve())),
  );
}
