import type { Client } from 'aedes';
import { withDeadline } from '#libs/health';
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
 * (LocalInboxes) and relayed to the other gateways, which write it to theirs.
 * Writing is synchronous: events handed over one after the other reach each
 * connection in that order. A delivered event (`publishToAll`) that is relayed
 * is written here once its relay has left (see `RelayNote`), with the rest of
 * its batch: this gateway's recipients get it when the others' do, and the
 * requester gets it with its answer, in one write, not in two turns.
 */
export class InboxPublisher {
  constructor(private readonly broker: MqttBroker) {}

  /** The delivered events of the relay batch being gathered, written here once it has left (see `publishToAll`). */
  private held: HeldBatch | undefined;

  publish(topic: string, event: InboxEvent): void {
    this.send(topic, encode(event));
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

  /**
   * Publishes one event to several inboxes; it is encoded once, however many members receive it. Returns what settles
   * once it has left this gateway for the others (see `RelayNote`); undefined when there are none. Relayed, it is
   * written to this gateway's connections when that settles (or RELAY_WAIT_MS has passed): before the answers that wait
   * for it, and in the order events were published, since batches leave in order.
   */
  publishToAll(inboxTopics: readonly string[], event: InboxEvent): Promise<boolean> | undefined {
    if (inboxTopics.length === 0) return undefined;
    const payload = encode(event);
    this.broker.relay(inboxTopics, payload);
    const relayed = this.broker.relayed();
    if (!relayed) {
      for (const topic of inboxTopics) this.broker.inboxes.write(topic, payload);
      return undefined;
    }
    let held = this.held;
    if (held?.relayed !== relayed) {
      held = this.hold(relayed);
      this.held = held;
    }
    for (const topic of inboxTopics) held.writes.push(topic, payload);
    return held.written;
  }

  /** A batch's local writes, made once its relay has left, or RELAY_WAIT_MS has passed (Redis not answering). */
  private hold(relayed: Promise<boolean>): HeldBatch {
    const writes: (string | Buffer)[] = [];
    const write = () => {
      if (this.held?.writes === writes) this.held = undefined;
      for (let i = 0; i < writes.length; i += 2) this.broker.inboxes.write(writes[i] as string, writes[i + 1] as Buffer);
    };
    const written = withDeadline(relayed, RELAY_WAIT_MS).then(
      (sent) => {
        write();
        return sent;
      },
      (e: unknown) => {
        write();
        throw e;
      },
    );
    // The requests that delivered these events wait on it, and bound their own wait; its failure is theirs to handle.
    written.catch(() => undefined);
    return { relayed, writes, written };
  }

  private send(topic: string, payload: Buffer): void {
    this.broker.inboxes.write(topic, payload);
    this.broker.relay([topic], payload);
  }
}

/** Events relayed in one batch, awaiting its departure to be written to this gateway's connections. */
interface HeldBatch {
  relayed: Promise<boolean>;
  /** Topic and payload, in turn, in the order published. */
  writes: (string | Buffer)[];
  /** Settles as `relayed` (rejected past RELAY_WAIT_MS), once the writes are made. */
  written: Promise<boolean>;
}

/**
 * Where a request notes the relay of the events it delivered (`InboxPublisher.publishToAll`), so that its answer waits
 * until they have left the gateway: Redis has them, and each other gateway gets them, however soon this one dies after
 * answering. A sender told `accepted` by a gateway that crashed has had the message relayed; one not told sends it again
 * with the same id, and the repeat is delivered again. Batches are answered in order: the last one noted covers all.
 */
export interface RelayNote {
  /** From `publishToAll`: it settles within RELAY_WAIT_MS of its batch's first event, rejecting past it, so waits on it are bounded. */
  relayed?: Promise<unknown> | undefined;
}

/**
 * How long an answer waits, at most, for the events its request delivered to reach the other gateways (Redis's answer to
 * their PUBLISH, normally within a millisecond). Past it the answer goes: a Redis that does not answer is no reason to
 * hold it, and the events are stored.
 */
export const RELAY_WAIT_MS = 1000;

/** Notes an event's relay, when there is one to wait for. */
export function noteRelay(note: RelayNote, relayed: Promise<unknown> | undefined): void {
  if (relayed) note.relayed = relayed;
}

/** The wire form of an inbox event. */
export function encode(event: InboxEvent): Buffer {
  return Buffer.from(JSON.stringify(event));
}

/** Writes one inbox event to one connection subscribed to it; false when it is not (or is gone). */
export function writeTo(client: Client, topic: string, event: InboxEvent): boolean {
  return writeToConnection(client, topic, encode(event));
}
