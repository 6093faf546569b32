import type { BenchSettings, RunResult, ScenarioName } from './scenarios.js';
import { TARGET_LABELS, type TargetName } from './targets.js';

export type BenchRecord = { scenario: ScenarioName; target: TargetName; rep: number } & (RunResult | { failed: string });

/** A figure over the repetitions: the median, and the spread. */
export interface Spread {
  median: number;
  min: number;
  max: number;
  n: number;
}

/** The figures a table row shows, in order: scenario, value key, label, unit, and whether higher is better. */
const ROWS: { scenario: ScenarioName; key: string; label: string; unit: string; higherIsBetter: boolean }[] = [
  { scenario: 'saturation', key: 'msgPerSec', label: '1:1 saturation', unit: 'msg/s', higherIsBetter: true },
  { scenario: 'latency', key: 'p50Ms', label: 'latency p50 @2k msg/s', unit: 'ms', higherIsBetter: false },
  { scenario: 'latency', key: 'p99Ms', label: 'latency p99 @2k msg/s', unit: 'ms', higherIsBetter: false },
  { scenario: 'latency', key: 'p999Ms', label: 'latency p99.9 @2k msg/s', unit: 'ms', higherIsBetter: false },
  { scenario: 'latency', key: 'ackP99Ms', label: 'accepted (bare: PUBACK) p99', unit: 'ms', higherIsBetter: false },
  { scenario: 'fanout', key: 'deliveriesPerSec', label: 'group fan-out', unit: 'deliveries/s', higherIsBetter: true },
  { scenario: 'drain', key: 'msgPerSec', label: 'offline drain', unit: 'msg/s', higherIsBetter: true },
  { scenario: 'drain', key: 'drainMs', label: 'offline drain time', unit: 'ms', higherIsBetter: false },
  { scenario: 'idle', key: 'heapMibPer1000', label: 'idle memory per 1,000 users (JS heap + buffers)', unit: 'MiB', higherIsBetter: false },
  { scenario: 'idle', key: 'mibPer1000', label: 'idle memory per 1,000 users (resident set)', unit: 'MiB', higherIsBetter: false },
];

/** The targets: a Parley figure over the same figure of a bare broker from the same run. */
const GOALS: { label: string; scenario: ScenarioName; key: string; parley: TargetName; versus: TargetName | null; atLeast?: number; atMost?: number }[] = [
  { label: 'standalone 1:1 ≥ 0.5× Aedes', scenario: 'saturation', key: 'msgPerSec', parley: 'parley', versus: 'aedes', atLeast: 0.5 },
  { label: 'latency p99 ≤ 2× Aedes', scenario: 'latency', key: 'p99Ms', parley: 'parley', versus: 'aedes', atMost: 2 },
  { label: 'accepted p99 ≤ 15 ms', scenario: 'latency', key: 'ackP99Ms', parley: 'parley', versus: null, atMost: 15 },
  { label: 'fan-out ≥ 0.5× Aedes', scenario: 'fanout', key: 'deliveriesPerSec', parley: 'parley', versus: 'aedes', atLeast: 0.5 },
  { label: 'offline drain ≥ 0.5× Aedes', scenario: 'drain', key: 'msgPerSec', parley: 'parley', versus: 'aedes', atLeast: 0.5 },
  // Read on the heap: the resident set of a server that ran the other scenarios first moves with page reuse (see `idle`).
  { label: 'idle memory (JS heap + buffers) ≤ 1.4× Aedes', scenario: 'idle', key: 'heapMibPer1000', parley: 'parley', versus: 'aedes', atMost: 1.4 },
  // The stock pair stores a message in Redis only for a persistent session; with clean sessions it stores nothing.
  {
    label: 'distributed 1:1 ≥ 2× Aedes+Redis (persistent sessions)',
    scenario: 'saturation',
    key: 'msgPerSec',
    parley: 'parley-redis',
    versus: 'aedes-redis-sessions',
    atLeast: 2,
  },
  {
    label: 'distributed 1:1 ≥ 2× Aedes+Redis (clean sessions)',
    scenario: 'saturation',
    key: 'msgPerSec',
    parley: 'parley-redis',
    versus: 'aedes-redis',
    atLeast: 2,
  },
];

/** Ratio columns: a Parley target over a bare one. */
const RATIOS: [TargetName, TargetName][] = [
  ['parley', 'aedes'],
  ['parley', 'aedes-qos0'],
  ['parley', 'mosquitto'],
  ['parley-redis', 'aedes-redis'],
  ['parley-redis', 'aedes-redis-sessions'],
  ['parley-redis', 'aedes'],
];

export interface BenchReport {
  startedAt: string;
  machine: { cpus: number; cpuModel: string; memoryGiB: number; node: string; platform: string };
  quick: boolean;
  reps: number;
  settings: BenchSettings;
  targets: { name: TargetName; label: string }[];
  /** scenario → target → figure → spread over the repetitions (CPU figures included, in % of one core). */
  results: Partial<Record<ScenarioName, Partial<Record<TargetName, Record<string, Spread>>>>>;
  /** `parley/aedes` etc. → row key → ratio of medians. */
  ratios: Record<string, Record<string, number>>;
  goals: { label: string; value: number | null; met: boolean | null }[];
  failures: { scenario: ScenarioName; target: TargetName; rep: number; error: string }[];
  records: BenchRecord[];
}

export function spread(values: number[]): Spread {
  const sorted = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  if (sorted.length === 0) return { median: NaN, min: NaN, max: NaN, n: 0 };
  const mid = sorted.length >> 1;
  const median = sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  return { median, min: sorted[0]!, max: sorted[sorted.length - 1]!, n: sorted.length };
}

export function buildReport(input: Omit<BenchReport, 'targets' | 'results' | 'ratios' | 'goals' | 'failures'> & { targets: TargetName[] }): BenchReport {
  const results: BenchReport['results'] = {};
  const failures: BenchReport['failures'] = [];
  const grouped = new Map<string, RunResult[]>();
  for (const r of input.records) {
    if ('failed' in r) {
      failures.push({ scenario: r.scenario, target: r.target, rep: r.rep, error: r.failed });
      continue;
    }
    const key = `${r.scenario}\0${r.target}`;
    grouped.set(key, [...(grouped.get(key) ?? []), r]);
  }
  for (const [key, runs] of grouped) {
    const [scenario, target] = key.split('\0') as [ScenarioName, TargetName];
    const figures: Record<string, Spread> = {};
    for (const name of Object.keys(runs[0]!.values)) figures[name] = spread(runs.map((r) => r.values[name]!));
    figures.generatorCpu = spread(runs.map((r) => r.generatorCpu));
    figures.serverCpu = spread(runs.map((r) => r.serverCpu));
    if (runs[0]!.redisCpu !== undefined) figures.redisCpu = spread(runs.map((r) => r.redisCpu ?? NaN));
    if (runs[0]!.sync !== undefined) {
      figures.syncWaitPct = spread(runs.map((r) => r.sync?.waitPct ?? NaN));
      figures.syncCommitsPerSec = spread(runs.map((r) => r.sync?.commitsPerSec ?? NaN));
      figures.syncMeanMs = spread(runs.map((r) => r.sync?.meanMs ?? NaN));
      figures.syncOver5msPct = spread(runs.map((r) => r.sync?.over5msPct ?? NaN));
    }
    figures.errors = spread(runs.map((r) => r.errors));
    figures.lost = spread(runs.map((r) => r.lost));
    (results[scenario] ??= {})[target] = figures;
  }
  const median = (scenario: ScenarioName, target: TargetName, key: string) => results[scenario]?.[target]?.[key]?.median ?? NaN;

  const ratios: BenchReport['ratios'] = {};
  for (const [a, b] of RATIOS) {
    const row: Record<string, number> = {};
    for (const r of ROWS) {
      const v = median(r.scenario, a, r.key) / median(r.scenario, b, r.key);
      if (Number.isFinite(v)) row[`${r.scenario}.${r.key}`] = v;
    }
    if (Object.keys(row).length > 0) ratios[`${a}/${b}`] = row;
  }
  const goals = GOALS.map((g) => {
    const mine = median(g.scenario, g.parley, g.key);
    const value = g.versus ? mine / median(g.scenario, g.versus, g.key) : mine;
    if (!Number.isFinite(value)) return { label: g.label, value: null, met: null };
    return { label: g.label, value, met: g.atLeast !== undefined ? value >= g.atLeast : value <= g.atMost! };
  });
  return {
    ...input,
    targets: input.targets.map((name) => ({ name, label: TARGET_LABELS[name] })),
    results,
    ratios,
    goals,
    failures,
  };
}

function fmt(v: number): string {
  if (!Number.isFinite(v)) return '–';
  if (Math.abs(v) >= 100) return Math.round(v).toLocaleString('en-US');
  if (Math.abs(v) >= 10) return v.toFixed(1);
  return v.toFixed(2);
}

function cell(s: Spread | undefined): string {
  if (!s || s.n === 0) return '–';
  return s.n === 1 ? fmt(s.median) : `${fmt(s.median)} (${fmt(s.min)}–${fmt(s.max)})`;
}

/** The table as rows of cells: figures per target, generator and server CPU per scenario, then ratios. */
function tableRows(report: BenchReport): { head: string[]; body: string[][]; ratioHead: string[]; ratioBody: string[][] } {
  const names = report.targets.map((t) => t.name);
  const head = ['figure', ...names];
  const body: string[][] = [];
  const scenarios = [...new Set(ROWS.map((r) => r.scenario))].filter((s) => report.results[s]);
  for (const scenario of scenarios) {
    for (const r of ROWS.filter((row) => row.scenario === scenario)) {
      body.push([
        `${r.label} (${r.unit}, ${r.higherIsBetter ? 'higher' : 'lower'} is better)`,
        ...names.map((n) => cell(report.results[scenario]?.[n]?.[r.key])),
      ]);
    }
    body.push([`  ↳ load generator CPU (% of a core)`, ...names.map((n) => cell(report.results[scenario]?.[n]?.generatorCpu))]);
    body.push([`  ↳ server CPU (% of a core; + its Redis)`, ...names.map((n) => serverCell(report, scenario, n))]);
    if (names.some((n) => report.results[scenario]?.[n]?.syncWaitPct !== undefined)) {
      body.push([`  ↳ server waiting for disk syncs (% of time; mean ms, % over 5 ms)`, ...names.map((n) => syncCell(report, scenario, n))]);
    }
  }
  const ratioKeys = Object.keys(report.ratios);
  const ratioHead = ['ratio of medians', ...ratioKeys];
  const ratioBody = ROWS.filter((r) => report.results[r.scenario]).map((r) => [
    r.label,
    ...ratioKeys.map((k) => {
      const v = report.ratios[k]?.[`${r.scenario}.${r.key}`];
      return v === undefined ? '–' : `${v.toFixed(2)}×`;
    }),
  ]);
  return { head, body, ratioHead, ratioBody };
}

function serverCell(report: BenchReport, scenario: ScenarioName, target: TargetName): string {
  const figures = report.results[scenario]?.[target];
  if (!figures) return '–';
  const redis = figures.redisCpu;
  return redis ? `${fmt(figures.serverCpu!.median)} + ${fmt(redis.median)}` : fmt(figures.serverCpu!.median);
}

/** Medians of the time a Parley target on the embedded store spent in synced commits, or '–' for the others. */
function syncCell(report: BenchReport, scenario: ScenarioName, target: TargetName): string {
  const f = report.results[scenario]?.[target];
  if (f?.syncWaitPct === undefined) return '–';
  return `${fmt(f.syncWaitPct.median)} (${fmt(f.syncMeanMs!.median)} ms, ${fmt(f.syncOver5msPct!.median)} %)`;
}

function aligned(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => [...(r[i] ?? '')].length)));
  return rows.map((r) => r.map((c, i) => c + ' '.repeat(widths[i]! - [...c].length)).join('  ')).join('\n');
}

function goalLines(report: BenchReport): string[] {
  return report.goals.map((g) => `${g.met === null ? '?   ' : g.met ? 'MET ' : 'MISS'} ${g.label}: ${g.value === null ? 'not measured' : fmt(g.value)}`);
}

function footer(report: BenchReport): string {
  const m = report.machine;
  return `${m.cpus} × ${m.cpuModel}, ${m.memoryGiB} GiB, Node ${m.node}; ${report.quick ? 'quick run' : 'full run'}, median (min–max) of ${report.reps} repetition(s), ${report.startedAt}`;
}

export function renderTerminal(report: BenchReport): string {
  const t = tableRows(report);
  const out = ['', aligned([t.head, ...t.body]), '', aligned([t.ratioHead, ...t.ratioBody]), '', ...goalLines(report), '', footer(report)];
  for (const f of report.failures) out.push(`FAILED ${f.scenario} on ${f.target} (rep ${f.rep + 1}): ${f.error}`);
  return out.join('\n') + '\n';
}

export function renderMarkdown(report: BenchReport): string {
  const t = tableRows(report);
  const md = (rows: string[][]) => [rows[0]!, rows[0]!.map(() => '---'), ...rows.slice(1)].map((r) => `| ${r.join(' | ')} |`).join('\n');
  return [md([t.head, ...t.body]), '', md([t.ratioHead, ...t.ratioBody]), '', ...goalLines(report).map((l) => `- ${l}`), '', footer(report), ''].join('\n');
}
