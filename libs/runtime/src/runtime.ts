import type { Server } from 'node:http';
import { format } from 'node:util';
import { ConsoleLogger, Logger, type INestApplication, type LogLevel } from '@nestjs/common';
import { ConfigError, loadConfig, unknownSettings, type ParleyConfig } from '#libs/config';
import { LogThrottle } from './log-throttle.js';

/**
 * What every Parley process does the same way at start and stop: read the
 * configuration (a bad value is one line and exit 2), log JSON, listen for
 * HTTP (a busy port is one line and exit 1), and stop cleanly on a signal.
 */

const LEVELS: LogLevel[] = ['fatal', 'error', 'warn', 'log', 'debug', 'verbose'];

/** Prints `parley: <message>` on stderr and exits. */
export function fail(message: string, code: number): never {
  process.stderr.write(`parley: ${message}\n`);
  process.exit(code);
}

export function loadConfigOrExit(): ParleyConfig {
  try {
    return loadConfig();
  } catch (e) {
    if (e instanceof ConfigError) fail(e.message, 2);
    throw e;
  }
}

/** Warns of `PARLEY_*` variables that are no setting (a misspelt name leaves its setting at the default). */
export function warnOfUnknownSettings(logger: Logger): void {
  const names = unknownSettings();
  if (names.length > 0)
    logger.warn({ event: 'unknown_settings', names, message: `${names.join(', ')}: no such setting, so not used (the README lists the settings)` });
}

/**
 * Nest's JSON logger, writing every level to stdout: errors too, which Nest would put on stderr. Stdout then carries
 * Parley's JSON lines and nothing else, while stderr is left to what Parley does not write itself (lmdb-js's native
 * code prints some errors there, not always with a line end, so a JSON line on stderr could be run into; see the
 * README, "Logs").
 */
class StdoutJsonLogger extends ConsoleLogger {
  protected override printMessages(
    messages: unknown[],
    context?: string,
    logLevel?: LogLevel,
    _stream?: 'stdout' | 'stderr',
    errorStack?: unknown,
    params?: unknown[],
  ): void {
    super.printMessages(messages, context, logLevel, 'stdout', errorStack, params);
  }
}

export function jsonLogger(config: ParleyConfig): ConsoleLogger {
  return new StdoutJsonLogger({ json: true, logLevels: LEVELS.slice(0, LEVELS.indexOf(config.PARLEY_LOG_LEVEL) + 1) });
}

/** Lines of one console method logged per 10 s before the rest are only counted (`alikeLeftOut`). */
const CONSOLE_BURST = 5;

/**
 * Makes what libraries print with `console` (lmdb-js prints each failed commit with `console.error`, a multi-line
 * error with its stack) JSON log lines like Parley's own: event `library_output`, the text as `util.format` gives it.
 * A full disk fails every commit, so each method's lines are limited as Parley's own failures are.
 */
export function routeConsoleToLog(config: ParleyConfig): void {
  const logger = jsonLogger(config);
  const levels = new Map<string, 'log' | 'debug' | 'warn' | 'error'>();
  const throttle = new LogThrottle(10_000, undefined, CONSOLE_BURST, (method, n) =>
    logger[levels.get(method) ?? 'warn']({ event: 'log_left_out', of: 'library_output', console: method, alikeLeftOut: n }, 'console'),
  );
  const route = (method: 'log' | 'info' | 'debug' | 'warn' | 'error' | 'trace', level: 'log' | 'debug' | 'warn' | 'error') => {
    levels.set(method, level);
    console[method] = (...args: unknown[]) => {
      const fields = throttle.logFields(method);
      if (!fields) return;
      // console.trace prints where it was called from: kept, as the stack of an Error made here, less its own line.
      const stack = method === 'trace' ? { stack: new Error().stack?.split('\n').slice(2).join('\n') } : {};
      logger[level]({ event: 'library_output', console: method, text: format(...args), ...stack, ...fields }, 'console');
    };
  };
  route('log', 'log');
  route('info', 'log');
  route('debug', 'debug');
  route('warn', 'warn');
  route('error', 'error');
  route('trace', 'error');
}

/** A one-line reason for a listener that could not start. */
export function describeListenError(err: NodeJS.ErrnoException, host: string, port: number, what: string): string {
  const where = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
  switch (err.code ?? '') {
    case 'EADDRINUSE':
      return `cannot listen for ${what} on ${where}: the port is already in use`;
    case 'EACCES':
      return `cannot listen for ${what} on ${where}: permission denied (ports below 1024 need privileges)`;
    case 'EADDRNOTAVAIL':
      return `cannot listen for ${what} on ${where}: no such address on this machine`;
    case 'ENOTFOUND':
      // A mistyped host name, or one with a stray space: quoted, so that what was looked up shows.
      return `cannot listen for ${what} on ${where}: no address found for the host name "${host}"`;
    case 'EAFNOSUPPORT':
      // A kernel without IPv6 (booted with ipv6.disable=1) cannot open `::`, the default.
      return `cannot listen for ${what} on ${where}: this machine has no IPv6; listen on an IPv4 address (0.0.0.0 for all of them)`;
    case 'EAI_AGAIN':
      return `cannot listen for ${what} on ${where}: the host name "${host}" could not be looked up (no answer from DNS)`;
    default:
      return `cannot listen for ${what} on ${where}: ${err.message}`;
  }
}

/**
 * Starts the app's HTTP server (health, readiness, metrics) on the configured
 * address, dual-stack on `::`. Listening here rather than with app.listen()
 * makes a busy port our one-line error, not Nest's logged stack. Resolves with the port.
 */
export async function listenHttp(app: INestApplication, config: ParleyConfig): Promise<number> {
  await app.init();
  const httpServer = app.getHttpServer() as Server;
  // Node keeps a connection that sends nothing open for ever, and one that sends its headers a byte at a time for 60 to
  // 90 s: each holds a file descriptor, which the MQTT listeners share. Both are given the connect timeout instead (a
  // request to this port is answered at once), the second checked every 30 s, as Node does.
  httpServer.timeout = config.PARLEY_CONNECT_TIMEOUT_MS;
  httpServer.headersTimeout = config.PARLEY_CONNECT_TIMEOUT_MS;
  httpServer.requestTimeout = config.PARLEY_CONNECT_TIMEOUT_MS;
  try {
    await new Promise<void>((resolve, reject) => {
      httpServer.once('error', reject);
      httpServer.listen({ host: config.PARLEY_HTTP_HOST, port: config.PARLEY_HTTP_PORT, ipv6Only: false }, () => {
        httpServer.off('error', reject);
        resolve();
      });
    });
  } catch (e) {
    await app.close();
    fail(describeListenError(e as NodeJS.ErrnoException, config.PARLEY_HTTP_HOST, config.PARLEY_HTTP_PORT, 'HTTP'), 1);
  }
  return (httpServer.address() as { port: number }).port;
}

/**
 * On SIGTERM, SIGINT or SIGHUP (its terminal closed): say so (`onStop`: /readyz answers 503 from then on, so a load
 * balancer sends no one new), run the shutdown hooks (listeners, then stores), then exit 0. A signal that comes while
 * stopping is logged and changes nothing: with the handler gone, a second Ctrl-C or a supervisor repeating its SIGTERM
 * killed the process mid-stop (exit 143), with no word of why.
 */
export function stopOnSignals(app: INestApplication, logger: Logger, onStop: () => void = () => undefined): void {
  let stopping = false;
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) return logger.log({ event: 'stopping_already', signal });
    stopping = true;
    logger.log({ event: 'stopping', signal });
    onStop();
    // Every close is bounded on its own; this is the backstop, so a stop can never hang.
    setTimeout(() => fail('shutdown did not finish within 15 s; exiting anyway', 1), 15_000).unref();
    app.close().then(
      () => process.exit(0),
      (e: unknown) => fail(`shutdown failed: ${String(e)}`, 1),
    );
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  // Node's default for SIGHUP ends the process at once, with no stop: its connections cut, nothing logged.
  process.on('SIGHUP', stop);
}
