import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { runToClose } from './run-to-close.js';

/** The nearest directory up from here with a package.json: the repository, whether this runs from `test/` or compiled under `dist/` (the bench). */
function findRepoRoot(from: string): string {
  for (let dir = from; ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    if (dirname(dir) === dir) throw new Error(`no package.json above ${from}`);
  }
}

export const REPO_ROOT = findRepoRoot(import.meta.dirname);

/** The built entry point of an app: gateway (the standalone server), presence, receipts, group or file-offer. */
export type App = 'gateway' | 'presence' | 'receipts' | 'group' | 'file-offer';
const mainOf = (app: App) => join(REPO_ROOT, `dist/apps/${app}/src/main.js`);

export interface ParleyServer {
  mqttPort: number;
  httpPort: number;
  /** mqtt://127.0.0.1:PORT */
  mqttUrl: string;
  /** mqtt://[::1]:PORT */
  mqttUrl6: string;
  httpUrl: string;
  /** Ports of the optional listeners that were configured (PARLEY_MQTTS_PORT, PARLEY_WS_PORT, PARLEY_WSS_PORT). */
  extraPorts: { mqtts?: number; ws?: number; wss?: number };
  /** The server's process id (for memory readings in /proc). */
  pid: number;
  dataDir: string;
  /** Every line the process wrote to stdout and stderr so far. */
  output: string[];
  /** The lines of `output` that came on stdout, and on stderr. */
  stdout: string[];
  stderr: string[];
  process: ChildProcess;
  /** SIGTERM, then SIGKILL if it has not exited within a bound. Keeps the data dir. */
  stop(): Promise<void>;
  /** SIGKILL, as a crash would. Keeps the data dir. */
  kill9(): Promise<void>;
  /** Stops the process (if running) and removes its data dir, unless the caller owns it. */
  dispose(): Promise<void>;
}

/** The messages of a server's JSON log lines whose `event` is this one, in the order they were written. */
export function loggedEvents<T extends object>(server: Pick<ParleyServer, 'output'>, event: string): T[] {
  return server.output.flatMap((line) => {
    try {
      const m = (JSON.parse(line) as { message?: { event?: unknown } }).message;
      return m?.event === event ? [m as T] : [];
    } catch {
      return [];
    }
  });
}

export interface StartOptions {
  /** Which app to run; the gateway (standalone server) by default. */
  app?: App;
  env?: Record<string, string>;
  /** Reuse a data directory (e.g. after kill9); otherwise a fresh temp dir is made and removed on dispose. */
  dataDir?: string;
  /** Fixed ports, e.g. to restart on the same port; 0 (ephemeral) by default. */
  mqttPort?: number;
  httpPort?: number;
  timeoutMs?: number;
  /** A network namespace (ip netns) to run the server in. */
  netns?: string;
  /** Extra node flags before the entry point, e.g. `--cpu-prof` (which NODE_OPTIONS refuses). */
  nodeArgs?: string[];
}

/**
 * Starts the built standalone server (`npm run build` first, which `npm test`
 * does) on ephemeral ports and waits, bounded, for its `listening` log line.
 */
export async function startParley(opts: StartOptions = {}): Promise<ParleyServer> {
  const ownsDir = opts.dataDir === undefined;
  const dataDir = opts.dataDir ?? mkdtempSync(join(tmpdir(), 'parley-data-'));
  const app = opts.app ?? 'gateway';
  // `ip netns exec` switches namespace and then execs node, so the child is the server itself.
  const nodeArgv = [...(opts.nodeArgs ?? []), mainOf(app)];
  const [command, args] = opts.netns ? ['ip', ['netns', 'exec', opts.netns, process.execPath, ...nodeArgv]] : [process.execPath, nodeArgv];
  const child = spawn(command, args, {
    cwd: REPO_ROOT,
    env: {
      PATH: process.env.PATH ?? '',
      PARLEY_MQTT_PORT: String(opts.mqttPort ?? 0),
      PARLEY_HTTP_PORT: String(opts.httpPort ?? 0),
      PARLEY_DATA_DIR: dataDir,
      // Tests register many users from one address; a spec that tests this limit sets its own.
      PARLEY_REGISTRATIONS_PER_MINUTE: '100000',
      ...opts.env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const output: string[] = [];
  const stdout: string[] = [];
  const stderr: string[] = [];
  let stopping = false;
  let listening = false;
  const exited = new Promise<void>((done) =>
    child.once('exit', (code, signal) => {
      // A server that dies on its own is a bug worth seeing, with what it said last.
      if (!stopping && listening && code !== null && code !== 0) {
        process.stderr.write(`parley ${app} exited unexpectedly (${code}${signal ? `, ${signal}` : ''}); its last output:\n${output.slice(-30).join('\n')}\n`);
      }
      done();
    }),
  );
  // For diagnosing a failure after the fact: with PARLEY_TEST_LOG_DIR set, every server's whole output is kept there.
  const logDir = process.env.PARLEY_TEST_LOG_DIR;
  if (logDir) child.once('close', () => writeFileSync(join(logDir, `${app}-${child.pid}.log`), output.join('\n') + '\n'));

  type Listening = { mqtt: number; http: number; extra: ParleyServer['extraPorts'] };
  const ports = await new Promise<Listening>((resolvePorts, reject) => {
    const timer = setTimeout(() => {
      // A server that never came up must not outlive the caller.
      child.kill('SIGKILL');
      reject(new Error(`parley server did not report listening within ${opts.timeoutMs ?? 20_000} ms:\n${output.join('\n')}`));
    }, opts.timeoutMs ?? 20_000);
    const onLine = (line: string) => {
      output.push(line);
      stdout.push(line);
      try {
        type Port = { port: number } | undefined;
        const rec = JSON.parse(line) as { message?: { event?: string; mqtt?: Port; http?: Port; mqtts?: Port; ws?: Port; wss?: Port } };
        const m = rec.message;
        if (m?.event === 'listening' && m.http) {
          clearTimeout(timer);
          listening = true;
          resolvePorts({ mqtt: m.mqtt?.port ?? 0, http: m.http.port, extra: { mqtts: m.mqtts?.port, ws: m.ws?.port, wss: m.wss?.port } });
        }
      } catch {
        /* not a JSON log line */
      }
    };
    createInterface({ input: child.stdout }).on('line', onLine);
    createInterface({ input: child.stderr }).on('line', (l) => {
      output.push(l);
      stderr.push(l);
    });
    // 'close' comes after the output streams are drained, so the reason is in `output`.
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`parley ${app} exited (${code ?? signal}) before listening:\n${output.join('\n')}`));
    });
  });

  const terminate = async (signal: NodeJS.Signals) => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    stopping = true;
    child.kill(signal);
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  };

  return {
    mqttPort: ports.mqtt,
    httpPort: ports.http,
    mqttUrl: `mqtt://127.0.0.1:${ports.mqtt}`,
    mqttUrl6: `mqtt://[::1]:${ports.mqtt}`,
    httpUrl: `http://127.0.0.1:${ports.http}`,
    extraPorts: ports.extra,
    pid: child.pid!,
    dataDir,
    output,
    stdout,
    stderr,
    process: child,
    stop: () => terminate('SIGTERM'),
    kill9: () => terminate('SIGKILL'),
    dispose: async () => {
      await terminate('SIGTERM');
      if (ownsDir) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/**
 * Runs the standalone server (as built) with only `env` (and PATH) set, expecting it to refuse to start: its exit code
 * and everything it printed, once its output has closed. Fails after 20 s, the server killed. `as` runs it as another
 * user (the test must run as root).
 */
export function runServerToExit(
  env: Record<string, string>,
  as?: { uid: number; gid: number },
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, ['dist/apps/gateway/src/main.js'], {
    cwd: REPO_ROOT,
    env: { PATH: process.env.PATH ?? '', PARLEY_MQTT_PORT: '0', PARLEY_HTTP_PORT: '0', ...env },
    ...as,
  });
  return runToClose(child, 'a server expected to refuse to start', 20_000);
}
