import type { Aedes, Client } from 'aedes';
import type { InboxEvent } from '#libs/protocol';

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
    const payload = Buffer.from(JSON.stringify(event));
    const qos = Math.min(1, subscription.qos) as 0 | 1;
    return new Promise((resolve, reject) =>
      client.publish({ cmd: 'publish', topic, payload, qos, retain: false, dup: false }, (err?: Error) => (err ? reject(err) : resolve())),
    );
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
