import { Logger } from '@nestjs/common';
import type { Aedes, Client } from 'aedes';
import type { Conversations, ConversationView } from '#libs/group';
import type { Metrics } from '#libs/health';
import { DomainError, splitPeers, topics, type ErrorBody, type InboxEvent, type SyncEvent } from '#libs/protocol';
import type { ReceiptsApi } from '#libs/receipts';
import type { AccessPolicy } from './access-policy.js';
import { guardOf } from './connection-guard.js';
import { writeTo } from './inbox-publisher.js';
import { isSubscribed } from './local-inboxes.js';

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
      this.subscribedAnew(client, principal.user);
    });
    this.aedes.on('unsubscribe', (filters, client) => {
      const principal = client ? this.policy.principalOf(client) : undefined;
      const state = client ? this.states.get(client) : undefined;
      // What the running catch-up has not sent yet was for the subscription just dropped: it stops at its next write.
      if (principal?.kind === 'user' && state?.busy && filters.includes(topics.inbox(principal.user))) state.dropped = true;
    });
    // A resumed session (clean session off) has its inbox subscription restored without a SUBSCRIBE.
    this.aedes.on('clientReady', (client) => {
      const principal = this.policy.principalOf(client);
      // A SUBSCRIBE handled before this (on Redis a login is slower) has brought the connection up to date already.
      if (!client.clean && principal?.kind === 'user' && this.subscribed(client, principal.user) && !this.states.has(client)) {
        this.subscribedAnew(client, principal.user);
      }
    });
  }

  /** Each connection's catch-up, from its first subscription to its inbox on. */
  private readonly states = new WeakMap<Client, ConnectionSync>();

  /**
   * The connection subscribed to its inbox: a new subscription (the first, one after an UNSUBSCRIBE, or a SUBSCRIBE
   * again once the last catch-up is over) gets a catch-up of its own. One catch-up runs at a time per connection: a
   * SUBSCRIBE repeated while one runs (or waits to be retried) for a subscription still held adds nothing, as that
   * catch-up brings it up to date; a subscription made after an UNSUBSCRIBE while one runs gets another once that
   * one has stopped (at its next write), however many such subscriptions came meanwhile. So the client's own
   * packets never start more than one catch-up at a time, nor cut short a retry's pause.
   */
  private subscribedAnew(client: Client, user: string): void {
    const state = this.states.get(client);
    if (!state) {
      const fresh: ConnectionSync = { busy: false, dropped: false, again: false, failures: 0 };
      this.states.set(client, fresh);
      return this.run(client, user, fresh);
    }
    if (!state.busy) return this.run(client, user, state);
    if (state.dropped) state.again = true;
  }

  /**
   * Runs a connection's catch-up. One that fails while the connection is still open and subscribed (a service or the
   * store did not answer) is run again, after a growing pause: until it succeeds the connection gets live events
   * only, and the backlog waits for it. One stopped by an UNSUBSCRIBE is followed at once by a whole catch-up for a
   * subscription made since, and by none otherwise: the next SUBSCRIBE starts one.
   */
  private run(client: Client, user: string, state: ConnectionSync): void {
    state.busy = true;
    state.dropped = false;
    state.again = false;
    this.sync(client, user, state).then(
      () => {
        state.failures = 0;
        state.busy = false;
      },
      (e: unknown) => {
        if (client.closed) return;
        if (e instanceof Unsubscribed) {
          state.busy = false;
          if (state.again && this.subscribed(client, user)) this.run(client, user, state);
          return;
        }
        // The pause holds whatever the client does meanwhile: a SUBSCRIBE again does not bring the next try closer.
        const retryInMs = Math.min(SYNC_RETRY_FIRST_MS * 2 ** state.failures, SYNC_RETRY_MAX_MS);
        state.failures += 1;
        this.logger.warn({ event: 'sync_failed', user, error: String(e), retryInMs });
        // The client is told, each time, so that a person is not left wondering where their missed messages are (a
        // connection no longer subscribed to its inbox is written nothing).
        writeTo(client, topics.inbox(user), { type: 'sync_delayed', error: delayReason(e), retryInMs });
        setTimeout(() => {
          state.busy = false;
          if (!client.closed && this.subscribed(client, user)) this.run(client, user, state);
        }, retryInMs).unref();
      },
    );
  }

  private subscribed(client: Client, user: string): boolean {
    return isSubscribed(client, topics.inbox(user));
  }

  /** Sends the sync event, the backlog and `synced` to one connection. */
  private async sync(client: Client, user: string, catchUp: ConnectionSync): Promise<void> {
    // Asked at once, so a slow answer does not hold up the backlog; sent before `synced`.
    const extra = this.extra(user).catch((e: unknown) => {
      this.logger.warn({ event: 'sync_extra_failed', user, error: String(e) });
      return null;
    });
    const { views, states } = await this.whereEachStands(client, user);
    this.send(client, catchUp, { type: 'sync', conversations: states });
    let sent = 0;
    for (const [i, state] of states.entries()) {
      sent += await this.sendBacklog(client, catchUp, views[i]!, state.after, state.last);
      if (client.closed) return;
    }
    const more = await extra;
    if (more) this.send(client, catchUp, more);
    this.send(client, catchUp, { type: 'synced', messages: sent });
  }

  /**
   * The `sync` event's conversations (where each stands for this connection, and the other members' receipts), with
   * the view of each it was made from.
   */
  private async whereEachStands(client: Client, user: string): Promise<{ views: ConversationView[]; states: SyncEvent['conversations'] }> {
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
    return { views, states };
  }

  /**
   * Sends one conversation's entries after `after` up to `last`, oldest first, a page at a time, skipping its hidden
   * stretches; stops early once the connection has closed. Resolves with how many it sent.
   */
  private async sendBacklog(client: Client, catchUp: ConnectionSync, view: ConversationView, after: number, last: number): Promise<number> {
    let sent = 0;
    while (after < last) {
      if (client.closed) break;
      const gap = view.hidden.find((h) => h.after <= after && after < h.upTo);
      if (gap) {
        after = gap.upTo;
        continue;
      }
      const end = view.hidden.find((h) => h.after > after)?.after ?? last;
      const page = await this.conversations.entriesAfter(view, after, Math.min(PAGE, end - after));
      if (page.length === 0) {
        after = end;
        continue;
      }
      for (const event of page) {
        this.send(client, catchUp, event);
        // Writes never wait on the client (see GuardedConnection): a long backlog is paced by what the client takes.
        await guardOf(client.conn)?.settled();
      }
      sent += page.length;
      this.metrics.messagesDelivered.inc({ path: 'sync' }, page.filter((e) => e.type === 'message').length);
      after = page[page.length - 1]!.seq;
    }
    return sent;
  }

  /**
   * Writes to the one connection being brought up to date; throws, ending its sync, once it is gone or has dropped the
   * subscription this catch-up is for (even if it has subscribed again since: that subscription gets a catch-up of its
   * own, from its `sync` on).
   */
  private send(client: Client, catchUp: ConnectionSync, event: InboxEvent): void {
    const topic = topics.inbox((this.policy.principalOf(client) as { user: string }).user);
    if (client.closed) throw new Error('connection closed during sync');
    if (catchUp.dropped || !writeTo(client, topic, event)) throw new Unsubscribed();
  }
}

/**
 * Why a catch-up failed, as the client is told: a service's error as it came, without its advice to try again (the
 * server does); anything else, without the store's inner details.
 */
function delayReason(e: unknown): ErrorBody {
  if (e instanceof DomainError) return { code: e.code, message: e.message.replace(/; try again.*$/, '') };
  return { code: 'internal', message: 'the server could not read your conversations' };
}

/** Where one connection's catch-up stands. */
interface ConnectionSync {
  /** A catch-up is running, or waiting to be tried again. */
  busy: boolean;
  /** The connection unsubscribed from its inbox since the running catch-up started: it is to stop. */
  dropped: boolean;
  /** It subscribed again after that: another catch-up follows the one that stops. */
  again: boolean;
  /** Catch-ups that failed in a row, for the pause before the next try. */
  failures: number;
}

/** A catch-up stopped because its connection dropped the inbox subscription it was for. */
class Unsubscribed extends Error {
  constructor() {
    super('inbox unsubscribed during sync');
  }
}
