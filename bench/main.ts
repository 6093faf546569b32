/**
 * `npm run bench`: Parley (standalone and on Redis) against bare Aedes, the
 * stock Aedes + Redis pair and Mosquitto, in one interleaved run on loopback.
 * Prints a table, writes JSON (and the table as Markdown) to bench/results/.
 *
 *   npm run bench -- [--quick] [--reps N] [--scenarios a,b] [--targets a,b] [--out FILE] [--profile DIR]
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { connectClient, endClient, registerUser } from '../test/support/mqtt-user.js';
import { REPO_ROOT } from '../test/support/parley-server.js';
import { LoadClient, openAll, type Endpoint } from './load-client.js';
import { buildReport, renderMarkdown, renderTerminal, type BenchRecord } from './report.js';
import { FULL, QUICK, RUNNERS, SCENARIOS, castFor, usersFor, type BenchSettings, type Cast, type RunResult, type ScenarioName } from './scenarios.js';
import { TARGET_SCENARIOS, TARGETS, mosquittoInstalled, startTarget, type Target, type TargetName } from './targets.js';

const BENCH_DIR = import.meta.dirname;
const PASSWORD = 'bench password 1';
const REGISTER_CONCURRENCY = 4;
/**
 * What --quick runs unless told otherwise: not idle memory, whose growth over a quick run's 20 users is smaller than
 * the resident set's own noise (it came out negative); it needs the full run's 1,000 (`--scenarios idle` still runs it).
 */
const QUICK_SCENARIOS = SCENARIOS.filter((s) => s !== 'idle');

interface Options {
  quick: boolean;
  reps: number;
  scenarios: ScenarioName[];
  targets: TargetName[];
  out: string;
  /** Where Parley's V8 CPU profiles go (`--cpu-prof`), if anywhere. */
  profile?: string;
}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean', default: false },
      reps: { type: 'string' },
      scenarios: { type: 'string' },
      targets: { type: 'string' },
      out: { type: 'string' },
      profile: { type: 'string' },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(
      `usage: npm run bench -- [--quick] [--reps N] [--scenarios ${SCENARIOS.join(',')}] [--targets ${TARGETS.join(',')}] [--out FILE] [--profile DIR]\n`,
    );
    process.exit(0);
  }
  const list = <T extends string>(raw: string | undefined, all: readonly T[], what: string): T[] => {
    if (raw === undefined) return [...all];
    const picked = raw.split(',').map((s) => s.trim()) as T[];
    const bad = picked.filter((p) => !all.includes(p));
    if (bad.length > 0 || picked.length === 0) throw new Error(`unknown ${what}: ${bad.join(', ')} (choose from ${all.join(', ')})`);
    return picked;
  };
  // --quick is for iterating: one repetition unless asked; the medians of three come from the full run.
  const reps = values.reps === undefined ? (values.quick ? 1 : 3) : Number(values.reps);
  if (!Number.isInteger(reps) || reps < 1 || reps > 50) throw new Error('--reps must be a whole number 1–50');
  let targets = list(values.targets, TARGETS, 'target');
  if (targets.includes('mosquitto') && !mosquittoInstalled()) {
    if (values.targets !== undefined) throw new Error('mosquitto is not installed (apt-get install mosquitto)');
    process.stderr.write('mosquitto is not installed: measuring without it\n');
    targets = targets.filter((t) => t !== 'mosquitto');
  }
  return {
    quick: values.quick,
    reps,
    scenarios: values.scenarios === undefined && values.quick ? QUICK_SCENARIOS : list(values.scenarios, SCENARIOS, 'scenario'),
    targets,
    out: resolve(values.out ?? join(REPO_ROOT, 'bench/results/latest.json')),
    ...(values.profile !== undefined ? { profile: resolve(values.profile) } : {}),
  };
}

interface Listed {
  target: Target;
  endpoint: Endpoint;
  group: string;
}

/** How long a stop waits for targets still starting, so that none outlives the bench. */
const STARTS_SETTLE_MS = 30_000;

/** Waits until every promise has settled, or the bound has passed. */
function settledWithin(promises: Promise<unknown>[], ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const bound = new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)));
  return Promise.race([Promise.allSettled(promises).then(() => undefined), bound]).finally(() => clearTimeout(timer));
}

/** Whether a target takes part in a scenario (some bare-broker variants are there for one comparison only). */
function runsScenario(name: TargetName, scenario: ScenarioName): boolean {
  return (TARGET_SCENARIOS[name] ?? [scenario]).includes(scenario);
}

/** Registers the cast (Parley only) and creates the fan-out group; returns the group's id (Parley) or topic (bare). */
async function prepareTarget(target: Target, endpoint: Endpoint, cast: Cast, scenarios: ScenarioName[]): Promise<string> {
  if (target.protocol !== 'parley') return 'fan';
  await openAll(usersFor(cast, scenarios), REGISTER_CONCURRENCY, async (user) => {
    const reply = await registerUser(target.url, user, PASSWORD);
    if (!reply.ok) throw new Error(`registering ${user} on ${target.name}: ${reply.error.code}`);
    // The server remembers the registration's password for the whole run (PARLEY_LOGIN_CACHE_MS, see targets.ts), so
    // no login in a scenario runs the password KDF; this first one checks that, outside any measurement.
    await endClient(await connectClient(target.url, { username: user, password: PASSWORD, clientId: `${user}/warm`, connectTimeout: 60_000 }));
  });
  if (!scenarios.includes('fanout')) return '';
  const owner = await LoadClient.open(endpoint, cast.fanSender, { payloadBytes: 0 });
  try {
    const reply = await owner.request({ op: 'group.create', id: 'bench-group', name: 'bench fan-out', members: cast.fanMembers });
    const id = (reply.result as { id?: string } | undefined)?.id;
    if (reply.ok !== true || !id) throw new Error(`creating the fan-out group on ${target.name}: ${JSON.stringify(reply)}`);
    return id;
  } finally {
    await owner.close();
  }
}

async function main(): Promise<void> {
  const opts = parseOptions(process.argv.slice(2));
  const settings: BenchSettings = opts.quick ? QUICK : FULL;
  const cast = castFor(settings);
  const started = new Date();
  const log = (line: string) => process.stderr.write(`[bench ${((Date.now() - started.getTime()) / 1000).toFixed(0).padStart(4)}s] ${line}\n`);

  const targets: Listed[] = [];
  /** Set once the run is stopping: a target that comes up after that is stopped at once instead of listed. */
  let closing = false;
  /** Targets still starting (each settles once its target is listed, or stopped because the run is stopping). */
  const starting = new Set<Promise<unknown>>();
  const stopAll = async () => {
    closing = true;
    await settledWithin([...starting], STARTS_SETTLE_MS);
    const all = targets.splice(0);
    await Promise.all(all.map((t) => t.target.stop().catch(() => undefined)));
  };
  let interrupted = false;
  const onSignal = () => {
    interrupted = true;
    log('interrupted: stopping every process');
    void stopAll().then(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  /** Starts a target and lists it, so that it is stopped with the rest whatever happens next. */
  const bringUp = async (name: TargetName): Promise<Listed> => {
    log(`starting ${name}`);
    const listed = startTarget(name, BENCH_DIR, { profileDir: opts.profile, inspect: opts.scenarios.includes('idle') && runsScenario(name, 'idle') }).then(
      async (target) => {
        if (closing) {
          await target.stop();
          throw new Error(`${name}: the run stopped while it started`);
        }
        const endpoint: Endpoint = {
          url: target.url,
          protocol: target.protocol,
          password: PASSWORD,
          ...(target.persistentSessions ? { persistentSessions: true } : {}),
          ...(target.subscribeQos !== undefined ? { subscribeQos: target.subscribeQos } : {}),
        };
        const entry: Listed = { target, endpoint, group: '' };
        targets.push(entry);
        return entry;
      },
    );
    starting.add(listed);
    try {
      const entry = await listed;
      entry.group = await prepareTarget(entry.target, entry.endpoint, cast, opts.scenarios);
      log(`${name} ready`);
      return entry;
    } catch (e) {
      log(`${name} failed to start: ${e instanceof Error ? e.message : String(e)}`);
      throw e;
    } finally {
      starting.delete(listed);
    }
  };

  const records: BenchRecord[] = [];
  try {
    // Started and prepared side by side (nothing is measured yet). The first failure ends the run; the finally stops
    // every target, and any still starting once it has come up.
    const ready = await Promise.all(opts.targets.map(bringUp));
    // The runs below visit the targets in the order given, whatever order they came up in.
    targets.splice(0, targets.length, ...ready);
    for (let rep = 0; rep < opts.reps; rep++) {
      for (const scenario of opts.scenarios) {
        // Interleaved: each repetition visits the targets in a rotated order, so drift (thermal, other load) spreads over all of them.
        const order = targets.map((_, i) => targets[(i + rep) % targets.length]!);
        for (const { target, endpoint, group } of order) {
          if (interrupted) return;
          if (!runsScenario(target.name, scenario)) continue;
          const death = target.death();
          if (death !== undefined) {
            records.push({ scenario, target: target.name, rep, failed: `the server is gone: it ${death.split('\n')[0]}` });
            continue;
          }
          const tag = `r${rep}${randomBytes(3).toString('hex')}`;
          let result: RunResult;
          try {
            result = await RUNNERS[scenario]({ target, endpoint, settings, cast, group, benchDir: BENCH_DIR, tag });
          } catch (e) {
            log(`${scenario} on ${target.name} failed: ${e instanceof Error ? e.message : String(e)}`);
            const died = target.death();
            if (died !== undefined) log(`${target.name} ${died}`);
            records.push({ scenario, target: target.name, rep, failed: e instanceof Error ? e.message : String(e) });
            continue;
          }
          records.push({ scenario, target: target.name, rep, ...result });
          log(
            `${scenario} rep ${rep + 1}/${opts.reps} ${target.name}: ${Object.entries(result.values)
              .map(([k, v]) => `${k}=${v.toFixed(1)}`)
              .join(' ')} (gen ${result.generatorCpu.toFixed(0)}% cpu, server ${result.serverCpu.toFixed(0)}%${
              result.redisCpu !== undefined ? `, redis ${result.redisCpu.toFixed(0)}%` : ''
            }${
              result.sync
                ? `; syncs ${result.sync.commitsPerSec.toFixed(0)}/s, ${result.sync.waitPct.toFixed(0)}% of the time, mean ${result.sync.meanMs.toFixed(2)} ms, ${result.sync.over5msPct.toFixed(1)}% over 5 ms`
                : ''
            })`,
          );
        }
      }
    }
  } finally {
    await stopAll();
  }

  const machine = {
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model ?? 'unknown',
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    node: process.version,
    platform: process.platform,
  };
  const report = buildReport({ startedAt: started.toISOString(), machine, quick: opts.quick, reps: opts.reps, settings, targets: opts.targets, records });
  mkdirSync(dirname(opts.out), { recursive: true });
  writeFileSync(opts.out, JSON.stringify(report, null, 2) + '\n');
  writeFileSync(opts.out.replace(/\.json$/, '') + '.md', renderMarkdown(report));
  process.stdout.write(renderTerminal(report));
  process.stdout.write(`\nwritten: ${opts.out}\n`);
}

main().catch((e: unknown) => {
  process.stderr.write(`bench failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exitCode = 1;
});
