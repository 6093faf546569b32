import type { Client } from 'aedes';
import type { InboxEvent } from '#libs/protocol';
import { writeToConnection } from './local-inboxes.js';
import type { MqttBroker } from './mqtt-broker.js';

/**
 * The gateway is the only publisher to inboxes. Events go out at QoS 0
 * (DELIVERY_QOS), never retained: an inbox is a stream, the durable record of
 * a message is the conversation log, not the broker, and a client acknowledges
 * what it got with receipts, not PUBACKs.
 *
 * Each event is encoded once, written to this gateway's subscribed connections
 * at once (LocalInboxes) and relayed to the other gateways, which write it to
 * theirs. Writing is synchronous: events handed over one after the other reach
 * each connection in that order.
 */
export class InboxPublisher {
  constructor(private readonly broker: MqttBroker) {}

  publish(topic: string, event: InboxEvent): void {
    this.publishToAll([topic], event);
  }

  /**
   * Sends an event on an inbox topic to one connection only, as a publish there would reach it, when that connection
   * is subscribed to it. A connection that is not (it only publishes, like `mosquitto_pub`), or that is gone by now
   * (`mosquitto_pub` leaves once its PUBLISH is acknowledged), gets nothing directly: the event is then published on
   * the topic as usual, for the user's other connections, so that every request still gets its one reply.
   */
  publishTo(client: Client, topic: string, event: InboxEvent): void {
    const payload = encode(event);
    if (!writeToConnection(client, topic, payload)) this.send(topic, payload);
  }

  /** Publishes one event to several inboxes; it is encoded once, however many members receive it. */
  publishToAll(inboxTopics: readonly string[], event: InboxEvent): void {
    const payload = encode(event);
    for (const topic of inboxTopics) this.send(topic, payload);
  }

  private send(topic: string, payload: Buffer): void {
    this.broker.inboxes.write(topic, payload);
    this.broker.relay(topic, payload);
  }
}

/** The wire form of an inbox event. */
export function encode(event: InboxEvent): Buffer {
  return Buffer.from(JSON.stringify(event));
}

/** Writes one inbox event to one connection subscribed to it; false when it is not (or is gone). */
export function writeTo(client: Client, topic: string, event: InboxEvent): boolean {
  return writeToConnection(client, topic, encode(event));
}
