import { lookup } from 'node:dns/promises';
import { existsSync } from 'node:fs';
import { isIP } from 'node:net';
import { hostname } from 'node:os';
import { z } from 'zod';
import { DEFAULT_MAX_REQUEST_BYTES } from '#libs/protocol';
import { addressRangeProblem, unmappedAddress } from './address-ranges.js';

/**
 * Parley's whole configuration, read once from the environment at start and
 * validated here so that a bad value stops the process with a one-line reason
 * instead of surfacing later as a confusing fault.
 */

/**
 * A whole number written in decimal digits, and nothing else: `Number()` would take '' as 0 (an empty
 * `PARLEY_MQTT_PORT=` listening on a random port), `0x50` as 80 and `1e3` as 1000.
 */
const decimal = (name: string, what: string) =>
  z
    .union([z.number(), z.string().trim()], { error: `${name} must be ${what}` })
    .refine((v) => typeof v === 'number' || /^\d+$/.test(v), `${name} must be ${what}, in decimal digits`)
    .transform(Number);

const port = (name: string, fallback: number) =>
  decimal(name, 'a port number 0–65535')
    .pipe(z.number().int(`${name} must be a whole number`).min(0, `${name} must be 0–65535`).max(65535, `${name} must be 0–65535`))
    .default(fallback);

/**
 * A whole number from 1 (or from `least.value`, below which the setting would do harm: a timeout no client can meet,
 * say, with the reason in the refusal) up to `max`.
 */
const positiveInt = (name: string, fallback: number, max = Number.MAX_SAFE_INTEGER, least?: { value: number; why: string }) =>
  decimal(name, 'a whole number')
    .pipe(
      z
        .number()
        .int(`${name} must be a whole number`)
        .min(least?.value ?? 1, least ? `${name} must be at least ${least.value} (${least.why})` : `${name} must be at least 1`)
        .max(max, `${name} must be at most ${max}`),
    )
    .default(fallback);

/**
 * A listen address: a host name or an IP address as it is, an IPv6 one without the brackets of a URL (`::1`); with them,
 * it was looked up as a host name, and the start failed with "getaddrinfo ENOTFOUND [::1]".
 */
const host = (name: string) =>
  z
    .string()
    .min(1, `${name} must not be empty`)
    .refine((v) => !/^\[.*\]$/.test(v), `${name} is an address without brackets (::1, not [::1])`)
    // ' ::' was looked up as a host name, and failed only after the store had been opened.
    .refine((v) => !/\s/.test(v), `${name} is an address or a host name, with no spaces in it`);

/** A port that is off when unset or empty. */
const optionalPort = (name: string) => z.preprocess((v) => (v === '' ? undefined : v), port(name, 0).unwrap().optional());

const optionalFile = () =>
  z
    .string()
    .optional()
    .transform((v) => (v === '' ? undefined : v));

/** A comma-separated list, its entries trimmed, empty ones dropped; unset or empty is none. */
const commaList = () =>
  z
    .string()
    .default('')
    .transform((v) =>
      v
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean),
    );

/**
 * What ioredis would stumble on in a redis:// URL, said before start-up: it throws a bare "Invalid URL" (logged with the
 * whole URL, password included) for one the URL parser refuses (a port over 65535), and sends `SELECT NaN`, an uncaught
 * reply error, for a database that is no number.
 */
function redisUrlProblem(url: string): string | undefined {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return 'is not a valid URL (a port 1–65535, an IPv6 address in brackets, special characters of a password %-encoded)';
  }
  if (!parsed.hostname) return 'names no host';
  if (parsed.pathname !== '' && parsed.pathname !== '/' && !/^\/\d+$/.test(parsed.pathname)) {
    return 'may end only in a database number (redis://host:port/0)';
  }
  return undefined;
}

/** A Redis URL as it may be shown: its password, if any, left out. */
export function redactUrl(url: string): string {
  return url.replace(/^([a-z]+:\/\/[^/@:]*:).*@/i, '$1***@');
}

export const ConfigSchema = z.object({
  PARLEY_MQTT_HOST: host('PARLEY_MQTT_HOST').default('::'),
  PARLEY_MQTT_PORT: port('PARLEY_MQTT_PORT', 1883),
  PARLEY_HTTP_HOST: host('PARLEY_HTTP_HOST').default('::'),
  PARLEY_HTTP_PORT: port('PARLEY_HTTP_PORT', 8080),
  PARLEY_DATA_DIR: z.string().min(1, 'PARLEY_DATA_DIR must not be empty').default('./data'),
  REDIS_URL: z
    .string()
    .regex(/^rediss?:\/\/\S+$/, 'REDIS_URL must look like redis://host:port (or rediss:// for TLS)')
    .superRefine((url, ctx) => {
      const problem = redisUrlProblem(url);
      if (problem) ctx.addIssue({ code: 'custom', message: `REDIS_URL ${problem}` });
    })
    .optional()
    .or(z.literal('').transform(() => undefined)),
  PARLEY_REDIS_PREFIX: z
    .string()
    .regex(/^[A-Za-z0-9_:.-]{1,64}$/, 'PARLEY_REDIS_PREFIX must be 1–64 characters of A-Z a-z 0-9 _ : . -')
    .default('parley:'),
  PARLEY_MAX_TEXT_LENGTH: positiveInt('PARLEY_MAX_TEXT_LENGTH', 4000, 100_000),
  PARLEY_MAX_REQUEST_BYTES: positiveInt('PARLEY_MAX_REQUEST_BYTES', DEFAULT_MAX_REQUEST_BYTES, 16 * 1024 * 1024),
  PARLEY_MAX_GROUP_SIZE: positiveInt('PARLEY_MAX_GROUP_SIZE', 100, 10_000),
  PARLEY_MAX_GROUP_NAME_LENGTH: positiveInt('PARLEY_MAX_GROUP_NAME_LENGTH', 64, 1000),
  PARLEY_MIN_PASSWORD_LENGTH: positiveInt('PARLEY_MIN_PASSWORD_LENGTH', 8, 1024),
  /** How long a successful login or registration is remembered (keyed HMAC, in memory), so the same user and password logging in again skip the KDF. */
  PARLEY_LOGIN_CACHE_MS: positiveInt('PARLEY_LOGIN_CACHE_MS', 600_000, 86_400_000),
  /**
   * scrypt's cost for new password hashes, as a power of two (N = 2^cost, r = 8, p = 1): 15 takes 32 MiB and about 0.1 s of
   * a core per hash. A login against a hash of a lower cost re-hashes the password at this one (never down).
   */
  PARLEY_PASSWORD_COST: positiveInt('PARLEY_PASSWORD_COST', 15, 18).refine((n) => n >= 10, {
    message: 'PARLEY_PASSWORD_COST must be at least 10',
  }),
  /** Names this gateway's connections in shared presence state; must be unique among gateways on one Redis and stable across restarts. */
  PARLEY_GATEWAY_ID: z
    .string()
    .regex(/^[A-Za-z0-9_.:-]{1,64}$/, 'PARLEY_GATEWAY_ID must be 1–64 characters of A-Z a-z 0-9 _ . : -')
    .optional(),
  /**
   * Standalone: free bytes the store keeps on its data directory's disk; below it, writes are refused (`unavailable`,
   * /readyz not ready) before LMDB meets a full disk (see DEFAULT_MIN_FREE_BYTES in libs/storage). At least 1 MiB.
   */
  PARLEY_MIN_FREE_DISK_BYTES: positiveInt('PARLEY_MIN_FREE_DISK_BYTES', 64 * 1024 * 1024).refine((n) => n >= 1024 * 1024, {
    message: 'PARLEY_MIN_FREE_DISK_BYTES must be at least 1048576 (1 MiB)',
  }),
  /** Largest file a user may offer, in bytes (100 MiB by default). */
  PARLEY_MAX_FILE_BYTES: positiveInt('PARLEY_MAX_FILE_BYTES', 100 * 1024 * 1024, 1024 * 1024 * 1024 * 1024),
  /** How many file offers one user may have live (not yet taken or declined by every receiver). */
  PARLEY_MAX_PENDING_OFFERS: positiveInt('PARLEY_MAX_PENDING_OFFERS', 20, 100_000),
  /** How many bytes one user's live file offers may hold on the server together. */
  PARLEY_FILE_QUOTA_BYTES: positiveInt('PARLEY_FILE_QUOTA_BYTES', 1024 * 1024 * 1024, 1024 * 1024 * 1024 * 1024 * 1024),
  /** How long a file offer lives from when it is made: whatever is not received by then is deleted. */
  PARLEY_FILE_OFFER_TTL_MS: positiveInt('PARLEY_FILE_OFFER_TTL_MS', 7 * 24 * 3600 * 1000, 365 * 24 * 3600 * 1000),
  /** Bytes per file chunk; one chunk, base64 in a request, must fit PARLEY_MAX_REQUEST_BYTES. */
  PARLEY_FILE_CHUNK_BYTES: positiveInt('PARLEY_FILE_CHUNK_BYTES', 32 * 1024, 8 * 1024 * 1024),
  /** Services reached over Redis instead of run in this process: any of presence, receipts, group, file-offer. */
  PARLEY_REMOTE_SERVICES: commaList().pipe(
    z.array(
      z.enum(['presence', 'receipts', 'group', 'file-offer'], { error: 'PARLEY_REMOTE_SERVICES lists services from: presence, receipts, group, file-offer' }),
    ),
  ),
  /**
   * Trusted proxies (IP addresses and CIDR ranges, comma-separated): an MQTT connection from one of them must start with
   * a PROXY protocol header (v1 or v2), and the client address it names is the connection's address from then on.
   */
  PARLEY_PROXY_FROM: commaList().superRefine((entries, ctx) => {
    const problem = entries.map(addressRangeProblem).find((p) => p !== undefined);
    if (problem) ctx.addIssue({ code: 'custom', message: `PARLEY_PROXY_FROM lists IP addresses and CIDR ranges: ${problem}` });
  }),
  /** After how long without a heartbeat a gateway on the same Redis is taken for dead and its users shown offline. */
  /**
   * At least 1 s: gateways beat every quarter of it, but at most every 250 ms (see GatewayModule), so under 1 s a live
   * gateway missed its own deadline and every gateway took the others for dead at each beat (their users flapping
   * offline and online).
   */
  PARLEY_GATEWAY_DEAD_AFTER_MS: positiveInt('PARLEY_GATEWAY_DEAD_AFTER_MS', 10_000, 3_600_000, {
    value: 1000,
    why: 'gateways beat at most every 250 ms',
  }),
  /** How long a call to a remote service may take before the client is told `unavailable`. */
  PARLEY_RPC_TIMEOUT_MS: positiveInt('PARLEY_RPC_TIMEOUT_MS', 5000, 600_000, { value: 100, why: 'shorter, a busy service answers nothing in time' }),
  /** A client must send a complete CONNECT, and its login finish, within this time. */
  PARLEY_CONNECT_TIMEOUT_MS: positiveInt('PARLEY_CONNECT_TIMEOUT_MS', 10_000, 600_000, { value: 1000, why: 'shorter, a login cannot finish' }),
  /** Largest CONNECT packet: all a client can make the server read before it has logged in. */
  PARLEY_MAX_CONNECT_BYTES: positiveInt('PARLEY_MAX_CONNECT_BYTES', 16_384, 262_144),
  /** Largest MQTT packet after login (remaining length). */
  PARLEY_MAX_PACKET_BYTES: positiveInt('PARLEY_MAX_PACKET_BYTES', 131_072, 268_435_455),
  /** Longest silence (seconds) allowed to a client that asks for no keep-alive or a longer one. */
  PARLEY_MAX_KEEPALIVE_S: positiveInt('PARLEY_MAX_KEEPALIVE_S', 300, 65_535),
  /** Bytes waiting for a client that does not read, beyond which it is dropped. */
  PARLEY_MAX_OUTBOUND_BYTES: positiveInt('PARLEY_MAX_OUTBOUND_BYTES', 8 * 1024 * 1024, 1024 * 1024 * 1024),
  /** A client that takes none of the bytes sent to it for this long is dropped. */
  PARLEY_WRITE_STALL_MS: positiveInt('PARLEY_WRITE_STALL_MS', 30_000, 3_600_000, { value: 1000, why: 'shorter, a slow network looks stalled' }),
  /** Requests per second (average) one connection may make, and its burst. */
  PARLEY_CONNECTION_RATE: positiveInt('PARLEY_CONNECTION_RATE', 50, 1_000_000),
  PARLEY_CONNECTION_BURST: positiveInt('PARLEY_CONNECTION_BURST', 1000, 1_000_000),
  /** Requests per second (average) one user may make over all its connections to a gateway, and its burst. */
  PARLEY_USER_RATE: positiveInt('PARLEY_USER_RATE', 100, 1_000_000),
  PARLEY_USER_BURST: positiveInt('PARLEY_USER_BURST', 2000, 1_000_000),
  /** File chunks up and down, in bytes per second (average) one user may move over all its connections to a gateway, and its burst; counted apart from requests. */
  PARLEY_TRANSFER_RATE: positiveInt('PARLEY_TRANSFER_RATE', 32 * 1024 * 1024, 1024 * 1024 * 1024 * 1024),
  PARLEY_TRANSFER_BURST: positiveInt('PARLEY_TRANSFER_BURST', 128 * 1024 * 1024, 1024 * 1024 * 1024 * 1024),
  /** Requests (registrations: anonymous connections may do nothing else) per minute from one address. */
  PARLEY_REGISTRATIONS_PER_MINUTE: positiveInt('PARLEY_REGISTRATIONS_PER_MINUTE', 10, 1_000_000),
  /** Logins one user may make to one gateway per minute, on average and in a burst; beyond, CONNACK 3 (try again). */
  PARLEY_LOGINS_PER_MINUTE: positiveInt('PARLEY_LOGINS_PER_MINUTE', 120, 1_000_000),
  /** Failed logins from one address within PARLEY_LOGIN_WINDOW_MS that lock it out for PARLEY_LOGIN_LOCKOUT_MS. */
  PARLEY_LOGIN_MAX_FAILURES: positiveInt('PARLEY_LOGIN_MAX_FAILURES', 10, 1_000_000),
  /** Failed logins for one user name, from all addresses together, that lock the name out. */
  PARLEY_LOGIN_MAX_USER_FAILURES: positiveInt('PARLEY_LOGIN_MAX_USER_FAILURES', 50, 1_000_000),
  PARLEY_LOGIN_WINDOW_MS: positiveInt('PARLEY_LOGIN_WINDOW_MS', 60_000, 86_400_000),
  PARLEY_LOGIN_LOCKOUT_MS: positiveInt('PARLEY_LOGIN_LOCKOUT_MS', 300_000, 86_400_000),
  /** Anonymous connections (they may only register) one address (IPv6: one /64) may hold open on one gateway at once. */
  PARLEY_MAX_ANONYMOUS_PER_ADDRESS: positiveInt('PARLEY_MAX_ANONYMOUS_PER_ADDRESS', 10, 100_000),
  /** An anonymous connection is closed this long after it logged in: time enough to register, not to hold a socket. */
  PARLEY_ANONYMOUS_TIMEOUT_MS: positiveInt('PARLEY_ANONYMOUS_TIMEOUT_MS', 60_000, 86_400_000, { value: 1000, why: 'shorter, a registration cannot finish' }),
  /** Connections from one address (IPv6: one /64) that may be logging in at once on one gateway (not yet answered). */
  PARLEY_MAX_CONNECTING_PER_ADDRESS: positiveInt('PARLEY_MAX_CONNECTING_PER_ADDRESS', 200, 1_000_000),
  /** Connections one user may hold open on one gateway. */
  PARLEY_MAX_CONNECTIONS_PER_USER: positiveInt('PARLEY_MAX_CONNECTIONS_PER_USER', 20, 100_000),
  /** Persistent sessions (clean session off) a gateway keeps per user, connected or not; beyond it the least recently used idle one is forgotten. */
  PARLEY_MAX_SESSIONS_PER_USER: positiveInt('PARLEY_MAX_SESSIONS_PER_USER', 50, 100_000),
  /** How long a gateway keeps a persistent session whose connection ended (MQTT 5's session expiry); at least a second. */
  PARLEY_SESSION_EXPIRY_MS: positiveInt('PARLEY_SESSION_EXPIRY_MS', 7 * 24 * 3600 * 1000, 365 * 24 * 3600 * 1000, { value: 1000, why: 'a second' }),
  /** Topic filters one connection (or persistent session) may hold; `presence/+` watches everyone's presence in one. */
  PARLEY_MAX_SUBSCRIPTIONS: positiveInt('PARLEY_MAX_SUBSCRIPTIONS', 1000, 1_000_000),
  /** MQTT over TLS: its port, unset for none. Needs PARLEY_TLS_CERT and PARLEY_TLS_KEY. */
  PARLEY_MQTTS_PORT: optionalPort('PARLEY_MQTTS_PORT'),
  /** MQTT over WebSocket (plain): its port, unset for none. */
  PARLEY_WS_PORT: optionalPort('PARLEY_WS_PORT'),
  /** MQTT over WebSocket over TLS: its port, unset for none. Needs PARLEY_TLS_CERT and PARLEY_TLS_KEY. */
  PARLEY_WSS_PORT: optionalPort('PARLEY_WSS_PORT'),
  /** The address each optional listener binds; unset: PARLEY_MQTT_HOST's (so plain MQTT can be kept to loopback alone). */
  PARLEY_MQTTS_HOST: host('PARLEY_MQTTS_HOST').optional(),
  PARLEY_WS_HOST: host('PARLEY_WS_HOST').optional(),
  PARLEY_WSS_HOST: host('PARLEY_WSS_HOST').optional(),
  /** PEM files of the server certificate (chain) and its private key, for the TLS listeners. */
  PARLEY_TLS_CERT: optionalFile(),
  PARLEY_TLS_KEY: optionalFile(),
  PARLEY_LOG_LEVEL: z
    .enum(['error', 'warn', 'log', 'debug', 'verbose'], { error: 'PARLEY_LOG_LEVEL must be one of error, warn, log, debug, verbose' })
    .default('log'),
});

export type ParleyConfig = Omit<z.infer<typeof ConfigSchema>, 'PARLEY_GATEWAY_ID'> & { PARLEY_GATEWAY_ID: string };

/** Room in a `file.chunk` request for everything but the base64 data: op, ids, index. */
const FILE_CHUNK_REQUEST_OVERHEAD = 512;
/** Room in a `send` request for everything but the text: op, id, recipient or group. */
const SEND_REQUEST_OVERHEAD = 1024;
/**
 * The most bytes one character of an accepted text takes in a request's JSON: 4, for a character beyond the Basic
 * Multilingual Plane (an emoji) in UTF-8. (The escapes JSON may write are for controls, refused but for tab and new
 * line, 2 bytes each, and for lone surrogates, refused.) The limit counts characters, not UTF-16 units.
 */
const TEXT_BYTES_PER_CHAR = 4;
/** Room in an MQTT PUBLISH for everything but its payload: fixed header, topic, packet id. */
const PUBLISH_OVERHEAD = 256;

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

/**
 * `PARLEY_*` names the server does not read but that are Parley's all the same: the CLI's (`parley` reads its server,
 * user, password, device and CA from these), the container entrypoint's choice of app, and the test harness's log
 * directory. A server started from the same shell as the CLI has them set for good reason.
 */
const NOT_SERVER_SETTINGS: ReadonlySet<string> = new Set([
  'PARLEY_SERVER',
  'PARLEY_USER',
  'PARLEY_PASSWORD',
  'PARLEY_DEVICE',
  'PARLEY_CA',
  'PARLEY_APP',
  'PARLEY_TEST_LOG_DIR',
]);

/**
 * The `PARLEY_*` variables set that are no setting at all, sorted: a misspelt name (`PARLEY_MQTT_HOTS`) leaves its
 * setting at the default, which nothing else would point out.
 */
export function unknownSettings(env: NodeJS.ProcessEnv = process.env): string[] {
  return Object.keys(env)
    .filter((k) => k.startsWith('PARLEY_') && !(k in ConfigSchema.shape) && !NOT_SERVER_SETTINGS.has(k))
    .sort();
}

/** Reads and validates the configuration; throws ConfigError naming every bad variable. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): ParleyConfig {
  const picked: Record<string, string | undefined> = {};
  for (const key of Object.keys(ConfigSchema.shape)) picked[key] = env[key];
  const result = ConfigSchema.safeParse(picked);
  if (!result.success) {
    const reasons = result.error.issues.map((i) => {
      const key = String(i.path[0] ?? '');
      const got = key === 'REDIS_URL' && env[key] !== undefined ? redactUrl(env[key]) : key ? env[key] : undefined;
      return got === undefined ? i.message : `${i.message} (got "${got}")`;
    });
    throw new ConfigError(`invalid configuration: ${reasons.join('; ')}`);
  }
  if (result.data.PARLEY_REMOTE_SERVICES.length > 0 && !result.data.REDIS_URL) {
    throw new ConfigError(
      `invalid configuration: PARLEY_REMOTE_SERVICES (${result.data.PARLEY_REMOTE_SERVICES.join(',')}) needs REDIS_URL, the services are reached over Redis`,
    );
  }
  const chunkRequestBytes = Math.ceil(result.data.PARLEY_FILE_CHUNK_BYTES / 3) * 4 + FILE_CHUNK_REQUEST_OVERHEAD;
  if (chunkRequestBytes > result.data.PARLEY_MAX_REQUEST_BYTES) {
    throw new ConfigError(
      `invalid configuration: a file chunk of PARLEY_FILE_CHUNK_BYTES (${result.data.PARLEY_FILE_CHUNK_BYTES}) needs requests of ${chunkRequestBytes} bytes; raise PARLEY_MAX_REQUEST_BYTES (${result.data.PARLEY_MAX_REQUEST_BYTES}) or lower the chunk size`,
    );
  }
  // A message of the longest text allowed must fit a request, whatever its characters: else it would be refused as
  // too large a request, not as too long a text.
  const textRequestBytes = result.data.PARLEY_MAX_TEXT_LENGTH * TEXT_BYTES_PER_CHAR + SEND_REQUEST_OVERHEAD;
  if (textRequestBytes > result.data.PARLEY_MAX_REQUEST_BYTES) {
    throw new ConfigError(
      `invalid configuration: a message of PARLEY_MAX_TEXT_LENGTH (${result.data.PARLEY_MAX_TEXT_LENGTH}) characters needs requests of up to ${textRequestBytes} bytes; raise PARLEY_MAX_REQUEST_BYTES (${result.data.PARLEY_MAX_REQUEST_BYTES}) or lower the text limit`,
    );
  }
  // A request the size limit allows must fit a packet: else its connection would be dropped instead of answered.
  if (result.data.PARLEY_MAX_REQUEST_BYTES + PUBLISH_OVERHEAD > result.data.PARLEY_MAX_PACKET_BYTES) {
    throw new ConfigError(
      `invalid configuration: requests of PARLEY_MAX_REQUEST_BYTES (${result.data.PARLEY_MAX_REQUEST_BYTES}) need packets of ${result.data.PARLEY_MAX_REQUEST_BYTES + PUBLISH_OVERHEAD} bytes; raise PARLEY_MAX_PACKET_BYTES (${result.data.PARLEY_MAX_PACKET_BYTES}) or lower the request limit`,
    );
  }
  if (result.data.PARLEY_TRANSFER_RATE < result.data.PARLEY_FILE_CHUNK_BYTES || result.data.PARLEY_TRANSFER_BURST < result.data.PARLEY_FILE_CHUNK_BYTES) {
    throw new ConfigError(
      `invalid configuration: PARLEY_TRANSFER_RATE (${result.data.PARLEY_TRANSFER_RATE}) and PARLEY_TRANSFER_BURST (${result.data.PARLEY_TRANSFER_BURST}) must each be at least one chunk, PARLEY_FILE_CHUNK_BYTES (${result.data.PARLEY_FILE_CHUNK_BYTES})`,
    );
  }
  const tlsPorts = (['PARLEY_MQTTS_PORT', 'PARLEY_WSS_PORT'] as const).filter((k) => result.data[k] !== undefined);
  if (tlsPorts.length > 0 && (!result.data.PARLEY_TLS_CERT || !result.data.PARLEY_TLS_KEY)) {
    const verb = tlsPorts.length === 1 ? 'needs' : 'need';
    throw new ConfigError(`invalid configuration: ${tlsPorts.join(' and ')} ${verb} PARLEY_TLS_CERT and PARLEY_TLS_KEY (PEM files)`);
  }
  for (const key of ['PARLEY_TLS_CERT', 'PARLEY_TLS_KEY'] as const) {
    const file = result.data[key];
    if (file !== undefined && !existsSync(file)) throw new ConfigError(`invalid configuration: ${key} names a file that does not exist (got "${file}")`);
  }
  // Standalone (no Redis) there is one gateway per data dir; with Redis, host and port tell gateways apart.
  const gatewayId =
    result.data.PARLEY_GATEWAY_ID ?? (result.data.REDIS_URL ? `${hostname()}:${result.data.PARLEY_MQTT_PORT || `pid${process.pid}`}` : 'standalone');
  return { ...result.data, PARLEY_GATEWAY_ID: gatewayId };
}

/** The gateway's listeners: the setting of each one's port, the port, and the host it listens on. */
function listenersOf(c: ParleyConfig) {
  return [
    ['PARLEY_MQTT_PORT', c.PARLEY_MQTT_PORT, c.PARLEY_MQTT_HOST],
    ['PARLEY_HTTP_PORT', c.PARLEY_HTTP_PORT, c.PARLEY_HTTP_HOST],
    ['PARLEY_MQTTS_PORT', c.PARLEY_MQTTS_PORT, c.PARLEY_MQTTS_HOST ?? c.PARLEY_MQTT_HOST],
    ['PARLEY_WS_PORT', c.PARLEY_WS_PORT, c.PARLEY_WS_HOST ?? c.PARLEY_MQTT_HOST],
    ['PARLEY_WSS_PORT', c.PARLEY_WSS_PORT, c.PARLEY_WSS_HOST ?? c.PARLEY_MQTT_HOST],
  ] as const;
}

/**
 * The address each host name among the gateway's listen hosts binds: its first address, as `listen` takes it. A name
 * that does not resolve is left out (its listener fails in words of its own).
 */
export async function listenAddresses(c: ParleyConfig): Promise<Map<string, string>> {
  const names = new Set(listenersOf(c).flatMap(([, port, host]) => (port && isIP(host) === 0 ? [host] : [])));
  const addresses = new Map<string, string>();
  await Promise.all(
    [...names].map(async (name) => {
      try {
        addresses.set(name, (await lookup(name)).address);
      } catch {
        // Said by the listener itself (ENOTFOUND, EAI_AGAIN).
      }
    }),
  );
  return addresses;
}

/**
 * Two of the gateway's own listeners on one port of one address: the second would fail to start as "the port is already
 * in use", which sends the operator looking for another process. `::` (dual-stack) and `0.0.0.0` take the port on every
 * address (of their family), so they clash with any address; `::ffff:127.0.0.1` is 127.0.0.1; a host name is the
 * address it binds when `addresses` (from `listenAddresses`) has it, else compared as written, case aside. Only
 * the gateway listens for MQTT: a service's HTTP port is its one listener.
 */
export function listenerClash(c: ParleyConfig, addresses: ReadonlyMap<string, string> = new Map()): string | undefined {
  const listeners = listenersOf(c);
  // An IPv4-mapped IPv6 address binds that IPv4 address.
  const bound = (host: string) => unmappedAddress((addresses.get(host) ?? host).toLowerCase());
  const overlap = (hostA: string, hostB: string) => {
    const [a, b] = [bound(hostA), bound(hostB)];
    return a === b || a === '::' || b === '::' || (a === '0.0.0.0' && !b.includes(':')) || (b === '0.0.0.0' && !a.includes(':'));
  };
  for (const [i, [nameA, portA, hostA]] of listeners.entries()) {
    // Port 0 picks a free port for each listener, and the optional ones are off when unset.
    if (!portA) continue;
    for (const [nameB, portB, hostB] of listeners.slice(i + 1)) {
      if (portB === portA && overlap(hostA, hostB)) {
        return `${nameA} and ${nameB} are both ${portA} (on ${hostA} and ${hostB}); give each listener a port of its own`;
      }
    }
  }
  return undefined;
}
