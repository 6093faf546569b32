import { Logger } from '@nestjs/common';
import type { Client } from 'aedes';
import type { AccountsService } from '#libs/accounts';
import { withDeadline, type Metrics } from '#libs/health';
import type { GroupApi, GroupOutcome, Issued } from '#libs/group';
import type { MessagingService, SendOutcome } from '#libs/messaging';
import type { PresenceApi } from '#libs/presence';
import type { ReceiptsApi } from '#libs/receipts';
import {
  DEFAULT_HISTORY_LIMIT,
  directConversationId,
  DomainError,
  serverFailure,
  splitPeers,
  inboxTopicOf,
  parseRequest,
  topics,
  type ErrorReply,
  type GroupInfo,
  type HistoryRequest,
  type HistoryResult,
  type InboxEvent,
  type OkReply,
  type Principal,
  type Request,
  type ResultOf,
  type SendRequest,
  type SendResult,
} from '#libs/protocol';
import { LogThrottle } from '#libs/runtime';
import { deferred } from './deferred.js';
import type { FileRequests } from './file-requests.js';
import { noteRelay, type InboxPublisher, type RelayNote } from './inbox-publisher.js';
import { guardOf } from './connection-guard.js';
import type { LoginThrottle } from './login-throttle.js';
import type { RequestLimiter } from './request-limiter.js';
import type { Counter, Histogram } from 'prom-client';

export interface DispatcherLimits {
  maxRequestBytes: number;
  /** Request rate limits per connection and per user; none when absent. */
  rate?: RequestLimiter;
  /** The failed-login limits, which a registration's retry meets too (it checks a password); none when absent. */
  logins?: LoginThrottle;
}

/**
 * A request's place in its connection's queue. `issued` is called once the
 * request has done what must happen in arrival order (a message's append has
 * been handed to the store, which applies appends in call order). `previous`
 * settles once the request before it has handed its deliveries and reply to
 * the broker; `handedOver` is this request's own signal of that.
 * `previousDelivered` settles once the request before it has handed over its
 * deliveries (its reply may still wait: a send's, for the recipient's presence);
 * `delivered` is this request's own signal of that.
 */
export interface Turn extends RelayNote {
  issued: () => void;
  previous: Promise<void>;
  handedOver: () => void;
  previousDelivered: Promise<void>;
  delivered: () => void;
}

/** The tail of one connection's queue. */
interface QueueTail {
  /** The last request has been issued: a following `send` may start. */
  issued: Promise<void>;
  /** The last request's deliveries are with the broker: a following send's may go. */
  delivered: Promise<void>;
  /** The last request's deliveries and reply are with the broker: anything may start. */
  handedOver: Promise<void>;
  /** How many sends in a row the last request is pipelined behind (itself included). */
  depth: number;
}

const DONE: Promise<void> = Promise.resolve();
const IDLE: QueueTail = { issued: DONE, delivered: DONE, handedOver: DONE, depth: 0 };

/** Requests that move file bytes: limited by the transfer budget, and by the request rate only when they move nothing. */
const TRANSFER_OPS: ReadonlySet<string> = new Set(['file.chunk', 'file.fetch']);

/**
 * How long the `accepted` reply to a 1:1 send waits, once the message is stored, for the recipient's presence (read
 * meanwhile); past it the reply goes out without `recipient`. Presence normally answers in well under a millisecond in
 * process and a few over RPC; a presence service that is away would otherwise hold every reply for the RPC timeout.
 */
export const RECIPIENT_PRESENCE_WAIT_MS = 1000;

/** Sends of one connection in flight at once, at most. */
const MAX_PIPELINED = 32;

/**
 * Turns a request published by a client into a service call, and its outcome
 * into exactly one reply on the client's inbox.
 *
 * Requests of one connection take effect in the order they arrived, and their
 * deliveries and replies are handed to the broker in that order too (the
 * broker keeps the order of what it is handed for one topic), so a client that
 * sends two messages quickly sees them stored, delivered and answered in that
 * order. Consecutive `send`s are pipelined: the next one starts once the
 * previous one's append is issued, so their waits for the disk (or Redis)
 * overlap and the store commits them together, instead of one commit per round
 * trip. Any other request waits until the one before it has been answered, and
 * the next waits for it: a `history` sees every message sent before it.
 * (Pipelining stops at a process boundary: a group service in another process
 * cannot signal `issued`, so there a post starts once the one before it is stored.)
 */
export class RequestDispatcher {
  private readonly logger = new Logger('RequestDispatcher');
  /** Failures alike (a full disk refuses every write) are logged once a window, with a count of the rest. */
  private readonly failureLog = new LogThrottle(10_000, undefined, 1, (kind, n) => {
    const [op, error] = kind.split('\0');
    this.logger.error({ event: 'log_left_out', of: 'request_failed', op, error, alikeLeftOut: n });
  });
  /** The tail of each connection's queue of requests. */
  private readonly queues = new WeakMap<object, QueueTail>();
  /**
   * Each op's metrics for a request answered `ok`, looked up once: prom-client builds and hashes a key from the label
   * object on every call, which was a tenth of what the gateway allocated per message.
   */
  private readonly okMetrics = new Map<string, { count: Counter.Internal; seconds: Histogram.Internal<'op'> }>();
  private readonly liveDeliveries: Counter.Internal;

  constructor(
    private readonly accounts: AccountsService,
    private readonly messaging: MessagingService,
    private readonly presence: PresenceApi,
    private readonly receipts: ReceiptsApi,
    private readonly groups: GroupApi,
    private readonly inbox: InboxPublisher,
    private readonly metrics: Metrics,
    private readonly limits: DispatcherLimits,
    private readonly files: FileRequests,
  ) {
    this.liveDeliveries = metrics.messagesDelivered.labels('live');
  }

  /** Queues a request from one connection. Never throws and never rejects. */
  enqueue(connection: Client, principal: Principal, payload: Buffer): void {
    this.metrics.requestsInProgress.inc();
    const parsed = parseRequest(payload, this.limits.maxRequestBytes);
    const holdMs = this.admit(connection, principal, parsed);
    const allowed = holdMs !== null;
    const tail = this.queues.get(connection) ?? IDLE;
    const issued = deferred();
    const delivered = deferred();
    const handedOver = deferred();
    // A burst is pipelined a window at a time: more in flight only floods the broker with deliveries at once.
    const pipelined = allowed && parsed.ok && parsed.request.op === 'send' && tail.depth < MAX_PIPELINED;
    const ready = pipelined ? tail.issued : tail.handedOver;
    void (holdMs ? heldBack(ready, holdMs) : ready)
      .then(() =>
        this.handle(connection, principal, parsed, allowed, {
          issued: issued.resolve,
          previous: tail.handedOver,
          handedOver: handedOver.resolve,
          previousDelivered: tail.delivered,
          delivered: delivered.resolve,
        }),
      )
      .catch((e: unknown) => this.logger.error({ event: 'request_crashed', error: String(e) }))
      .finally(() => {
        // Whatever happened, the next request may go.
        issued.resolve();
        delivered.resolve();
        handedOver.resolve();
        this.metrics.requestsInProgress.dec();
      });
    const depth = pipelined ? tail.depth + 1 : 1;
    this.queues.set(connection, { issued: issued.promise, delivered: delivered.promise, handedOver: handedOver.promise, depth });
  }

  /**
   * Counts a request against the limits as it arrives, so a flood is refused before it costs more than a reply: how
   * long (ms) to hold it back, 0 for not at all, or null to refuse it. A file chunk draws on the user's transfer budget,
   * and over it is held back (in its place in the queue) rather than refused; it takes a request too, given back once
   * it has moved its chunk (see `RequestLimiter.moved`).
   */
  private admit(connection: Client, principal: Principal, parsed: ParsedRequest): number | null {
    const rate = this.limits.rate;
    if (!rate) return 0;
    const address = guardOf(connection.conn)?.remoteAddress;
    if (principal.kind === 'user' && parsed.ok && TRANSFER_OPS.has(parsed.request.op)) return rate.takeTransfer(connection, principal.user, address);
    return this.takeRequest(connection, principal) ? 0 : null;
  }

  /** Whether the connection may make one more request now, taking it from the limits: what a subscription costs too. */
  takeRequest(connection: Client, principal: Principal): boolean {
    const rate = this.limits.rate;
    if (!rate) return true;
    return rate.take(connection, principal.kind === 'user' ? principal.user : null, guardOf(connection.conn)?.remoteAddress);
  }

  /** Handles one request to completion: its reply is published when this resolves. `allowed` false answers `rate_limited` and does nothing. */
  private async handle(connection: Client, principal: Principal, parsed: ParsedRequest, allowed: boolean, turn: Turn): Promise<void> {
    const started = performance.now();
    let reply: OkReply | ErrorReply;
    let op = 'invalid';
    if (!allowed) {
      // Counted under its op, when it is a well-formed request: an operator sees which op is being throttled.
      if (parsed.ok) op = parsed.request.op;
      const id = parsed.ok ? parsed.request.id : parsed.id;
      reply = errorReply(
        id,
        parsed.ok ? parsed.request.op : parsed.op,
        new DomainError('rate_limited', 'too many requests; slow down and retry with the same id'),
      );
    } else if (!parsed.ok) {
      reply = errorReply(parsed.id, parsed.op, parsed.error);
    } else {
      op = parsed.request.op;
      try {
        reply = await this.execute(principal, parsed.request, turn, connection);
      } catch (e) {
        reply = errorReply(parsed.request.id, op, this.asDomainError(e, op));
      }
      // A chunk moved: its bytes paid for it, and the request it took goes back. One that moved nothing keeps it.
      if (reply.ok && principal.kind === 'user' && TRANSFER_OPS.has(op)) this.limits.rate?.moved(connection, principal.user);
    }
    // What the request delivered reaches the other gateways before it is answered (see `RelayNote`). The wait is bounded
    // by the relay's own RELAY_WAIT_MS, counted from its batch, not from when the answers before it went, should Redis
    // not answer: the events are stored, and reach their recipients' next catch-up.
    const relayed = turn.relayed?.catch(() => undefined);
    turn.issued();
    await turn.previous;
    turn.delivered();
    if (relayed) await relayed;
    // A file chunk (tens of KiB) goes to the connection that fetched it only: not to the user's other devices, and not
    // across the backplane to every other gateway. Every other reply is published on the inbox, for all the user's
    // devices, and written to the requester's replies topic when it has one.
    if (principal.kind === 'user') this.inbox.reply(connection, principal.user, reply, op === 'file.fetch');
    else this.inbox.publish(inboxTopicOf(principal), reply);
    turn.handedOver();
    const seconds = (performance.now() - started) / 1000;
    if (reply.ok) {
      const metrics = this.okMetricsOf(op);
      metrics.count.inc();
      metrics.seconds.observe(seconds);
    } else {
      this.metrics.requests.inc({ op, outcome: reply.error.code });
      this.metrics.requestSeconds.observe({ op }, seconds);
    }
  }

  private okMetricsOf(op: string): { count: Counter.Internal; seconds: Histogram.Internal<'op'> } {
    let metrics = this.okMetrics.get(op);
    if (!metrics) {
      metrics = { count: this.metrics.requests.labels(op, 'ok'), seconds: this.metrics.requestSeconds.labels(op) };
      this.okMetrics.set(op, metrics);
    }
    return metrics;
  }

  private async execute(principal: Principal, req: Request, turn: Turn, connection: Client): Promise<OkReply> {
    if (principal.kind === 'anonymous') {
      if (req.op !== 'register') throw new DomainError('not_allowed', 'log in first: an anonymous connection may only register');
      const logins = this.limits.logins;
      const address = guardOf(connection.conn)?.remoteAddress ?? 'unknown';
      const guesses = logins && {
        mayTry: async () => (await logins.lockedUntil(req.user, address)) === 0,
        failed: () => logins.failed(req.user, address),
      };
      return ok(req, 'register', await this.accounts.register(req.user, req.password, req.id, guesses));
    }
    const user = principal.user;
    switch (req.op) {
      case 'register':
        throw new DomainError('not_allowed', 'you are logged in; register new accounts from an anonymous connection');
      case 'send':
        return ok(req, 'send', await this.send(user, req, turn));
      case 'history':
        return ok(req, 'history', await this.history(user, req));
      case 'who':
        return ok(req, 'who', await this.presence.who(req.user));
      case 'receipt': {
        // A device that keeps a session (clean session off) has a position of its own (see InboxSync).
        const device = connection.clean ? {} : { device: connection.id };
        const outcome = await this.receipts.record({ user, conv: req.conv, seq: req.seq, status: req.status, requestId: req.id, ...device });
        if (outcome.notify) this.deliver(turn, outcome.notify.to, outcome.notify.event);
        return ok(req, 'receipt', outcome.result);
      }
      case 'group.create':
        return ok(req, req.op, await this.groupChange(turn, (issued) => this.groups.create(user, req.id, req.name, req.members, issued)));
      case 'group.rename':
        return ok(req, req.op, await this.groupChange(turn, (issued) => this.groups.rename(user, req.id, req.group, req.name, issued)));
      case 'group.add':
        return ok(req, req.op, await this.groupChange(turn, (issued) => this.groups.add(user, req.id, req.group, req.members, issued)));
      case 'group.remove':
        return ok(req, req.op, await this.groupChange(turn, (issued) => this.groups.remove(user, req.id, req.group, req.members, issued)));
      case 'group.owner':
        return ok(req, req.op, await this.groupChange(turn, (issued) => this.groups.handOver(user, req.id, req.group, req.user, issued)));
      case 'group.leave':
      case 'group.delete': {
        const outcome = await this.groupOutcome(turn, (issued) =>
          req.op === 'group.leave' ? this.groups.leave(user, req.id, req.group, issued) : this.groups.delete(user, req.id, req.group, issued),
        );
        const info = outcome.group;
        // A leave by the last member deletes the group, and one by the owner hands it on: the answer says so.
        const deleted = req.op === 'group.leave' && info.members.length === 0;
        const change = outcome.event?.change;
        const newOwner = change?.kind === 'member_left' ? change.newOwner : undefined;
        return ok(req, req.op, { id: info.id, name: info.name, ...(deleted ? { deleted: true as const } : {}), ...(newOwner ? { newOwner } : {}) });
      }
      case 'group.list':
        return ok(req, req.op, { groups: await this.groups.list(user) });
      case 'group.members':
        return ok(req, req.op, await this.groups.info(user, req.group));
      case 'info': {
        const { conv, group, entry, members } = await this.groups.entryAt(user, req.group, req.seq);
        const others = members.filter((m) => m !== entry.from);
        return ok(req, 'info', { conv, group, seq: req.seq, from: entry.from, members: await this.receipts.progress(conv, req.seq, others) });
      }
      case 'file.offer':
      case 'file.chunk':
      case 'file.accept':
      case 'file.decline':
      case 'file.fetch':
      case 'file.received':
      case 'file.list':
      case 'file.seen':
      case 'file.cancel':
        return { type: 'reply', id: req.id, op: req.op, ok: true, result: await this.files.execute(user, req, turn) };
    }
  }

  /** Stores a message, then (once the requests before it have handed theirs over) hands it to the broker for delivery. */
  private async send(user: string, req: SendRequest, turn: Turn): Promise<SendResult> {
    const target = exactlyOne(req.to, req.group, 'to', 'group');
    if (target.key === 'group') {
      // A group service in another process cannot call `issued` back: there, the next send waits for this one's answer,
      // and posts of several members through one gateway are handed over as they are answered.
      const place = new HandOverPlace(this.conversationTails);
      try {
        const outcome = await this.groups.post(user, req.id, target.value, req.text, (conv) => {
          // In the order of their appends, which is their seq order, after the posts and changes of every member issued
          // before it on this gateway, as 1:1 sends are (below): members would otherwise see busy posters' messages overtake.
          place.take(conv);
          turn.issued();
        });
        if (!outcome.duplicate) this.metrics.messagesAccepted.inc();
        await turn.previousDelivered;
        await place.earlier;
        // A retry is delivered again: its first delivery may have been lost with its first answer, and clients drop a seq they have shown.
        this.deliver(turn, outcome.deliverTo, outcome.message);
        turn.delivered();
        return { status: 'accepted', ...outcome.accepted, group: outcome.group, recipients: outcome.deliverTo.filter((m) => m !== user).length };
      } finally {
        // Even when this one failed: a post refused after its append was issued (its sender taken out of the group
        // meanwhile) must not let the next overtake the one before it.
        place.release();
      }
    }
    // The recipient's presence is read while the message is stored, not after: one round trip (or RPC) less per message.
    const recipientState = this.presence.stateOf(target.value);
    recipientState.catch(() => undefined); // when the send fails first, this answer is not needed; its failure must not go unhandled
    // Handed over in the order the conversation's appends were issued (which is their seq order), after the sends of
    // both members on this gateway issued before it: two people sending bursts to each other at once would otherwise see
    // one another's messages overtake their own, as each connection's deliveries follow only its own.
    const conv = directConversationId(user, target.value);
    const place = new HandOverPlace(this.conversationTails);
    let outcome: SendOutcome;
    try {
      outcome = await this.messaging.send({ from: user, id: req.id, to: target.value, text: req.text }, () => {
        place.take(conv);
        turn.issued();
      });
      if (!outcome.duplicate) this.metrics.messagesAccepted.inc();
      await turn.previousDelivered;
      await place.earlier;
      // Every device of both members sees the message, the recipient first; a retry is delivered again (see above).
      this.deliver(turn, target.value === user ? [user] : [target.value, user], outcome.message);
    } finally {
      place.release();
    }
    // The next send's delivery need not wait for this one's answer: with presence slow to answer, pipelined sends would
    // otherwise wait for one another's presence reads in turn, up to RECIPIENT_PRESENCE_WAIT_MS each.
    turn.delivered();
    // The message is stored and on its way: a presence read that failed (its service away), or is not answered within
    // RECIPIENT_PRESENCE_WAIT_MS of that, leaves out the recipient's presence, and does not turn an accepted message
    // into an error nor hold its answer for the whole RPC timeout.
    const recipient = await settledWithin(recipientState, RECIPIENT_PRESENCE_WAIT_MS);
    return { status: 'accepted', ...outcome.accepted, ...(recipient ? { recipient } : {}) };
  }

  private async history(user: string, req: HistoryRequest): Promise<HistoryResult> {
    const target = exactlyOne(req.with, req.group, 'with', 'group');
    if (target.key === 'group') {
      const page = await this.groups.history(user, target.value, req.before, req.limit ?? DEFAULT_HISTORY_LIMIT);
      return { conv: page.conv, group: page.group, messages: page.events, ...splitPeers(await this.receipts.peersOf(page.conv, user)) };
    }
    const page = await this.messaging.history({ user, with: target.value, before: req.before, limit: req.limit });
    const peers = target.value === user ? { [user]: await this.receipts.cursorsOf(page.conv, user) } : await this.receipts.peersOf(page.conv, user);
    return { ...page, peers };
  }

  /**
   * The last send of each conversation (1:1, or a group's post or change made in this process) issued on this gateway
   * whose message or event is not handed over (or failed) yet (see HandOverPlace).
   */
  private readonly conversationTails = new Map<string, Promise<void>>();

  /** Delivers a group change to everyone it concerns, and answers with the group as it is now. */
  private async groupChange(note: RelayNote, make: (issued: Issued) => Promise<GroupOutcome>): Promise<GroupInfo> {
    return (await this.groupOutcome(note, make)).group;
  }

  /**
   * Delivers a group change to everyone it concerns; resolves with the whole outcome. A change made in this process is
   * handed over in its conversation's order, after the posts and changes issued before it on this gateway, as a post is.
   */
  private async groupOutcome(note: RelayNote, make: (issued: Issued) => Promise<GroupOutcome>): Promise<GroupOutcome> {
    const place = new HandOverPlace(this.conversationTails);
    try {
      const outcome = await make((conv) => place.take(conv));
      await place.earlier;
      if (outcome.event) this.deliver(note, outcome.deliverTo, outcome.event);
      return outcome;
    } finally {
      place.release();
    }
  }

  /**
   * Publishes one event to each user's inbox (every device of theirs); its relay is noted for the request's answer.
   * The reply, and the next request's deliveries, follow it in order. A connection that is gone by then gets nothing:
   * what the event tells is stored, and the user's next sync brings it.
   */
  private deliver(note: RelayNote, users: string[], event: InboxEvent): void {
    noteRelay(
      note,
      this.inbox.publishToAll(
        users.map((u) => topics.inbox(u)),
        event,
      ),
    );
    if (event.type === 'message') this.liveDeliveries.inc(users.length);
  }

  private asDomainError(e: unknown, op: string): DomainError {
    if (e instanceof DomainError) return e;
    const error = e instanceof Error ? e.message : String(e);
    const fields = this.failureLog.logFields(`${op}\0${error}`);
    if (fields) this.logger.error({ event: 'request_failed', op, error, ...fields });
    return serverFailure();
  }
}

/**
 * One send's place in its conversation's queue of hand-overs on this gateway (a 1:1 send, or a group's post or change
 * made in this process), taken when its append is issued, which is seq order. `earlier` settles once the places taken
 * before it are released. `release` lets the next one go once this one is handed over or has failed, but never before
 * `earlier`: a send that failed must not let the one after it overtake the one before it.
 */
class HandOverPlace {
  private readonly handed = deferred();
  earlier: Promise<void> = DONE;

  constructor(private readonly tails: Map<string, Promise<void>>) {}

  take(conv: string): void {
    const handed = this.handed.promise;
    this.earlier = this.tails.get(conv) ?? DONE;
    this.tails.set(conv, handed);
    void handed.then(() => {
      if (this.tails.get(conv) === handed) this.tails.delete(conv);
    });
  }

  release(): void {
    void this.earlier.then(this.handed.resolve);
  }
}

/**
 * Settles once `ready` has and `holdMs` have passed from now, whichever is later: a request held back by the transfer
 * budget waits from when it came, when the budget covers it, not from when the requests before it were done (the
 * waits of a pipeline would add up, and a transfer run below its budget).
 */
export function heldBack(ready: Promise<unknown>, holdMs: number, now: () => number = () => performance.now()): Promise<void> {
  const coveredAt = now() + holdMs;
  return ready.then(() => new Promise<void>((resolve) => setTimeout(resolve, Math.max(0, coveredAt - now()))));
}

type ParsedRequest = ReturnType<typeof parseRequest>;

/** Exactly one of two alternative fields must be given (a user or a group). */
function exactlyOne(a: string | undefined, b: string | undefined, aName: string, bName: string): { key: string; value: string } {
  if ((a === undefined) === (b === undefined)) throw new DomainError('bad_request', `give exactly one of "${aName}" and "${bName}"`);
  return a !== undefined ? { key: aName, value: a } : { key: bName, value: b! };
}

function ok<Op extends keyof ResultOf>(req: Request, op: Op, result: ResultOf[Op]): OkReply {
  return { type: 'reply', id: req.id, op, ok: true, result };
}

function errorReply(id: string | null, op: string | null, error: DomainError): ErrorReply {
  return { type: 'reply', id, op, ok: false, error: { code: error.code, message: error.message } };
}

/**
 * What `promise` resolves to, or undefined when it rejects or has not settled `ms` after this is called. A timer is
 * set only for a promise still pending after the current microtasks (the usual read has answered by then).
 */
async function settledWithin<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  let settled = false;
  const answer = promise.then(
    (value) => {
      settled = true;
      return value;
    },
    () => {
      settled = true;
      return undefined;
    },
  );
  await Promise.resolve();
  if (settled) return answer;
  // `answer` never rejects: a rejection here is the deadline passing.
  return withDeadline(answer, ms).catch(() => undefined);
}
