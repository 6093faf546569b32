import { describe, expect, it } from 'vitest';
import type { FileOffer, FileRecipientState } from '#libs/protocol';
import { offeredText } from './file-actions.js';
import { FileNotices, withdrewText } from './file-output.js';

const HOW = { accept: 'parley file accept', decline: 'parley file decline' };

function offer(fields: Partial<FileOffer> = {}): FileOffer {
  return {
    id: 'f1',
    from: 'ann',
    name: 'notes.txt',
    size: 10,
    type: 'text/plain',
    sha256: 'a'.repeat(64),
    chunkSize: 4,
    chunks: 3,
    uploaded: 3,
    createdAt: 1,
    expiresAt: 2,
    recipients: { bob: 'accepted', cy: 'declined', dee: 'pending' },
    ...fields,
  };
}

function annNotices() {
  const reported: [string, Record<string, FileRecipientState>][] = [];
  const notices = new FileNotices('ann', HOW, (id, states) => reported.push([id, states]));
  return { notices, reported };
}

describe('FileNotices', () => {
  it('shows the sync\u2019s decisions on my offers that I have not seen, and reports them as seen', () => {
    const { notices, reported } = annNotices();
    const files = { type: 'files' as const, offers: [offer({ seen: { bob: 'accepted' } })] };
    expect(notices.linesFor(files)).toEqual(['* cy declined notes.txt (10 B)']);
    expect(reported).toEqual([['f1', { cy: 'declined' }]]);
    // The same sync again (a reconnect) shows and reports nothing more.
    expect(notices.linesFor(files)).toEqual([]);
    expect(reported).toHaveLength(1);
  });

  it('shows a newer state of a receiver I have seen an older one of', () => {
    const { notices, reported } = annNotices();
    const files = { type: 'files' as const, offers: [offer({ recipients: { bob: 'received' }, seen: { bob: 'accepted' } })] };
    expect(notices.linesFor(files)).toEqual(['* bob received notes.txt (10 B)']);
    expect(reported).toEqual([['f1', { bob: 'received' }]]);
  });

  it('shows a live decision once and reports it; ignores others\u2019 decisions on others\u2019 offers', () => {
    const { notices, reported } = annNotices();
    const decided = { type: 'file' as const, event: 'accepted' as const, user: 'bob', offer: offer(), ts: 5 };
    expect(notices.linesFor(decided)).toEqual(['* bob accepted notes.txt (10 B)']);
    expect(notices.linesFor(decided)).toEqual([]);
    expect(reported).toEqual([['f1', { bob: 'accepted' }]]);
    const theirs = offer({ id: 'f2', from: 'bob', recipients: { ann: 'accepted', cy: 'declined' } });
    expect(notices.linesFor({ ...decided, user: 'cy', event: 'declined', offer: theirs })).toEqual([]);
    expect(reported).toHaveLength(1);
  });

  it('shows, once, what I did on another device; not what this session did itself (its command said so)', () => {
    const { notices, reported } = annNotices();
    const theirs = offer({ id: 'f2', from: 'bob', recipients: { ann: 'accepted' } });
    const accepted = { type: 'file' as const, event: 'accepted' as const, user: 'ann', offer: theirs, ts: 5 };
    expect(notices.linesFor(accepted)).toEqual(['* you accepted notes.txt (10 B) from bob']);
    expect(notices.linesFor(accepted)).toEqual([]);
    expect(notices.linesFor({ ...accepted, event: 'received' })).toEqual(['* you received notes.txt (10 B) from bob']);
    const mine = offer({ id: 'f3' });
    expect(notices.linesFor({ type: 'file', event: 'withdrawn', offer: mine, ts: 6 })).toEqual(['* you withdrew notes.txt (10 B)']);
    // Done here: the events about it are not news.
    const other = offer({ id: 'f4', from: 'bob', recipients: { ann: 'pending' } });
    notices.doing('f4', 'declined');
    expect(notices.linesFor({ ...accepted, event: 'declined', offer: other })).toEqual([]);
    // Set out to do here and failed (say, no room to save it): done elsewhere after all, it is news again.
    notices.doing('f6', 'accepted');
    notices.undoing('f6', 'accepted');
    expect(notices.linesFor({ ...accepted, offer: { ...theirs, id: 'f6' } })).toEqual(['* you accepted notes.txt (10 B) from bob']);
    notices.doing('f5', 'withdrawn');
    expect(notices.linesFor({ type: 'file', event: 'withdrawn', offer: offer({ id: 'f5' }), ts: 7 })).toEqual([]);
    // Only decisions on my offers are reported as seen.
    expect(reported).toEqual([]);
  });

  it('reminds me, once per session, of offers still waiting for my decision, and reports nothing for them', () => {
    const notices = new FileNotices('bob', HOW, () => expect.unreachable('nothing to report'));
    const waiting = offer({ recipients: { bob: 'pending' } });
    const line = `* ann offers notes.txt (10 B) — parley file accept f1 or parley file decline f1`;
    expect(notices.linesFor({ type: 'files', offers: [waiting] })).toEqual([line]);
    expect(notices.linesFor({ type: 'file', event: 'offered', offer: waiting, ts: 5 })).toEqual([]);
  });

  it('reminds me, once per session, of an offer I accepted and have not received, unless this session is downloading it', () => {
    const notices = new FileNotices('bob', HOW, () => expect.unreachable('nothing to report'));
    const accepted = { type: 'files' as const, offers: [offer({ recipients: { bob: 'accepted' } }), offer({ id: 'f2', recipients: { bob: 'accepted' } })] };
    notices.doing('f2', 'accepted');
    expect(notices.linesFor(accepted)).toEqual(['* notes.txt (10 B) from ann is accepted but not yet received — parley file accept f1 downloads it here']);
    expect(notices.linesFor(accepted)).toEqual([]);
    expect(notices.linesFor({ type: 'files', offers: [offer({ recipients: { bob: 'received' } })] })).toEqual([]);
  });
});

describe('offeredText', () => {
  it('shows a group’s name with its direction overrides escaped, as every other line does', () => {
    const toGroup = offer({ group: { id: 'g1', name: 'team \u202eecila' }, recipients: { bob: 'pending' } });
    expect(offeredText({ offer: toGroup, earlier: null })).toBe('offered notes.txt (10 B) to team \\u202eecila: f1');
  });

  it('says a group offer taken up again is waiting for how many members, and a first send nothing of the kind', () => {
    const open = offer({ group: { id: 'g1', name: 'crew' }, recipients: { bob: 'pending', cy: 'declined', dan: 'pending' }, uploaded: 1, chunks: 1 });
    expect(offeredText({ offer: open, earlier: open })).toBe('already offered notes.txt (10 B) to crew: f1, waiting for 2 of 3 members to decide');
    expect(offeredText({ offer: open, earlier: null })).toBe('offered notes.txt (10 B) to crew: f1');
  });
});

describe('withdrewText', () => {
  it('says what withdrawing did: nothing, when every receiver had received or declined the file', () => {
    expect(withdrewText(offer({ recipients: { bob: 'withdrawn', cy: 'declined' } }))).toBe('withdrew notes.txt (10 B)');
    expect(withdrewText(offer({ recipients: { bob: 'withdrawn', cy: 'received', dee: 'received' } }))).toBe(
      'withdrew notes.txt (10 B) (cy, dee had received it already)',
    );
    expect(withdrewText(offer({ recipients: { bob: 'received', cy: 'declined' } }))).toBe(
      'nothing to withdraw: every receiver of notes.txt (10 B) has received or declined it',
    );
  });
});
