import {
  DEFAULT_HISTORY_LIMIT,
  directConversationId,
  directPeer,
  DomainError,
  hasVisibleText,
  USERNAME_PATTERN,
  type GroupEvent,
  type GroupLabel,
  type MessageEvent,
} from '#libs/protocol';
import type { ConversationIndexStore } from './conversation-index.store.js';
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

export interface Accepted {
  conv: string;
  seq: number;
  ts: number;
}

export interface SendOutcome {
  accepted: Accepted;
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

export interface HistoryPage {
  conv: string;
  messages: MessageEvent[];
}

/** How many `user\0conv` pairs MessagingService remembers as indexed: about 10 MiB of heap at most. */
const KNOWN_PAIRS = 100_000;

/** 1:1 messages: validate, append durably, and describe what to deliver. */
export class MessagingService {
  /**
   * `user\0conv` pairs known to be in the index, so repeat sends skip that write, with the index's generation they were
   * written in: a store that may have lost them since (see `ConversationIndexStore.generation`) is written again. At
   * most `knownPairs`, the least recently noted going first: kept without a bound, it held every conversation written
   * to since the process started (some 210 bytes of heap per 1:1 conversation, never given back). A pair let go costs
   * one more index write, which changes nothing, at its next send.
   */
  private readonly indexed = new Map<string, number>();

  constructor(
    private readonly log: ConversationLogStore,
    private readonly index: ConversationIndexStore,
    private readonly users: UserDirectory,
    private readonly limits: MessagingLimits,
    private readonly now: () => number = Date.now,
    private readonly knownPairs = KNOWN_PAIRS,
  ) {}

  /**
   * Accepts a message: it is durable in the conversation log when this
   * resolves. Throws empty_text, text_too_long, unknown_user or bad_request (a
   * text `checkText` refuses, an id used for another text), storing nothing.
   * `issued` is called as soon as the append has been handed to the log (which
   * applies appends in call order), before it is durable: a caller may start
   * its next send then, and the two appends keep their order.
   */
  async send(cmd: SendCommand, issued?: () => void): Promise<SendOutcome> {
    try {
      checkText(cmd.text, this.limits.maxTextLength);
    } catch (e) {
      const earlier = await this.storedRetry(cmd);
      if (!earlier) throw e;
      issued?.();
      return earlier;
    }
    if (!(await this.users.exists(cmd.to))) throw new DomainError('unknown_user', `there is no user "${cmd.to}"`);

    const conv = directConversationId(cmd.from, cmd.to);
    // Index first: a crash between the two leaves an empty entry in the index, never a message the index does not know.
    // (Known pairs are skipped without a wait: nearly every send is in a conversation indexed already.)
    const generation = this.index.generation();
    const indexing = this.ensureIndexed(cmd.from, cmd.to, conv, generation);
    if (indexing) await indexing;
    const appended = this.log.append(conv, { from: cmd.from, id: cmd.id, ts: this.now(), kind: 'text', text: cmd.text });
    issued?.();
    const { entry, duplicate } = await appended;
    if (duplicate) checkRetry(entry, cmd.id, cmd.text);
    // The store was reconnected meanwhile, and may have lost the index entries taken as known: written again before the
    // message is answered, so that a catch-up finds it.
    if (this.index.generation() !== generation) await this.ensureIndexed(cmd.from, cmd.to, conv, this.index.generation());
    return sendOutcome(conv, entry, duplicate);
  }

  /**
   * The answer to a retry of a message stored before (its answer lost), when its text is refused now: a limit lowered
   * since, or a rule a later version added, does not unsend what was accepted. Null when no message of that id and
   * text is stored.
   */
  private async storedRetry(cmd: SendCommand): Promise<SendOutcome | null> {
    const conv = directConversationId(cmd.from, cmd.to);
    const entry = await this.log.findById(conv, cmd.from, cmd.id);
    if (entry?.kind !== 'text' || entry.text !== cmd.text) return null;
    return sendOutcome(conv, entry, true);
  }

  /** A page of a direct conversation the user is part of, oldest first. Throws unknown_user. */
  async history(q: HistoryQuery): Promise<HistoryPage> {
    if (!(await this.users.exists(q.with))) throw new DomainError('unknown_user', `there is no user "${q.with}"`);
    const conv = directConversationId(q.user, q.with);
    const limit = q.limit ?? DEFAULT_HISTORY_LIMIT;
    const before = q.before ?? (await this.log.lastSeq(conv)) + 1;
    const entries = await this.log.readBefore(conv, before, limit);
    return { conv, messages: entries.map((e) => toMessageEvent(conv, e)) };
  }

  /** Messages after `after` in a direct conversation, oldest first, at most `limit`. */
  async messagesAfter(conv: string, after: number, limit: number): Promise<MessageEvent[]> {
    return (await this.log.readAfter(conv, after, limit)).map((e) => toMessageEvent(conv, e));
  }

  /** Raw log entries after `after`, oldest first, at most `limit` (for other domains that render them). */
  entriesAfter(conv: string, after: number, limit: number): Promise<LogEntry[]> {
    return this.log.readAfter(conv, after, limit);
  }

  /** Whether a conversation id names a direct conversation. */
  static isDirect(conv: string): boolean {
    return conv.startsWith('dm:');
  }

  /** The conversations a user takes part in. */
  conversationsOf(user: string): Promise<string[]> {
    return this.index.list(user);
  }

  /** The members of a direct conversation, or null when the id names none. */
  membersOf(conv: string): Promise<string[] | null> {
    const m = /^dm:([^:]+):([^:]+)$/.exec(conv);
    if (!m || !USERNAME_PATTERN.test(m[1]!) || !USERNAME_PATTERN.test(m[2]!) || m[1]! > m[2]!) return Promise.resolve(null);
    return Promise.resolve(m[1] === m[2] ? [m[1]!] : [m[1]!, m[2]!]);
  }

  lastSeq(conv: string): Promise<number> {
    return this.log.lastSeq(conv);
  }

  userExists(user: string): Promise<boolean> {
    return this.users.exists(user);
  }

  /**
   * Adds the conversation to both users' indexes unless known to be there in this generation of the store; null when
   * nothing needs doing (no wait for a send in a conversation indexed already).
   */
  private ensureIndexed(from: string, to: string, conv: string, generation: number): Promise<unknown> | null {
    const indexing = [this.indexOne(from, conv, generation), this.indexOne(to, conv, generation)].filter((p) => p !== null);
    return indexing.length > 0 ? Promise.all(indexing) : null;
  }

  /** Adds the conversation to the user's index unless it is known to be there; null when nothing needs doing. */
  private indexOne(user: string, conv: string, generation: number): Promise<void> | null {
    const key = `${user}\0${conv}`;
    if (this.indexed.get(key) === generation) return null;
    return this.index.add(user, conv).then(() => {
      // Moved to the end: the first in the map is the least recently noted.
      this.indexed.delete(key);
      this.indexed.set(key, generation);
      if (this.indexed.size > this.knownPairs) this.indexed.delete(this.indexed.keys().next().value!);
    });
  }
}

/** Control characters a message may not carry: all but tab and new line (a terminal would act on them: escape codes, carriage returns, bells). */
// eslint-disable-next-line no-control-regex
const CONTROL_IN_TEXT = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/;

/** Half of a surrogate pair on its own (with the `u` flag, a whole pair is one character, not a surrogate). */
const LONE_SURROGATE = /\p{Cs}/u;

/**
 * The rule every message text meets, in any conversation: some visible text,
 * at most `max` characters (counted as characters, so an emoji is one), no
 * controls but tab and new line, well-formed Unicode.
 * Throws empty_text, text_too_long or bad_request.
 */
export function checkText(text: string, max: number): void {
  if (!hasVisibleText(text)) throw new DomainError('empty_text', 'a message needs some visible text');
  if (CONTROL_IN_TEXT.test(text)) throw new DomainError('bad_request', 'a message may not contain control characters other than tab and new line');
  // Half of a surrogate pair on its own is no character at all (UTF-8 cannot carry it): a broken client or a probe.
  if (LONE_SURROGATE.test(text)) throw new DomainError('bad_request', 'a message must be well-formed Unicode: it has half of a surrogate pair on its own');
  // A string has at least as many UTF-16 units as characters: only a long one needs counting (without copying it).
  if (text.length <= max) return;
  let length = 0;
  for (const _ of text) length++; // by code point, as the limit counts, without building an array
  if (length > max) throw new DomainError('text_too_long', `a message is at most ${max} characters; this one has ${length}`);
}

/**
 * A retry is the message it retries: an id used in the conversation for another text is refused (nothing is stored or
 * delivered), so a client that reused an id by mistake learns that this message was not sent, instead of being told
 * `accepted` with the first one's seq.
 */
export function checkRetry(entry: LogEntry, id: string, text: string): void {
  if (entry.kind === 'text' && entry.text !== text)
    throw new DomainError(
      'bad_request',
      `the id "${id}" was used for another message in this conversation (#${entry.seq}): a new message needs an id of its own`,
    );
}

/** What a send answers with, for the entry it stored (or, `duplicate`, the one stored by the message it retries). */
function sendOutcome(conv: string, entry: LogEntry, duplicate: boolean): SendOutcome {
  return { accepted: { conv, seq: entry.seq, ts: entry.ts }, message: toMessageEvent(conv, entry), duplicate };
}

/** The wire form of a direct-conversation log entry (direct conversations hold only text). */
export function toMessageEvent(conv: string, entry: LogEntry): MessageEvent {
  return {
    type: 'message',
    conv,
    seq: entry.seq,
    from: entry.from,
    to: directPeer(conv, entry.from) ?? entry.from,
    ts: entry.ts,
    id: entry.id,
    text: entry.kind === 'text' ? entry.text : '',
  };
}

/** The wire form of any log entry of a group: a message, or a group event. */
export function toGroupInboxEvent(conv: string, group: GroupLabel, entry: LogEntry): MessageEvent | GroupEvent {
  const head = { conv, seq: entry.seq, from: entry.from, group, ts: entry.ts, id: entry.id };
  return entry.kind === 'text' ? { type: 'message', ...head, text: entry.text } : { type: 'group', ...head, change: entry.event };
}
