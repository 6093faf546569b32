import { randomUUID } from 'node:crypto';
import type { Command } from 'commander';
import { directPeer, MAX_HISTORY_LIMIT } from '#libs/protocol';
import { ChatSession } from './chat-session.js';
import { DeviceLock } from './process-lock.js';
import { seenReporter } from './file-actions.js';
import { FileNotices } from './file-output.js';
import { InboxSession } from './inbox-session.js';
import {
  asDevice,
  groupEventLine,
  groupLine,
  infoLines,
  markFor,
  messageLine,
  offlineNotice,
  presenceText,
  Printer,
  receiptLine,
  displayLabel,
  reportCatchUp,
  reportConnection,
  statusFields,
} from './output.js';
import { ConnectError, ParleyClient, RequestError, RequestTimeout } from './parley-client.js';
import { canPrompt, promptPassword } from './password-prompt.js';
import { checkDevice, checkLoginName, checkServer, requireLogin, resolveSettings, UsageError, type GlobalFlags, type Settings } from './settings.js';

/**
 * Interactive commands keep trying to reconnect and make their user online; one-shot commands do neither (they connect
 * again a few times after a drop, to get the answer they wait for), but for file transfers, which reconnect after a drop
 * (`reconnect`) so that a server's restart does not end them.
 */
export interface LoginOptions {
  keepTrying?: boolean;
  reconnect?: boolean;
  present?: boolean;
}

/** What every command gets: its settings, a printer, and a way to log in. */
export interface CommandContext {
  settings: Settings;
  printer: Printer;
  login(opts?: LoginOptions): Promise<ParleyClient>;
  /** Asks for the password now, if it must be asked for: before the command reads stdin itself (`send USER -`). */
  askPassword(): Promise<void>;
}

export function contextOf(cmd: Command): CommandContext {
  const settings = resolveSettings(cmd.optsWithGlobals<GlobalFlags>());
  const printer = new Printer(settings.json);
  // Asked for once, at the first login: chat and listen log in again after a drop with the same.
  const ask = canPrompt()
    ? async (user: string) => {
        checkLoginName(user);
        settings.password ??= await promptPassword(`password for ${user}: `);
        return settings.password;
      }
    : null;
  return {
    settings,
    printer,
    askPassword: async () => {
      // A URL that can never work is said before a password is asked for, not after it was typed.
      checkServer(settings.server, settings.serverFrom);
      if (ask !== null && settings.user !== undefined && settings.password === undefined) await ask(settings.user);
    },
    login: async (opts = {}) => {
      checkServer(settings.server, settings.serverFrom);
      const s = await requireLogin(settings, ask);
      checkLoginName(s.user);
      return ParleyClient.connect({
        server: s.server,
        ca: s.ca,
        user: s.user,
        password: s.password,
        keepTrying: opts.keepTrying,
        reconnect: opts.reconnect,
        present: opts.present,
        device: s.device,
        onUnavailable: retryingNote(printer),
      });
    },
  };
}

/** Tells a person why a first login is taking its time: the server asked to try again later, and the CLI does. */
function retryingNote(printer: Printer): (reason: string) => void {
  return (reason) => printer.note(`* ${reason}; retrying…`);
}

/**
 * Runs `work` with a logged-in client, closing it afterwards however it ends. A command that makes its user present as
 * a device (`--device`) holds that device for as long (one process per device: see DeviceLock).
 */
export async function withClient<T>(ctx: CommandContext, work: (c: ParleyClient) => Promise<T>, opts: LoginOptions = {}): Promise<T> {
  const { user } = ctx.settings;
  // Only a present command (chat, listen) connects as the device; one-shot commands ignore it.
  const device = opts.present ? ctx.settings.device : undefined;
  if (device !== undefined) checkDevice(device);
  const lock = device !== undefined && user !== undefined ? await DeviceLock.take(user, device) : null;
  try {
    const client = await ctx.login(opts);
    try {
      return await work(client);
    } finally {
      await client.close();
    }
  } finally {
    await lock?.release();
  }
}

/** One of the two ways to name a conversation (or a file's receivers): a user, or `--group NAME`. */
export function target(user: string | undefined, group: string | undefined): { to: string } | { group: string } {
  if (group !== undefined && user !== undefined) throw new UsageError('give a user or --group, not both');
  if (group !== undefined) return { group };
  if (user !== undefined) return { to: user };
  throw new UsageError('give a user, or --group NAME');
}

/** A new account's password, asked for twice at the terminal (no one sees it typed, so no one sees a slip either). */
async function askNewPassword(user: string): Promise<string> {
  checkLoginName(user);
  const password = await promptPassword(`password for the new user ${user}: `);
  if ((await promptPassword('the same password again: ')) !== password) throw new UsageError('the two passwords differ; nothing was registered');
  return password;
}

export async function register(ctx: CommandContext): Promise<void> {
  // Before the new password is asked for twice: a URL that can never work is said first.
  checkServer(ctx.settings.server, ctx.settings.serverFrom);
  const { user, password } = await requireLogin(ctx.settings, canPrompt() ? askNewPassword : null);
  const client = await ParleyClient.connect({ server: ctx.settings.server, ca: ctx.settings.ca, onUnavailable: retryingNote(ctx.printer) });
  try {
    const r = await client.request('register', { user, password });
    ctx.printer.emit(`registered ${r.user}`, { type: 'registered', user: r.user });
  } finally {
    await client.close();
  }
}

/**
 * A send whose outcome is unknown (sent, and no answer came), or which the server could not complete (`unavailable`):
 * it names the message's id, which makes running the command again safe.
 */
export class SendUnsettled extends Error {
  override readonly name = 'SendUnsettled';
  constructor(
    /** `failed`, `connect` (the login refused as it connected again), or the server's code. */
    readonly code: string,
    message: string,
    readonly id: string,
  ) {
    super(message);
  }
}

/**
 * Whether a request that failed with `e` went out and may have been carried out, its answer lost: no answer in time, or
 * the connection closed before it, and connecting again failed or the login was refused.
 */
function mayBeDone(e: unknown): boolean {
  return (e instanceof RequestTimeout || e instanceof ConnectError) && e.sent;
}

/** `e` as a SendUnsettled when a send that ended with it may have been done, or may be completed by a retry; else `e`. */
function unsettled(e: unknown, id: string): unknown {
  const code = mayBeDone(e) ? (e instanceof ConnectError ? 'connect' : 'failed') : e instanceof RequestError && e.code === 'unavailable' ? e.code : null;
  if (code === null) return e;
  return new SendUnsettled(code, `${(e as Error).message}; running the same command again with --id ${id} is safe: the message is stored once`, id);
}

export async function send(ctx: CommandContext, user: string | undefined, text: string, opts: { group?: string; id?: string }): Promise<void> {
  const to = target(user, opts.group);
  await withClient(ctx, async (client) => {
    // A message's id: sent again with it (a retry, or `--id` after an unknown outcome), it is stored once.
    const id = opts.id ?? randomUUID();
    const r = await client.request('send', { ...to, text }, id).catch((e: unknown) => {
      throw unsettled(e, id);
    });
    const where = 'group' in to ? { group: r.group } : { to: to.to };
    const human = r.group
      ? `accepted (seq ${r.seq}, to ${r.recipients ?? 0} member${r.recipients === 1 ? '' : 's'} of ${displayLabel(r.group.name)})`
      : `accepted (seq ${r.seq})`;
    ctx.printer.emit(human, {
      type: 'accepted',
      id,
      ...where,
      conv: r.conv,
      seq: r.seq,
      ts: r.ts,
      ...(r.recipient ? { recipient: r.recipient } : {}),
      ...(r.recipients !== undefined ? { recipients: r.recipients } : {}),
    });
    // A note to self: its reader is here, whatever the presence of a quiet connection says.
    if ('to' in to && r.recipient?.state === 'offline' && to.to !== client.user)
      ctx.printer.emit(offlineNotice(to.to, r.recipient), { type: 'offline', user: to.to, lastSeen: r.recipient.lastSeen });
  });
}

/** Prints what arrives (in order, once) and acknowledges delivery, until interrupted. */
export async function listen(ctx: CommandContext): Promise<void> {
  await withClient(
    ctx,
    async (client) => {
      const me = client.user!;
      const session = new InboxSession(
        client,
        {
          show: (e) => {
            const shown = session.groups.display(e);
            ctx.printer.emit(shown.type === 'group' ? groupEventLine(shown, me, { seq: true }) : messageLine(shown, me, { seq: true }), { ...e });
          },
          receipt: (r, passed) => {
            // In a group every member's receipts come, about one a member a message, most about others' messages: a
            // person is told only of those that reach one of their own. A script (--json) gets them all, to judge.
            const told = directPeer(r.conv, me) !== null || passed.length > 0;
            ctx.printer.emit(told ? receiptLine(r, me, session.groups.of(r.conv)) : null, { ...r });
          },
          ...reportCatchUp((human, record) => ctx.printer.emit(human, record)),
        },
        'delivered',
      );
      const notices = new FileNotices(me, { accept: 'parley file accept', decline: 'parley file decline' }, seenReporter(client));
      client.on('event', (e) => {
        if (e.type !== 'file' && e.type !== 'files') return;
        // With --json the events go out as they come, for a script to judge; only decisions shown to a person count as seen.
        if (ctx.printer.json) return ctx.printer.emit(null, { ...e });
        for (const line of notices.linesFor(e)) ctx.printer.emit(line, { type: 'line' });
      });
      reportConnection(client, (text, record) => ctx.printer.emit(text, record));
      ctx.printer.emit(null, { type: 'ready', user: me });
      ctx.printer.note(`listening as ${me}${asDevice(client.device)}; Ctrl-C to stop`);
      // Until interrupted, or until the connection ends for good (refused in a way retrying cannot change): then with
      // its reason, and exit status 1.
      const ended = await Promise.race([untilInterrupted().then(() => undefined), client.ended]);
      await session.stop();
      if (ended) throw ended;
    },
    { keepTrying: true, present: true },
  );
}

export async function history(ctx: CommandContext, user: string | undefined, opts: { group?: string; limit?: string; before?: string }): Promise<void> {
  const t = target(user, opts.group);
  const query = {
    ...('to' in t ? { with: t.to } : { group: t.group }),
    ...numberOpt('limit', opts.limit, MAX_HISTORY_LIMIT),
    ...numberOpt('before', opts.before),
  };
  await withClient(ctx, async (client) => {
    const me = client.user!;
    const r = await client.request('history', query);
    for (const e of r.messages) {
      if (e.type === 'group') {
        ctx.printer.emit(groupEventLine(e, me, { long: true, seq: true }), { ...e });
        continue;
      }
      const mark = e.from === me ? markFor(e.seq, { ...r.peers, ...r.formerPeers }, r.group !== undefined) : undefined;
      ctx.printer.emit(messageLine(e, me, { mark, long: true, seq: true }), { ...e, ...(mark ? statusFields(mark) : {}) });
    }
    if (r.messages.length === 0) ctx.printer.note('no messages');
  });
}

export async function read(ctx: CommandContext, user: string | undefined, opts: { group?: string }): Promise<void> {
  const t = target(user, opts.group);
  await withClient(ctx, async (client) => {
    const page = await client.request('history', { ...('to' in t ? { with: t.to } : { group: t.group }), limit: 1 });
    const last = page.messages.at(-1);
    if (!last) {
      ctx.printer.emit('nothing to mark read', { type: 'read', conv: page.conv, seq: 0, moved: false });
      return;
    }
    const { result: r, repeat } = await client.ask('receipt', { conv: page.conv, seq: last.seq, status: 'read' });
    const where = page.group ? `in ${displayLabel(page.group.name)}` : `with ${'to' in t ? t.to : ''}`;
    // Sent again after its answer was lost, the receipt finds the cursor where its first copy moved it: this command
    // moved it, as the first answer would have said. (Already there before it, or moved there meanwhile by another
    // device, is told apart by nothing in the answer; moved past it, it was not this command.)
    const moved = r.moved || (repeat && r.cursors.read === last.seq);
    // Run again, it moves nothing: say so rather than claim to have marked something.
    ctx.printer.emit(`${moved ? 'marked read' : 'read already'} up to #${r.cursors.read} ${where}`, {
      type: 'read',
      conv: page.conv,
      seq: r.cursors.read,
      moved,
    });
  });
}

export async function who(ctx: CommandContext, user: string): Promise<void> {
  await withClient(ctx, async (client) => {
    const r = await client.request('who', { user });
    ctx.printer.emit(presenceText(user, r), { type: 'presence', ...r });
  });
}

export async function info(ctx: CommandContext, group: string, seqText: string): Promise<void> {
  const seq = Number(seqText);
  if (!Number.isInteger(seq) || seq < 1) throw new UsageError('SEQ must be a positive whole number');
  await withClient(ctx, async (client) => {
    const r = await client.request('info', { group, seq });
    if (ctx.printer.json) ctx.printer.emit(null, { type: 'info', ...r });
    else for (const l of infoLines(r)) ctx.printer.emit(l, { type: 'line' });
  });
}

export async function chat(ctx: CommandContext): Promise<void> {
  await withClient(ctx, (client) => new ChatSession(client, ctx.printer).run(), { keepTrying: true, present: true });
}

export const groupCommands = {
  async create(ctx: CommandContext, name: string, members: string[]): Promise<void> {
    await groupChange(ctx, 'group.create', { name, members }, (g) => `created ${groupLine(g)}`);
  },
  async rename(ctx: CommandContext, group: string, name: string): Promise<void> {
    await groupChange(ctx, 'group.rename', { group, name }, (g) => `renamed: ${groupLine(g)}`);
  },
  async add(ctx: CommandContext, group: string, members: string[]): Promise<void> {
    await groupChange(ctx, 'group.add', { group, members }, (g) => groupLine(g));
  },
  async remove(ctx: CommandContext, group: string, members: string[]): Promise<void> {
    await groupChange(ctx, 'group.remove', { group, members }, (g) => groupLine(g));
  },
  async owner(ctx: CommandContext, group: string, user: string): Promise<void> {
    await groupChange(ctx, 'group.owner', { group, user }, (g) => (g.deleted ? `handed over ${groupLine(g)}` : `${g.owner} now owns ${displayLabel(g.name)}`));
  },
  async leave(ctx: CommandContext, group: string): Promise<void> {
    await withClient(ctx, async (client) => {
      const r = await client.request('group.leave', { group });
      // The last member to leave deletes the group: say so, as its members would be told.
      const deleted = r.deleted === true;
      const handed = r.newOwner ? `; ${r.newOwner} owns it now` : '';
      ctx.printer.emit(`left ${displayLabel(r.name)}${deleted ? '; you were its last member, so it is deleted' : handed}`, {
        type: 'group.left',
        ...r,
        ...(deleted ? { deleted: true } : {}),
      });
    });
  },
  async delete(ctx: CommandContext, group: string): Promise<void> {
    await withClient(ctx, async (client) => {
      const r = await client.request('group.delete', { group });
      ctx.printer.emit(`deleted ${displayLabel(r.name)}`, { type: 'group.deleted', ...r });
    });
  },
  async list(ctx: CommandContext): Promise<void> {
    await withClient(ctx, async (client) => {
      const r = await client.request('group.list');
      for (const g of r.groups) ctx.printer.emit(groupLine(g), { type: 'group', ...g });
      if (r.groups.length === 0) ctx.printer.note('you are in no group');
    });
  },
  async members(ctx: CommandContext, group: string): Promise<void> {
    await withClient(ctx, async (client) => {
      const g = await client.request('group.members', { group });
      for (const m of g.members) ctx.printer.emit(m === g.owner ? `${m} (owner)` : m, { type: 'member', group: g.id, user: m, owner: m === g.owner });
    });
  },
};

async function groupChange(
  ctx: CommandContext,
  op: 'group.create' | 'group.rename' | 'group.add' | 'group.remove' | 'group.owner',
  fields: Record<string, unknown>,
  human: (g: import('#libs/protocol').GroupInfo) => string,
): Promise<void> {
  await withClient(ctx, async (client) => {
    const g = await client.request(op, fields).catch((e: unknown) => {
      // Run again, any other change finds it made (or makes it); a create would make a second group of that name.
      if (op !== 'group.create' || !mayBeDone(e)) throw e;
      const told = `${(e as Error).message}; parley group list tells whether it was made (running this again would make another group)`;
      throw e instanceof ConnectError ? new ConnectError(told, true) : new RequestTimeout(true, told);
    });
    ctx.printer.emit(human(g), { type: 'group', ...g });
  });
}

/** A positive whole number flag; one over `max` (the protocol's limit) is a usage mistake too, not the server's refusal. */
function numberOpt(name: string, value: string | undefined, max = Number.MAX_SAFE_INTEGER): Record<string, number> {
  if (value === undefined) return {};
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`--${name} must be a positive whole number`);
  if (n > max) throw new UsageError(`--${name} must be at most ${max}`);
  return { [name]: n };
}

function untilInterrupted(): Promise<void> {
  return new Promise((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
  });
}
