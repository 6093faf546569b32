import type { Aedes } from 'aedes';
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
