import { runJobs } from './generators.js';
import type { Endpoint } from './load-client.js';
import type { Job, JobBody, JobResult } from './load-generator.js';
import { sample, scrape } from '../test/support/prometheus.js';
import { cpuMsOf, cpuNsOf, rssOf, type Target } from './targets.js';

export const SCENARIOS = ['saturation', 'latency', 'fanout', 'drain', 'idle'] as const;
export type ScenarioName = (typeof SCENARIOS)[number];

/** Sizes and durations of one run; `--quick` shrinks them, the load shape stays the same. */
export interface BenchSettings {
  pairs: number;
  /** Messages in flight per pair at saturation. */
  window: number;
  /** Generator processes sharing the saturation pairs. */
  saturationGenerators: number;
  warmupMs: number;
  measureMs: number;
  /** Offered load of the latency scenario, of which the probe sends `probeRate`. */
  offeredRate: number;
  probeRate: number;
  latencyPairs: number;
  groupMembers: number;
  fanoutWindow: number;
  drainCount: number;
  drainWindow: number;
  idleUsers: number;
  payloadBytes: number;
}

export const FULL: BenchSettings = {
  pairs: 100,
  window: 4,
  saturationGenerators: 2,
  warmupMs: 1000,
  measureMs: 5000,
  offeredRate: 2000,
  probeRate: 200,
  // The offered load spread over every pair (18 msg/s each), as chat traffic is: many users, each sending a little.
  latencyPairs: 100,
  groupMembers: 50,
  fanoutWindow: 10,
  drainCount: 10_000,
  drainWindow: 50,
  idleUsers: 1000,
  payloadBytes: 200,
};

/**
 * Small enough to finish in under a minute on two cores (run with its default scenarios, all but idle): most of the
 * rest is starting the targets and registering the users.
 */
export const QUICK: BenchSettings = {
  ...FULL,
  pairs: 20,
  latencyPairs: 20,
  groupMembers: 20,
  warmupMs: 300,
  measureMs: 1000,
  drainCount: 2000,
  idleUsers: 20,
  saturationGenerators: 1,
};

/** The users each scenario plays with, by index into one pool registered once per Parley target. */
export interface Cast {
  pairs: [string, string][];
  probe: [string, string];
  fanSender: string;
  fanMembers: string[];
  drainSender: string;
  drainReceiver: string;
  idle: string[];
  all: string[];
}

/** The users the given scenarios play with (only those are registered on Parley). */
export function usersFor(cast: Cast, scenarios: readonly ScenarioName[]): string[] {
  const users = new Set<string>();
  const add = (list: string[]) => list.forEach((u) => users.add(u));
  for (const s of scenarios) {
    switch (s) {
      case 'saturation':
        add(cast.pairs.flat());
        break;
      case 'latency':
        add([...cast.pairs.flat(), ...cast.probe]);
        break;
      case 'fanout':
        add([cast.fanSender, ...cast.fanMembers]);
        break;
      case 'drain':
        add([cast.drainSender, cast.drainReceiver]);
        break;
      case 'idle':
        add(cast.idle);
        break;
    }
  }
  return [...users];
}

export function castFor(s: BenchSettings): Cast {
  // Idle users are their own: a user of the other scenarios would get its unacknowledged backlog at login, which is not idle.
  const active = Math.max(2 * s.pairs + 4, s.groupMembers + 1);
  const all = Array.from({ length: active + s.idleUsers }, (_, i) => `bench${String(i).padStart(4, '0')}`);
  const pairs = Array.from({ length: s.pairs }, (_, i): [string, string] => [all[2 * i]!, all[2 * i + 1]!]);
  return {
    pairs,
    probe: [all[2 * s.pairs]!, all[2 * s.pairs + 1]!],
    fanSender: all[0]!,
    fanMembers: all.slice(1, s.groupMembers + 1),
    drainSender: all[2 * s.pairs + 2]!,
    drainReceiver: all[2 * s.pairs + 3]!,
    idle: all.slice(active),
    all,
  };
}

/** One scenario on one target, once: the headline figures plus the CPU each side used. */
export interface RunResult {
  /** Named figures, e.g. msgPerSec, p99Ms. */
  values: Record<string, number>;
  /** CPU use over the run, in % of one core. */
  generatorCpu: number;
  serverCpu: number;
  redisCpu?: number;
  /** Parley on the embedded store: how its main thread waited for synced commits over the run (see `syncWaitOf`). */
  sync?: SyncWait;
  errors: number;
  lost: number;
}

export interface RunContext {
  target: Target;
  endpoint: Endpoint;
  settings: BenchSettings;
  cast: Cast;
  /** Parley: the fan-out group's id; bare brokers: a topic name. */
  group: string;
  benchDir: string;
  /** Unique per run, so message ids never repeat across repetitions. */
  tag: string;
}

/** The disk's part in a run of Parley on the embedded store, from its commit histogram read before and after. */
export interface SyncWait {
  /** Share of the run's wall time the server's main thread spent in synced commits, in %. */
  waitPct: number;
  commitsPerSec: number;
  meanMs: number;
  /** Share of commits that took longer than 5 ms, in %: the stalls behind the latency tail. */
  over5msPct: number;
}

/** The commit histogram's running totals at one moment. */
interface CommitTotals {
  seconds: number;
  count: number;
  upTo5ms: number;
}

const COMMIT_METRIC = 'parley_store_commit_duration_seconds';

async function commitTotals(httpUrl: string): Promise<CommitTotals> {
  const text = await scrape(httpUrl, 5000);
  const read = (name: string, labels?: Record<string, string>) => {
    const v = sample(text, name, labels);
    if (v === undefined) throw new Error(`${httpUrl}/metrics: no ${name}`);
    return v;
  };
  return { seconds: read(`${COMMIT_METRIC}_sum`), count: read(`${COMMIT_METRIC}_count`), upTo5ms: read(`${COMMIT_METRIC}_bucket`, { le: '0.005' }) };
}

function syncWaitOf(before: CommitTotals, after: CommitTotals, wallMs: number): SyncWait {
  const count = after.count - before.count;
  const seconds = after.seconds - before.seconds;
  return {
    waitPct: (100 * seconds * 1000) / wallMs,
    commitsPerSec: count / (wallMs / 1000),
    meanMs: count > 0 ? (1000 * seconds) / count : 0,
    over5msPct: count > 0 ? (100 * (count - (after.upTo5ms - before.upTo5ms))) / count : 0,
  };
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))]!;
}

/** Runs the jobs, measuring the server's (and its Redis's) CPU time over the same span as the generators' own. */
async function measured(ctx: RunContext, jobs: Job[], between?: () => Promise<void> | void) {
  let server0 = 0;
  let redis0 = 0;
  let t0 = 0;
  const metricsAt = ctx.target.metricsAt;
  let commits0: CommitTotals | undefined;
  // Read when the results are in, before the generators disconnect (Parley clients acknowledge what they got then).
  let end = { at: 0, server: 0, redis: 0 };
  let commits1: CommitTotals | undefined;
  const results = await runJobs(
    ctx.benchDir,
    jobs,
    async () => {
      await between?.();
      if (metricsAt) commits0 = await commitTotals(metricsAt);
      server0 = cpuMsOf(ctx.target.pid);
      redis0 = cpuMsOf(ctx.target.redisPid);
      t0 = Date.now();
    },
    async () => {
      end = { at: Date.now(), server: cpuMsOf(ctx.target.pid), redis: cpuMsOf(ctx.target.redisPid) };
      if (metricsAt) commits1 = await commitTotals(metricsAt);
    },
  );
  const wall = Math.max(1, end.at - t0);
  const cpu = results.reduce((sum, r) => sum + r.cpuMs, 0);
  const genWall = Math.max(1, ...results.map((r) => r.wallMs));
  return {
    results,
    usage: {
      generatorCpu: (100 * cpu) / genWall,
      serverCpu: (100 * (end.server - server0)) / wall,
      ...(ctx.target.redisPid !== undefined ? { redisCpu: (100 * (end.redis - redis0)) / wall } : {}),
      ...(commits0 && commits1 ? { sync: syncWaitOf(commits0, commits1, wall) } : {}),
      errors: results.reduce((n, r) => n + r.errors, 0),
      lost: results.reduce((n, r) => n + r.lost, 0),
    },
  };
}

function job(ctx: RunContext, suffix: string, body: JobBody): Job {
  return { ...body, endpoint: ctx.endpoint, payloadBytes: ctx.settings.payloadBytes, tag: `${ctx.tag}${suffix}` };
}

function split<T>(items: T[], parts: number): T[][] {
  const out: T[][] = Array.from({ length: Math.max(1, parts) }, () => []);
  items.forEach((item, i) => out[i % out.length]!.push(item));
  return out.filter((p) => p.length > 0);
}

/** (1) 1:1 saturation: every pair keeps a window of messages in flight; a message counts once delivered and acknowledged (Parley: `accepted`). */
async function saturation(ctx: RunContext): Promise<RunResult> {
  const s = ctx.settings;
  const jobs = split(ctx.cast.pairs, s.saturationGenerators).map((pairs, i) =>
    job(ctx, `s${i}`, { kind: 'pairs', pairs, window: s.window, warmupMs: s.warmupMs, measureMs: s.measureMs }),
  );
  const { results, usage } = await measured(ctx, jobs);
  const completed = results.reduce((n, r) => n + r.completed, 0);
  return { values: { msgPerSec: completed / (s.measureMs / 1000) }, ...usage };
}

/** (2) Latency at a fixed offered load: background pairs plus a separate light probe, both open loop. */
async function latency(ctx: RunContext): Promise<RunResult> {
  const s = ctx.settings;
  const background = job(ctx, 'lb', {
    kind: 'pairs',
    pairs: ctx.cast.pairs.slice(0, s.latencyPairs),
    ratePerSec: s.offeredRate - s.probeRate,
    warmupMs: s.warmupMs,
    measureMs: s.measureMs,
  });
  const probe = job(ctx, 'lp', {
    kind: 'pairs',
    pairs: [ctx.cast.probe],
    ratePerSec: s.probeRate,
    latency: true,
    warmupMs: s.warmupMs,
    measureMs: s.measureMs,
  });
  const { results, usage } = await measured(ctx, [background, probe]);
  const p = results[1]!;
  const delivery = (p.deliveryMs ?? []).sort((a, b) => a - b);
  const ack = (p.ackMs ?? []).sort((a, b) => a - b);
  return {
    values: {
      p50Ms: percentile(delivery, 0.5),
      p99Ms: percentile(delivery, 0.99),
      p999Ms: percentile(delivery, 0.999),
      ackP99Ms: percentile(ack, 0.99),
      samples: delivery.length,
    },
    ...usage,
  };
}

/** (3) Fan-out: one sender to a group; deliveries per second over all members. */
async function fanout(ctx: RunContext): Promise<RunResult> {
  const s = ctx.settings;
  const { results, usage } = await measured(ctx, [
    job(ctx, 'f', {
      kind: 'fanout',
      sender: ctx.cast.fanSender,
      members: ctx.cast.fanMembers,
      group: ctx.group,
      window: s.fanoutWindow,
      warmupMs: s.warmupMs,
      measureMs: s.measureMs,
    }),
  ]);
  return { values: { deliveriesPerSec: results[0]!.completed / (s.measureMs / 1000) }, ...usage };
}

/** (4) Offline drain: a backlog for one offline user; time from its connect to the last message. */
async function drain(ctx: RunContext): Promise<RunResult> {
  const s = ctx.settings;
  const { results, usage } = await measured(ctx, [
    job(ctx, 'd', { kind: 'drain', sender: ctx.cast.drainSender, receiver: ctx.cast.drainReceiver, count: s.drainCount, window: s.drainWindow }),
  ]);
  const r: JobResult = results[0]!;
  return { values: { msgPerSec: r.completed / r.seconds, drainMs: r.seconds * 1000 }, ...usage };
}

/** Targets whose idle users have logged in and out once, unmeasured (see `idle`). */
const warmedForIdle = new WeakSet<Target>();
/** The server counts as settled once it used under `QUIET_CPU_MS` of CPU in each of two `QUIET_WINDOW_MS` windows running. */
const QUIET_WINDOW_MS = 100;
const QUIET_CPU_MS = 1;
/** The longest wait for that; memory is read then anyway, and the run's log says so. */
const QUIET_MAX_MS = 15_000;

/**
 * Waits until a server has finished the work a burst of logins or logouts left it (its last writes, the presence
 * changes): until it has used under 1 % of a core for two 100 ms windows running, or `QUIET_MAX_MS` at most. Memory
 * read while that work is under way counts what it holds for the moment: a fixed half second left the figures of one
 * server 30 % apart.
 */
async function quiet(target: Target): Promise<void> {
  const used = () => cpuNsOf(target.pid) + cpuNsOf(target.redisPid);
  const until = Date.now() + QUIET_MAX_MS;
  let calm = 0;
  let cpu = used();
  while (calm < 2) {
    if (Date.now() >= until) {
      process.stderr.write(`${target.name} was still busy after ${QUIET_MAX_MS} ms: its idle memory is read anyway\n`);
      return;
    }
    await new Promise((r) => setTimeout(r, QUIET_WINDOW_MS));
    const now = used();
    calm = now - cpu < QUIET_CPU_MS * 1e6 ? calm + 1 : 0;
    cpu = now;
  }
}

/**
 * (5) Idle: the memory N logged-in, subscribed, idle users add to the server, per 1,000, read after a full garbage
 * collection before and after, so the figures are what the connections keep alive: the process's resident set, and for
 * a Node server also its JS heap in use plus its buffers' memory (`heapMibPer1000`). The resident set of a process that
 * has run other scenarios first also moves with the pages its heap has freed and reuses, or not (it swung from 1.8 to
 * 10 MiB per 1,000 users between repetitions of one server); the heap figure counts what is kept, wherever it lies.
 */
async function idle(ctx: RunContext): Promise<RunResult> {
  const users = ctx.cast.idle;
  // Once per target, the same users log in and out unmeasured first: what the first logins of a server make once and
  // keep (its tables grown to a thousand entries, code compiled for the paths, a user's cached records) is not what a
  // connection keeps. Without it the first repetition came out at twice the others for bare Aedes.
  if (!warmedForIdle.has(ctx.target)) {
    await runJobs(ctx.benchDir, [job(ctx, 'iw', { kind: 'idle', users })]);
    warmedForIdle.add(ctx.target);
  }
  const settled = async () => {
    await quiet(ctx.target);
    const heap = await ctx.target.collectGarbage?.();
    return { rss: rssOf(ctx.target.pid), heap: heap && heap.heapUsed + heap.external };
  };
  const perThousand = (bytes: number) => (bytes / users.length) * (1000 / 2 ** 20);
  const before = await settled();
  let after = before;
  const { usage } = await measured(ctx, [job(ctx, 'i', { kind: 'idle', users })], async () => {
    after = await settled();
  });
  const heapMibPer1000 = before.heap !== undefined && after.heap !== undefined ? perThousand(after.heap - before.heap) : undefined;
  return {
    values: { mibPer1000: perThousand(after.rss - before.rss), rssMib: after.rss / 2 ** 20, ...(heapMibPer1000 !== undefined ? { heapMibPer1000 } : {}) },
    ...usage,
  };
}

export const RUNNERS: Record<ScenarioName, (ctx: RunContext) => Promise<RunResult>> = { saturation, latency, fanout, drain, idle };
