import {
  directConversationId,
  directPeer,
  DomainError,
  USERNAME_PATTERN,
  type Cursors,
  type PeerCursors,
  type ReceiptEvent,
  type ReceiptResult,
} from '#libs/protocol';
import type { CursorStore, ReceiptStatus } from './cursor.store.js';
import type { DeviceCursorStore } from './device-cursor.store.js';

/** A device unused this long is brought up to date from its user's positions again, as a new one would be. */
export const DEVICE_IDLE_MS = 30 * 24 * 3600 * 1000;

/** Where the devices that keep a session keep their own positions, and how many of them a user keeps at most. */
export interface DeviceOptions {
  store: DeviceCursorStore;
  keepPerUser: number;
}

/** What receipts need to know about conversations, direct ones and groups alike; the group domain's `Conversations` provides it. */
export interface ConversationDirectory {
  /**
   * The members of a conversation, or null when there is no such conversation; in a group, each with the seq of the
   * change that (last) added them.
   */
  membersOf(
    conv: string,
    viewer?: string,
  ): Promise<{ user: string; joined?: number; left?: number; earlier?: { joined: number; left: number }[]; upTo?: number }[] | null>;
  /**
   * What of the conversation the user may see: the entries after `after` up to `last`, but for the `hidden` stretches
   * (each after `after` up to `upTo`: a group's, said while the user was out of it), and who its members are now; null
   * when nothing (a group member sees from the change that added it, a former one up to when it left).
   */
  viewOf(conv: string, user: string): Promise<{ after: number; last: number; hidden: { after: number; upTo: number }[]; members: string[] } | null>;
  /** Whether a user of that name exists (asked only to explain a refusal). */
  userExists(user: string): Promise<boolean>;
  /** Whether anyone but `user` wrote an entry in (after, upTo]. */
  othersWroteIn(conv: string, user: string, after: number, upTo: number): Promise<boolean>;
}

export interface ReceiptCommand {
  user: string;
  conv: string;
  seq: number;
  status: ReceiptStatus;
  /** The device that sent it, when it keeps a session (MQTT clean session off): its own position moves too. */
  device?: string;
  /** The request's id: a receipt sent again with it is a retry, one with another id at the same seq is not. */
  requestId?: string;
}

/** How many cursor moves the service remembers the request of (see `movers`). */
const MOVERS_KEPT = 20_000;

export interface ReceiptOutcome {
  result: ReceiptResult;
  /** The event for the other members when a cursor moved; null when nothing changed. */
  notify: { to: string[]; event: ReceiptEvent } | null;
}

/** Delivered and read cursors: members move their own, forward only, and the others hear of it. */
export class ReceiptsService {
  /**
   * The request id of the receipt that last moved each cursor (conversation, user, status), for the most recent moves:
   * a receipt at the cursor from another request (a second device with a clean session acknowledging the same message)
   * is then known not to be a retry, and is not announced again. A move not remembered (an older one, one made before a
   * restart, or by another instance of the service) is announced again, as a retry's may have to be. Each is kept with
   * the seq it moved the cursor to: another instance may have moved the cursor on since, and the request that moved it
   * to an earlier seq says nothing of who moved it to this one.
   */
  private readonly movers = new Map<string, { seq: number; requestId: string }>();

  constructor(
    private readonly cursors: CursorStore,
    private readonly conversations: ConversationDirectory,
    private readonly now: () => number = Date.now,
    private readonly devices: DeviceOptions | null = null,
  ) {}

  /**
   * Records a receipt: a member's, or a former group member's for what it could see (so that what it has been shown
   * of a group it left, or that was deleted, is not sent to it again). Throws not_member, unknown_user (a direct
   * conversation with no one) or no_such_message, changing nothing.
   */
  async record(cmd: ReceiptCommand): Promise<ReceiptOutcome> {
    const view = await this.conversations.viewOf(cmd.conv, cmd.user);
    if (!view) throw new DomainError('not_member', notYours(cmd.conv, cmd.user));
    const last = view.last;
    if (cmd.seq > last) {
      // A direct conversation with a name no one has is empty, but "the last is 0" would hide why.
      const peer = directPeer(cmd.conv, cmd.user);
      if (last === 0 && peer !== null && peer !== cmd.user && !(await this.conversations.userExists(peer)))
        throw new DomainError('unknown_user', `there is no user "${peer}"`);
      throw new DomainError('no_such_message', `${cmd.conv} has no message ${cmd.seq} you can see (the last is ${last})`);
    }
    // A cursor names a seq the user had: announcing "read up to #3" for a message said before they joined the group, or
    // while they were out of it, would tell the others they had it. (Up to a later seq is theirs, whatever came before.)
    if (cmd.seq <= view.after)
      throw new DomainError(
        'no_such_message',
        `${cmd.conv} has no message ${cmd.seq} you can see: it is from before you joined (your first is ${view.after + 1})`,
      );
    const out = view.hidden.find((h) => h.after < cmd.seq && cmd.seq <= h.upTo);
    if (out)
      throw new DomainError(
        'no_such_message',
        `${cmd.conv} has no message ${cmd.seq} you can see: it is from while you were out of the group (#${out.after + 1} to #${out.upTo})`,
      );
    const read = cmd.status === 'read';
    const at = this.now();
    const [{ cursors, moved, from }, own] = await Promise.all([
      this.cursors.advance(cmd.conv, cmd.user, cmd.status, cmd.seq, at),
      // Delivered or read, the device that says so has the message.
      cmd.device !== undefined && this.devices ? this.devices.store.advance(cmd.user, cmd.device, cmd.conv, cmd.seq, at) : undefined,
    ]);
    const result = { conv: cmd.conv, cursors, moved };
    const seq = read ? cursors.read : cursors.delivered;
    // A receipt that moved nothing is news to no one — unless it is a retry of the one that moved the cursor
    // exactly here, whose announcement may have been lost with its first answer: announce it again, with the time the
    // cursor moved, not the time of the retry. One that moved only its device's own position is not a retry: that
    // device caught up with what another device of the user had acknowledged, which was announced then. Nor is a
    // delivered one at a seq the user has read (on another device, say): the read said so, and "delivered" after it
    // would show the others the message going back from read to delivered. Nor one from another request than the one
    // that moved the cursor, when that is remembered: another device of the user acknowledging the same message.
    const key = `${cmd.conv}\n${cmd.user}\n${cmd.status}`;
    const mover = this.movers.get(key);
    const retry =
      !moved &&
      seq === cmd.seq &&
      own?.moved !== true &&
      (read || cursors.read < cmd.seq) &&
      (mover?.seq !== seq || cmd.requestId === undefined || mover.requestId === cmd.requestId);
    if (moved && cmd.requestId !== undefined) this.remember(key, seq, cmd.requestId);
    // A former member's receipts are its own business: the group has moved on without it.
    if ((!moved && !retry) || !view.members.includes(cmd.user)) return { result, notify: null };
    // Nor is a move past only the user's own messages (a client acknowledges what it shows, its own sends included). A
    // retry is announced again only when someone else wrote up to where it names: in a conversation of only the user's
    // own messages so far, the move was never announced, and a repeated receipt must not announce it now.
    if (!(await this.conversations.othersWroteIn(cmd.conv, cmd.user, moved ? from : 0, seq))) return { result, notify: null };
    const ts = (read ? cursors.readAt : cursors.deliveredAt) ?? this.now();
    return {
      result,
      // A read goes to the reader's own devices too: what one of them read is no longer unread on the others. (Whether a
      // message reached one device is nothing to the others.)
      notify: {
        to: view.members.filter((m) => m !== cmd.user || read),
        event: { type: 'receipt', conv: cmd.conv, user: cmd.user, status: cmd.status, seq, ts },
      },
    };
  }

  /** Notes the request that moved a cursor, forgetting the least recently noted beyond MOVERS_KEPT. */
  private remember(key: string, seq: number, requestId: string): void {
    this.movers.delete(key);
    this.movers.set(key, { seq, requestId });
    if (this.movers.size > MOVERS_KEPT) this.movers.delete(this.movers.keys().next().value!);
  }

  /**
   * Where a device that keeps a session is to be brought up to date from, in each of the user's conversations (`convs`):
   * a known device from its own positions, so it gets what another device of the user acknowledged while it was away;
   * in a conversation it has no position in (new to it since it became known), from the start. A device not known, or
   * unused for DEVICE_IDLE_MS, starts from the user's delivered cursors, as a device without a session does, and is
   * known from then on. It is made known before those cursors are read, so a receipt it sends meanwhile (for a message
   * that came live) moves its position rather than being lost in between.
   */
  async deviceStart(user: string, device: string, convs: string[]): Promise<Record<string, number>> {
    const delivered = async () =>
      Object.fromEntries(await Promise.all(convs.map(async (conv) => [conv, (await this.cursors.get(conv, user)).delivered] as const)));
    if (!this.devices) return delivered();
    const { store, keepPerUser } = this.devices;
    const now = this.now();
    const known = await store.get(user, device);
    if (known?.complete && now - known.usedAt <= DEVICE_IDLE_MS) {
      await store.touch(user, device, now);
      return Object.fromEntries(convs.map((conv) => [conv, known.cursors[conv] ?? 0]));
    }
    // Long unused: starts over. Made known but not filled in (its catch-up ended early): keeps what it has.
    await store.start(user, device, now, keepPerUser, known !== null && known.complete);
    const positions = await store.fill(user, device, await delivered());
    if (!positions) throw new Error(`device ${device} of ${user} was forgotten during its catch-up`);
    return positions;
  }

  /** A member's own cursors. */
  cursorsOf(conv: string, user: string): Promise<Cursors> {
    return this.cursors.get(conv, user);
  }

  /** For each user: whether message `seq` reached its client and was read, and when. */
  async progress(
    conv: string,
    seq: number,
    users: string[],
  ): Promise<{ user: string; delivered: boolean; deliveredAt: number | null; read: boolean; readAt: number | null }[]> {
    return Promise.all(
      users.map(async (user) => {
        const [deliveredAt, readAt] = await Promise.all([
          this.cursors.reachedAt(conv, user, 'delivered', seq),
          this.cursors.reachedAt(conv, user, 'read', seq),
        ]);
        return { user, delivered: deliveredAt !== null, deliveredAt, read: readAt !== null, readAt };
      }),
    );
  }

  /**
   * The cursors of every other member of a conversation; in a group, with when each joined (and was in it before), and
   * of those who were in it with the user and are out now (with when they left: they count for what was said until then).
   */
  async peersOf(conv: string, user: string): Promise<Record<string, PeerCursors>> {
    const members = (await this.conversations.membersOf(conv, user)) ?? [];
    const others = members.filter((m) => m.user !== user);
    const all = await Promise.all(
      others.map(async (m) => {
        const cursors = await this.cursorsUpTo(conv, m.user, m.upTo);
        const span = { ...(m.joined === undefined ? {} : { joined: m.joined }), ...(m.left === undefined ? {} : { left: m.left }) };
        return [m.user, { ...cursors, ...span, ...(m.earlier ? { earlier: m.earlier } : {}) }] as const;
      }),
    );
    return Object.fromEntries(all);
  }

  /** A member's cursors, as far as `upTo` if given: one who went out of a group is not told what others read since. */
  private async cursorsUpTo(conv: string, user: string, upTo: number | undefined): Promise<Cursors> {
    const cursors = await this.cursors.get(conv, user);
    if (upTo === undefined) return cursors;
    const [delivered, read] = await Promise.all(
      (['delivered', 'read'] as const).map(async (status) =>
        cursors[status] <= upTo ? null : { seq: upTo, at: await this.cursors.reachedAt(conv, user, status, upTo) },
      ),
    );
    return {
      ...cursors,
      ...(delivered ? { delivered: delivered.seq, deliveredAt: delivered.at } : {}),
      ...(read ? { read: read.seq, readAt: read.at } : {}),
    };
  }
}

/**
 * Why a receipt's conversation is not the user's. A direct conversation is named with its two names in order: one named
 * the other way round is theirs all the same, so the answer names it as it is rather than say they are not in it.
 */
function notYours(conv: string, user: string): string {
  // Conversations are direct ones (`dm:a:b`) and groups (`grp:<id>`): anything else names none at all.
  if (!/^(dm|grp):/.test(conv)) return `there is no conversation ${conv}`;
  const peer = directPeer(conv, user);
  if (peer === null || !USERNAME_PATTERN.test(peer) || directConversationId(user, peer) === conv) return `you are not a member of ${conv}`;
  return `there is no conversation ${conv}: yours with ${peer} is ${directConversationId(user, peer)}`;
}

/** What the gateway calls: the service in process, or the same methods over RPC to the receipts app. */
export const RECEIPTS_API_METHODS = ['record', 'cursorsOf', 'peersOf', 'progress', 'deviceStart'] as const;
export type ReceiptsApi = Pick<ReceiptsService, (typeof RECEIPTS_API_METHODS)[number]>;
export const RECEIPTS_API = Symbol('RECEIPTS_API');
