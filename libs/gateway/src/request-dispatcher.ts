import { Logger } from '@nestjs/common';
import type { AccountsService } from '#libs/accounts';
import type { Metrics } from '#libs/health';
import type { MessagingService } from '#libs/messaging';
import type { PresenceApi } from '#libs/presence';
import { NO_CURSORS, type ReceiptsApi } from '#libs/receipts';
import { DomainError, inboxTopicOf, parseRequest, topics, type ErrorReply, type OkReply, type Principal, type Request, type ResultOf } from '#libs/protocol';
import type { InboxPublisher } from './inbox-publisher.js';

export interface DispatcherLimits {
  maxRequestBytes: number;
}

/**
 * Turns a request published by a client into a service call, and its outcome
 * into exactly one reply on the client's inbox. Requests of one connection are
 * handled one after the other, in the order they arrived, so a client that
 * sends two messages quickly sees them stored in that order.
 */
export class RequestDispatcher {
  private readonly logger = new Logger('RequestDispatcher');
  /** The tail of each connection's queue of requests. */
  private readonly queues = new WeakMap<object, Promise<void>>();

  constructor(
    private readonly accounts: AccountsService,
    private readonly messaging: MessagingService,
    private readonly presence: PresenceApi,
    private readonly receipts: ReceiptsApi,
    private readonly inbox: InboxPublisher,
    private readonly metrics: Metrics,
    private readonly limits: DispatcherLimits,
  ) {}

  /** Queues a request from one connection. Never throws and never rejects. */
  enqueue(connection: object, principal: Principal, payload: Buffer): void {
    const tail = this.queues.get(connection) ?? Promise.resolve();
    const next = tail.then(() => this.handle(principal, payload));
    this.queues.set(connection, next);
  }

  /** Handles one request to completion: its reply is published when this resolves. */
  async handle(principal: Principal, payload: Buffer): Promise<void> {
    const started = process.hrtime.bigint();
    const parsed = parseRequest(payload, this.limits.maxRequestBytes);
    let reply: OkReply | ErrorReply;
    let op = 'invalid';
    if (!parsed.ok) {
      reply = errorReply(parsed.id, parsed.op, parsed.error);
    } else {
      op = parsed.request.op;
      try {
        reply = await this.execute(principal, parsed.request);
      } catch (e) {
        reply = errorReply(parsed.request.id, op, this.asDomainError(e, op));
      }
    }
    try {
      await this.inbox.publish(inboxTopicOf(principal), reply);
    } catch (e) {
      this.logger.error({ event: 'reply_failed', op, error: String(e) });
    }
    this.metrics.requests.inc({ op, outcome: reply.ok ? 'ok' : reply.error.code });
    this.metrics.requestSeconds.observe({ op }, Number(process.hrtime.bigint() - started) / 1e9);
  }

  private async execute(principal: Principal, req: Request): Promise<OkReply> {
    if (principal.kind === 'anonymous') {
      if (req.op !== 'register') throw new DomainError('not_allowed', 'log in first: an anonymous connection may only register');
      return ok(req, 'register', await this.accounts.register(req.user, req.password));
    }
    const user = principal.user;
    switch (req.op) {
      case 'register':
        throw new DomainError('not_allowed', 'you are logged in; register new accounts from an anonymous connection');
      case 'send': {
        const outcome = await this.messaging.send({ from: user, id: req.id, to: req.to, text: req.text });
        if (!outcome.duplicate) {
          this.metrics.messagesAccepted.inc();
          // Every device of both members sees the message; the recipient first.
          const recipients = outcome.message.to === user ? [user] : [outcome.message.to, user];
          await Promise.all(recipients.map((r) => this.inbox.publish(topics.inbox(r), outcome.message)));
          this.metrics.messagesPushed.inc(recipients.length);
        }
        const recipient = await this.presence.stateOf(req.to);
        return ok(req, 'send', { status: 'accepted', ...outcome.accepted, recipient });
      }
      case 'history': {
        const page = await this.messaging.history({ user, with: req.with, before: req.before, limit: req.limit });
        const peers = await this.receipts.peersOf(page.conv, user);
        const peer = req.with === user ? await this.receipts.cursorsOf(page.conv, user) : (peers[req.with] ?? NO_CURSORS);
        return ok(req, 'history', { ...page, peer });
      }
      case 'who':
        return ok(req, 'who', await this.presence.who(req.user));
      case 'receipt': {
        const outcome = await this.receipts.record({ user, conv: req.conv, seq: req.seq, status: req.status });
        if (outcome.notify) {
          const { to, event } = outcome.notify;
          await Promise.all(to.map((member) => this.inbox.publish(topics.inbox(member), event)));
        }
        return ok(req, 'receipt', outcome.result);
      }
    }
  }

  private asDomainError(e: unknown, op: string): DomainError {
    if (e instanceof DomainError) return e;
    this.logger.error({ event: 'request_failed', op, error: e instanceof Error ? e.message : String(e) });
    return new DomainError('unavailable', 'the server could not complete this request right now; retry with the same id (a retry never stores anything twice)');
  }
}

function ok<Op extends keyof ResultOf>(req: Request, op: Op, result: ResultOf[Op]): OkReply {
  return { type: 'reply', id: req.id, op, ok: true, result };
}

function errorReply(id: string | null, op: string | null, error: DomainError): ErrorReply {
  return { type: 'reply', id, op, ok: false, error: { code: error.code, message: error.message } };
}
