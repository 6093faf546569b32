import { createHash } from 'node:crypto';
import type { GroupChange, GroupInfo, GroupLabel } from '#libs/protocol';

/**
 * A group's current state: a projection of the `event` entries of its log,
 * kept so a post or a membership check does not re-read the log.
 */
export interface GroupState {
  id: string;
  name: string;
  owner: string;
  createdAt: number;
  /** Current members in the order they joined, with the seq of the event that let them in: they see the log from there. */
  members: { user: string; joined: number }[];
  /** Past members: they see the log from `joined` up to `left`, the event that took them out. */
  former: Record<string, Span>;
  /**
   * The spans of users who were in the group more than once, before their latest one (which is in `members` or
   * `former`), oldest first: a member added back still sees what they saw before, not what was said while they were out.
   * Absent in states saved before it was kept (see GroupService.loadLocked).
   */
  earlier?: Record<string, Span[]>;
  deleted: boolean;
  /** The seq of the last event folded in. */
  appliedSeq: number;
  /** A change being written (request id): set before the log append and cleared after, so a crash in between is repaired from the log. */
  pending: string | null;
  /**
   * The group's latest requests that changed nothing, oldest first, at most `MAX_NOOP_REQUESTS`; absent when there were
   * none. Not part of the projection of the log: such a request appends nothing (members are not told of a rename to
   * the name the group has), so its id is kept here, under the group's lock like every change.
   */
  noops?: NoopRequest[];
}

/** The requests that may change a group, by what the client asked (`group.rename` is `rename`, `group.owner` is `owner`). */
export type GroupRequestKind = 'create' | 'rename' | 'add' | 'remove' | 'leave' | 'owner' | 'delete';

/**
 * A request answered without a change (a rename to the name the group has, adding members who are in it, handing the
 * group to its owner). Kept so that its id stays its own, as a change's id does in the log: a retry (the same actor,
 * id and kind of request) is answered alike, and another request with that id is refused.
 */
export interface NoopRequest {
  actor: string;
  id: string;
  op: GroupRequestKind;
}

/**
 * How many requests that changed nothing a group keeps (see `GroupState.noops`). Only its owner can make one, and a
 * retry comes soon after its request: the latest few are enough, and the state, read by every post, stays small (at
 * most about 4 KiB of them).
 */
export const MAX_NOOP_REQUESTS = 32;

/** The request of that actor and id that changed nothing, while the group keeps it. */
export function noopOf(state: GroupState, actor: string, id: string): NoopRequest | undefined {
  return state.noops?.find((n) => n.actor === actor && n.id === id);
}

/** The state keeping one more request that changed nothing, and forgetting the oldest beyond `MAX_NOOP_REQUESTS`. */
export function withNoop(state: GroupState, noop: NoopRequest): GroupState {
  return { ...state, noops: [...(state.noops ?? []), noop].slice(-MAX_NOOP_REQUESTS) };
}

/** A stretch of a group's log one user was in the group for: from the event that added them up to the one that took them out. */
export interface Span {
  joined: number;
  left: number;
  /**
   * The group's name when the user went out of it: what a former member is shown the group as, not what it was renamed
   * to since. Absent in spans saved before it was kept, and of no use in a current member's.
   */
  name?: string;
  /** Its owner once the change that took the user out was made; absent in spans saved before it was kept. */
  owner?: string;
}

export const GROUP_CONV_PREFIX = 'grp:';

export function groupConv(id: string): string {
  return GROUP_CONV_PREFIX + id;
}

export function groupIdOf(conv: string): string | null {
  return conv.startsWith(GROUP_CONV_PREFIX) ? conv.slice(GROUP_CONV_PREFIX.length) : null;
}

/** A group's id follows from who created it with which request id, so a retried create names the same group. */
export function newGroupId(creator: string, requestId: string): string {
  return 'g' + createHash('sha256').update(`${creator}\0${requestId}`).digest('base64url').slice(0, 14).replace(/[-_]/g, 'x');
}

/** What a group id looks like: `g` and 14 letters or digits. */
export const GROUP_ID_PATTERN = /^g[A-Za-z0-9]{14}$/;

export function isMember(state: GroupState, user: string): boolean {
  return state.members.some((m) => m.user === user);
}

/** What a former member could see of the group (own keys only: a user may be called `constructor`); undefined for anyone else. */
export function formerSpan(state: GroupState, user: string): Span | undefined {
  return Object.hasOwn(state.former, user) ? state.former[user] : undefined;
}

/**
 * Every stretch of the log the user may see, oldest first: each earlier time in the group, then the latest (up to
 * `last`, the log's end, for a current member). Empty for one never in the group.
 */
export function spansOf(state: GroupState, user: string, last: number): Span[] {
  const earlier = state.earlier && Object.hasOwn(state.earlier, user) ? state.earlier[user]! : [];
  const member = state.members.find((m) => m.user === user);
  const latest = member ? { joined: member.joined, left: last } : formerSpan(state, user);
  return latest ? [...earlier, latest] : [...earlier];
}

/** Everyone who is or was in the group: its members, then its former members (each once). */
export function everyoneIn(state: GroupState): string[] {
  return [...state.members.map((m) => m.user), ...Object.keys(state.former).filter((u) => !isMember(state, u))];
}

/** Those who were in the group when the entry at `seq` was appended: they had it, gone since or not. */
export function inGroupAt(state: GroupState, seq: number): string[] {
  return everyoneIn(state).filter((u) => within(spansOf(state, u, seq), seq));
}

/** Whether the entry at `seq` is in one of the spans. */
export function within(spans: Span[], seq: number): boolean {
  return spans.some((s) => s.joined <= seq && seq <= s.left);
}

export function labelOf(state: GroupState): GroupLabel {
  return { id: state.id, name: state.name };
}

/** The group as a user is shown it: as it is to a member, as it was when they went out of it to a former member. */
export function labelFor(state: GroupState, user: string): GroupLabel {
  if (isMember(state, user)) return labelOf(state);
  return { id: state.id, name: formerSpan(state, user)?.name ?? state.name };
}

/** A span as clients are shown it: where it starts and ends. */
export function bareSpan(span: Span): { joined: number; left: number } {
  return { joined: span.joined, left: span.left };
}

export function infoOf(state: GroupState): GroupInfo {
  const info = { id: state.id, name: state.name, owner: state.owner, members: state.members.map((m) => m.user), createdAt: state.createdAt };
  // "No members" alone would read as a group of no one (a retried create's answer, say).
  return state.deleted ? { ...info, deleted: true } : info;
}

/**
 * The group as a user is shown it: as it is to a member; to one who is out of it, as it stood once the change that took
 * them out was made (its name, owner and members then), not as it is now, with `deleted` when that change deleted it.
 * Spans saved before the owner was kept give today's owner.
 */
export function infoFor(state: GroupState, user: string): GroupInfo {
  const span = isMember(state, user) ? undefined : formerSpan(state, user);
  if (!span) return infoOf(state);
  const stayed = (u: string) => spansOf(state, u, Number.MAX_SAFE_INTEGER).some((s) => s.joined <= span.left && span.left < s.left);
  const { deleted, ...now } = infoOf(state);
  const info = { ...now, name: span.name ?? state.name, owner: span.owner ?? state.owner, members: everyoneIn(state).filter(stayed) };
  // Only one taken out by the deletion itself learns of it.
  return deleted && span.left >= state.appliedSeq ? { ...info, deleted } : info;
}

/** An empty state for a group being created, before its `created` event is folded in. */
export function skeleton(id: string, pending: string | null): GroupState {
  return { id, name: '', owner: '', createdAt: 0, members: [], former: {}, earlier: {}, deleted: false, appliedSeq: 0, pending };
}

function without(state: GroupState, users: string[], seq: number): GroupState {
  const former = { ...state.former };
  for (const m of state.members) if (users.includes(m.user)) former[m.user] = { joined: m.joined, left: seq, name: state.name, owner: state.owner };
  return { ...state, members: state.members.filter((m) => !users.includes(m.user)), former };
}

/**
 * Folds one group change, appended at `seq` and time `ts`, into the state.
 * Pure and total: a change that no longer fits (say, removing someone already
 * gone) leaves the state as it is, so every replica folds the same log to the
 * same state.
 */
export function applyChange(state: GroupState, change: GroupChange, seq: number, ts: number): GroupState {
  if (seq <= state.appliedSeq) return state;
  const next: GroupState = { ...state, appliedSeq: seq };
  switch (change.kind) {
    case 'created': {
      const users = [change.owner, ...change.members.filter((u) => u !== change.owner)];
      return { ...next, name: change.name, owner: change.owner, createdAt: ts, members: [...new Set(users)].map((user) => ({ user, joined: seq })) };
    }
    case 'renamed':
      return { ...next, name: change.name };
    case 'member_added': {
      const added = change.members.filter((u) => !isMember(next, u));
      const former = { ...next.former };
      const earlier = { ...next.earlier };
      // A former member added back keeps what they could see before, as an earlier span.
      for (const u of added) {
        const span = formerSpan(next, u);
        if (!span) continue;
        earlier[u] = [...(Object.hasOwn(earlier, u) ? earlier[u]! : []), span];
        delete former[u];
      }
      return { ...next, former, earlier, members: [...next.members, ...added.map((user) => ({ user, joined: seq }))] };
    }
    case 'member_removed':
      return without(next, change.members, seq);
    case 'member_left': {
      const after = without(next, [change.user], seq);
      if (!change.newOwner || !isMember(after, change.newOwner)) return after;
      // The owner who left handed the group over as they went: they saw it go to the new owner.
      return { ...after, owner: change.newOwner, former: { ...after.former, [change.user]: { ...after.former[change.user]!, owner: change.newOwner } } };
    }
    case 'owner_changed':
      return isMember(next, change.owner) ? { ...next, owner: change.owner } : next;
    case 'deleted':
      return {
        ...without(
          next,
          next.members.map((m) => m.user),
          seq,
        ),
        deleted: true,
      };
  }
}
