import { describe, expect, it } from 'vitest';
import { checkLoginName, DEFAULT_SERVER, resolveSettings, UsageError } from './settings.js';

describe('resolveSettings', () => {
  it('lets flags win over PARLEY_* variables, and lower-cases the user name', () => {
    const s = resolveSettings({ server: 'mqtt://flag:1883', user: 'Bob' }, { PARLEY_SERVER: 'mqtt://env:1883', PARLEY_USER: 'carol', PARLEY_PASSWORD: ' pw ' });
    expect(s).toMatchObject({ server: 'mqtt://flag:1883', user: 'bob', password: ' pw ' });
  });

  it('takes an empty PARLEY_SERVER for unset, as PARLEY_CA and PARLEY_DEVICE, instead of refusing "" as a URL', () => {
    const s = resolveSettings({}, { PARLEY_SERVER: '', PARLEY_CA: '', PARLEY_DEVICE: '' });
    expect(s).toMatchObject({ server: DEFAULT_SERVER, ca: undefined, device: undefined });
  });
});

describe('checkLoginName', () => {
  it('refuses a name no account can have, before it costs a failed login', () => {
    for (const name of ['alice', 'b0b_-x', 'ab']) expect(() => checkLoginName(name)).not.toThrow();
    for (const name of [' alice', 'a', '1abc', 'al ice', 'a'.repeat(33), 'álice']) expect(() => checkLoginName(name)).toThrow(UsageError);
  });
});
