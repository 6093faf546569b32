import { Logger } from '@nestjs/common';
import type { Aedes, Client } from 'aedes';
import type { AccessPolicy } from './access-policy.js';

/** What of the broker this reads beyond its typings: its connected clients by id, and its session store. */
interface BrokerInternals {
  clients: Record<string, Client | undefined>;
  persistence: {
    cleanSubscriptions(client: { id: string }): Promise<unknown>;
    /** Inbound QoS 2 packets awaiting their PUBREL: session state too, which only a clean session otherwise clears. */
    cleanIncoming?(client: { id: string }): Promise<unknown>;
  };
}

/**
 * Bounds what persistent sessions (clean session off) keep in a gateway's
 * memory. The broker keeps such a session's subscriptions for as long as it
 * runs, whether or not the client ever comes back, and a client id names a
 * device (`user/<device>`), so one account could otherwise leave behind as many
 * sessions as it cares to invent device names. Each user keeps at most
 * `maxPerUser`; when a login would leave more, the sessions used least
 * recently (logged in or out last) that are not connected now are forgotten,
 * as a clean session would end them: their subscriptions and any QoS 2 packets
 * awaiting a PUBREL. A client whose session was forgotten gets CONNACK session present
 * 0 and subscribes again, as after any session lost with a gateway; nothing
 * else is lost with it, because Parley keeps no messages in sessions (the
 * inbox catch-up comes from the conversation logs).
 *
 * Anonymous connections (they may only register) share one allowance.
 */
export class SessionKeeper {
  private readonly logger = new Logger('SessionKeeper');
  /** Each user's persistent sessions by client id, least recently used first. */
  private readonly byUser = new Map<string, Set<string>>();

  constructor(
    private readonly aedes: Aedes,
    private readonly policy: AccessPolicy,
    private readonly maxPerUser: number,
  ) {}

  start(): void {
    this.aedes.on('clientReady', (client) => this.onReady(client));
    // Used until now: a device that was connected all week and left a minute ago is not the least recently used.
    this.aedes.on('clientDisconnect', (client) => {
      const sessions = this.sessionsOf(client);
      if (sessions?.delete(client.id)) sessions.add(client.id);
    });
  }

  private ownerOf(client: Client): string | undefined {
    const principal = this.policy.principalOf(client);
    if (!principal) return undefined;
    return principal.kind === 'user' ? principal.user : '';
  }

  private sessionsOf(client: Client): Set<string> | undefined {
    const owner = this.ownerOf(client);
    return owner === undefined ? undefined : this.byUser.get(owner);
  }

  private onReady(client: Client): void {
    const owner = this.ownerOf(client);
    if (owner === undefined) return;
    const sessions = this.byUser.get(owner) ?? new Set<string>();
    sessions.delete(client.id);
    // A clean session ended whatever that client id kept (the broker cleaned it): nothing is kept for it now.
    if (!client.clean) sessions.add(client.id);
    if (sessions.size === 0) {
      this.byUser.delete(owner);
      return;
    }
    this.byUser.set(owner, sessions);
    if (sessions.size <= this.maxPerUser) return;
    for (const id of sessions) {
      if (sessions.size <= this.maxPerUser) break;
      if ((this.aedes as unknown as BrokerInternals).clients[id]) continue; // connected: its session is in use
      sessions.delete(id);
      void this.forget(id, owner);
    }
  }

  private async forget(id: string, owner: string): Promise<void> {
    try {
      const store = (this.aedes as unknown as BrokerInternals).persistence;
      await store.cleanSubscriptions({ id });
      await store.cleanIncoming?.({ id });
      this.logger.log({ event: 'session_forgotten', client: id, user: owner || null, keptPerUser: this.maxPerUser });
    } catch (e) {
      this.logger.warn({ event: 'session_forget_failed', client: id, error: String(e) });
    }
  }
}
