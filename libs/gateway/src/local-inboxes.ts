import type { Client } from 'aedes';
import { DELIVERY_QOS } from '#libs/protocol';
import { guardOf } from './connection-guard.js';
import { publishPacket } from './mqtt-frame.js';

/**
 * The packets written here are QoS 0 (no packet identifier, nothing kept): right only while the server delivers at
 * QoS 0, which this type checks at compile time.
 */
export const WRITTEN_QOS: typeof DELIVERY_QOS = 0;

/**
 * This gateway's logged-in connections by inbox topic, and the one place inbox events are written to them.
 *
 * Every inbox subscriber is a connection of the inbox's own user (the access policy lets no one else read it, and
 * takes no wildcard over it), so a connection is filed under its user's inbox when its login is accepted, and an
 * event reaches each connection filed there that is subscribed to the topic now, in the broker's own record of its
 * subscriptions. The event goes out as one QoS 0 PUBLISH built once for all of them and written straight to each
 * connection's guard: the broker's routing, its copy of the packet per subscriber and its encoding per write were a
 * fifth of the gateway's work per message. Events from other gateways come here too (Backplane.onRelayed).
 */
export class LocalInboxes {
  private readonly byTopic = new Map<string, Filed>();

  /** Files a connection whose login was accepted under its inbox topic; connections closed meanwhile are let go. */
  add(topic: string, client: Client): void {
    const filed = this.byTopic.get(topic);
    if (filed === undefined) return void this.byTopic.set(topic, { topic, clients: client });
    const open = (Array.isArray(filed.clients) ? filed.clients : [filed.clients]).filter((c) => !c.closed);
    filed.clients = open.length === 0 ? client : [...open, client];
  }

  /** Lets a connection go once it has ended. */
  remove(topic: string, client: Client): void {
    const filed = this.byTopic.get(topic);
    if (filed === undefined) return;
    if (filed.clients === client) return void this.byTopic.delete(topic);
    if (!Array.isArray(filed.clients)) return;
    const rest = filed.clients.filter((c) => c !== client);
    filed.clients = rest.length === 1 ? rest[0]! : rest;
  }

  /** How many connections are filed under a topic. */
  countOf(topic: string): number {
    const clients = this.byTopic.get(topic)?.clients;
    return clients === undefined ? 0 : Array.isArray(clients) ? clients.length : 1;
  }

  /** Writes `payload` on `topic` to every connection here subscribed to it; returns how many it went to. */
  write(topic: string, payload: Buffer): number {
    const filed = this.byTopic.get(topic);
    if (filed === undefined) return 0;
    // The topic string filed at login: the broker's subscription record is looked up by it, and a string used as a
    // property key is interned once, where a topic built afresh for each event would be interned (hashed) every time.
    const packet = publishPacket(filed.topic, payload);
    if (!Array.isArray(filed.clients)) {
      if (writeIfSubscribed(filed.clients, filed.topic, packet)) return 1;
      // A connection gone without a 'clientDisconnect' is let go here at the latest.
      if (filed.clients.closed) this.byTopic.delete(topic);
      return 0;
    }
    let sent = 0;
    for (const client of filed.clients) if (writeIfSubscribed(client, filed.topic, packet)) sent++;
    return sent;
  }
}

/** One inbox topic's connections: one, or several (devices) of one user; most users have one. */
interface Filed {
  readonly topic: string;
  clients: Client | Client[];
}

/**
 * Writes `payload` on `topic` to one connection, as a delivery there would arrive, when that connection is subscribed
 * to the topic; false when it is not (or has closed, or is not one of this gateway's guarded connections).
 */
export function writeToConnection(client: Client, topic: string, payload: Buffer): boolean {
  return writeIfSubscribed(client, topic, undefined, payload);
}

function writeIfSubscribed(client: Client, topic: string, packet: Buffer | undefined, payload?: Buffer): boolean {
  if (client.closed || !isSubscribed(client, topic)) return false;
  const guard = guardOf(client.conn);
  if (!guard) return false;
  guard.writePacket(packet ?? publishPacket(topic, payload!));
  return true;
}

/** Whether a connection is subscribed to exactly this topic (its inbox), in the broker's record of its subscriptions. */
export function isSubscribed(client: Client, topic: string): boolean {
  return (client as unknown as { subscriptions: Record<string, unknown> }).subscriptions[topic] !== undefined;
}
