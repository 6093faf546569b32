import { describe, expect, it } from 'vitest';
import type { GroupEvent } from '#libs/protocol';
import { targetAfter } from './chat-session.js';

const renamed = (id: string, name: string): GroupEvent => ({
  type: 'group',
  conv: `grp:${id}`,
  seq: 4,
  from: 'ann',
  group: { id, name },
  ts: 0,
  id: 'g-4',
  change: { kind: 'renamed', name, oldName: 'lunch' },
});

describe('targetAfter', () => {
  it('keeps plain text with a group renamed while the prompt names it, under its new name', () => {
    expect(targetAfter({ kind: 'group', name: 'g1', label: 'lunch' }, renamed('g1', 'dinner'), 'ann')).toEqual({ kind: 'group', name: 'g1', label: 'dinner' });
  });

  it('leaves the prompt alone for another group, a user, none yet, or another change', () => {
    const other = { kind: 'group' as const, name: 'g2', label: 'lunch' };
    expect(targetAfter(other, renamed('g1', 'dinner'), 'ann')).toBe(other);
    const user = { kind: 'user' as const, name: 'bob' };
    expect(targetAfter(user, renamed('g1', 'dinner'), 'ann')).toBe(user);
    expect(targetAfter(null, renamed('g1', 'dinner'), 'ann')).toBeNull();
    const target = { kind: 'group' as const, name: 'g1', label: 'lunch' };
    const added: GroupEvent = { ...renamed('g1', 'lunch'), change: { kind: 'member_added', members: ['cy'] } };
    expect(targetAfter(target, added, 'ann')).toBe(target);
    // Someone else removed, or leaving: the group is still mine to talk in.
    expect(targetAfter(target, { ...added, change: { kind: 'member_removed', members: ['cy'] } }, 'ann')).toBe(target);
    expect(targetAfter(target, { ...added, change: { kind: 'member_left', user: 'cy' } }, 'ann')).toBe(target);
  });

  it('takes plain text away from a group deleted, or one I was removed from or left (on another device)', () => {
    const target = { kind: 'group' as const, name: 'g1', label: 'lunch' };
    const change = (c: GroupEvent['change']): GroupEvent => ({ ...renamed('g1', 'lunch'), change: c });
    expect(targetAfter(target, change({ kind: 'deleted' }), 'ann')).toBeNull();
    expect(targetAfter(target, change({ kind: 'member_removed', members: ['ann', 'cy'] }), 'ann')).toBeNull();
    expect(targetAfter(target, change({ kind: 'member_left', user: 'ann' }), 'ann')).toBeNull();
  });
});
