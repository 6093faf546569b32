import { Logger } from '@nestjs/common';
import type { Aedes, Client } from 'aedes';
import type { Conversations } from '#libs/group';
import type { Metrics } from '#libs/health';
import { splitPeers, topics, type InboxEvent, type SyncEvent } from '#libs/protocol';
import type { ReceiptsApi } from '#libs/receipts';
import type { AccessPolicy } from './access-policy.js';
import { guardOf } from './connection-guard.js';
import { writeTo } from './inbox-publisher.js';

const PAGE = 500;
/** The pause before a failed sync is run again, doubling up to the longest. */
const SYNC_RETRY_FIRST_MS = 500;
const SYNC_RETRY_MAX_MS = 15_000;

/**
 * Brings a connection up to date when it subscribes to its inbox: first a
 * `sync` event (where each conversation stands, and the other members'
 * receipts), then every message after the user's delivered cursor (a device
 * with a persistent session: after its own position), oldest first,
 * conversation by conversation, then `synced`. Sent to that connection
 * only. Live messages may arrive in between; the client orders by seq and
 * drops what it has shown, so nothing depends on the broker keeping a
 * persistent MQTT session (a device's own position is in the store).
 */
export class InboxSync {
  private readonly logger = new Logger('InboxSync');

  constructor(
    private readonly aedes: Aedes,
    private readonly policy: AccessPolicy,
    private readonly conversations: Conversations,
    private readonly receipts: ReceiptsApi,
    private readonly metrics: Metrics,
    /** More state to bring a connection up to date with (file offers), sent before `synced`; null when there is none. */
    private readonly extra: (user: string) => Promise<InboxEvent | null> = () => Promise.resolve(null),
  ) {}

  start(): void {
    this.aedes.on('subscribe', (subs, client) => {
      const principal = client ? this.policy.principalOf(client) : undefined;
      if (principal?.kind !== 'user') return;
      const inbox = topics.inbox(principal.user);
      // A refused subscription is reported with qos 128 (SUBACK 0x80).
      if (!subs.some((s) => s.topic === inbox && (s.qos as number) !== 128)) return;
      this.startSync(client, principal.user);
    });
    // A resumed session (clean session off) has its inbox subscription restored without a SUBSCRIBE.
    this.aedes.on('clientReady', (client) => {
      const principal = this.policy.principalOf(client);
      const restored = (client as Client & { subscriptions?: Record<string, unknown> }).subscriptions;
      if (!client.clean && principal?.kind === 'user' && restored?.[topics.inbox(principal.user)]) this.startSync(client, principal.user);
    });
  }

  /** Connections whose sync has started: one per connection, however the subscription came about. */
  private readonly syncing = new WeakSet<Client>();

  private startSync(client: Client, user: string): void {
    if (this.syncing.has(client)) return;
    this.syncing.add(client);
    this.run(client, user, 0);
  }

  /**
   * Runs a connection's sync. One that fails while the connection is still open and subscribed (a service or the
   * store did not answer) is run again, after a growing pause: until it succeeds the connection gets live events
   * only, and the backlog waits for it. A connection that dropped its inbox subscription midway gets a whole sync
   * when it subscribes again.
   */
  private run(client: Client, user: string, failures: number): void {
    this.sync(client, user).catch((e: unknown) => {
      if (client.closed) return;
      if (!this.subscribed(client, user)) {
        this.syncing.delete(client);
        return;
      }
      const retryInMs = Math.min(SYNC_RETRY_FIRST_MS * 2 ** failures, SYNC_RETRY_MAX_MS);
      this.logger.warn({ event: 'sync_failed', user, error: String(e), retryInMs });
      setTimeout(() => {
        if (!client.closed && this.subscribed(client, user)) this.run(client, user, failures + 1);
        else if (!client.closed) this.syncing.delete(client);
      }, retryInMs).unref();
    });
  }

  private subscribed(client: Client, user: string): boolean {
    const subs = (client as Client & { subscriptions?: Record<string, unknown> }).subscriptions;
    return subs?.[topics.inbox(user)] !== undefined;
  }

  /** Sends the sync event, the backlog and `synced` to one connection. Resolves with the number of messages sent. */
  async sync(client: Client, user: string): Promise<number> {
    // Asked at once, so a slow answer does not hold up the backlog; sent before `synced`.
    const extra = this.extra(user).catch((e: unknown) => {
      this.logger.warn({ event: 'sync_extra_failed', user, error: String(e) });
      return null;
    });
    const convs = await this.conversations.conversationsOf(user);
    const views = (await Promise.all(convs.map((conv) => this.conversations.viewOf(conv, user)))).filter((v) => v !== null);
    const cursors = await Promise.all(views.map((view) => Promise.all([this.receipts.cursorsOf(view.conv, user), this.receipts.peersOf(view.conv, user)])));
    const delivered = Object.fromEntries(views.map((view, i) => [view.conv, cursors[i]![0].delivered]));
    // A device that keeps a session (clean session off) is brought up to date from where it stood itself: what another
    // device of the user acknowledged while it was away comes too. Any other connection starts at the user's cursor.
    const from = client.clean ? delivered : await this.receipts.deviceStart(user, client.id, Object.keys(delivered));
    const states: SyncEvent['conversations'] = views.map((view, i) => {
      const [mine, peers] = cursors[i]!;
      const after = Math.max(view.after, from[view.conv] ?? mine.delivered);
      const state = { conv: view.conv, after, last: view.last, mine, ...splitPeers(peers) };
      // Said while the user was out of the group: the backlog skips it, and the client need not wait for it.
      const hidden = view.hidden.filter((h) => h.upTo > after);
      return { ...state, ...(view.group ? { group: view.group } : {}), ...(hidden.length > 0 ? { hidden } : {}) };
    });
    this.send(client, { type: 'sync', conversations: states });
    let sent = 0;
    for (const [i, state] of states.entries()) {
      const view = views[i]!;
      let after = state.after;
      while (after < state.last) {
        if (client.closed) return sent;
        const gap = view.hidden.find((h) => h.after <= after && after < h.upTo);
        if (gap) {
          after = gap.upTo;
          continue;
        }
        const end = view.hidden.find((h) => h.after > after)?.after ?? state.last;
        const page = await this.conversations.entriesAfter(view, after, Math.min(PAGE, end - after));
        if (page.length === 0) {
          after = end;
          continue;
        }
        for (const event of page) {
          this.send(client, event);
          // Writes never wait on the client (see GuardedConnection): a long backlog is paced by what the client takes.
          await guardOf(client.conn)?.settled();
        }
        sent += page.length;
        this.metrics.messagesDelivered.inc({ path: 'sync' }, page.filter((e) => e.type === 'message').length);
        after = page[page.length - 1]!.seq;
      }
    }
    const more = await extra;
    if (more) this.send(client, more);
    this.send(client, { type: 'synced', messages: sent });
    return sent;
  }

  /** Writes to the one connection being brought up to date; throws, ending its sync, once it is gone or unsubscribed. */
  private send(client: Client, event: InboxEvent): void {
    const topic = topics.inbox((this.policy.principalOf(client) as { user: string }).user);
    if (!writeTo(client, topic, event)) throw new Error(client.closed ? 'connection closed during sync' : 'inbox unsubscribed during sync');
  }
}
