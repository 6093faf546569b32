import { lookup } from 'node:dns/promises';
import { describe, expect, it } from 'vitest';
import { parseRequest } from '#libs/protocol';
import { ConfigError, listenAddresses, listenerClash, loadConfig, unknownSettings } from './config.js';

describe('loadConfig', () => {
  it('has defaults for a standalone server', () => {
    expect(loadConfig({})).toMatchObject({
      PARLEY_MQTT_HOST: '::',
      PARLEY_MQTT_PORT: 1883,
      PARLEY_DATA_DIR: './data',
      REDIS_URL: undefined,
      PARLEY_GATEWAY_ID: 'standalone',
    });
  });

  it('names the variable and the bad value', () => {
    expect(() => loadConfig({ PARLEY_MQTT_PORT: 'abc' })).toThrow(ConfigError);
    expect(() => loadConfig({ PARLEY_MQTT_PORT: 'abc' })).toThrow(/PARLEY_MQTT_PORT.*"abc"/);
    expect(() => loadConfig({ PARLEY_HTTP_PORT: '65536' })).toThrow(/PARLEY_HTTP_PORT.*"65536"/);
    expect(() => loadConfig({ REDIS_URL: 'localhost:6379' })).toThrow(/REDIS_URL/);
    expect(() => loadConfig({ PARLEY_LOG_LEVEL: 'loud' })).toThrow(/PARLEY_LOG_LEVEL/);
  });

  it('takes numbers only in decimal digits: an empty port is no port 0 (a random one), 0x50 no port 80, 1e3 no 1000', () => {
    for (const [name, bad] of [
      ['PARLEY_MQTT_PORT', ''],
      ['PARLEY_HTTP_PORT', ' '],
      ['PARLEY_MQTT_PORT', '0x50'],
      ['PARLEY_HTTP_PORT', '1e3'],
      ['PARLEY_MQTT_PORT', '-0'],
      ['PARLEY_RPC_TIMEOUT_MS', '1e3'],
      ['PARLEY_MAX_TEXT_LENGTH', ''],
      ['PARLEY_USER_RATE', '0b11'],
      ['PARLEY_WS_PORT', '0o17'],
    ] as const)
      expect(() => loadConfig({ [name]: bad }), `${name}=${JSON.stringify(bad)}`).toThrow(new RegExp(`${name} must be .*decimal digits`));
    // Port 0 written out is an ephemeral port (what the tests use); surrounding white space is no mistake.
    expect(loadConfig({ PARLEY_MQTT_PORT: '0', PARLEY_HTTP_PORT: ' 8081 ', PARLEY_RPC_TIMEOUT_MS: '1000' })).toMatchObject({
      PARLEY_MQTT_PORT: 0,
      PARLEY_HTTP_PORT: 8081,
      PARLEY_RPC_TIMEOUT_MS: 1000,
    });
  });

  it('treats an empty REDIS_URL as unset, and names a Redis gateway by host and port', () => {
    expect(loadConfig({ REDIS_URL: '' }).REDIS_URL).toBeUndefined();
    expect(loadConfig({ REDIS_URL: 'redis://r:6379', PARLEY_MQTT_PORT: '1999' }).PARLEY_GATEWAY_ID).toMatch(/:1999$/);
  });

  it('refuses a REDIS_URL ioredis could not use (no URL, a port out of range, a database that is no number) by name, its password left out', () => {
    for (const good of [
      'redis://r:6379',
      'redis://r',
      'redis://r:6379/',
      'redis://r:6379/3',
      'rediss://u:p%40ss@r:6380',
      'redis://[::1]:6379',
      'redis://:pw@r',
    ])
      expect(loadConfig({ REDIS_URL: good }).REDIS_URL, good).toBe(good);
    for (const [bad, why] of [
      ['redis://r:99999', 'is not a valid URL'],
      ['redis://::1:6379', 'is not a valid URL'],
      ['redis://r:6379/abc', 'may end only in a database number'],
      ['redis://r:6379/1/2', 'may end only in a database number'],
    ] as const)
      expect(() => loadConfig({ REDIS_URL: bad }), bad).toThrow(`REDIS_URL ${why}`);
    // The value is echoed, as with every setting, but not the password in it.
    const error = (() => {
      try {
        loadConfig({ REDIS_URL: 'redis://admin:s3cret/pw@r:99999' });
      } catch (e) {
        return (e as Error).message;
      }
    })();
    expect(error).toContain('(got "redis://admin:***@r:99999")');
    expect(error).not.toContain('s3cret');
    expect(() => loadConfig({ REDIS_URL: 'http://:s3cret@r' })).toThrow(/REDIS_URL must look like .*\(got "http:\/\/:\*\*\*@r"\)/);
  });

  it('keeps persistent sessions a week after their connection ended, and refuses an expiry under a second', () => {
    expect(loadConfig({}).PARLEY_SESSION_EXPIRY_MS).toBe(7 * 24 * 3600 * 1000);
    expect(loadConfig({ PARLEY_SESSION_EXPIRY_MS: '1000' }).PARLEY_SESSION_EXPIRY_MS).toBe(1000);
    expect(() => loadConfig({ PARLEY_SESSION_EXPIRY_MS: '999' })).toThrow('PARLEY_SESSION_EXPIRY_MS must be at least 1000 (a second) (got "999")');
  });

  it('takes 120 logins a minute per user and 200 connections logging in at once per address by default, and refuses values that are no count', () => {
    expect(loadConfig({})).toMatchObject({ PARLEY_LOGINS_PER_MINUTE: 120, PARLEY_MAX_CONNECTING_PER_ADDRESS: 200 });
    expect(() => loadConfig({ PARLEY_LOGINS_PER_MINUTE: '0' })).toThrow('PARLEY_LOGINS_PER_MINUTE must be at least 1 (got "0")');
    expect(() => loadConfig({ PARLEY_LOGINS_PER_MINUTE: 'abc' })).toThrow('PARLEY_LOGINS_PER_MINUTE must be a whole number, in decimal digits (got "abc")');
    expect(() => loadConfig({ PARLEY_MAX_CONNECTING_PER_ADDRESS: '1e3' })).toThrow(
      'PARLEY_MAX_CONNECTING_PER_ADDRESS must be a whole number, in decimal digits (got "1e3")',
    );
    expect(() => loadConfig({ PARLEY_MAX_CONNECTING_PER_ADDRESS: '0' })).toThrow('PARLEY_MAX_CONNECTING_PER_ADDRESS must be at least 1 (got "0")');
  });

  it("names the PARLEY_* variables that are no setting, leaving out the CLI's own and other settings", () => {
    expect(unknownSettings({ PARLEY_MQTT_HOTS: '::', PARLEY_MQTT_PORT: '1', PARLEY_USER: 'a', PARLEY_SERVER: 's', PARLEY_ANOTHER: 'x', HOME: '/' })).toEqual([
      'PARLEY_ANOTHER',
      'PARLEY_MQTT_HOTS',
    ]);
    expect(unknownSettings({ REDIS_URL: 'redis://r' })).toEqual([]);
  });

  it('refuses a listen host with a space in it, which would be looked up as a name', () => {
    expect(() => loadConfig({ PARLEY_MQTT_HOST: ' ::' })).toThrow('PARLEY_MQTT_HOST is an address or a host name, with no spaces in it');
    expect(() => loadConfig({ PARLEY_HTTP_HOST: '127.0.0.1 ' })).toThrow('PARLEY_HTTP_HOST is an address');
  });

  it('refuses timeouts too short to be met, saying why, and takes the shortest that can be', () => {
    for (const [name, least] of [
      ['PARLEY_CONNECT_TIMEOUT_MS', 1000],
      ['PARLEY_ANONYMOUS_TIMEOUT_MS', 1000],
      ['PARLEY_WRITE_STALL_MS', 1000],
      ['PARLEY_RPC_TIMEOUT_MS', 100],
    ] as const) {
      expect(loadConfig({ [name]: String(least) })[name]).toBe(least);
      expect(() => loadConfig({ [name]: String(least - 1) })).toThrow(
        new RegExp(`: ${name} must be at least ${least} \\(shorter, [^)]+\\) \\(got "${least - 1}"\\)`),
      );
    }
  });

  it('refuses a gateway dead-after time shorter than four of the fastest heartbeats, at which live gateways were taken for dead', () => {
    expect(loadConfig({ PARLEY_GATEWAY_DEAD_AFTER_MS: '1000' }).PARLEY_GATEWAY_DEAD_AFTER_MS).toBe(1000);
    expect(() => loadConfig({ PARLEY_GATEWAY_DEAD_AFTER_MS: '999' })).toThrow(
      'PARLEY_GATEWAY_DEAD_AFTER_MS must be at least 1000 (gateways beat at most every 250 ms) (got "999")',
    );
  });

  it('takes an IPv6 listen address as it is, and refuses one in brackets by name', () => {
    expect(loadConfig({ PARLEY_MQTT_HOST: '::1', PARLEY_WSS_HOST: 'fe80::1%eth0' })).toMatchObject({
      PARLEY_MQTT_HOST: '::1',
      PARLEY_WSS_HOST: 'fe80::1%eth0',
    });
    for (const name of ['PARLEY_MQTT_HOST', 'PARLEY_HTTP_HOST', 'PARLEY_MQTTS_HOST', 'PARLEY_WS_HOST', 'PARLEY_WSS_HOST'])
      expect(() => loadConfig({ [name]: '[::1]' }), name).toThrow(`${name} is an address without brackets (::1, not [::1]) (got "[::1]")`);
  });

  it('tells, for the gateway, two of its listeners given one port of one address', () => {
    expect(listenerClash(loadConfig({}))).toBeUndefined();
    expect(listenerClash(loadConfig({ PARLEY_MQTT_PORT: '0', PARLEY_HTTP_PORT: '0', PARLEY_WS_PORT: '0' }))).toBeUndefined();
    expect(listenerClash(loadConfig({ PARLEY_HTTP_PORT: '1883' }))).toBe(
      'PARLEY_MQTT_PORT and PARLEY_HTTP_PORT are both 1883 (on :: and ::); give each listener a port of its own',
    );
    expect(listenerClash(loadConfig({ PARLEY_MQTT_HOST: '127.0.0.1', PARLEY_WS_PORT: '1883' }))).toMatch(/^PARLEY_MQTT_PORT and PARLEY_WS_PORT are both 1883/);
    // `::` takes the port on every address, 0.0.0.0 on every IPv4 one.
    expect(listenerClash(loadConfig({ PARLEY_HTTP_HOST: '127.0.0.1', PARLEY_HTTP_PORT: '1883' }))).toMatch(/^PARLEY_MQTT_PORT and PARLEY_HTTP_PORT/);
    expect(listenerClash(loadConfig({ PARLEY_MQTT_HOST: '0.0.0.0', PARLEY_HTTP_HOST: '10.0.0.1', PARLEY_HTTP_PORT: '1883' }))).toBeDefined();
    // An IPv4-mapped address is the IPv4 address it binds; a host name is one whatever its case.
    expect(listenerClash(loadConfig({ PARLEY_MQTT_HOST: '::ffff:127.0.0.1', PARLEY_HTTP_HOST: '127.0.0.1', PARLEY_HTTP_PORT: '1883' }))).toBeDefined();
    expect(listenerClash(loadConfig({ PARLEY_MQTT_HOST: '0.0.0.0', PARLEY_HTTP_HOST: '::FFFF:10.0.0.1', PARLEY_HTTP_PORT: '1883' }))).toBeDefined();
    expect(listenerClash(loadConfig({ PARLEY_MQTT_HOST: 'localhost', PARLEY_HTTP_HOST: 'LocalHost', PARLEY_HTTP_PORT: '1883' }))).toBeDefined();
    // One port on two addresses of their own is two listeners.
    expect(listenerClash(loadConfig({ PARLEY_MQTT_HOST: '127.0.0.1', PARLEY_HTTP_HOST: '::1', PARLEY_HTTP_PORT: '1883' }))).toBeUndefined();
    expect(listenerClash(loadConfig({ PARLEY_MQTT_HOST: '0.0.0.0', PARLEY_HTTP_HOST: '::1', PARLEY_HTTP_PORT: '1883' }))).toBeUndefined();
  });

  it('compares a host name as the address it binds, its first', async () => {
    const { address } = await lookup('localhost');
    const config = loadConfig({ PARLEY_MQTT_HOST: 'localhost', PARLEY_HTTP_HOST: address, PARLEY_HTTP_PORT: '1883' });
    expect(listenerClash(config)).toBeUndefined();
    expect(await listenAddresses(config)).toEqual(new Map([['localhost', address]]));
    expect(listenerClash(config, await listenAddresses(config))).toBe(
      `PARLEY_MQTT_PORT and PARLEY_HTTP_PORT are both 1883 (on localhost and ${address}); give each listener a port of its own`,
    );
    // A listener on port 0 takes a free port of its own: its name is not looked up.
    expect(await listenAddresses(loadConfig({ PARLEY_MQTT_HOST: 'localhost', PARLEY_MQTT_PORT: '0', PARLEY_HTTP_HOST: '::1' }))).toEqual(new Map());
  });

  it('has file limits of at least 100 MiB, and refuses a chunk size whose requests would not fit the request limit', () => {
    expect(loadConfig({}).PARLEY_MAX_FILE_BYTES).toBeGreaterThanOrEqual(100 * 1024 * 1024);
    expect(
      loadConfig({ PARLEY_FILE_CHUNK_BYTES: '1000000', PARLEY_MAX_REQUEST_BYTES: '2000000', PARLEY_MAX_PACKET_BYTES: '2100000' }).PARLEY_FILE_CHUNK_BYTES,
    ).toBe(1_000_000);
    expect(() => loadConfig({ PARLEY_FILE_CHUNK_BYTES: '65536' })).toThrow(/PARLEY_FILE_CHUNK_BYTES.*PARLEY_MAX_REQUEST_BYTES/);
    expect(() => loadConfig({ PARLEY_FILE_OFFER_TTL_MS: '0' })).toThrow(/PARLEY_FILE_OFFER_TTL_MS/);
  });

  it('refuses a text limit whose longest messages would not fit a request, and a request limit whose requests would not fit a packet', () => {
    const refusal = (() => {
      try {
        loadConfig({ PARLEY_MAX_TEXT_LENGTH: '30000' });
      } catch (e) {
        return String(e);
      }
      return 'accepted';
    })();
    expect(refusal).toMatch(/PARLEY_MAX_TEXT_LENGTH \(30000\).*PARLEY_MAX_REQUEST_BYTES \(65536\)/);
    // The request size the refusal asks for is enough: the longest text allowed, of the widest characters it may hold,
    // in the longest request around it, fits. So do the defaults.
    const asked = Number(/needs requests of up to (\d+) bytes/.exec(refusal)?.[1]);
    const justEnough = loadConfig({ PARLEY_MAX_TEXT_LENGTH: '30000', PARLEY_MAX_REQUEST_BYTES: String(asked), PARLEY_MAX_PACKET_BYTES: String(asked + 256) });
    for (const config of [loadConfig({}), justEnough]) {
      const text = '😀'.repeat(config.PARLEY_MAX_TEXT_LENGTH);
      for (const target of [{ to: 'u'.repeat(64) }, { group: 'g'.repeat(200) }]) {
        const widest = JSON.stringify({ op: 'send', id: 'i'.repeat(64), ...target, text });
        expect(parseRequest(widest, config.PARLEY_MAX_REQUEST_BYTES).ok).toBe(true);
      }
    }
    expect(() => loadConfig({ PARLEY_MAX_REQUEST_BYTES: '200000' })).toThrow(/PARLEY_MAX_REQUEST_BYTES \(200000\).*PARLEY_MAX_PACKET_BYTES \(131072\)/);
    expect(loadConfig({ PARLEY_MAX_REQUEST_BYTES: '200000', PARLEY_MAX_PACKET_BYTES: '200256' }).PARLEY_MAX_REQUEST_BYTES).toBe(200_000);
  });

  it('moves a 100 MiB file in one transfer burst by default, and refuses a transfer budget smaller than one chunk', () => {
    expect(loadConfig({}).PARLEY_TRANSFER_BURST).toBeGreaterThanOrEqual(100 * 1024 * 1024);
    expect(() => loadConfig({ PARLEY_TRANSFER_RATE: '1000' })).toThrow(/PARLEY_TRANSFER_RATE.*PARLEY_FILE_CHUNK_BYTES/);
    expect(() => loadConfig({ PARLEY_FILE_CHUNK_BYTES: '4096', PARLEY_TRANSFER_BURST: '4095' })).toThrow(/PARLEY_TRANSFER_BURST/);
  });

  it('runs file-offer remotely when asked', () => {
    expect(loadConfig({ REDIS_URL: 'redis://r:6379', PARLEY_REMOTE_SERVICES: 'group,file-offer' }).PARLEY_REMOTE_SERVICES).toEqual(['group', 'file-offer']);
    expect(() => loadConfig({ REDIS_URL: 'redis://r:6379', PARLEY_REMOTE_SERVICES: 'files' })).toThrow(/file-offer/);
  });

  it('has abuse limits by default, and refuses a TLS listener without a certificate and key that exist', () => {
    expect(loadConfig({})).toMatchObject({
      PARLEY_LOGIN_MAX_FAILURES: 10,
      PARLEY_MAX_PACKET_BYTES: 131_072,
      PARLEY_MQTTS_PORT: undefined,
      PARLEY_WS_PORT: undefined,
    });
    expect(loadConfig({ PARLEY_WS_PORT: '8083', PARLEY_MQTTS_PORT: '' }).PARLEY_WS_PORT).toBe(8083);
    expect(() => loadConfig({ PARLEY_MQTTS_PORT: '8883' })).toThrow(/PARLEY_MQTTS_PORT needs PARLEY_TLS_CERT and PARLEY_TLS_KEY/);
    expect(() => loadConfig({ PARLEY_MQTTS_PORT: '8883', PARLEY_WSS_PORT: '8884' })).toThrow(
      /PARLEY_MQTTS_PORT and PARLEY_WSS_PORT need PARLEY_TLS_CERT and PARLEY_TLS_KEY/,
    );
    expect(() => loadConfig({ PARLEY_WSS_PORT: '8884', PARLEY_TLS_CERT: '/nonexistent/cert.pem', PARLEY_TLS_KEY: '/nonexistent/key.pem' })).toThrow(
      /PARLEY_TLS_CERT names a file that does not exist/,
    );
    expect(() => loadConfig({ PARLEY_LOGIN_LOCKOUT_MS: '0' })).toThrow(/PARLEY_LOGIN_LOCKOUT_MS/);
  });

  it('remembers a login for ten minutes by default, and refuses a login cache time that is not a whole number in range', () => {
    expect(loadConfig({}).PARLEY_LOGIN_CACHE_MS).toBe(600_000);
    expect(loadConfig({ PARLEY_LOGIN_CACHE_MS: '3600000' }).PARLEY_LOGIN_CACHE_MS).toBe(3_600_000);
    for (const bad of ['0', '-1', 'ten', '1.5', '86400001']) {
      expect(() => loadConfig({ PARLEY_LOGIN_CACHE_MS: bad })).toThrow(new RegExp(`PARLEY_LOGIN_CACHE_MS.*"${bad.replace('.', '\\.')}"`));
    }
  });
  it('hashes passwords at scrypt cost 2^15 by default, and refuses a cost that is not a whole number from 10 to 18', () => {
    expect(loadConfig({}).PARLEY_PASSWORD_COST).toBe(15);
    expect(loadConfig({ PARLEY_PASSWORD_COST: '10' }).PARLEY_PASSWORD_COST).toBe(10);
    expect(loadConfig({ PARLEY_PASSWORD_COST: '18' }).PARLEY_PASSWORD_COST).toBe(18);
    for (const bad of ['9', '19', '0', 'high', '12.5', '']) expect(() => loadConfig({ PARLEY_PASSWORD_COST: bad })).toThrow(/PARLEY_PASSWORD_COST/);
  });
  it('keeps 50 persistent sessions per user and 1000 subscriptions per connection by default, and refuses values that are not whole numbers in range', () => {
    const defaults = loadConfig({});
    expect([defaults.PARLEY_MAX_SESSIONS_PER_USER, defaults.PARLEY_MAX_SUBSCRIPTIONS]).toEqual([50, 1000]);
    expect(loadConfig({ PARLEY_MAX_SESSIONS_PER_USER: '3', PARLEY_MAX_SUBSCRIPTIONS: '4' })).toMatchObject({
      PARLEY_MAX_SESSIONS_PER_USER: 3,
      PARLEY_MAX_SUBSCRIPTIONS: 4,
    });
    for (const [name, tooBig] of [
      ['PARLEY_MAX_SESSIONS_PER_USER', '100001'],
      ['PARLEY_MAX_SUBSCRIPTIONS', '1000001'],
      ['PARLEY_MAX_ANONYMOUS_PER_ADDRESS', '100001'],
      ['PARLEY_ANONYMOUS_TIMEOUT_MS', '86400001'],
    ] as const) {
      for (const bad of ['0', '-1', 'many', '2.5', tooBig]) {
        expect(() => loadConfig({ [name]: bad })).toThrow(new RegExp(`${name}.*"${bad.replace('.', '\\.')}"`));
      }
    }
  });

  it('keeps 64 MiB of the data directory\u2019s disk free by default, and refuses a floor under 1 MiB by name', () => {
    expect(loadConfig({}).PARLEY_MIN_FREE_DISK_BYTES).toBe(64 * 1024 * 1024);
    expect(loadConfig({ PARLEY_MIN_FREE_DISK_BYTES: '2097152' }).PARLEY_MIN_FREE_DISK_BYTES).toBe(2 * 1024 * 1024);
    for (const bad of ['0', '1048575', 'lots', '1.5']) expect(() => loadConfig({ PARLEY_MIN_FREE_DISK_BYTES: bad })).toThrow(/PARLEY_MIN_FREE_DISK_BYTES/);
  });

  it('binds each optional listener on plain MQTT\u2019s host unless told its own, and refuses an empty one', () => {
    expect(loadConfig({}).PARLEY_MQTTS_HOST).toBeUndefined();
    expect(loadConfig({ PARLEY_MQTTS_HOST: '::', PARLEY_WS_HOST: '127.0.0.1', PARLEY_WSS_HOST: '::1' })).toMatchObject({
      PARLEY_MQTTS_HOST: '::',
      PARLEY_WS_HOST: '127.0.0.1',
      PARLEY_WSS_HOST: '::1',
    });
    for (const name of ['PARLEY_MQTTS_HOST', 'PARLEY_WS_HOST', 'PARLEY_WSS_HOST'])
      expect(() => loadConfig({ [name]: '' })).toThrow(new RegExp(`${name} must not be empty`));
  });

  it('reads PARLEY_PROXY_FROM as a list of trusted proxies, off when empty, and refuses what is no address or range', () => {
    expect(loadConfig({}).PARLEY_PROXY_FROM).toEqual([]);
    expect(loadConfig({ PARLEY_PROXY_FROM: ' ' }).PARLEY_PROXY_FROM).toEqual([]);
    expect(loadConfig({ PARLEY_PROXY_FROM: '172.30.83.0/24, fd00:7061:726c:6579::/64,127.0.0.1,::1' }).PARLEY_PROXY_FROM).toEqual([
      '172.30.83.0/24',
      'fd00:7061:726c:6579::/64',
      '127.0.0.1',
      '::1',
    ]);
    for (const bad of ['haproxy', '10.0.0.0/33', '10.0.0.1,::1/200', '10.0.0.0/8;10.1.0.0/16'])
      expect(() => loadConfig({ PARLEY_PROXY_FROM: bad }), bad).toThrow(
        /^invalid configuration: PARLEY_PROXY_FROM lists IP addresses and CIDR ranges: .*\(got ".*"\)$/,
      );
  });
});
