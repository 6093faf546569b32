import { isUtf8 } from 'node:buffer';
import { z } from 'zod';
import { DomainError, ERROR_CODES } from './errors.js';

/**
 * Wire payloads, shared by the server, the CLI and the tests. Every payload on
 * every topic is one of these, as UTF-8 JSON.
 */

/** A request id chosen by the client. For `send` it is also the message id: a retry with the same id gets the same answer and stores nothing twice. */
export const RequestId = z.string().regex(/^[A-Za-z0-9_.:-]{1,64}$/, 'id must be 1–64 characters of A-Z a-z 0-9 _ . : -');
/** Any name a client gives for a user; whether it exists is the server's answer, not the schema's. */
const UserRef = z.string().min(1).max(64);
/** Epoch milliseconds, as the server stamped it. */
const Timestamp = z.number().int().nonnegative();

export const RegisterRequest = z.strictObject({
  op: z.literal('register'),
  id: RequestId,
  user: z.string().max(64),
  password: z.string().max(1024),
});

/** A group as a member names it: its id (`g…`) or its name, looked up among the caller's own groups. */
const GroupRef = z.string().min(1).max(200);

/** A message to a user (`to`) or to a group (`group`): exactly one of the two. */
export const SendRequest = z.strictObject({
  op: z.literal('send'),
  id: RequestId,
  to: UserRef.optional(),
  group: GroupRef.optional(),
  text: z.string().max(1_000_000),
});

/** The most entries one `history` request returns. */
export const MAX_HISTORY_LIMIT = 500;

/** The entries a `history` request without a `limit` returns, at most. */
export const DEFAULT_HISTORY_LIMIT = 50;

/** The largest request payload a server takes unless configured otherwise (`PARLEY_MAX_REQUEST_BYTES`). */
export const DEFAULT_MAX_REQUEST_BYTES = 65_536;

/** A page of a conversation with a user (`with`) or of a group (`group`): exactly one of the two. */
export const HistoryRequest = z.strictObject({
  op: z.literal('history'),
  id: RequestId,
  with: UserRef.optional(),
  group: GroupRef.optional(),
  /** Only messages with a sequence number below this one (for paging back). */
  before: z.number().int().positive().optional(),
  limit: z.number().int().min(1).max(MAX_HISTORY_LIMIT).optional(),
});

/** When a user was last online. */
export const WhoRequest = z.strictObject({ op: z.literal('who'), id: RequestId, user: UserRef });

/**
 * Moves the caller's own cursor in a conversation: every message up to `seq`
 * has reached the caller's client (`delivered`) or been seen by the person
 * (`read`, which implies delivered). Cursors never move back; a receipt below
 * the cursor changes nothing.
 */
export const ReceiptRequest = z.strictObject({
  op: z.literal('receipt'),
  id: RequestId,
  conv: z.string().min(1).max(200),
  seq: z.number().int().positive(),
  status: z.enum(['delivered', 'read']),
});

const MemberList = z.array(UserRef).max(1000);
const GroupName = z.string().max(1000);

export const GroupCreateRequest = z.strictObject({ op: z.literal('group.create'), id: RequestId, name: GroupName, members: MemberList.optional() });
export const GroupRenameRequest = z.strictObject({ op: z.literal('group.rename'), id: RequestId, group: GroupRef, name: GroupName });
export const GroupAddRequest = z.strictObject({ op: z.literal('group.add'), id: RequestId, group: GroupRef, members: MemberList.min(1) });
export const GroupRemoveRequest = z.strictObject({ op: z.literal('group.remove'), id: RequestId, group: GroupRef, members: MemberList.min(1) });
export const GroupLeaveRequest = z.strictObject({ op: z.literal('group.leave'), id: RequestId, group: GroupRef });
export const GroupOwnerRequest = z.strictObject({ op: z.literal('group.owner'), id: RequestId, group: GroupRef, user: UserRef });
export const GroupDeleteRequest = z.strictObject({ op: z.literal('group.delete'), id: RequestId, group: GroupRef });
export const GroupListRequest = z.strictObject({ op: z.literal('group.list'), id: RequestId });
export const GroupMembersRequest = z.strictObject({ op: z.literal('group.members'), id: RequestId, group: GroupRef });
/** Who of a group has received and read message `seq` (asked by any member, typically its sender). */
export const InfoRequest = z.strictObject({ op: z.literal('info'), id: RequestId, group: GroupRef, seq: z.number().int().positive() });

// ---- File transfer (see docs/topics.md, "Files") ----

/** A file offer's id, as the server made it. */
export const OfferId = z.string().regex(/^f[A-Za-z0-9_-]{1,63}$/, 'offer must be a file offer id (f…)');
const Sha256Hex = z.string().regex(/^[0-9a-f]{64}$/, 'sha256 must be 64 lowercase hex digits');

/**
 * Offers a file to a user (`to`) or to every other member of a group (`group`).
 * The sender uploads the bytes right away (`file.chunk`); the receivers are told
 * once the upload is complete. Offering again with the same `id` returns the
 * same offer with how far its upload got (to resume).
 */
export const FileOfferRequest = z.strictObject({
  op: z.literal('file.offer'),
  id: RequestId,
  to: UserRef.optional(),
  group: GroupRef.optional(),
  name: z.string().min(1).max(1000),
  size: z.number().int().nonnegative(),
  type: z.string().min(1).max(200).optional(),
  sha256: Sha256Hex,
});
/** One chunk of an offer's bytes (base64), uploaded by its sender; `index` counts from 0. Chunks go in order; one already stored is acknowledged again and changes nothing. */
export const FileChunkRequest = z.strictObject({
  op: z.literal('file.chunk'),
  id: RequestId,
  offer: OfferId,
  index: z.number().int().nonnegative(),
  data: z.base64(),
});
export const FileAcceptRequest = z.strictObject({ op: z.literal('file.accept'), id: RequestId, offer: OfferId });
export const FileDeclineRequest = z.strictObject({ op: z.literal('file.decline'), id: RequestId, offer: OfferId });
/** One chunk of an accepted offer, for its receiver. */
export const FileFetchRequest = z.strictObject({ op: z.literal('file.fetch'), id: RequestId, offer: OfferId, index: z.number().int().nonnegative() });
/** The receiver has the whole file and verified its SHA-256. */
export const FileReceivedRequest = z.strictObject({ op: z.literal('file.received'), id: RequestId, offer: OfferId });
/** The sender withdraws its offer: the data goes, and receivers who had not received or declined it are told. */
export const FileCancelRequest = z.strictObject({ op: z.literal('file.cancel'), id: RequestId, offer: OfferId });
/** The offers I made and the offers made to me that are still live. */
export const FileListRequest = z.strictObject({ op: z.literal('file.list'), id: RequestId });
/**
 * The sender has been shown these receivers' decisions on its offer (each
 * receiver's state as shown), so a later inbox sync does not present them as
 * news. A state that is no longer the receiver's current one is ignored.
 */
export const FileSeenRequest = z.strictObject({
  op: z.literal('file.seen'),
  id: RequestId,
  offer: OfferId,
  states: z
    .record(UserRef, z.enum(['accepted', 'declined', 'received']))
    .refine((states) => Object.keys(states).length <= 1000, 'states may name at most 1000 receivers'),
});
export type FileOfferRequest = z.infer<typeof FileOfferRequest>;

export const Request = z.discriminatedUnion('op', [
  RegisterRequest,
  SendRequest,
  HistoryRequest,
  WhoRequest,
  ReceiptRequest,
  GroupCreateRequest,
  GroupRenameRequest,
  GroupAddRequest,
  GroupRemoveRequest,
  GroupLeaveRequest,
  GroupOwnerRequest,
  GroupDeleteRequest,
  GroupListRequest,
  GroupMembersRequest,
  InfoRequest,
  FileOfferRequest,
  FileChunkRequest,
  FileAcceptRequest,
  FileDeclineRequest,
  FileFetchRequest,
  FileReceivedRequest,
  FileListRequest,
  FileSeenRequest,
  FileCancelRequest,
]);
export type Request = z.infer<typeof Request>;
export type RegisterRequest = z.infer<typeof RegisterRequest>;
export type SendRequest = z.infer<typeof SendRequest>;
export type HistoryRequest = z.infer<typeof HistoryRequest>;
export type WhoRequest = z.infer<typeof WhoRequest>;
export type ReceiptRequest = z.infer<typeof ReceiptRequest>;
export const REQUEST_OPS = [
  'register',
  'send',
  'history',
  'who',
  'receipt',
  'group.create',
  'group.rename',
  'group.add',
  'group.remove',
  'group.leave',
  'group.owner',
  'group.delete',
  'group.list',
  'group.members',
  'info',
  'file.offer',
  'file.chunk',
  'file.accept',
  'file.decline',
  'file.fetch',
  'file.received',
  'file.list',
  'file.seen',
  'file.cancel',
] as const;
export type RequestOp = Request['op'];

/** A group as members see it on every group message and event. */
export const GroupLabel = z.strictObject({ id: z.string(), name: z.string() });
export type GroupLabel = z.infer<typeof GroupLabel>;

/** Where one receiver of a file offer stands: not yet decided, accepted (downloading), declined, has the file (verified), or the sender withdrew it first. */
export const FileRecipientState = z.enum(['pending', 'accepted', 'declined', 'received', 'withdrawn']);
export type FileRecipientState = z.infer<typeof FileRecipientState>;

/** Whether its sender withdrew the offer (every receiver still waiting then became `withdrawn`). */
export function isWithdrawn(offer: { recipients: Record<string, FileRecipientState> }): boolean {
  return Object.values(offer.recipients).includes('withdrawn');
}

/** A file offer as its sender and receivers see it. */
export const FileOffer = z.strictObject({
  id: z.string(),
  from: z.string(),
  /** The group it was offered to (each other member is a receiver). */
  group: GroupLabel.optional(),
  name: z.string(),
  size: z.number().int().nonnegative(),
  type: z.string(),
  sha256: z.string(),
  /** Bytes per chunk (the last one may be shorter) and how many chunks. */
  chunkSize: z.number().int().positive(),
  chunks: z.number().int().nonnegative(),
  /** How many chunks the server holds (uploaded, in order). */
  uploaded: z.number().int().nonnegative(),
  createdAt: Timestamp,
  /** Whatever is not received by then is deleted. */
  expiresAt: Timestamp,
  recipients: z.record(z.string(), FileRecipientState),
  /** Each receiver's state as its sender has been shown it (`file.seen`): in the sender's own view only, once there is any. */
  seen: z.record(z.string(), FileRecipientState).optional(),
  /**
   * The `id` of the `file.offer` request that made it, in its sender's own view only: offering again with that id
   * resumes the upload, from any of the sender's devices.
   */
  request: z.string().optional(),
});
export type FileOffer = z.infer<typeof FileOffer>;

/** `file.offer`: the offer, and how many chunks a sender may have unacknowledged at once. */
export const FileOfferResult = z.strictObject({ offer: FileOffer, window: z.number().int().positive() });
export type FileOfferResult = z.infer<typeof FileOfferResult>;
/** `file.chunk`: chunk `index` is stored; `uploaded` chunks are held; `complete` once all are (the receivers are told then). */
export const FileChunkResult = z.strictObject({
  offer: z.string(),
  index: z.number().int().nonnegative(),
  uploaded: z.number().int().nonnegative(),
  complete: z.boolean(),
});
export type FileChunkResult = z.infer<typeof FileChunkResult>;
/** `file.fetch`: one chunk, base64. */
export const FileFetchResult = z.strictObject({ offer: z.string(), index: z.number().int().nonnegative(), data: z.string() });
export type FileFetchResult = z.infer<typeof FileFetchResult>;
/** `file.accept`, `file.decline`, `file.received`, `file.seen`, `file.cancel`: the offer as it is now. */
export const FileStateResult = z.strictObject({ offer: FileOffer });
export type FileStateResult = z.infer<typeof FileStateResult>;
export const FileListResult = z.strictObject({ offers: z.array(FileOffer) });
export type FileListResult = z.infer<typeof FileListResult>;

/**
 * Something happened to a file offer: `offered` (to its receivers, once the
 * upload is complete), or a receiver (`user`) `accepted`, `declined` or
 * `received` it (to the sender, and to that receiver's other devices), or its
 * sender `withdrawn` it (to the receivers who had not received or declined it,
 * and to the sender's other devices).
 */
export const FileEvent = z.strictObject({
  type: z.literal('file'),
  event: z.enum(['offered', 'accepted', 'declined', 'received', 'withdrawn']),
  user: z.string().optional(),
  offer: FileOffer,
  ts: Timestamp,
});
export type FileEvent = z.infer<typeof FileEvent>;

/** Sent with the inbox sync (before `synced`) when there are live offers: those made to me and not yet received or declined, and mine. */
export const FilesEvent = z.strictObject({ type: z.literal('files'), offers: z.array(FileOffer) });
export type FilesEvent = z.infer<typeof FilesEvent>;

/**
 * A message as every member of its conversation sees it: in a direct
 * conversation `to` names the recipient; in a group, `group` names the group.
 */
export const MessageEvent = z.strictObject({
  type: z.literal('message'),
  conv: z.string(),
  seq: z.number().int().positive(),
  from: z.string(),
  to: z.string().optional(),
  group: GroupLabel.optional(),
  ts: Timestamp,
  id: RequestId,
  text: z.string(),
});
export type MessageEvent = z.infer<typeof MessageEvent>;

/** A change to a group, as recorded in the group's log. */
export const GroupChange = z.discriminatedUnion('kind', [
  z.strictObject({ kind: z.literal('created'), name: z.string(), owner: z.string(), members: z.array(z.string()) }),
  z.strictObject({ kind: z.literal('renamed'), oldName: z.string(), name: z.string() }),
  z.strictObject({ kind: z.literal('member_added'), members: z.array(z.string()) }),
  z.strictObject({ kind: z.literal('member_removed'), members: z.array(z.string()) }),
  /** A member left; when it was the owner, ownership passed to `newOwner`, the longest-standing member. */
  z.strictObject({ kind: z.literal('member_left'), user: z.string(), newOwner: z.string().optional() }),
  z.strictObject({ kind: z.literal('owner_changed'), owner: z.string(), previous: z.string() }),
  // `lastMemberLeft`: nobody deleted it; its last member left (and `from` is that member).
  z.strictObject({ kind: z.literal('deleted'), lastMemberLeft: z.literal(true).optional() }),
]);
export type GroupChange = z.infer<typeof GroupChange>;

/** A group change as members see it, in order with the group's messages. `from` is who made the change. */
export const GroupEvent = z.strictObject({
  type: z.literal('group'),
  conv: z.string(),
  seq: z.number().int().positive(),
  from: z.string(),
  group: GroupLabel,
  ts: Timestamp,
  id: RequestId,
  change: GroupChange,
});
export type GroupEvent = z.infer<typeof GroupEvent>;

/** A user's presence: online while at least one connection is up; lastSeen is when it was last online (null: never). */
export const PresenceState = z.strictObject({ state: z.enum(['online', 'offline']), lastSeen: Timestamp.nullable() });
export type PresenceState = z.infer<typeof PresenceState>;

export const SendResult = z.strictObject({
  status: z.literal('accepted'),
  conv: z.string(),
  seq: z.number().int().positive(),
  ts: Timestamp,
  /** Direct messages: the recipient's presence when the message was accepted; an offline recipient gets it when it next connects. */
  recipient: PresenceState.optional(),
  /** Group messages: the group, and how many other members it goes to. */
  group: GroupLabel.optional(),
  recipients: z.number().int().nonnegative().optional(),
});
export type SendResult = z.infer<typeof SendResult>;

export const RegisterResult = z.strictObject({ user: z.string() });
export type RegisterResult = z.infer<typeof RegisterResult>;

/** How far one member of a conversation has got: every message up to `delivered` reached its client, up to `read` was seen. */
export const Cursors = z.strictObject({
  delivered: z.number().int().nonnegative(),
  deliveredAt: Timestamp.nullable(),
  read: z.number().int().nonnegative(),
  readAt: Timestamp.nullable(),
});
export type Cursors = z.infer<typeof Cursors>;

/** A stretch of a group's log a member was in the group for: from the change that added them to the one that took them out. */
export const MemberSpan = z.strictObject({ joined: z.number().int().positive(), left: z.number().int().positive() });

/**
 * Another member's cursors. In a group, `joined` is the seq of the change that (last) added the member: they count for
 * the messages from there on, and not for older ones, whatever their cursors say (a member added again after leaving
 * moves on from a cursor of before) — but for those said in an `earlier` time of theirs in the group, which they had.
 * `left`, for one who is out of the group now (left, removed, or the group deleted), is the seq of the change that
 * took them out: they count for the messages before it. Such members are in `formerPeers`, never in `peers`, whose
 * meaning (the current members) stays what it was.
 */
export const PeerCursors = Cursors.extend({
  joined: z.number().int().positive().optional(),
  left: z.number().int().positive().optional(),
  earlier: z.array(MemberSpan).optional(),
});
export type PeerCursors = z.infer<typeof PeerCursors>;

export const HistoryResult = z.strictObject({
  conv: z.string(),
  messages: z.array(z.union([MessageEvent, GroupEvent])),
  /** The other members' cursors, so each of my messages can show ✓, ✓✓ or read (or 3/5 read in a group). */
  peers: z.record(z.string(), PeerCursors),
  /** In a group: the cursors of those who were in it with me and are out now, each with `left`; absent when none. */
  formerPeers: z.record(z.string(), PeerCursors).optional(),
  group: GroupLabel.optional(),
});
export type HistoryResult = z.infer<typeof HistoryResult>;

/**
 * Splits the cursors of everyone who was in a conversation into the current members' (`peers`) and, when there are
 * any, those who are out of the group now (`formerPeers`, each with `left`).
 */
export function splitPeers(all: Record<string, PeerCursors>): { peers: Record<string, PeerCursors>; formerPeers?: Record<string, PeerCursors> } {
  const peers: Record<string, PeerCursors> = {};
  const former: Record<string, PeerCursors> = {};
  for (const [user, c] of Object.entries(all)) (c.left === undefined ? peers : former)[user] = c;
  return Object.keys(former).length > 0 ? { peers, formerPeers: former } : { peers };
}

export const WhoResult = z.strictObject({ user: z.string(), ...PresenceState.shape });
export type WhoResult = z.infer<typeof WhoResult>;

export const ReceiptResult = z.strictObject({ conv: z.string(), cursors: Cursors, moved: z.boolean() });

export const GroupInfo = z.strictObject({
  id: z.string(),
  name: z.string(),
  owner: z.string(),
  /** In the order they joined. */
  members: z.array(z.string()),
  createdAt: Timestamp,
  /**
   * On a retried request's answer only: the group was deleted since, with you in it (it has no members now). Absent
   * otherwise, and in answers of servers before 2026-12-07, which gave such a group with no members and no word why.
   */
  deleted: z.literal(true).optional(),
});
export type GroupInfo = z.infer<typeof GroupInfo>;

export const GroupListResult = z.strictObject({ groups: z.array(GroupInfo) });
export type GroupListResult = z.infer<typeof GroupListResult>;
/** The group left or deleted; `deleted` on a leave by its last member, which deletes it. */
export const GroupGoneResult = z.strictObject({
  id: z.string(),
  name: z.string(),
  deleted: z.literal(true).optional(),
  /** Leaving as its owner: the member who owns the group now. */
  newOwner: z.string().optional(),
});
export type GroupGoneResult = z.infer<typeof GroupGoneResult>;

export const InfoResult = z.strictObject({
  conv: z.string(),
  group: GroupLabel,
  seq: z.number().int().positive(),
  from: z.string(),
  /** Every other member: whether message `seq` reached its client and was read, and when. */
  members: z.array(
    z.strictObject({
      user: z.string(),
      delivered: z.boolean(),
      deliveredAt: Timestamp.nullable(),
      read: z.boolean(),
      readAt: Timestamp.nullable(),
    }),
  ),
});
export type InfoResult = z.infer<typeof InfoResult>;
export type ReceiptResult = z.infer<typeof ReceiptResult>;

/** Another member moved a cursor in a conversation I am in: my messages up to `seq` are delivered to / read by `user`. */
export const ReceiptEvent = z.strictObject({
  type: z.literal('receipt'),
  conv: z.string(),
  user: z.string(),
  status: z.enum(['delivered', 'read']),
  seq: z.number().int().positive(),
  ts: Timestamp,
});
export type ReceiptEvent = z.infer<typeof ReceiptEvent>;

/** Retained on `parley/v1/presence/{user}`, and only there: the server puts no presence on an inbox. */
export const PresenceEvent = z.strictObject({ type: z.literal('presence'), user: z.string(), ...PresenceState.shape });
export type PresenceEvent = z.infer<typeof PresenceEvent>;

/**
 * Sent to a connection when it subscribes to its inbox, before the backlog:
 * for each conversation with something new, where my delivered cursor stands
 * (the backlog follows from delivered + 1, in order) and the other members'
 * cursors (receipts that happened while I was away).
 */
export const SyncEvent = z.strictObject({
  type: z.literal('sync'),
  conversations: z.array(
    z.strictObject({
      conv: z.string(),
      group: GroupLabel.optional(),
      /** The backlog that follows holds the entries after `after` up to `last`. */
      after: z.number().int().nonnegative(),
      last: z.number().int().nonnegative(),
      /**
       * Stretches of a group's log in between that are not the user's (said while they were out of the group, before
       * being added back): entries after `after` up to `upTo`. The backlog skips them. Absent when there are none.
       */
      hidden: z.array(z.strictObject({ after: z.number().int().nonnegative(), upTo: z.number().int().nonnegative() })).optional(),
      mine: Cursors,
      peers: z.record(z.string(), PeerCursors),
      /** In a group: those who were in it with the user and are out now, each with `left` (see HistoryResult). */
      formerPeers: z.record(z.string(), PeerCursors).optional(),
    }),
  ),
});
export type SyncEvent = z.infer<typeof SyncEvent>;

/** The backlog announced by the sync event has been sent in full. */
export const SyncedEvent = z.strictObject({
  type: z.literal('synced'),
  // Described in the document: the field's name says messages, but group changes count too.
  messages: z.number().int().nonnegative().describe('How many log entries the catch-up sent: messages and group changes alike.'),
});
export type SyncedEvent = z.infer<typeof SyncedEvent>;

export const ErrorBody = z.strictObject({ code: z.enum(ERROR_CODES), message: z.string() });
export type ErrorBody = z.infer<typeof ErrorBody>;

/**
 * The catch-up could not be run now (a service or the store it needs did not answer): the server tries again after
 * `retryInMs`, for as long as the connection stays subscribed, and the `sync` and backlog then follow. Live events still
 * come meanwhile.
 */
export const SyncDelayedEvent = z.strictObject({
  type: z.literal('sync_delayed'),
  error: ErrorBody.describe('Why the catch-up could not be run: `unavailable` (a service did not answer) or `internal`.'),
  retryInMs: z.number().int().positive().describe('How long the server waits before it tries again.'),
});
export type SyncDelayedEvent = z.infer<typeof SyncDelayedEvent>;

export const OkReply = z.strictObject({
  type: z.literal('reply'),
  id: RequestId,
  op: z.enum(REQUEST_OPS),
  ok: z.literal(true),
  result: z.union([
    SendResult,
    RegisterResult,
    HistoryResult,
    WhoResult,
    ReceiptResult,
    GroupInfo,
    GroupListResult,
    GroupGoneResult,
    InfoResult,
    FileOfferResult,
    FileChunkResult,
    FileFetchResult,
    FileStateResult,
    FileListResult,
  ]),
});
export const ErrorReply = z.strictObject({
  type: z.literal('reply'),
  /** The request's id, or null when the request was too broken to carry one. */
  id: RequestId.nullable(),
  op: z.string().nullable(),
  ok: z.literal(false),
  error: ErrorBody,
});
export const Reply = z.union([OkReply, ErrorReply]);
export type OkReply = z.infer<typeof OkReply>;
export type ErrorReply = z.infer<typeof ErrorReply>;
export type Reply = z.infer<typeof Reply>;

/** Everything that can arrive on an inbox topic. */
export const InboxEvent = z.union([
  MessageEvent,
  GroupEvent,
  OkReply,
  ErrorReply,
  ReceiptEvent,
  PresenceEvent,
  SyncEvent,
  SyncedEvent,
  SyncDelayedEvent,
  FileEvent,
  FilesEvent,
]);
export type InboxEvent = z.infer<typeof InboxEvent>;

/** The results each op answers with, for typed request helpers. */
/** Each request's result schema, by op: the server answers with it; a client reads a reply's result with the one its request asked for. */
export const RESULT_SCHEMAS = {
  register: RegisterResult,
  send: SendResult,
  history: HistoryResult,
  who: WhoResult,
  receipt: ReceiptResult,
  'group.create': GroupInfo,
  'group.rename': GroupInfo,
  'group.add': GroupInfo,
  'group.remove': GroupInfo,
  'group.leave': GroupGoneResult,
  'group.owner': GroupInfo,
  'group.delete': GroupGoneResult,
  'group.list': GroupListResult,
  'group.members': GroupInfo,
  info: InfoResult,
  'file.offer': FileOfferResult,
  'file.chunk': FileChunkResult,
  'file.accept': FileStateResult,
  'file.decline': FileStateResult,
  'file.fetch': FileFetchResult,
  'file.received': FileStateResult,
  'file.list': FileListResult,
  'file.seen': FileStateResult,
  'file.cancel': FileStateResult,
} as const satisfies Record<RequestOp, z.ZodType>;

export type ResultOf = { [Op in RequestOp]: z.infer<(typeof RESULT_SCHEMAS)[Op]> };

export type ParsedRequest = { ok: true; request: Request } | { ok: false; id: string | null; op: string | null; error: DomainError };

/** How much of a request too large to parse is read for its `op` and `id`. */
const HEAD_BYTES = 256;
const HEAD_FIELD = /"(op|id)"\s*:\s*"([^"\\]{1,128})"/g;

/**
 * The `op` and `id` of a request too large to parse, when they come first (as clients write them), so that the
 * refusal reaches the request it answers. Read from the first bytes only, and only at the top level of the object.
 */
function headOf(payload: Buffer | string): { id: string | null; op: string | null } {
  const head = (typeof payload === 'string' ? payload.slice(0, HEAD_BYTES) : payload.toString('utf8', 0, HEAD_BYTES)).trimStart();
  const found: { id: string | null; op: string | null } = { id: null, op: null };
  if (!head.startsWith('{')) return found;
  for (const m of head.matchAll(HEAD_FIELD)) {
    // Inside a nested object or array it is someone else's field.
    if (/[[{]/.test(head.slice(1, m.index))) break;
    const [, key, value] = m as unknown as [string, 'op' | 'id', string];
    if (key === 'id') found.id = RequestId.safeParse(value).success ? value : null;
    else if ((REQUEST_OPS as readonly string[]).includes(value)) found.op = value;
  }
  return found;
}

const NOT_UTF8 = 'request is not valid UTF-8 (a byte that starts no character, an encoded surrogate or an overlong form)';

/**
 * Where the parsed JSON holds a key `__proto__` (its path), or null. JSON.parse makes it an own key like any other, but
 * the schemas' parsed objects drop it, as a prototype and not a field: `file.seen` with `states: {"__proto__": …}` would
 * pass as naming no one, and an unknown top-level `__proto__` would pass the strict check. Walked without recursion, as
 * a hostile payload may nest deeply.
 */
function protoKeyIn(raw: unknown): string | null {
  const stack: { value: unknown; path: string }[] = [{ value: raw, path: '' }];
  for (let next = stack.pop(); next; next = stack.pop()) {
    const { value, path } = next;
    if (typeof value !== 'object' || value === null) continue;
    for (const [key, inner] of Object.entries(value)) {
      const at = path === '' ? key : `${path}.${key}`;
      if (key === '__proto__') return at;
      if (typeof inner === 'object' && inner !== null) stack.push({ value: inner, path: at });
    }
  }
  return null;
}

/**
 * Turns a raw request payload into a typed request, or into the error to reply
 * with. Never throws: hostile payloads (not JSON, deeply nested, huge, wrong
 * types) all end as `bad_request`, `unknown_op` or `payload_too_large`.
 */
export function parseRequest(payload: Buffer | string, maxBytes: number): ParsedRequest {
  const size = typeof payload === 'string' ? Buffer.byteLength(payload) : payload.length;
  if (size > maxBytes) {
    const { id, op } = headOf(payload);
    return { ok: false, id, op, error: new DomainError('payload_too_large', `request is ${size} bytes; the limit is ${maxBytes}`) };
  }
  const text = typeof payload === 'string' ? payload : payload.toString('utf8');
  // The quick decode puts U+FFFD for every ill-formed sequence (a stray byte, an encoded surrogate, an overlong form),
  // which would be stored as if the client had sent it: only a payload with a U+FFFD in it can be one of those, and
  // only such a payload is decoded again, strictly [RFC 3629].
  const illFormed = typeof payload !== 'string' && text.includes('\ufffd') && !isUtf8(payload);
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return { ok: false, id: null, op: null, error: new DomainError('bad_request', illFormed ? NOT_UTF8 : 'request is not valid JSON') };
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    return { ok: false, id: null, op: null, error: new DomainError('bad_request', illFormed ? NOT_UTF8 : 'request must be a JSON object') };
  }
  const fields = raw as Record<string, unknown>;
  const idCheck = RequestId.safeParse(fields.id);
  const id = idCheck.success ? idCheck.data : null;
  const op = typeof fields.op === 'string' && fields.op.length <= 64 ? fields.op : null;
  // Refused whole, before anything of it is looked at, as a JSON "\ud800" is: the reply still names its id and op.
  if (illFormed) return { ok: false, id, op, error: new DomainError('bad_request', NOT_UTF8) };
  if (op === null) {
    return { ok: false, id, op: null, error: new DomainError('bad_request', 'request needs a string "op"') };
  }
  if (!(REQUEST_OPS as readonly string[]).includes(op)) {
    return { ok: false, id, op, error: new DomainError('unknown_op', `unknown op "${op}"; known: ${REQUEST_OPS.join(', ')}`) };
  }
  // Only a payload that spells "proto", or escapes characters, can hold such a key: the rest are not walked.
  const proto = text.includes('proto') || text.includes('\\u') ? protoKeyIn(raw) : null;
  if (proto !== null) return { ok: false, id, op, error: new DomainError('bad_request', `${proto}: no field or name may be "__proto__"`) };
  const parsed = Request.safeParse(raw);
  if (!parsed.success) {
    // A whole number beyond 2^53 breaks two rules, the field's own bound and the one every whole number has: the field's
    // own says what the field takes (`limit` at most 500, not at most 9007199254740991).
    const issues = parsed.error.issues;
    const first = issues.find((i) => !(i.code === 'too_big' && Number(i.maximum) === Number.MAX_SAFE_INTEGER)) ?? issues[0];
    const where = first && first.path.length > 0 ? first.path.join('.') : 'request';
    return { ok: false, id, op, error: new DomainError('bad_request', `${where}: ${first?.message ?? 'invalid'}`) };
  }
  return { ok: true, request: parsed.data };
}
