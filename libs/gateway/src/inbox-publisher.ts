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
    return new Promise((resolve, reject) => {
      this.broker.publish({ cmd: 'publish', topic, payload: Buffer.from(JSON.stringify(event)), qos: 1, retain: false, dup: false }, (err?: Error) =>
        err ? reject(err) : resolve(),
      );
    });
  }
}
