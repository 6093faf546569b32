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
    expect(targetAfter({ kind: 'group', name: 'g1', label: 'lunch' }, renamed('g1', 'dinner'))).toEqual({ kind: 'group', name: 'g1', label: 'dinner' });
  });

  it('leaves the prompt alone for another group, a user, none yet, or another change', () => {
    const other = { kind: 'group' as const, name: 'g2', label: 'lunch' };
    expect(targetAfter(other, renamed('g1', 'dinner'))).toBe(other);
    const user = { kind: 'user' as const, name: 'bob' };
    expect(targetAfter(user, renamed('g1', 'dinner'))).toBe(user);
    expect(targetAfter(null, renamed('g1', 'dinner'))).toBeNull();
    const target = { kind: 'group' as const, name: 'g1', label: 'lunch' };
    const added: GroupEvent = { ...renamed('g1', 'lunch'), change: { kind: 'member_added', members: ['cy'] } };
    expect(targetAfter(target, added)).toBe(target);
  });
});
