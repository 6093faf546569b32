import { MessagingService } from '#libs/messaging';
import type { GroupLabel, GroupEvent, MessageEvent } from '#libs/protocol';
import type { GroupService } from './group.service.js';

/** The part of a conversation a user may see: entries after `after` up to `last`. */
export interface ConversationView {
  conv: string;
  group?: GroupLabel;
  after: number;
  last: number;
  /** The conversation's members now; the user may no longer be one (a former group member). */
  members: string[];
}

/**
 * One view over both kinds of conversation, for receipts and inbox sync:
 * direct ones (two members, all of the log visible) and groups (current
 * members; each sees the log from when they joined until they left).
 */
export class Conversations {
  constructor(
    private readonly messaging: MessagingService,
    private readonly groups: GroupService,
  ) {}

  /** Current members, or null when there is no such conversation. */
  membersOf(conv: string): Promise<string[] | null> {
    return MessagingService.isDirect(conv) ? this.messaging.membersOf(conv) : this.groups.membersOf(conv);
  }

  /** Every conversation the user takes (or took) part in. */
  conversationsOf(user: string): Promise<string[]> {
    return this.messaging.conversationsOf(user);
  }

  lastSeq(conv: string): Promise<number> {
    return this.messaging.lastSeq(conv);
  }

  /** What the user may see of a conversation; null when nothing. */
  async viewOf(conv: string, user: string): Promise<ConversationView | null> {
    if (!MessagingService.isDirect(conv)) return this.groups.visibleRange(conv, user);
    const members = await this.messaging.membersOf(conv);
    return members?.includes(user) ? { conv, after: 0, last: await this.messaging.lastSeq(conv), members } : null;
  }

  /** Entries after `after` as the user sees them, oldest first, at most `limit`. */
  async entriesAfter(view: ConversationView, after: number, limit: number): Promise<(MessageEvent | GroupEvent)[]> {
    if (!view.group) return this.messaging.messagesAfter(view.conv, after, limit);
    return this.groups.render(view.conv, view.group, await this.messaging.entriesAfter(view.conv, after, limit));
  }
}
