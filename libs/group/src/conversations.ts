import { MessagingService } from '#libs/messaging';
import type { GroupLabel, GroupEvent, MessageEvent } from '#libs/protocol';
import type { GroupMember, GroupService } from './group.service.js';

/** The longest stretch of a log read to tell whether a receipt covers anyone else's entries. */
const OTHERS_SCAN_LIMIT = 100;

/** The part of a conversation a user may see: entries after `after` up to `last`, but for the `hidden` stretches. */
export interface ConversationView {
  conv: string;
  group?: GroupLabel;
  after: number;
  last: number;
  /** Stretches in between that are not the user's (a group's, said while they were out of it): after `after` up to `upTo`. */
  hidden: { after: number; upTo: number }[];
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

  /**
   * The members (in a group, with the seq that added each, and its former members as `viewer` may know of them, with
   * the seq that took each out: see GroupService.membersOf), or null when there is no such conversation.
   */
  async membersOf(conv: string, viewer?: string): Promise<(Partial<GroupMember> & { user: string })[] | null> {
    if (!MessagingService.isDirect(conv)) return this.groups.membersOf(conv, viewer);
    return (await this.messaging.membersOf(conv))?.map((user) => ({ user })) ?? null;
  }

  /** Every conversation the user takes (or took) part in. */
  conversationsOf(user: string): Promise<string[]> {
    return this.messaging.conversationsOf(user);
  }

  /** What the user may see of a conversation; null when nothing. */
  async viewOf(conv: string, user: string): Promise<ConversationView | null> {
    if (!MessagingService.isDirect(conv)) return this.groups.visibleRange(conv, user);
    const members = await this.messaging.membersOf(conv);
    return members?.includes(user) ? { conv, after: 0, last: await this.messaging.lastSeq(conv), hidden: [], members } : null;
  }

  userExists(user: string): Promise<boolean> {
    return this.messaging.userExists(user);
  }

  /**
   * Whether anyone but `user` wrote an entry in (after, upTo]: a receipt that only moves past the user's own entries is
   * news to no one. A stretch longer than OTHERS_SCAN_LIMIT is taken to hold someone else's, without reading it.
   */
  async othersWroteIn(conv: string, user: string, after: number, upTo: number): Promise<boolean> {
    if (upTo <= after) return false;
    if (upTo - after > OTHERS_SCAN_LIMIT) return true;
    const entries = await this.messaging.entriesAfter(conv, after, upTo - after);
    return entries.some((e) => e.from !== user);
  }

  /** Entries after `after` as the user sees them, oldest first, at most `limit`. */
  async entriesAfter(view: ConversationView, after: number, limit: number): Promise<(MessageEvent | GroupEvent)[]> {
    if (!view.group) return this.messaging.messagesAfter(view.conv, after, limit);
    return this.groups.render(view.conv, view.group, await this.messaging.entriesAfter(view.conv, after, limit));
  }
}
