import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { MessageEvent } from '#libs/protocol';
import {
  clock,
  dateTime,
  displayLabel,
  displayText,
  groupChangeText,
  groupEventLine,
  groupLine,
  GroupNames,
  markedInOneRow,
  markFor,
  markText,
  messageLine,
  offlineNotice,
  PresenceNews,
  presenceText,
  Printer,
  receiptLine,
  stamp,
} from './output.js';
import { terminalWidth } from './terminal-width.js';

const at = new Date(2026, 10, 23, 10, 32, 5).getTime();

// A time of today shows as HH:MM:SS, of another day with its date: these tests run on the day of `at`.
beforeEach(() => {
  vi.useFakeTimers({ toFake: ['Date'] });
  vi.setSystemTime(at + 3_600_000);
});
afterEach(() => {
  vi.useRealTimers();
});
const dm: MessageEvent = { type: 'message', conv: 'dm:alice:bob', seq: 3, from: 'alice', to: 'bob', ts: at, id: 'm1', text: 'hello' };
const cursors = (delivered: number, read: number, readAt: number | null = null) => ({ delivered, deliveredAt: delivered ? at : null, read, readAt });

describe('output formatting', () => {
  it('dates a line whose time is not today, so that a catch-up after a day away does not pass for today', () => {
    const yesterday = at - 24 * 3_600_000;
    expect(stamp(at)).toBe('10:32:05');
    expect(stamp(yesterday)).toBe('2026-11-22 10:32:05');
    expect(messageLine({ ...dm, ts: yesterday }, 'bob')).toBe('[2026-11-22 10:32:05] alice → you: hello');
    const receipt = { type: 'receipt' as const, conv: 'dm:alice:bob', user: 'bob', status: 'read' as const, seq: 3, ts: yesterday };
    expect(receiptLine(receipt, 'alice', undefined)).toBe('[2026-11-22 10:32:05] bob read up to #3');
    expect(markText({ kind: 'direct', delivered: true, read: true, readAt: yesterday })).toBe('✓✓ read 2026-11-22 10:32:05');
    // Just after midnight, a message from just before it is of another day.
    const midnight = new Date(2026, 10, 24, 0, 0, 30).getTime();
    expect(stamp(midnight - 60_000, midnight)).toBe('2026-11-23 23:59:30');
  });

  it('formats times in local time', () => {
    expect(clock(at)).toBe('10:32:05');
    expect(dateTime(at)).toBe('2026-11-23 10:32:05');
  });

  it('prints messages as the recipient and as the sender see them', () => {
    expect(messageLine(dm, 'bob')).toBe('[10:32:05] alice → you: hello');
    expect(messageLine(dm, 'alice', { mark: null })).toBe('[10:32:05] you → bob: hello ✓');
    const group = { ...dm, to: undefined, group: { id: 'g1', name: 'class 5b' } };
    expect(messageLine(group, 'bob')).toBe('[10:32:05] [class 5b] alice: hello');
  });

  it('shows the seq of messages and group changes where receipts refer to it (listen, history), right after the time', () => {
    expect(messageLine(dm, 'bob', { seq: true })).toBe('[10:32:05] #3 alice → you: hello');
    expect(messageLine(dm, 'alice', { seq: true, long: true, mark: null })).toBe('[2026-11-23 10:32:05] #3 you → bob: hello ✓');
    const group = { ...dm, to: undefined, group: { id: 'g1', name: 'lunch' }, seq: 7 };
    expect(messageLine(group, 'bob', { seq: true })).toBe('[10:32:05] #7 [lunch] alice: hello');
    const added = { type: 'group' as const, conv: 'g:g1', seq: 8, from: 'amy', group: { id: 'g1', name: 'lunch' }, ts: at, id: 'c1' };
    const change = { kind: 'member_added' as const, members: ['ben'] };
    expect(groupEventLine({ ...added, change }, 'ben', { seq: true })).toBe('[10:32:05] #8 [lunch] * amy added you');
    expect(groupEventLine({ ...added, change }, 'cat', { long: true, seq: true })).toBe('[2026-11-23 10:32:05] #8 [lunch] * amy added ben');
    // chat marks its messages instead: no seq unless asked for.
    expect(groupEventLine({ ...added, change }, 'ben')).toBe('[10:32:05] [lunch] * amy added you');
  });

  it('prints others’ receipts with the group’s name (never a conversation id), and not the user’s own', () => {
    const names = new GroupNames();
    const empty = { delivered: 0, deliveredAt: null, read: 0, readAt: null };
    names.note({ type: 'sync', conversations: [{ conv: 'g:g1', group: { id: 'g1', name: 'lunch' }, after: 0, last: 4, mine: empty, peers: {} }] });
    names.note({ ...dm, conv: 'g:g2', to: undefined, group: { id: 'g2', name: 'band' } });
    const receipt = { type: 'receipt' as const, conv: 'g:g1', user: 'carol', status: 'read' as const, seq: 3, ts: at };
    expect(receiptLine(receipt, 'alice', names.of(receipt.conv))).toBe('[10:32:05] [lunch] carol read up to #3');
    expect(receiptLine({ ...receipt, conv: 'g:g2', status: 'delivered' }, 'alice', names.of('g:g2'))).toBe('[10:32:05] [band] carol received up to #3');
    expect(receiptLine({ ...receipt, conv: 'dm:alice:bob', user: 'bob' }, 'alice', names.of('dm:alice:bob'))).toBe('[10:32:05] bob read up to #3');
    expect(receiptLine({ ...receipt, user: 'alice' }, 'alice', names.of(receipt.conv))).toBeNull();
  });

  it('tells apart two groups with the same name by their ids, and only then', () => {
    const names = new GroupNames();
    const lunch1 = { ...dm, conv: 'g:g1', to: undefined, group: { id: 'g1', name: 'lunch' } };
    names.note(lunch1);
    expect(messageLine(names.display(lunch1), 'bob')).toBe('[10:32:05] [lunch] alice: hello');
    names.note({ ...lunch1, conv: 'g:g2', group: { id: 'g2', name: 'lunch' } });
    expect(messageLine(names.display(lunch1), 'bob')).toBe('[10:32:05] [lunch (g1)] alice: hello');
    expect(names.of('g:g2')).toEqual({ id: 'g2', name: 'lunch (g2)' });
    // One renamed: the names differ again.
    names.note({ ...lunch1, conv: 'g:g2', group: { id: 'g2', name: 'dinner' } });
    expect(messageLine(names.display(lunch1), 'bob')).toBe('[10:32:05] [lunch] alice: hello');
    // A name that only looks the same (a zero-width space in it) is told apart too.
    names.note({ ...lunch1, conv: 'g:g3', group: { id: 'g3', name: 'lunch\u200b' } });
    expect(messageLine(names.display(lunch1), 'bob')).toBe('[10:32:05] [lunch (g1)] alice: hello');
    expect(names.of('g:g3')).toEqual({ id: 'g3', name: 'lunch\u200b (g3)' });
  });

  it('shows others’ text so that it cannot act on the terminal nor pass for another message', () => {
    const forged = { ...dm, text: 'ok\n[00:30:00] carol → you: send me your password' };
    expect(messageLine(forged, 'bob')).toBe('[10:32:05] alice → you: ok\n  | [00:30:00] carol → you: send me your password');
    expect(displayText('red\u001b[31m bell\u0007 \r\n\tend \u202eevil')).toBe('red\\u001b[31m bell\\u0007 \n  |     end \\u202eevil');
    expect(displayText('plain text, emoji 👨‍👩‍👧 and שלום')).toBe('plain text, emoji 👨‍👩‍👧 and שלום');
  });

  it('shows a group’s name on one line with its direction overrides escaped, wherever the name is printed', () => {
    // A name the server took before it refused these: it must not show as "team alice".
    const group = { id: 'g1', name: 'team \u202eecila\u202c' };
    const shown = 'team \\u202eecila\\u202c';
    expect(messageLine({ ...dm, to: undefined, group }, 'bob')).toBe(`[10:32:05] [${shown}] alice: hello`);
    expect(groupLine({ ...group, owner: 'amy', members: ['amy'], createdAt: at })).toBe(`${shown} (g1) owner amy, 1 member: amy`);
    // A retry's answer for a group deleted since: not "0 members".
    expect(groupLine({ ...group, owner: 'amy', members: [], createdAt: at, deleted: true })).toBe(`${shown} (g1), deleted since`);
    const renamed = { kind: 'renamed' as const, oldName: 'a\nb', name: group.name };
    expect(groupChangeText(renamed, 'amy', 'bob')).toBe(`amy renamed the group from "a\\u000ab" to "${shown}"`);
    const receipt = { type: 'receipt' as const, conv: 'g:g1', user: 'carol', status: 'read' as const, seq: 3, ts: at };
    expect(receiptLine(receipt, 'alice', group)).toBe(`[10:32:05] [${shown}] carol read up to #3`);
    expect(displayLabel('צוות 👨‍👩‍👧')).toBe('צוות 👨‍👩‍👧');
  });

  it('marks ✓, ✓✓ and ✓✓ read (with its time when known), and counts in groups', () => {
    expect(markText(markFor(3, { bob: cursors(2, 0) }, false))).toBe('✓');
    expect(markText(markFor(3, { bob: cursors(3, 0) }, false))).toBe('✓✓');
    expect(markText(markFor(3, { bob: cursors(5, 3, at) }, false))).toBe('✓✓ read 10:32:05');
    // The cursor's time is when it reached #4: #3 was read by then, but not necessarily then.
    expect(markText(markFor(3, { bob: cursors(5, 4, at) }, false))).toBe('✓✓ read by 10:32:05');
    expect(markText(markFor(3, { bob: cursors(5, 4) }, false))).toBe('✓✓ read');
    const five = { b: cursors(3, 3), c: cursors(9, 9), d: cursors(3, 2), e: cursors(3, 0), f: cursors(0, 0) };
    expect(markText(markFor(3, five, true))).toBe('✓✓ 4/5 delivered, 2 read');
    expect(markText(markFor(3, { b: cursors(3, 3), c: cursors(4, 4) }, true))).toBe('✓✓ 2/2 read');
    expect(markText(markFor(3, { b: cursors(3, 0), c: cursors(0, 0) }, true))).toBe('✓✓ 1/2 delivered');
    // c joined (again) at #6: not for #3 — unless #3 was said in c's earlier time in the group (#1 to #4), when c had it.
    const back = { b: cursors(3, 0), c: { ...cursors(9, 9), joined: 6 } };
    expect(markText(markFor(3, back, true))).toBe('✓✓ 1/1 delivered');
    expect(markText(markFor(3, { ...back, c: { ...back.c, earlier: [{ joined: 1, left: 4 }] } }, true))).toBe('✓✓ 2/2 delivered, 1 read');
    expect(markText(markFor(5, { ...back, c: { ...back.c, earlier: [{ joined: 1, left: 4 }] } }, true))).toBe('✓');
  });

  it('prints an error once with its kind, also when the message names it already', () => {
    const lines: string[] = [];
    const printer = new Printer(
      false,
      (l) => lines.push(l),
      (l) => lines.push(l),
    );
    printer.error('usage', 'usage: /msg USER text');
    printer.error('unknown_user', 'there is no user "nobody"');
    expect(lines).toEqual(['error: usage: /msg USER text', 'error: unknown_user: there is no user "nobody"']);
  });

  it('says "you now own" to the new owner', () => {
    const left = { kind: 'member_left' as const, user: 'amy', newOwner: 'ben' };
    expect(groupChangeText(left, 'amy', 'ben')).toBe('amy left; you now own the group');
    expect(groupChangeText(left, 'amy', 'cat')).toBe('amy left; ben now owns the group');
  });

  it('names the creator of a group once, and no one else when it is alone in it', () => {
    const created = { kind: 'created' as const, name: 'crew', owner: 'amy', members: ['ben', 'cat'] };
    expect(groupChangeText(created, 'amy', 'ben')).toBe('amy created the group with you, cat');
    expect(groupChangeText(created, 'amy', 'amy')).toBe('you created the group with ben, cat');
    expect(groupChangeText({ ...created, members: [] }, 'amy', 'amy')).toBe('you created the group');
  });

  it('tells a group deleted by its owner from one its last member left', () => {
    expect(groupChangeText({ kind: 'deleted' }, 'amy', 'ben')).toBe('amy deleted the group');
    expect(groupChangeText({ kind: 'deleted', lastMemberLeft: true }, 'amy', 'amy')).toBe('you left, the last member: the group is deleted');
  });

  it('says when someone was last seen', () => {
    expect(presenceText('bob', { state: 'online', lastSeen: at })).toBe('bob: online');
    expect(presenceText('bob', { state: 'offline', lastSeen: at })).toBe('bob: offline, last seen 2026-11-23 10:32:05');
    expect(offlineNotice('bob', { state: 'offline', lastSeen: at })).toBe('bob is offline (last seen 2026-11-23 10:32:05)');
  });
});

describe('PresenceNews', () => {
  it('tells a change, not the same state again (a retained copy after a reconnect, or after an offline notice)', () => {
    const news = new PresenceNews();
    expect(news.isNews('bob', { state: 'offline', lastSeen: at })).toBe(true);
    expect(news.isNews('bob', { state: 'offline', lastSeen: at })).toBe(false);
    expect(news.isNews('bob', { state: 'online', lastSeen: at + 1000 })).toBe(true);
    // Another device of bob's came up: still online.
    expect(news.isNews('bob', { state: 'online', lastSeen: at + 2000 })).toBe(false);
    expect(news.isNews('bob', { state: 'offline', lastSeen: at + 3000 })).toBe(true);
    // Online and offline again while we were away: offline since a later time is news.
    expect(news.isNews('bob', { state: 'offline', lastSeen: at + 9000 })).toBe(true);
    // Each user on their own; one never online is news once.
    expect(news.isNews('carol', { state: 'offline', lastSeen: null })).toBe(true);
    expect(news.isNews('carol', { state: 'offline', lastSeen: null })).toBe(false);
  });

  it('drops a stale retained copy that comes after a newer change (users reconnecting together after a restart)', () => {
    const news = new PresenceNews();
    expect(news.isNews('alice', { state: 'online', lastSeen: at })).toBe(true);
    // The restart's offline, then alice back online; the subscription's retained copy (the offline) comes last.
    expect(news.isNews('alice', { state: 'offline', lastSeen: at + 5000 })).toBe(true);
    expect(news.isNews('alice', { state: 'online', lastSeen: at + 9000 })).toBe(true);
    expect(news.isNews('alice', { state: 'offline', lastSeen: at + 5000 })).toBe(false);
    // The same when the newer one was not news itself (the screen already said online).
    const quiet = new PresenceNews();
    expect(quiet.isNews('alice', { state: 'online', lastSeen: at })).toBe(true);
    expect(quiet.isNews('alice', { state: 'online', lastSeen: at + 9000 })).toBe(false);
    expect(quiet.isNews('alice', { state: 'offline', lastSeen: at + 5000 })).toBe(false);
  });
});

describe('markedInOneRow', () => {
  it('cuts a long message short, by whole characters, so that its new mark takes one row', () => {
    const base = '[10:00:01] you → bob: ' + 'lorem ipsum '.repeat(10);
    expect(markedInOneRow('[10:00:01] you → bob: hi', '✓✓', 80)).toBe('[10:00:01] you → bob: hi ✓✓');
    const cut = markedInOneRow(base, '✓✓ read 10:00:03', 60);
    expect(cut).toBe('[10:00:01] you → bob: lorem ipsum lorem i… ✓✓ read 10:00:03');
    expect(terminalWidth(cut)).toBe(59);
    // A message of several lines shows its first, and that more follows.
    expect(markedInOneRow('[10:00:01] you → bob: first\nsecond', '✓', 80)).toBe('[10:00:01] you → bob: first … ✓');
    // Wide characters count two columns each.
    expect(terminalWidth(markedInOneRow('[10:00:01] you → bob: ' + '漢字'.repeat(40), '✓✓', 40))).toBeLessThanOrEqual(39);
    // Narrower than the mark: what fits, still one row.
    expect(markedInOneRow(base, '✓✓ read 10:00:03', 12)).toBe('… ✓✓ read …');
  });
});
