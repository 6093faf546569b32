import { fork, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import type { FromGenerator, Job, JobResult } from './load-generator.js';

const READY_MS = 180_000;
const RESULT_MS = 180_000;
/** How long a generator may take to exit once its job is done (its clients have disconnected by then). */
const STOP_MS = 5000;

/** One forked load-generator process running one job. */
class Generator {
  private readonly messages: FromGenerator[] = [];
  private waiter: (() => void) | undefined;
  private exited = false;

  constructor(private readonly child: ChildProcess) {
    child.on('message', (m) => {
      this.messages.push(m as FromGenerator);
      this.waiter?.();
    });
    child.once('exit', () => {
      this.exited = true;
      this.waiter?.();
    });
  }

  /** The next message of the given type; rejects on `failed`, on exit, or after the bound. */
  async next<T extends FromGenerator['type']>(type: T, ms: number): Promise<Extract<FromGenerator, { type: T }>> {
    const deadline = Date.now() + ms;
    for (;;) {
      const m = this.messages.shift();
      if (m?.type === 'failed') throw new Error(`load generator failed: ${m.error}`);
      if (m?.type === type) return m as Extract<FromGenerator, { type: T }>;
      if (m) continue;
      if (this.exited) throw new Error(`load generator exited before "${type}"`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`load generator sent no "${type}" within ${ms} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.waiter = undefined;
    }
  }

  send(msg: unknown): void {
    if (this.child.connected) this.child.send(msg as object);
  }

  /**
   * Ends the generator: once its job is done it disconnects and exits by itself (`finished`); otherwise (a failed run)
   * it is terminated at once. Either way it is killed if it has not exited within STOP_MS.
   */
  async stop(finished: boolean): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    const timer = setTimeout(() => {
      // A generator that lingers after its job holds the run up, and is a bug in it: say so.
      if (finished) process.stderr.write(`load generator ${this.child.pid} had not exited ${STOP_MS} ms after its job: killed\n`);
      this.child.kill('SIGKILL');
    }, STOP_MS);
    if (!finished || !this.child.connected) this.child.kill('SIGTERM');
    await exited;
    clearTimeout(timer);
  }
}

/**
 * Runs jobs in parallel generator processes: all connect, then (after
 * `between`, e.g. a memory sample) all start at once; resolves with every
 * result in job order. `after` runs once every result is in, before the
 * generators disconnect. Every generator is stopped, whatever happens.
 */
export async function runJobs(benchDir: string, jobs: Job[], between?: () => Promise<void> | void, after?: () => Promise<void> | void): Promise<JobResult[]> {
  const gens = jobs.map(() => new Generator(fork(join(benchDir, 'load-generator.js'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })));
  let finished = false;
  try {
    jobs.forEach((job, i) => gens[i]!.send({ type: 'job', job }));
    await Promise.all(gens.map((g) => g.next('ready', READY_MS)));
    await between?.();
    for (const g of gens) g.send({ type: 'go' });
    const results = (await Promise.all(gens.map((g) => g.next('result', RESULT_MS)))).map((m) => m.result);
    await after?.();
    finished = true;
    return results;
  } finally {
    await Promise.all(gens.map((g) => g.stop(finished)));
  }
}
