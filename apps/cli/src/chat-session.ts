import { randomUUID } from 'node:crypto';
import { createInterface, clearLine, clearScreenDown, cursorTo, moveCursor, type Interface } from 'node:readline';
import { MAX_HISTORY_LIMIT, type GroupEvent, type MessageEvent } from '#libs/protocol';
import { CHAT_HELP, parseChatLine, unknownGroupHint, type ChatCommand } from './chat-line.js';
import { acceptFile, cancelInCliWords, CHAT_MAKE_ROOM, offeredRecord, offeredText, offerFile, offlineReceiver, seenReporter } from './file-actions.js';
import { FileNotices, fileLabel, withdrewText, type OwnAction } from './file-output.js';
import { InboxSession } from './inbox-session.js';
import {
  asDevice,
  displayLabel,
  groupEventLine,
  infoLines,
  markedInOneRow,
  markText,
  messageLine,
  offlineNotice,
  PresenceNews,
  presenceText,
  reportCatchUp,
  reportConnection,
  statusFields,
  type Mark,
  type Printer,
} from './output.js';
import { RequestError, type ParleyClient } from './parley-client.js';
import { terminalWidth } from './terminal-width.js';

/** Where plain text goes: a user, or a group by the id or name typed (`label`: how the prompt names it). */
type Peer = { kind: 'user'; name: string } | { kind: 'group'; name: string; label: string };

/**
 * Where plain text goes once a change to a group is shown: a group renamed keeps it, and the prompt shows its new name;
 * a group deleted, or one I am out of (removed, or left on another device), no longer takes it: nowhere, until I choose
 * again or someone writes to me.
 */
export function targetAfter(target: Peer | null, e: GroupEvent, me: string): Peer | null {
  if (target?.kind !== 'group' || target.name !== e.group.id) return target;
  const c = e.change;
  if (c.kind === 'renamed') return { kind: 'group', name: target.name, label: c.name };
  const out = c.kind === 'deleted' || (c.kind === 'member_removed' && c.members.includes(me)) || (c.kind === 'member_left' && c.user === me);
  return out ? null : target;
}

/**
 * The interactive `parley chat`. Lines arriving while you type are printed
 * above the prompt and the prompt is redrawn with what you had typed, so
 * nothing garbles your line. On a terminal, the mark of a recent message of
 * yours is updated in place as receipts come (✓ → ✓✓ → ✓✓ read); otherwise
 * (or once it has scrolled away) the line is printed again with its new mark.
 */
export class ChatSession {
  private readonly tty: boolean;
  private rl!: Interface;
  private session!: InboxSession;
  /**
   * The conversation plain text goes to, named in the prompt. Only what you type changes it (`/msg`, `/g`); until you
   * have, the conversation of the newest message of the catch-up sets it, or else the first message that comes after.
   * A message arriving as you type never redirects your line.
   */
  private target: Peer | null = null;
  /** Until the first catch-up has all come: the conversation of the newest message shown in it. */
  private catchingUp: { newest: Peer | null } | null = { newest: null };
  /** Ids of messages this session sent: their copies in my inbox are not printed twice. */
  private readonly sentIds = new Set<string>();
  /** Screen row (counted from the start of the session) and text of each of my messages, for in-place marks. */
  private readonly rows = new Map<string, { row: number; base: string; mark: string }>();
  private row = 0;
  private readonly watched = new Set<string>();
  /** The presence of each peer last shown, as a line or an offline notice. */
  private readonly presence = new PresenceNews();
  /** File offers and decisions shown, once each; set when the session runs. */
  private notices!: FileNotices;
  private inflight = new Set<Promise<unknown>>();
  /** A progress bar (stderr, on the prompt's row) ends with a new line: one row more above the prompt. */
  private readonly bar = {
    onLineEnd: () => {
      if (!this.tty) return;
      this.row += 1;
      this.rl.prompt(true);
    },
  };

  constructor(
    private readonly client: ParleyClient,
    private readonly printer: Printer,
  ) {
    this.tty = Boolean(process.stdin.isTTY && process.stdout.isTTY) && !printer.json;
  }

  async run(): Promise<void> {
    const me = this.client.user!;
    // Where the catch-up ends (for scripts, as listen says it), and that it is late when the server says so.
    const catchUp = reportCatchUp((human, record) => (human === null ? this.printer.emit(null, record) : this.print(human, record)));
    this.session = new InboxSession(
      this.client,
      {
        show: (e) => {
          if (e.type === 'group') {
            this.print(groupEventLine(this.session.groups.display(e), me), { ...e });
            // The newest conversation of the catch-up too: a group deleted after its last message is none to answer.
            if (this.catchingUp) this.catchingUp.newest = targetAfter(this.catchingUp.newest, e, me);
            return this.setTarget(targetAfter(this.target, e, me));
          }
          if (e.from === me && this.sentIds.has(e.id)) return;
          // Before you have chosen, plain text answers the newest conversation: of the catch-up, the one of its last
          // message (shown just above the prompt); after it, the first to speak. One you were written in, or wrote in
          // from another device.
          const peer: Peer = e.group ? { kind: 'group', name: e.group.id, label: e.group.name } : { kind: 'user', name: e.from === me ? e.to! : e.from };
          if (this.catchingUp) this.catchingUp.newest = peer;
          else if (!this.target) this.setTarget(peer);
          if (peer.kind === 'user') this.watch(peer.name);
          const mark = e.from === me ? this.session.markOf(e) : undefined;
          this.printMessage(e, mark);
        },
        mark: (m, mark) => this.updateMark(m, mark),
        delayed: catchUp.delayed,
        synced: (n, late) => {
          const newest = this.catchingUp?.newest;
          this.catchingUp = null;
          if (newest && !this.target) this.setTarget(newest);
          catchUp.synced(n, late);
        },
        presence: (p) => {
          if (p.user === me) return;
          // Only a change is news (not a retained copy again, nor a stale one); --json gets every event, as it came.
          if (!this.presence.isNews(p.user, p) && !this.printer.json) return;
          this.print(`* ${presenceText(p.user, p)}`, { ...p });
        },
      },
      'read',
    );
    this.rl = createInterface({ input: process.stdin, output: process.stdout, terminal: this.tty, prompt: this.promptText() });
    this.printer.emit(null, { type: 'ready', user: me });
    this.printer.note(`logged in as ${me}${asDevice(this.client.device)}; /help lists the commands`);
    if (this.tty) this.rl.prompt();
    const notices = (this.notices = new FileNotices(me, { accept: '/accept', decline: '/decline' }, seenReporter(this.client)));
    this.client.on('event', (e) => {
      if (e.type !== 'file' && e.type !== 'files') return;
      // With --json each event goes out once, as it came (as in listen); only decisions shown to a person count as seen.
      if (this.printer.json) return this.printer.emit(null, { ...e });
      for (const line of notices.linesFor(e)) this.print(line, null);
    });
    reportConnection(this.client, (text, record) => this.print(text, record));
    // A connection that ends for good (a refusal that retrying cannot change) ends the session, with the reason.
    let ended: Error | undefined;
    void this.client.ended.then((e) => {
      ended = e;
      this.rl.close();
    });

    let quit = false;
    await new Promise<void>((resolve) => {
      this.rl.on('line', (line) => {
        // What was typed stays on the screen, a row (or more) above the new prompt: marks drawn in place count it.
        if (this.tty) this.row += rowsOf(`${this.promptText()}${line}`);
        const cmd = parseChatLine(line);
        if (cmd.kind === 'quit') {
          quit = true;
          return this.rl.close();
        }
        const work = this.execute(cmd).catch((e: unknown) => this.fail(e));
        this.inflight.add(work);
        void work.finally(() => this.inflight.delete(work));
        if (this.tty) this.rl.prompt(true);
      });
      // Ctrl-C on a typed line clears it, as a shell does (leaving would lose both the line and the session); on an
      // empty line it leaves.
      this.rl.on('SIGINT', () => {
        if (this.rl.line === '') return this.rl.close();
        this.rl.write(null, { ctrl: true, name: 'e' });
        this.rl.write(null, { ctrl: true, name: 'u' });
      });
      this.rl.on('close', () => {
        // Ctrl-C, Ctrl-D or the connection's end leave the cursor on the prompt's row (/quit's Enter has moved it down):
        // what comes next, the shell's prompt or the reason, starts on a row of its own.
        if (this.tty && !quit) process.stdout.write('\n');
        resolve();
      });
    });
    // /quit closes readline but not stdin, which would keep the process alive.
    process.stdin.destroy();
    // Input ended: finish what was typed before leaving.
    await Promise.allSettled([...this.inflight]);
    await this.session.stop();
    if (ended) throw ended;
  }

  private async execute(cmd: ChatCommand): Promise<void> {
    switch (cmd.kind) {
      case 'nothing':
      case 'quit':
        return;
      case 'help':
        for (const l of CHAT_HELP) this.print(l, null);
        return;
      case 'invalid':
        return this.error('usage', cmd.message);
      case 'who': {
        const who = await this.client.request('who', { user: cmd.user });
        return this.print(presenceText(cmd.user, who), { type: 'presence', ...who });
      }
      case 'info': {
        const info = await this.client.request('info', { group: cmd.group, seq: cmd.seq ?? (await this.latestOfMine(cmd.group)) });
        for (const l of infoLines(info)) this.print(l, null);
        this.printer.emit(null, { type: 'info', ...info });
        return;
      }
      case 'file': {
        const sent = await offerFile(this.client, this.printer, { to: cmd.to }, cmd.path, this.bar, CHAT_MAKE_ROOM);
        this.print(offeredText(sent), offeredRecord(sent));
        const away = await offlineReceiver(this.client, sent.offer);
        if (away) this.print(`  ${away.text}`, away.record);
        return;
      }
      case 'accept': {
        const { offer, path } = await this.ownDoing(cmd.offer, ['accepted', 'received'], () =>
          acceptFile(this.client, this.printer, cmd.offer, process.cwd(), this.bar, `/accept ${cmd.offer}`),
        );
        return this.print(`received ${fileLabel(offer)} from ${offer.from}: ${path}`, { type: 'received', offer, path });
      }
      case 'decline': {
        const { offer } = await this.ownDoing(cmd.offer, ['declined'], () => this.client.request('file.decline', { offer: cmd.offer }));
        return this.print(`declined ${fileLabel(offer)} from ${offer.from}`, { type: 'declined', offer });
      }
      case 'cancel': {
        const { offer } = await this.ownDoing(cmd.offer, ['withdrawn'], () =>
          this.client.request('file.cancel', { offer: cmd.offer }).catch((e: unknown) => {
            throw cancelInCliWords(e, `/decline ${cmd.offer}`);
          }),
        );
        return this.print(withdrewText(offer), { type: 'withdrawn', offer });
      }
      case 'reply':
        if (!this.target) return this.error('usage', 'no one to reply to yet: start with /msg USER text or /g GROUP text');
        return this.target.kind === 'user' ? this.sendDirect(this.target.name, cmd.text) : this.sendGroup(this.target.name, cmd.text);
      case 'direct': {
        const peer: Peer = { kind: 'user', name: cmd.to };
        if (cmd.text === '') {
          // Only a conversation that can be had: the server knows the user (or says why not).
          await this.choosing(peer, () => this.client.request('who', { user: cmd.to }));
          return this.print(`* plain text goes to ${cmd.to} now`, null);
        }
        return this.choosing(peer, () => this.sendDirect(cmd.to, cmd.text));
      }
      case 'group': {
        const peer: Peer = { kind: 'group', name: cmd.group, label: cmd.group };
        if (cmd.text === '') {
          // The group must be one of yours, and one only: it is chosen by its id from then on, shown by its name.
          const g = await this.choosing(peer, () => this.client.request('group.members', { group: cmd.group }));
          if (this.isTarget(peer)) this.setTarget({ kind: 'group', name: g.id, label: g.name });
          return this.print(`* plain text goes to [${displayLabel(g.name)}] now`, null);
        }
        return this.choosing(peer, () =>
          this.sendGroup(cmd.group, cmd.text).catch((e: unknown) => {
            throw e instanceof RequestError && e.code === 'unknown_group'
              ? new RequestError(e.code, `${e.message}${unknownGroupHint(cmd.group, cmd.text)}`)
              : e;
          }),
        );
      }
    }
  }

  /**
   * `/msg` and `/g` choose where plain text goes at once, so that the lines typed right after them go there too; should
   * the server say that user or group is none to talk to (unknown, or ambiguous), the choice is taken back, and plain
   * text goes where it went before (unless another choice came meanwhile). Other failures (no answer in time, a text
   * refused) leave the choice made: the conversation is there.
   */
  private async choosing<T>(peer: Peer, work: () => Promise<T>): Promise<T> {
    const before = this.target;
    this.setTarget(peer);
    try {
      return await work();
    } catch (e) {
      if (e instanceof RequestError && NO_CONVERSATION.has(e.code) && this.isTarget(peer)) this.setTarget(before);
      throw e;
    }
  }

  private isTarget(peer: Peer): boolean {
    return this.target !== null && this.target.kind === peer.kind && this.target.name === peer.name;
  }

  /**
   * Does something to a file offer that prints its own line: the events about it are not news here (marked before, as
   * they may come before the answer); should it fail, they are again, as it may be done on another device.
   */
  private async ownDoing<T>(offerId: string, what: OwnAction[], work: () => Promise<T>): Promise<T> {
    for (const w of what) this.notices.doing(offerId, w);
    try {
      return await work();
    } catch (e) {
      for (const w of what) this.notices.undoing(offerId, w);
      throw e;
    }
  }

  /** The seq of my latest message among a group's last entries, for `/info GROUP`: the chat shows no seqs. */
  private async latestOfMine(group: string): Promise<number> {
    const page = await this.client.request('history', { group, limit: MAX_HISTORY_LIMIT });
    const mine = page.messages.filter((e) => e.type === 'message' && e.from === this.client.user).at(-1);
    if (mine) return mine.seq;
    throw new RequestError(
      'no_such_message',
      `no message of yours among the last ${MAX_HISTORY_LIMIT} in ${displayLabel(page.group?.name ?? group)}: /info GROUP SEQ names an older one (parley history --group GROUP shows the seqs)`,
    );
  }

  private async sendDirect(to: string, text: string): Promise<void> {
    const id = randomUUID();
    const r = await this.sending(id, { to }, text, () => this.client.request('send', { to, text }, id));
    this.watch(to);
    const message: MessageEvent = { type: 'message', conv: r.conv, seq: r.seq, from: this.client.user!, to, ts: r.ts, id, text };
    this.printMessage(message, this.session.track(message), { type: 'accepted', id, to, conv: r.conv, seq: r.seq, ts: r.ts, recipient: r.recipient });
    // A note to self: its reader is here, whatever the presence of a quiet connection says.
    if (r.recipient?.state === 'offline' && to !== this.client.user) {
      this.presence.isNews(to, r.recipient);
      this.print(`  ${offlineNotice(to, r.recipient)}`, { type: 'offline', user: to, lastSeen: r.recipient.lastSeen });
    }
  }

  private async sendGroup(group: string, text: string): Promise<void> {
    const id = randomUUID();
    const r = await this.sending(id, { group }, text, () => this.client.request('send', { group, text }, id));
    if (!this.session.hasPeers(r.conv)) {
      const info = await this.client.request('group.members', { group: r.group!.id });
      this.session.knowMembers(
        r.conv,
        info.members.filter((m) => m !== this.client.user),
      );
    }
    const message: MessageEvent = { type: 'message', conv: r.conv, seq: r.seq, from: this.client.user!, group: r.group!, ts: r.ts, id, text };
    // Still talking in this group: from now on by its id (a name may come to mean another group), shown by its name.
    if (this.target?.kind === 'group' && this.target.name === group) this.setTarget({ kind: 'group', name: r.group!.id, label: r.group!.name });
    this.printMessage(message, this.session.track(message), {
      type: 'accepted',
      id,
      group: r.group,
      conv: r.conv,
      seq: r.seq,
      ts: r.ts,
      // As `send --group` says it: how many other members it goes to.
      ...(r.recipients !== undefined ? { recipients: r.recipients } : {}),
    });
  }

  /**
   * A send of this session's: its copy in the inbox is not printed again once the answer has printed it. Should it
   * fail with no answer, that copy, if it comes (the server did it after all), is printed: it is news then. One not
   * answered within a few seconds (the connection down, a service slow) is said to be waiting, so that a person does
   * not take it for sent; a failure says which message it was about, as several may be under way at once.
   */
  private async sending<T>(id: string, where: { to: string } | { group: string }, text: string, send: () => Promise<T>): Promise<T> {
    this.sentIds.add(id);
    const what = yourMessage('to' in where ? where.to : where.group, text);
    const slow = setTimeout(() => this.print(`* not accepted yet ${what}: still waiting for the server`, { type: 'pending', id, ...where }), PENDING_NOTICE_MS);
    try {
      return await send();
    } catch (e) {
      this.sentIds.delete(id);
      if (e instanceof RequestError) throw new RequestError(e.code, `${e.message} ${what}`);
      throw new Error(`${e instanceof Error ? e.message : String(e)} ${what}`, { cause: e });
    } finally {
      clearTimeout(slow);
    }
  }

  /** The prompt, which names where plain text goes: `bob → alice> `, `bob → [crew]> `, or `bob> ` before anyone. */
  private promptText(): string {
    const me = this.client.user!;
    const t = this.target;
    if (!t) return `${me}> `;
    return `${me} → ${t.kind === 'user' ? t.name : `[${displayLabel(t.label)}]`}> `;
  }

  /** Points plain text at a conversation (null: none yet), and the prompt with it (redrawn with what is being typed). */
  private setTarget(peer: Peer | null): void {
    const t = this.target;
    if (t === peer) return;
    if (t && peer && this.isTarget(peer) && (t.kind === 'user' || t.label === (peer as { label: string }).label)) return;
    this.target = peer;
    if (!this.rl) return;
    if (this.tty) this.clearTyped();
    this.rl.setPrompt(this.promptText());
    if (this.tty) this.rl.prompt(true);
  }

  private printMessage(m: MessageEvent, mark: Mark | undefined, record: Record<string, unknown> & { type: string } = { ...m }): void {
    const mine = m.from === this.client.user;
    const shown = this.session.groups.display(m);
    const line = messageLine(shown, this.client.user!, { mark: mine ? (mark ?? null) : undefined });
    if (mine) this.rows.set(`${m.conv}#${m.seq}`, { row: this.row, base: messageLine(shown, this.client.user), mark: markText(mark ?? null) });
    this.print(line, record);
  }

  private updateMark(m: MessageEvent, mark: Mark): void {
    const key = `${m.conv}#${m.seq}`;
    const seen = this.rows.get(key);
    const text = markText(mark);
    if (!seen || seen.mark === text) return;
    seen.mark = text;
    this.printer.emit(null, { type: 'mark', conv: m.conv, seq: m.seq, id: m.id, mark: text, ...statusFields(mark) });
    if (this.printer.json) return;
    const line = `${seen.base} ${text}`;
    const up = this.row - seen.row;
    const rows = process.stdout.rows ?? 24;
    const columns = process.stdout.columns ?? 80;
    // Redrawn in place only when it is one row on the screen, above the prompt and what is typed (which may wrap);
    // otherwise printed again below.
    if (this.tty && up + rowsOf(`${this.promptText()}${this.rl.line}`) < rows && terminalWidth(line) < columns && !line.includes('\n')) {
      this.clearTyped();
      moveCursor(process.stdout, 0, -up);
      clearLine(process.stdout, 0);
      process.stdout.write(line);
      moveCursor(process.stdout, 0, up);
      cursorTo(process.stdout, 0);
      this.rl.prompt(true);
      return;
    }
    seen.row = this.row;
    this.print(this.tty ? markedInOneRow(seen.base, text, columns) : line, null);
  }

  /**
   * Clears the prompt and what is typed after it, from the prompt's first row, and leaves the cursor there: a long line
   * wraps onto several rows, the cursor on any of them (where readline's getCursorPos says), and clearing only the
   * cursor's row would leave the rows above it on the screen, a stale copy of the line above what is printed next.
   */
  private clearTyped(): void {
    const { rows } = this.rl.getCursorPos();
    cursorTo(process.stdout, 0);
    if (rows > 0) moveCursor(process.stdout, 0, -rows);
    clearScreenDown(process.stdout);
    // readline's redraw first moves up to where it last left the cursor; the prompt now starts on the cursor's row.
    (this.rl as unknown as { prevRows: number }).prevRows = 0;
  }

  /** Prints a line above the prompt (JSON mode: the record instead), keeping what the user is typing intact. */
  private print(human: string, record: (Record<string, unknown> & { type: string }) | null): void {
    if (this.printer.json) {
      if (record) this.printer.emit(null, record);
      return;
    }
    if (!this.tty) {
      this.printer.emit(human, { type: 'line' });
      this.row += 1;
      return;
    }
    this.clearTyped();
    process.stdout.write(human + '\n');
    this.row += rowsOf(human);
    this.rl.prompt(true);
  }

  /** An error, drawn and counted like any other line: above the prompt, not after it. */
  private error(code: string, message: string): void {
    if (!this.tty || this.printer.json) return this.printer.error(code, message);
    this.clearTyped();
    this.printer.error(code, message);
    // On the screen only when errors go to it (not with 2>file).
    if (process.stderr.isTTY) this.row += rowsOf(`error: ${code}: ${message}`);
    this.rl.prompt(true);
  }

  private watch(user: string): void {
    if (this.watched.has(user) || user === this.client.user) return;
    this.watched.add(user);
    this.client.watchPresence(user).then(
      (followed) => {
        if (!followed) this.error('refused', `the server follows no more users for this connection: ${user}'s presence will not be shown`);
      },
      (e: unknown) => {
        // Ending the session drops a subscription still on its way: nothing to tell.
        if (this.client.connected) this.error('failed', `could not follow ${user}'s presence: ${e instanceof Error ? e.message : String(e)}`);
      },
    );
  }

  private fail(e: unknown): void {
    if (e instanceof RequestError) this.error(e.code, e.message);
    else this.error('failed', e instanceof Error ? e.message : String(e));
  }
}

/** Answers that mean there is no conversation to have with the user or group named: a choice of it is taken back. */
const NO_CONVERSATION: ReadonlySet<string> = new Set(['unknown_user', 'unknown_group', 'ambiguous_group', 'not_member']);

/** How many terminal rows a line takes (by the columns its characters take: a CJK character two, an accent none). */
function rowsOf(text: string): number {
  const width = process.stdout.columns ?? 80;
  return text.split('\n').reduce((rows, line) => rows + Math.max(1, Math.ceil(terminalWidth(line) / width)), 0);
}

/** How long a send goes unanswered before chat says it is still waiting. */
const PENDING_NOTICE_MS = 3000;

/** Which of several messages under way a line is about: `(your message to bob: "the first 40 characters…")`. */
function yourMessage(to: string, text: string): string {
  const chars = [...text.replace(/\s+/g, ' ')];
  return `(your message to ${to}: "${chars.length > 40 ? `${chars.slice(0, 40).join('')}…` : chars.join('')}")`;
}
