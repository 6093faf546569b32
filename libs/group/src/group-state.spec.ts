import { describe, expect, it } from 'vitest';
import { applyChange, formerSpan, infoFor, labelFor, newGroupId, skeleton, spansOf, within, type GroupState } from './group-state.js';

const created = (): GroupState => applyChange(skeleton('g1', 'r'), { kind: 'created', name: 'band', owner: 'amy', members: ['ben', 'cat'] }, 1, 100);

describe('folding group changes', () => {
  it('creates with the owner first and everyone joined at the creation', () => {
    expect(created()).toMatchObject({
      name: 'band',
      owner: 'amy',
      members: [
        { user: 'amy', joined: 1 },
        { user: 'ben', joined: 1 },
        { user: 'cat', joined: 1 },
      ],
      appliedSeq: 1,
    });
  });

  it('records when members joined and left, so each sees only their part of the log', () => {
    let g = applyChange(created(), { kind: 'member_removed', members: ['ben'] }, 5, 0);
    expect(g.former.ben).toEqual({ joined: 1, left: 5, name: 'band', owner: 'amy' });
    g = applyChange(g, { kind: 'member_added', members: ['ben', 'dan'] }, 9, 0);
    expect(g.members.map((m) => [m.user, m.joined])).toEqual([
      ['amy', 1],
      ['cat', 1],
      ['ben', 9],
      ['dan', 9],
    ]);
    expect(g.former.ben).toBeUndefined();
  });

  it('keeps each earlier time in the group of a member added back, so they still see what they saw then', () => {
    let g = applyChange(created(), { kind: 'member_removed', members: ['ben'] }, 5, 0);
    g = applyChange(g, { kind: 'member_added', members: ['ben'] }, 9, 0);
    g = applyChange(g, { kind: 'member_left', user: 'ben' }, 12, 0);
    g = applyChange(g, { kind: 'member_added', members: ['ben'] }, 20, 0);
    expect(spansOf(g, 'ben', 30)).toEqual([
      { joined: 1, left: 5, name: 'band', owner: 'amy' },
      { joined: 9, left: 12, name: 'band', owner: 'amy' },
      { joined: 20, left: 30 },
    ]);
    // Out again: the latest span ends at the removal, with the name the group had then; the earlier ones stay.
    g = applyChange(g, { kind: 'renamed', oldName: 'band', name: 'choir' }, 22, 0);
    g = applyChange(g, { kind: 'member_removed', members: ['ben'] }, 25, 0);
    g = applyChange(g, { kind: 'renamed', oldName: 'choir', name: 'orchestra' }, 27, 0);
    expect(spansOf(g, 'ben', 30)).toEqual([
      { joined: 1, left: 5, name: 'band', owner: 'amy' },
      { joined: 9, left: 12, name: 'band', owner: 'amy' },
      { joined: 20, left: 25, name: 'choir', owner: 'amy' },
    ]);
    // Shown as it was when they went out; to a member, as it is.
    expect(labelFor(g, 'ben')).toEqual({ id: g.id, name: 'choir' });
    expect(labelFor(g, 'cat')).toEqual({ id: g.id, name: 'orchestra' });
    const spans = spansOf(g, 'ben', 30);
    expect([4, 5, 6, 8, 9, 12, 13, 20, 25, 26].map((seq) => within(spans, seq))).toEqual([true, true, false, false, true, true, false, true, true, false]);
    // Others are untouched; one never in the group has nothing.
    expect(spansOf(g, 'cat', 30)).toEqual([{ joined: 1, left: 30 }]);
    expect(spansOf(g, 'zed', 30)).toEqual([]);
    expect(spansOf(g, 'constructor', 30)).toEqual([]);
    // Its members and owner too: dan, who came in later, and the new owner are not ben's to know.
    g = applyChange(g, { kind: 'member_added', members: ['dan'] }, 28, 0);
    g = applyChange(g, { kind: 'owner_changed', owner: 'cat', previous: 'amy' }, 29, 0);
    expect(infoFor(g, 'ben')).toMatchObject({ name: 'choir', owner: 'amy', members: ['amy', 'cat'] });
    expect(infoFor(g, 'cat')).toMatchObject({ name: 'orchestra', owner: 'cat', members: ['amy', 'cat', 'dan'] });
    // An owner who leaves, handing the group over, saw it go to the new owner.
    g = applyChange(g, { kind: 'member_left', user: 'cat', newOwner: 'dan' }, 30, 0);
    expect(infoFor(g, 'cat')).toMatchObject({ name: 'orchestra', owner: 'dan', members: ['amy', 'dan'] });
  });

  it('knows former members by own keys only: a user called like an object property never was one', () => {
    const g = applyChange(created(), { kind: 'member_removed', members: ['ben'] }, 5, 0);
    expect(formerSpan(g, 'ben')).toEqual({ joined: 1, left: 5, name: 'band', owner: 'amy' });
    for (const name of ['constructor', 'toString', 'cat', 'zed']) expect(formerSpan(g, name)).toBeUndefined();
  });

  it('passes ownership on when the owner leaves, and deletes when everyone is gone', () => {
    let g = applyChange(created(), { kind: 'member_left', user: 'amy', newOwner: 'ben' }, 2, 0);
    expect(g.owner).toBe('ben');
    g = applyChange(g, { kind: 'deleted' }, 3, 0);
    expect(g).toMatchObject({ deleted: true, members: [] });
    expect(Object.keys(g.former).sort()).toEqual(['amy', 'ben', 'cat']);
  });

  it('ignores a change it has already folded, and one that no longer fits', () => {
    const g = created();
    expect(applyChange(g, { kind: 'renamed', oldName: 'x', name: 'y' }, 1, 0)).toBe(g);
    expect(applyChange(g, { kind: 'owner_changed', owner: 'stranger', previous: 'amy' }, 2, 0).owner).toBe('amy');
  });

  it('derives the same id for the same creator and request', () => {
    expect(newGroupId('amy', 'r1')).toBe(newGroupId('amy', 'r1'));
    expect(newGroupId('amy', 'r1')).not.toBe(newGroupId('amy', 'r2'));
    expect(newGroupId('amy', 'r1')).toMatch(/^g[A-Za-z0-9]{14}$/);
  });
});
