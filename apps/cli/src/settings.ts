import { DEVICE_PATTERN, USERNAME_PATTERN, USERNAME_RULE } from '#libs/protocol';

/** Where and as whom the CLI connects: flags win over PARLEY_* environment variables. */
export interface Settings {
  server: string;
  /** Where `server` came from, named by its usage errors: the environment variable, or else the flag (or the default). */
  serverFrom: '--server' | 'PARLEY_SERVER';
  user: string | undefined;
  password: string | undefined;
  /** A CA certificate file (PEM) to trust for mqtts:// and wss:// servers, besides the system's. */
  ca: string | undefined;
  /** `chat` and `listen` keep a session as this device (`user/DEVICE`), which catches up from where it stood itself. */
  device: string | undefined;
  json: boolean;
}

export interface GlobalFlags {
  server?: string;
  user?: string;
  password?: string;
  ca?: string;
  device?: string;
  json?: boolean;
}

export const DEFAULT_SERVER = 'mqtt://localhost:1883';

export function resolveSettings(flags: GlobalFlags, env: NodeJS.ProcessEnv = process.env): Settings {
  return {
    // An empty variable (`PARLEY_SERVER=` in a compose file or a script that clears it) is unset, as for PARLEY_CA.
    server: flags.server ?? (env.PARLEY_SERVER || undefined) ?? DEFAULT_SERVER,
    serverFrom: flags.server === undefined && env.PARLEY_SERVER ? 'PARLEY_SERVER' : '--server',
    // User names are lower case: `--user Alice` can only mean alice (and a failed login would count against the lockout).
    user: (flags.user ?? env.PARLEY_USER)?.toLowerCase(),
    // A password goes as given: no trimming, no Unicode normalisation (the server puts it in NFC itself, and tries it as
    // sent too, for accounts registered before it did).
    password: flags.password ?? env.PARLEY_PASSWORD,
    ca: flags.ca ?? (env.PARLEY_CA || undefined),
    device: flags.device ?? (env.PARLEY_DEVICE || undefined),
    json: flags.json ?? false,
  };
}

/** The transports the CLI speaks: MQTT over TCP, over TLS, over WebSocket and over secure WebSocket. */
export const SERVER_SCHEMES = ['mqtt:', 'mqtts:', 'ws:', 'wss:'] as const;

/** Checks a server URL; throws a usage error naming what is wrong, and where the URL came from (`from`). */
export function checkServer(server: string, from = '--server'): URL {
  let url: URL;
  try {
    url = new URL(server);
  } catch {
    const hint = bracketed(server);
    throw new UsageError(`${from} must be a URL such as mqtt://localhost:1883 (got "${server}")${hint ? `; an IPv6 address goes in brackets: ${hint}` : ''}`);
  }
  if (!(SERVER_SCHEMES as readonly string[]).includes(url.protocol)) {
    throw new UsageError(`${from} must start with mqtt://, mqtts://, ws:// or wss:// (got "${server}")`);
  }
  return url;
}

/**
 * The URL with its IPv6 address put in brackets, when it was written bare (`ws://::1:8083/mqtt`), which is no URL: its
 * colons cannot be told from the port's. The last group is taken for the port when it is one (digits, after `::` or
 * seven other groups), as one who writes a port means it; undefined when the host is no bare IPv6 address.
 */
function bracketed(server: string): string | undefined {
  const m = /^([a-z]+:\/\/)([^/[\]]*)(.*)$/i.exec(server);
  if (!m) return undefined;
  const [, scheme, host, rest] = m as unknown as [string, string, string, string];
  if ((host.match(/:/g)?.length ?? 0) < 2) return undefined;
  const at = host.lastIndexOf(':');
  const address = host.slice(0, at);
  const port = host.slice(at + 1);
  const portLike = /^\d{1,5}$/.test(port) && (address.includes('::') || address.split(':').length === 8);
  const candidate = portLike ? `${scheme}[${address}]:${port}${rest}` : `${scheme}[${host}]${rest}`;
  try {
    new URL(candidate);
    return candidate;
  } catch {
    return undefined;
  }
}

/**
 * The settings of a logged-in command; throws a usage error naming what is missing. A password not given is asked for
 * by `ask`, when there is a terminal to ask at (see `promptPassword`).
 */
export async function requireLogin(s: Settings, ask: ((user: string) => Promise<string>) | null): Promise<Settings & { user: string; password: string }> {
  if (!s.user) throw new UsageError('no user: pass --user NAME or set PARLEY_USER');
  if (s.password !== undefined) return s as Settings & { user: string; password: string };
  if (ask === null) throw new UsageError('no password: pass --password, set PARLEY_PASSWORD, or run it at a terminal to be asked for it');
  return { ...s, user: s.user, password: await ask(s.user) };
}

/**
 * Checks the user name a command logs in with. One no account can have is refused here: sent, it would be a failed
 * login, which counts towards the lockout of the user and the address.
 */
export function checkLoginName(user: string): void {
  if (!USERNAME_PATTERN.test(user)) throw new UsageError(`"${user}" is no user name (${USERNAME_RULE})`);
}

/** A mistake in how the CLI was called (exit code 2). */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** Checks a device name (`--device`, used by `chat` and `listen` only); throws a usage error naming what is wrong. */
export function checkDevice(device: string): void {
  // A name starting with a dot is a quiet one-shot connection's (it would not be online); the rest as the server takes it.
  if (!DEVICE_PATTERN.test(device) || device.startsWith('.'))
    throw new UsageError(`--device must be 1–64 letters, digits, '_', '.' or '-', not starting with '.' (got "${device}")`);
}
