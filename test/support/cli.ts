import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { REPO_ROOT } from './parley-server.js';
import { runToClose } from './run-to-close.js';

const CLI = join(REPO_ROOT, 'bin/parley.js');

/** The command line of `parley ARGS`, inside a network namespace (ip netns) when one is given. */
function commandOf(args: string[], netns?: string): [string, string[]] {
  return netns ? ['ip', ['netns', 'exec', netns, process.execPath, CLI, ...args]] : [process.execPath, [CLI, ...args]];
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
  /** stdout parsed as JSON lines (for --json runs). */
  json: Record<string, unknown>[];
}

/** Runs `parley ARGS` to completion (bounded), with PARLEY_* settings from `env`. */
export async function runCli(
  args: string[],
  env: Record<string, string>,
  opts: { input?: string; timeoutMs?: number; netns?: string } = {},
): Promise<CliResult> {
  const [command, argv] = commandOf(args, opts.netns);
  const child = spawn(command, argv, { env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
  child.stdin.end(opts.input ?? '');
  const { code, stdout, stderr } = await runToClose(child, `parley ${args.join(' ')}`, opts.timeoutMs ?? 20_000);
  const json = stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  return { code, stdout, stderr, json };
}

/**
 * Runs what it is given, at most `limit` at a time, in the order given: for a test's CLI runs that do not depend on one
 * another (each costs about half a second of a core to start), a few at a time rather than one after another.
 */
export function atMost(limit: number): <T>(run: () => Promise<T>) => Promise<T> {
  let running = 0;
  const waiting: (() => void)[] = [];
  return <T>(run: () => Promise<T>) => {
    const turn = new Promise<void>((start) => {
      if (running < limit) {
        running++;
        start();
      } else waiting.push(start);
    });
    const done = turn.then(run).finally(() => {
      const next = waiting.shift();
      if (next) next();
      else running--;
    });
    // Awaited later, or not at all once an assertion before it has failed: its failure must not go unhandled meanwhile.
    done.catch(() => undefined);
    return done;
  };
}

/** A long-running `parley` process (listen, chat) whose output lines can be awaited. */
export class CliProcess {
  readonly lines: string[] = [];
  private waiters: (() => void)[] = [];
  readonly exited: Promise<number | null>;

  constructor(readonly child: ChildProcess) {
    const onLine = (l: string) => {
      this.lines.push(l);
      for (const w of this.waiters) w();
    };
    createInterface({ input: child.stdout! }).on('line', onLine);
    createInterface({ input: child.stderr! }).on('line', onLine);
    this.exited = new Promise((resolve) => child.once('close', (code) => resolve(code)));
  }

  static start(args: string[], env: Record<string, string>, opts: { cwd?: string; netns?: string } = {}): CliProcess {
    const [command, argv] = commandOf(args, opts.netns);
    return new CliProcess(spawn(command, argv, { env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['pipe', 'pipe', 'pipe'], cwd: opts.cwd }));
  }

  /** Resolves with the first line (already printed or to come) that matches; rejects after the timeout. */
  waitForLine(match: RegExp | ((l: string) => boolean), timeoutMs = 10_000): Promise<string> {
    const test = typeof match === 'function' ? match : (l: string) => match.test(l);
    return new Promise((resolve, reject) => {
      const check = () => {
        const found = this.lines.find(test);
        if (found === undefined) return;
        cleanup();
        resolve(found);
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`no line matching ${String(match)} within ${timeoutMs} ms; got:\n${this.lines.join('\n')}`));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        this.waiters = this.waiters.filter((w) => w !== check);
      };
      this.waiters.push(check);
      check();
    });
  }

  /** JSON lines printed so far. */
  json(): Record<string, unknown>[] {
    return this.lines.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
  }

  type(line: string): void {
    this.child.stdin!.write(line + '\n');
  }

  /** Ends input (chat leaves after finishing what was typed), or interrupts (listen); then waits, bounded, for the exit. */
  async stop(how: 'eof' | 'interrupt' = 'interrupt'): Promise<number | null> {
    if (this.child.exitCode !== null) return this.child.exitCode;
    if (how === 'eof') this.child.stdin!.end();
    else this.child.kill('SIGINT');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 10_000);
    const code = await this.exited;
    clearTimeout(timer);
    return code;
  }
}

/**
 * A time as the CLI prints it, for a regular expression: `HH:MM:SS`, or `YYYY-MM-DD HH:MM:SS` for a time of another
 * day than the line's (an event stamped just before midnight and printed just after).
 */
export const TIME = '(?:\\d{4}-\\d\\d-\\d\\d )?\\d\\d:\\d\\d:\\d\\d';
