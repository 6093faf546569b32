import { directConversationId, directPeer, DomainError, type HistoryResult, type MessageEvent, type SendResult } from '#libs/protocol';
import type { ConversationLogStore, LogEntry } from './conversation-log.store.js';

/** What messaging needs to know about users; the accounts domain provides it. */
export interface UserDirectory {
  exists(user: string): Promise<boolean>;
}

export interface MessagingLimits {
  maxTextLength: number;
}

export interface SendCommand {
  from: string;
  id: string;
  to: string;
  text: string;
}

export interface SendOutcome {
  result: SendResult;
  /** The message as its recipients see it. */
  message: MessageEvent;
  /** True when this was a retry of an accepted message: nothing new was stored and it must not be delivered again. */
  duplicate: boolean;
}

export interface HistoryQuery {
  user: string;
  with: string;
  before?: number | undefined;
  limit?: number | undefined;
}

const DEFAULT_HISTORY_LIMIT = 50;

/** 1:1 messages: validate, append durably, and describe what to deliver. */
export class MessagingService {
  constructor(
    private readonly log: ConversationLogStore,
    private readonly users: UserDirectory,
    private readonly limits: MessagingLimits,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * Accepts a message: it is durable in the conversation log when this
   * resolves. Throws empty_text, text_too_long or unknown_user, storing nothing.
   */
  async send(cmd: SendCommand): Promise<SendOutcome> {
    if (cmd.text.trim().length === 0) throw new DomainError('empty_text', 'a message needs some text');
    const length = [...cmd.text].length;
    if (length > this.limits.maxTextLength) {
      throw new DomainError('text_too_long', `a message is at most ${this.limits.maxTextLength} characters; this one has ${length}`);
    }
    if (!(await this.users.exists(cmd.to))) throw new DomainError('unknown_user', `there is no user "${cmd.to}"`);

    const conv = directConversationId(cmd.from, cmd.to);
    const { entry, duplicate } = await this.log.append(conv, { from: cmd.from, id: cmd.id, ts: this.now(), kind: 'text', text: cmd.text });
    return {
      result: { status: 'accepted', conv, seq: entry.seq, ts: entry.ts },
      message: toMessageEvent(conv, entry),
      duplicate,
    };
  }

  /** A page of a direct conversation the user is part of, oldest first. Throws unknown_user. */
  async history(q: HistoryQuery): Promise<HistoryResult> {
    if (!(await this.users.exists(q.with))) throw new DomainError('unknown_user', `there is no user "${q.with}"`);
    const conv = directConversationId(q.user, q.with);
    const limit = q.limit ?? DEFAULT_HISTORY_LIMIT;
    const before = q.before ?? (await this.log.lastSeq(conv)) + 1;
    const entries = await this.log.readBefore(conv, before, limit);
    return { conv, messages: entries.map((e) => toMessageEvent(conv, e)) };
  }
}

/** The wire form of a direct-conversation log entry. */
export function toMessageEvent(conv: string, entry: LogEntry): MessageEvent {
  return {
    type: 'message',
    conv,
    seq: entry.seq,
    from: entry.from,
    to: directPeer(conv, entry.from) ?? entry.from,
    ts: entry.ts,
    id: entry.id,
    text: entry.text,
  };
}
