import {
  DomainError,
  hasVisibleText,
  isPlainLabel,
  nameLooks,
  type GroupChange,
  type GroupEvent,
  type GroupInfo,
  type GroupLabel,
  type MessageEvent,
} from '#libs/protocol';
import {
  checkRetry,
  checkText,
  NotAWriter,
  toGroupInboxEvent,
  type AppendResult,
  type ConversationIndexStore,
  type ConversationLogStore,
  type LogEntry,
} from '#libs/messaging';
import {
  applyChange,
  GROUP_ID_PATTERN,
  groupConv,
  groupIdOf,
  GROUP_CONV_PREFIX,
  infoOf,
  infoFor,
  formerSpan,
  isMember,
  spansOf,
  within,
  labelOf,
  labelFor,
  bareSpan,
  everyoneIn,
  inGroupAt,
  newGroupId,
  noopOf,
  skeleton,
  withNoop,
  type GroupRequestKind,
  type GroupState,
  type Span,
} from './group-state.js';
import type { GroupLocks } from './group-locks.js';
import type { GroupStore } from './group.store.js';

export interface UserDirectory {
  exists(user: string): Promise<boolean>;
}

export interface GroupLimits {
  maxMembers: number;
  maxNameLength: number;
  maxTextLength: number;
}

/**
 * Called, with the group's conversation, once a request's entry has been handed to the log, which applies appends in
 * call order (see MessagingService.send): a caller may hand what it delivers over in that order. A caller in another
 * process never gets that call.
 */
export type Issued = (conv: string) => void;

/** What a change produced: the group after it, and the event to deliver to `deliverTo` (null when nothing changed). */
export interface GroupOutcome {
  group: GroupInfo;
  event: GroupEvent | null;
  deliverTo: string[];
}

export interface PostOutcome {
  accepted: { conv: string; seq: number; ts: number };
  group: GroupLabel;
  message: MessageEvent;
  /** Every member, the sender included (its other devices see the message too). */
  deliverTo: string[];
  duplicate: boolean;
}

/** Which part of a group's log a user may see: after `after`, up to `last`, but for the `hidden` stretches. */
export interface VisibleRange {
  conv: string;
  group: GroupLabel;
  after: number;
  last: number;
  /** Stretches in between that are not the user's: entries after `after` up to `upTo`, said while they were out of the group. */
  hidden: { after: number; upTo: number }[];
  /** The group's members now (none once it is deleted), whether or not the user is still one of them. */
  members: string[];
}

const PAGE = 500;

/**
 * The changes each request makes, by its op: a request whose id is found in the log with a change of another kind was
 * another request, and its id is refused rather than taken for a retry. `leave` by the last member deletes the group;
 * an owner's `delete` is the other kind of deletion.
 */
const MADE_BY: Record<GroupRequestKind, (change: GroupChange) => boolean> = {
  create: (c) => c.kind === 'created',
  rename: (c) => c.kind === 'renamed',
  add: (c) => c.kind === 'member_added',
  remove: (c) => c.kind === 'member_removed',
  leave: (c) => c.kind === 'member_left' || (c.kind === 'deleted' && c.lastMemberLeft === true),
  owner: (c) => c.kind === 'owner_changed',
  delete: (c) => c.kind === 'deleted' && !c.lastMemberLeft,
};

/**
 * Groups: the creator owns the group; only the owner renames it, manages
 * members, hands ownership over and deletes it; any member posts and leaves.
 * Every change is an entry of the group's own log, so members see changes in
 * order with messages. A message is stored once, however many members read it.
 *
 * An owner who leaves hands the group to the longest-standing member; the
 * last member leaving deletes it.
 */
export class GroupService {
  constructor(
    private readonly groups: GroupStore,
    /** Changes to one group are made one at a time, across processes. */
    private readonly locks: GroupLocks,
    private readonly log: ConversationLogStore,
    private readonly index: ConversationIndexStore,
    private readonly users: UserDirectory,
    private readonly limits: GroupLimits,
    private readonly now: () => number = Date.now,
  ) {}

  async create(actor: string, requestId: string, name: string, members: string[] = [], issued?: Issued): Promise<GroupOutcome> {
    const cleanName = this.validName(name);
    const others = [...new Set(members)].filter((m) => m !== actor);
    if (others.length + 1 > this.limits.maxMembers) throw tooLarge(this.limits.maxMembers);
    await this.mustExist(others);
    const id = newGroupId(actor, requestId);
    return this.change(id, actor, requestId, 'create', issued, () => ({ kind: 'created', name: cleanName, owner: actor, members: others }));
  }

  async rename(actor: string, requestId: string, ref: string, name: string, issued?: Issued): Promise<GroupOutcome> {
    const cleanName = this.validName(name);
    const id = await this.resolveChange(actor, requestId, ref);
    return this.change(id, actor, requestId, 'rename', issued, (g) => {
      this.mustOwn(g, actor);
      return g.name === cleanName ? null : { kind: 'renamed', oldName: g.name, name: cleanName };
    });
  }

  async add(actor: string, requestId: string, ref: string, users: string[], issued?: Issued): Promise<GroupOutcome> {
    const id = await this.resolveChange(actor, requestId, ref);
    await this.mustExist(users);
    return this.change(id, actor, requestId, 'add', issued, (g) => {
      this.mustOwn(g, actor);
      const added = [...new Set(users)].filter((u) => !isMember(g, u));
      if (added.length === 0) return null;
      if (g.members.length + added.length > this.limits.maxMembers) throw tooLarge(this.limits.maxMembers);
      return { kind: 'member_added', members: added };
    });
  }

  async remove(actor: string, requestId: string, ref: string, users: string[], issued?: Issued): Promise<GroupOutcome> {
    const id = await this.resolveChange(actor, requestId, ref);
    return this.change(id, actor, requestId, 'remove', issued, (g) => {
      this.mustOwn(g, actor);
      if (users.includes(actor))
        throw new DomainError(
          'not_allowed',
          'the owner cannot remove itself: leave the group instead (its longest-standing member then owns it), or hand it over first',
        );
      const missing = users.filter((u) => !isMember(g, u));
      if (missing.length > 0) throw new DomainError('not_member', `not in ${g.name}: ${missing.join(', ')}`);
      return { kind: 'member_removed', members: [...new Set(users)] };
    });
  }

  async leave(actor: string, requestId: string, ref: string, issued?: Issued): Promise<GroupOutcome> {
    const id = await this.resolveChange(actor, requestId, ref);
    return this.change(id, actor, requestId, 'leave', issued, (g) => {
      const others = g.members.filter((m) => m.user !== actor);
      if (others.length === 0) return { kind: 'deleted', lastMemberLeft: true };
      if (g.owner !== actor) return { kind: 'member_left', user: actor };
      return { kind: 'member_left', user: actor, newOwner: others[0]!.user };
    });
  }

  async handOver(actor: string, requestId: string, ref: string, user: string, issued?: Issued): Promise<GroupOutcome> {
    const id = await this.resolveChange(actor, requestId, ref);
    return this.change(id, actor, requestId, 'owner', issued, (g) => {
      this.mustOwn(g, actor);
      if (!isMember(g, user)) throw new DomainError('not_member', `${user} is not a member of ${g.name}`);
      return user === actor ? null : { kind: 'owner_changed', owner: user, previous: actor };
    });
  }

  async delete(actor: string, requestId: string, ref: string, issued?: Issued): Promise<GroupOutcome> {
    const id = await this.resolveChange(actor, requestId, ref);
    return this.change(id, actor, requestId, 'delete', issued, (g) => {
      this.mustOwn(g, actor);
      return { kind: 'deleted' };
    });
  }

  /** The groups the user is a member of now. */
  async list(user: string): Promise<GroupInfo[]> {
    const out: GroupInfo[] = [];
    for (const id of await this.groupIdsOf(user)) {
      const g = await this.load(id);
      if (g && !g.deleted && isMember(g, user)) out.push(infoOf(g));
    }
    // As a person looks for one: by name (case and accents aside at first), groups of one name by when they were made.
    return out.sort((a, b) => BY_NAME.compare(a.name, b.name) || a.createdAt - b.createdAt || (a.id < b.id ? -1 : 1));
  }

  /** A group's members and owner, for its members only. */
  async info(user: string, ref: string): Promise<GroupInfo> {
    return infoOf(await this.memberView(user, await this.resolve(user, ref)));
  }

  /**
   * Posts a text message; durable when this resolves. Throws unknown_group or not_member. `issued` is called, with the
   * group's conversation, once the append has been handed to the log, which applies appends in call order (see
   * MessagingService.send); a caller in another process never gets that call.
   */
  async post(actor: string, requestId: string, ref: string, text: string, issued?: Issued): Promise<PostOutcome> {
    const id = await this.resolveChange(actor, requestId, ref);
    const conv = groupConv(id);
    const before = await this.log.findById(conv, actor, requestId);
    if (before && before.kind !== 'text') throw idInUse(requestId);
    // A retry of a post stored before is answered as before even when its text is refused now (a limit lowered since,
    // a rule a later version added): that does not unsend what was accepted.
    if (before?.text !== text) checkText(text, this.limits.maxTextLength);
    const g = await this.memberView(actor, id, before !== undefined);
    // An id kept by a change request that changed nothing is not a message's either.
    if (!before && noopOf(g, actor, requestId)) throw idInUse(requestId);
    // The log checks the sender against the members it keeps, in the append: a change that removed them after the check
    // above and before the append refuses the post, which would otherwise be stored after their removal.
    const appended: Promise<AppendResult> = before
      ? Promise.resolve({ entry: before, duplicate: true })
      : this.log.append(conv, { from: actor, id: requestId, ts: this.now(), kind: 'text', text }, { writersSince: g.appliedSeq });
    issued?.(conv);
    const { entry, duplicate, writers } = await appended.catch(async (e: unknown) => {
      if (!(e instanceof NotAWriter)) throw e;
      // Refused as one who is out is refused (the group named as it was when they went out); one added back since is told
      // that this message came while they were out.
      const now = await this.memberView(actor, id);
      throw new DomainError('not_member', `you were out of ${labelOf(now).name} when this message reached it; send it again`);
    });
    if (duplicate) checkRetry(entry, requestId, text);
    return {
      accepted: { conv, seq: entry.seq, ts: entry.ts },
      // The poster's answer names the group as they are shown it: a former member's retry, as it was when they went out.
      group: labelFor(g, actor),
      message: toGroupInboxEvent(conv, labelFor(g, actor), entry) as MessageEvent,
      // The members the append was checked against are those at its seq; a log that kept none works them out. A retry
      // goes again to those who had it and are in the group still (one out since learns no later name from it).
      deliverTo: writers ?? (duplicate ? stillIn(g, inGroupAt(g, entry.seq), actor) : await this.membersAt(id, entry.seq, g)),
      duplicate,
    };
  }

  /**
   * Who was in the group at `seq`, read after the entry there is stored: a change may have landed between a post's
   * check of the members (`checked`, the state it was made against) and its append, so a member removed just before the
   * post is not sent it, and one added just before is. Every change before `seq` is in the state by then (a change marks
   * the state pending before its append). `checked`'s members are taken as they are when it was read before `seq` and
   * no change came since; a retry, whose state was read after its entry, is worked out from the spans.
   */
  private async membersAt(id: string, seq: number, checked: GroupState): Promise<string[]> {
    const now = (await this.load(id)) ?? checked;
    if (checked.appliedSeq < seq && now.appliedSeq === checked.appliedSeq) return checked.members.map((m) => m.user);
    return inGroupAt(now, seq);
  }

  /** A page of the group's log as the user may see it, oldest first: the latest `limit` entries before `before`. */
  async history(
    user: string,
    ref: string,
    before: number | undefined,
    limit: number,
  ): Promise<{ conv: string; group: GroupLabel; events: (MessageEvent | GroupEvent)[] }> {
    const id = await this.resolve(user, ref);
    const range = await this.visibleRange(groupConv(id), user);
    if (!range) throw unknownGroup(ref);
    const entries: LogEntry[] = [];
    // From the newest stretch the user may see back to the oldest, skipping what was said while they were out.
    for (const span of visibleSpans(range).reverse()) {
      const upTo = Math.min(before === undefined ? span.last : before - 1, span.last);
      const from = Math.max(span.after, upTo - (limit - entries.length));
      if (upTo > from) entries.unshift(...(await this.log.readAfter(range.conv, from, upTo - from)));
      if (entries.length >= limit) break;
    }
    return { conv: range.conv, group: range.group, events: entries.map((e) => toGroupInboxEvent(range.conv, range.group, e)) };
  }

  /** The entry at `seq` of a group's log that the user may see, and the members who could see it (for "who has read it"). */
  async entryAt(user: string, ref: string, seq: number): Promise<{ conv: string; group: GroupLabel; entry: LogEntry; members: string[] }> {
    const id = await this.resolve(user, ref);
    const g = await this.memberView(user, id);
    const conv = groupConv(id);
    const [entry] = await this.log.readAfter(conv, seq - 1, 1);
    // What was said before the user joined, or while they were out, is not theirs to ask about, as in history.
    if (!entry || entry.seq !== seq || !within(spansOf(g, user, seq), seq))
      throw new DomainError('no_such_message', `${g.name} has no message ${seq} you can see`);
    // Receipts are about messages: a change to the group (its creation, a member added) is not something anyone read.
    if (entry.kind !== 'text') throw new DomainError('no_such_message', `${seq} in ${g.name} is a change to the group, not a message`);
    // Only those who could see it: a member who joined after it, or was out of the group then, never had it, whatever
    // its cursors say; one who has left since had it.
    return { conv, group: labelOf(g), entry, members: inGroupAt(g, seq) };
  }

  /**
   * Everyone who was in a group conversation: its current members, each with the seq of the change that (last) added
   * them, and its former members (left, removed, or the group deleted) with the seq of the change that took them out
   * (`left`); each with the earlier stretches of the log they were in the group for, when they were in it more than
   * once. Null when it is not one. With a `viewer`, former members are those who were in the group at some time the
   * viewer was (a member who joined later is not told who had left before); a viewer who is out of the group is told
   * of the group as it stood when they went out (see `membersAsLeftBy`).
   */
  async membersOf(conv: string, viewer?: string): Promise<GroupMember[] | null> {
    const id = groupIdOf(conv);
    const g = id ? await this.load(id) : undefined;
    if (!g) return null;
    if (viewer !== undefined && !isMember(g, viewer)) return membersAsLeftBy(g, viewer);
    const earlierOf = (user: string) => (g.earlier && Object.hasOwn(g.earlier, user) ? g.earlier[user]!.map(bareSpan) : []);
    const withEarlier = <T extends { user: string }>(m: T) => {
      const earlier = earlierOf(m.user);
      return earlier.length > 0 ? { ...m, earlier } : m;
    };
    const current = g.members.map((m) => withEarlier({ user: m.user, joined: m.joined }));
    const seen = viewer === undefined ? null : spansOf(g, viewer, Number.MAX_SAFE_INTEGER);
    const former = Object.entries(g.former)
      .filter(([user, span]) => !isMember(g, user) && (seen === null || overlaps([...earlierOf(user), span], seen)))
      .map(([user, span]) => withEarlier({ user, joined: span.joined, left: span.left }));
    return [...current, ...former];
  }

  /** What of a group conversation a user may see: from when they joined up to now, or up to when they left. Null: nothing. */
  async visibleRange(conv: string, user: string): Promise<VisibleRange | null> {
    const id = groupIdOf(conv);
    const g = id ? await this.load(id) : undefined;
    if (!g) return null;
    const spans = spansOf(g, user, isMember(g, user) ? await this.log.lastSeq(conv) : 0);
    if (spans.length === 0) return null;
    const hidden = spans
      .slice(1)
      .map((s, i) => ({ after: spans[i]!.left, upTo: s.joined - 1 }))
      .filter((h) => h.upTo > h.after);
    return {
      conv,
      group: labelFor(g, user),
      after: spans[0]!.joined - 1,
      last: spans[spans.length - 1]!.left,
      hidden,
      members: g.deleted ? [] : g.members.map((m) => m.user),
    };
  }

  /** Renders entries of a group conversation for a member. */
  render(conv: string, group: GroupLabel, entries: LogEntry[]): (MessageEvent | GroupEvent)[] {
    return entries.map((e) => toGroupInboxEvent(conv, group, e));
  }

  // ---- internals

  /**
   * Makes one change to a group: under the group's lock, validate against the
   * current state, mark the state pending, append the change to the log, fold
   * it in and clear the mark. A retry of the same request (same actor and id)
   * returns the original outcome without appending again; an id the actor used
   * for another request in the group is refused, never taken for a retry
   * (`MADE_BY`). A request that
   * changes nothing (a rename to the same name, say) appends nothing, so that
   * members are not told of it, but its id is kept with the state (`op`, see
   * `GroupState.noops`): its retry gets the same answer, with the group as it
   * is now, as a change's retry does, and is not made now (a rename back to
   * that name since renamed); another request with its id is refused.
   */
  private change(
    id: string,
    actor: string,
    requestId: string,
    op: GroupRequestKind,
    issued: Issued | undefined,
    decide: (g: GroupState) => GroupChange | null,
  ): Promise<GroupOutcome> {
    return this.locks.withLock(id, async () => {
      const conv = groupConv(id);
      const done = await this.log.findById(conv, actor, requestId);
      if (done && !(done.kind === 'event' && MADE_BY[op](done.event))) throw idInUse(requestId);
      let g = await this.loadLocked(id);
      if (done) {
        g = g && g.appliedSeq >= done.seq ? g : await this.repair(g ?? skeleton(id, requestId));
        return this.retried(g, conv, done, actor);
      }
      const noop = g && noopOf(g, actor, requestId);
      if (g && noop) {
        if (noop.op !== op) throw idInUse(requestId);
        return { group: infoFor(g, actor), event: null, deliverTo: [] };
      }
      if (op === 'create') {
        if (g) throw new DomainError('bad_request', 'a group was already created with this request id');
        g = skeleton(id, requestId);
      } else if (!g || g.deleted || !isMember(g, actor)) {
        // One who was in it is told so, as a post or a read of theirs is; to anyone else the group does not exist.
        if (g && !g.deleted && formerSpan(g, actor)) throw new DomainError('not_member', `you are no longer a member of ${labelFor(g, actor).name}`);
        throw g ? goneFor(g, actor) : unknownGroup(id);
      }
      const change = decide(g);
      if (!change) {
        // Durable before it is answered, as a change is: a retry after a restart finds it.
        await this.groups.save(withNoop(g, { actor, id: requestId, op }));
        return { group: infoOf(g), event: null, deliverTo: [] };
      }
      // Everyone who will see the group finds it in their index, before the change exists.
      const joining = change.kind === 'created' ? [change.owner, ...change.members] : change.kind === 'member_added' ? change.members : [];
      await Promise.all(joining.map((u) => this.index.add(u, conv)));
      await this.groups.save({ ...g, pending: requestId });
      // The log keeps the members as of each change, for the check of each post (see post).
      const writers = applyChange(g, change, g.appliedSeq + 1, 0).members.map((m) => m.user);
      const appended = this.log.append(conv, { from: actor, id: requestId, ts: this.now(), kind: 'event', event: change }, { writers });
      issued?.(conv);
      const { entry } = await appended;
      const before = g;
      const after = { ...applyChange(g, change, entry.seq, entry.ts), pending: null };
      await this.groups.save(after);
      return this.outcome(after, conv, entry, actor, before);
    });
  }

  private outcome(g: GroupState, conv: string, entry: LogEntry, actor: string, before: GroupState): GroupOutcome {
    const event = toGroupInboxEvent(conv, labelOf(g), entry) as GroupEvent;
    // Those who were in the group before the change and those in it after it all see the change.
    const deliverTo = new Set([...before.members.map((m) => m.user), ...g.members.map((m) => m.user), actor]);
    if (entry.kind === 'event' && entry.event.kind === 'member_removed') for (const u of entry.event.members) deliverTo.add(u);
    return { group: infoOf(g), event, deliverTo: [...deliverTo] };
  }

  /**
   * The answer to a change's retry, made long after it perhaps: the group as the actor is shown it now (as it stood
   * when they went out, to one who is out since), and the change again for those who had it and are in the group still
   * (one out since learns no later name from it), and for the actor.
   */
  private retried(g: GroupState, conv: string, entry: LogEntry, actor: string): GroupOutcome {
    const event = toGroupInboxEvent(conv, labelFor(g, actor), entry) as GroupEvent;
    return { group: infoFor(g, actor), event, deliverTo: stillIn(g, inGroupAt(g, entry.seq), actor) };
  }

  /**
   * The group's state for a reader. A pending mark is a change under way, or one cut short by a crash: the reader folds
   * the log into what it returns, and saves nothing. Saving here, outside the lock, could write a state read before a
   * change's append over the one that change saves after it; waiting for the lock would stall every reader for as long
   * as a crashed holder's lease. The next change, under the lock, saves the repair.
   *
   * A state saved before `earlier` was kept (by a version before an upgrade) is the exception: its first reader folds it
   * again under the lock and saves it, once (see `loadLocked`). Left for the next change, a member added back before the
   * upgrade would not see their earlier time in the group, their own messages included, for as long as the group went
   * unchanged. Should that fail (another process holds the lock beyond the wait, or the save fails), the reader folds the
   * log itself and saves nothing. (Within one process the reader waits its turn behind the changes queued before it: a
   * caller must never load a group while it holds that group's lock, as `change` does, or it would wait for itself.)
   */
  private async load(id: string): Promise<GroupState | undefined> {
    const g = await this.groups.get(id);
    if (g && g.earlier === undefined) {
      return this.locks.withLock(id, () => this.loadLocked(id)).catch(() => this.folded(skeleton(id, g.pending)));
    }
    if (!g?.pending) return g;
    return this.folded(g);
  }

  /**
   * As `load`, for one who holds the group's lock: a pending mark there is a change cut short, repaired and saved. A
   * state saved before `earlier` was kept is folded again from the log's start, once, so a member added back before
   * the upgrade finds their earlier time in the group again.
   */
  private async loadLocked(id: string): Promise<GroupState | undefined> {
    const g = await this.groups.get(id);
    if (g && g.earlier === undefined) return this.repair(skeleton(id, g.pending));
    if (!g?.pending) return g;
    return this.repair(g);
  }

  /** Folds every event after the state's applied seq into it and saves it, clearing the pending mark. Under the lock only. */
  private async repair(g: GroupState): Promise<GroupState> {
    const state = await this.folded(g);
    await this.groups.save(state);
    return state;
  }

  /** The state with every event after its applied seq folded in, and no pending mark. */
  private async folded(g: GroupState): Promise<GroupState> {
    const conv = groupConv(g.id);
    let state = g;
    let after = g.appliedSeq;
    for (;;) {
      const page = await this.log.readAfter(conv, after, PAGE);
      for (const e of page) if (e.kind === 'event') state = applyChange(state, e.event, e.seq, e.ts);
      if (page.length < PAGE) break;
      after = page[page.length - 1]!.seq;
    }
    return { ...state, pending: null };
  }

  /**
   * The group for one of its members; with `allowFormer` (the retry of a post), for one who was in it too, the group
   * deleted since included: the post was made, and its retry is answered so, not `unknown_group`.
   */
  private async memberView(user: string, id: string, allowFormer = false): Promise<GroupState> {
    const g = await this.load(id);
    if (!g || ((g.deleted || !isMember(g, user)) && !(allowFormer && formerSpan(g, user)))) {
      if (g && !g.deleted && formerSpan(g, user)) throw new DomainError('not_member', `you are no longer a member of ${labelFor(g, user).name}`);
      throw g ? goneFor(g, user) : unknownGroup(id);
    }
    return g;
  }

  /**
   * Finds the group a user means: an id of a group they belong (or belonged)
   * to, or the name of one of their current groups. A group a user is not in
   * is `unknown_group`, exactly like one that does not exist.
   */
  async resolve(user: string, ref: string): Promise<string> {
    const ids = await this.groupIdsOf(user);
    if (ids.includes(ref)) return ref;
    return byName(user, ref, ids, await Promise.all(ids.map((id) => this.load(id))));
  }

  /**
   * As `resolve`, for a change or a post: a retry of one already made (same actor and request id) finds its group
   * again even when the name no longer leads there (the actor left it, deleted it, or renamed it), so that it is
   * answered as the first time was, not `unknown_group`. A name is looked for among the actor's requests first: one
   * that has come to mean another group since (the first was renamed, or the actor went out of it, and another of that
   * name is theirs) would otherwise have the retry made a second time there, a message posted to other people. So a
   * request by name whose id the actor used in another of their groups is that request's retry. A group id is taken
   * as it is, without the search.
   */
  private async resolveChange(actor: string, requestId: string, ref: string): Promise<string> {
    const ids = await this.groupIdsOf(actor);
    if (ids.includes(ref)) return ref;
    // Looked up together (as `resolve` loads the groups): on Redis, one round trip for them all rather than one per group.
    const made = await Promise.all(ids.map((id) => this.log.findById(groupConv(id), actor, requestId)));
    const madeIn = made.findIndex((entry) => entry !== undefined);
    if (madeIn >= 0) return ids[madeIn]!;
    const states = await Promise.all(ids.map((id) => this.load(id)));
    const keptIn = states.findIndex((g) => g !== undefined && noopOf(g, actor, requestId) !== undefined);
    if (keptIn >= 0) return ids[keptIn]!;
    return byName(actor, ref, ids, states);
  }

  private async groupIdsOf(user: string): Promise<string[]> {
    return (await this.index.list(user)).filter((c) => c.startsWith(GROUP_CONV_PREFIX)).map((c) => c.slice(GROUP_CONV_PREFIX.length));
  }

  private validName(name: string): string {
    // One name however it is spelled in Unicode: an accent as part of its letter (NFC), as most systems type it.
    const clean = name.normalize('NFC').trim();
    const length = [...clean].length;
    // Bidirectional controls would let a name show as another (`team \u202eecila` as "team alice").
    if (!hasVisibleText(clean) || !isPlainLabel(clean))
      throw new DomainError(
        'invalid_group_name',
        'a group name needs visible characters and no control characters, bidirectional controls (U+202A–U+202E, U+2066–U+2069) or half of a surrogate pair',
      );
    if (length > this.limits.maxNameLength) throw new DomainError('invalid_group_name', `a group name is at most ${this.limits.maxNameLength} characters`);
    // Groups are named by id or by name, an id first: a name that looks like an id could never be used as a name (and
    // one that only looks like one, with a zero-width space in it, would show as another group's id).
    if (GROUP_ID_PATTERN.test(nameLooks(clean)))
      throw new DomainError('invalid_group_name', 'a group name may not look like a group id (g and 14 letters or digits)');
    return clean;
  }

  private mustOwn(g: GroupState, actor: string): void {
    if (g.owner !== actor) throw new DomainError('not_group_owner', `only ${g.owner}, the owner of ${g.name}, may do that`);
  }

  private async mustExist(users: string[]): Promise<void> {
    for (const u of users) if (!(await this.users.exists(u))) throw new DomainError('unknown_user', `there is no user "${u}"`);
  }
}

/** The stretches of a visible range, oldest first: (after, last] without its hidden ones. */
function visibleSpans(range: VisibleRange): { after: number; last: number }[] {
  const spans: { after: number; last: number }[] = [];
  let after = range.after;
  for (const h of range.hidden) {
    spans.push({ after, last: h.after });
    after = h.upTo;
  }
  spans.push({ after, last: range.last });
  return spans;
}

/**
 * The one of the user's groups (`ids`, with their `states`) that a name means. A name is looked up as it looks: "Café"
 * typed with a combining accent (as macOS spells it) is the group "Café", and so is a "Café" with a zero-width space in
 * it, which no one can tell from it on screen: with both, the name is ambiguous, rather than one of them passing for the
 * other.
 */
function byName(user: string, ref: string, ids: string[], states: (GroupState | undefined)[]): string {
  const name = nameLooks(ref);
  const named = ids.filter((_, i) => {
    const g = states[i];
    return g !== undefined && !g.deleted && isMember(g, user) && nameLooks(g.name) === name;
  });
  if (named.length === 1) return named[0]!;
  if (named.length > 1) throw new DomainError('ambiguous_group', `you are in ${named.length} groups named "${ref}"; use an id: ${named.join(', ')}`);
  throw unknownGroup(ref);
}

function unknownGroup(ref: string): DomainError {
  return new DomainError('unknown_group', `you have no group "${ref}"`);
}

/**
 * A group the user names by id that is not theirs now (deleted, or never theirs): unknown_group, as it always was, but one
 * who was in it is told why. Those in it when it was deleted learn it was; one out of it by then is told only that, as
 * it learns nothing else of the group since it went out.
 */
function goneFor(g: GroupState, user: string): DomainError {
  const span = formerSpan(g, user);
  if (!span) return unknownGroup(g.id);
  const name = labelFor(g, user).name;
  if (g.deleted && span.left >= g.appliedSeq) return new DomainError('unknown_group', `the group ${name} (${g.id}) was deleted`);
  return new DomainError('unknown_group', `you are no longer a member of ${name} (${g.id})`);
}

function tooLarge(max: number): DomainError {
  return new DomainError('group_too_large', `a group has at most ${max} members`);
}

/** What the gateway calls: the service in process, or the same methods over RPC to the group app. */
export const GROUP_API_METHODS = ['create', 'rename', 'add', 'remove', 'leave', 'handOver', 'delete', 'list', 'info', 'post', 'history', 'entryAt'] as const;
export type GroupApi = Pick<GroupService, (typeof GROUP_API_METHODS)[number]>;
export const GROUP_API = Symbol('GROUP_API');

/** One who is or was in a group, as `membersOf` tells of them. */
export interface GroupMember {
  user: string;
  joined: number;
  left?: number;
  earlier?: { joined: number; left: number }[];
  /** Their cursors are to be shown up to this seq at most: the viewer is out of the group since. */
  upTo?: number;
}

/**
 * The group's members as a viewer who is out of it saw them when they went out (at `upTo`, the change that took them
 * out): those in it then, and those who had been in it with the viewer and were out by then. Who joined, left or
 * read later is not theirs to know: each member's stretches are cut at `upTo`, and so are their cursors (`upTo`).
 */
function membersAsLeftBy(g: GroupState, viewer: string): GroupMember[] {
  const seen = spansOf(g, viewer, 0);
  if (seen.length === 0) return [];
  const upTo = seen[seen.length - 1]!.left;
  const out: GroupMember[] = [];
  for (const user of everyoneIn(g)) {
    const spans = spansOf(g, user, Number.MAX_SAFE_INTEGER)
      .filter((s) => s.joined <= upTo)
      .map(bareSpan);
    if (spans.length === 0 || !overlaps(spans, seen)) continue;
    const latest = spans[spans.length - 1]!;
    const earlier = spans.slice(0, -1);
    out.push({
      user,
      joined: latest.joined,
      // Still in the group when the viewer went out: a member, as far as the viewer knows.
      ...(latest.left > upTo ? {} : { left: latest.left }),
      ...(earlier.length > 0 ? { earlier } : {}),
      // The deletion took everyone out at once, and nothing follows it: no cursor can pass it.
      ...(g.deleted && upTo >= g.appliedSeq ? {} : { upTo }),
    });
  }
  return out;
}

/** Whether two sets of stretches of the log share an entry. */
function overlaps(a: Span[], b: Span[]): boolean {
  return a.some((x) => b.some((y) => x.joined <= y.left && y.joined <= x.left));
}

const BY_NAME = new Intl.Collator(undefined, { sensitivity: 'base', numeric: true });

/** A request whose id the actor already used for another request in the group: taking it for a retry would answer wrongly. */
function idInUse(requestId: string): DomainError {
  return new DomainError('bad_request', `the id "${requestId}" was used for another request in this group: a new request needs an id of its own`);
}

/**
 * Of `had` (those who had an entry), who is sent it again on a retry: the actor, and, when the actor is in the group, those
 * of `had` who are in it still. The entry is labelled as the actor is shown the group: to one out of it since, as it was
 * then, which is no label for those in it now.
 */
function stillIn(g: GroupState, had: string[], actor: string): string[] {
  if (!isMember(g, actor)) return [actor];
  return [...new Set([...had.filter((u) => isMember(g, u)), actor])];
}
