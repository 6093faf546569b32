import type { Client } from 'aedes';
import { topics, type InboxEvent } from '#libs/protocol';
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
   * The reply to a request `client` made. A connection subscribed to its replies topic has it written there, directly.
   * It is also published on the user's inbox, for all their devices (and for the requester when it listens there) —
   * but for a reply meant for the requester alone (`thisConnectionOnly`: a file chunk, tens of KiB), which goes on the
   * inbox only when the requester has it on neither topic: it only publishes, like `mosquitto_pub`, or has gone by now
   * (`mosquitto_pub` leaves once its PUBLISH is acknowledged). So every request still gets its one reply.
   */
  reply(client: Client, user: string, event: InboxEvent, thisConnectionOnly: boolean): void {
    const payload = encode(event);
    const inbox = topics.inbox(user);
    const direct = writeToConnection(client, topics.replies(user), payload);
    if (thisConnectionOnly && (direct || writeToConnection(client, inbox, payload))) return;
    this.send(inbox, payload);
  }

  /** Publishes one event to several inboxes; it is encoded once, however many members receive it. */
  publishToAll(inboxTopics: readonly string[], event: InboxEvent): void {
    const payload = encode(event);
    for (const topic of inboxTopics) this.send(topic, payload);
    if (inboxTopics.length > 0) this.eventsPublished++;
  }

  /** How many events (not replies) have been published: a request compares it before and after (see `relayedSince`). */
  eventsPublished = 0;

  /**
   * Settles once the events published so far have left this gateway for the others (Redis has them), when any was
   * published since `mark` (an earlier `eventsPublished`); undefined when none was, or there are no other gateways.
   * A request's answer waits for it: a sender told `accepted` by a gateway that crashed a moment later has had the
   * message relayed to recipients on other gateways; one not told retries with the same id, and the retry delivers it.
   */
  relayedSince(mark: number): Promise<void> | undefined {
    return this.eventsPublished === mark ? undefined : this.broker.relayed();
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
