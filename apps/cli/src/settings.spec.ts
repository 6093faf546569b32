import { describe, expect, it } from 'vitest';
import { checkLoginName, checkServer, DEFAULT_SERVER, resolveSettings, UsageError } from './settings.js';

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

describe('checkServer', () => {
  it('takes IPv4, IPv6 in brackets and host names, and tells one who wrote an IPv6 address bare to put it in brackets', () => {
    for (const url of ['mqtt://127.0.0.1:1883', 'mqtt://[::1]:1883', 'ws://[2001:db8::5]:8083/mqtt', 'mqtts://chat.example.org'])
      expect(() => checkServer(url)).not.toThrow();
    for (const url of ['mqtt://::1:1883', 'mqtt://2001:db8::5', 'ws://::1:80/mqtt'])
      expect(() => checkServer(url)).toThrow(
        `--server must be a URL such as mqtt://localhost:1883 (got "${url}"); an IPv6 address goes in brackets: mqtt://[::1]:1883`,
      );
    expect(() => checkServer('mqtt://bad host:1883')).toThrow(/^--server must be a URL such as mqtt:\/\/localhost:1883 \(got "mqtt:\/\/bad host:1883"\)$/);
  });
});
