import { describe, expect, it } from 'vitest';
import { DEFAULT_SERVER, resolveSettings } from './settings.js';

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
