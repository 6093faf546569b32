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
    // The advice is the URL as written, its scheme, port and path kept, with the address in brackets.
    for (const [url, fixed] of [
      ['mqtt://::1:1883', 'mqtt://[::1]:1883'],
      ['mqtt://2001:db8::5', 'mqtt://[2001:db8::5]'],
      ['ws://::1:80/mqtt', 'ws://[::1]:80/mqtt'],
      ['wss://2001:db8:0:0:0:0:0:1:8084/mqtt', 'wss://[2001:db8:0:0:0:0:0:1]:8084/mqtt'],
      ['mqtt://::1', 'mqtt://[::1]'],
    ])
      expect(() => checkServer(url!)).toThrow(
        `--server must be a URL such as mqtt://localhost:1883 (got "${url}"); an IPv6 address goes in brackets: ${fixed}`,
      );
    expect(() => checkServer('mqtt://bad host:1883')).toThrow(/^--server must be a URL such as mqtt:\/\/localhost:1883 \(got "mqtt:\/\/bad host:1883"\)$/);
  });

  it('names PARLEY_SERVER when the URL came from it, and --server when it came from the flag, which wins', () => {
    const fromEnv = resolveSettings({}, { PARLEY_SERVER: 'http://localhost:1883' });
    expect(fromEnv.serverFrom).toBe('PARLEY_SERVER');
    expect(() => checkServer(fromEnv.server, fromEnv.serverFrom)).toThrow(
      'PARLEY_SERVER must start with mqtt://, mqtts://, ws:// or wss:// (got "http://localhost:1883")',
    );
    expect(resolveSettings({ server: 'ws://::1:8083' }, { PARLEY_SERVER: 'mqtt://localhost:1883' }).serverFrom).toBe('--server');
    expect(resolveSettings({}, { PARLEY_SERVER: '' }).serverFrom).toBe('--server');
  });
});
