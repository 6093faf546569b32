import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../support/parley-server.js';

const run = promisify(execFile);

/**
 * `npm run bench -- --quick` runs end to end and writes its JSON. It asserts
 * the shape of the report, never a time or a rate: the benchmark is measured
 * by people, not judged by the test suite. `--ignore-scripts` skips the
 * prebench build (`npm test` has built already, and a rebuild would pull
 * dist/ from under the other specs).
 */
describe('npm run bench', () => {
  const dir = mkdtempSync(join(tmpdir(), 'parley-bench-smoke-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it(
    'runs a quick pass over Parley and bare Aedes (the idle scenario collecting garbage in both through their inspectors) and writes the JSON report and the Markdown table',
    { timeout: 120_000 },
    async () => {
      const out = join(dir, 'bench.json');
      const { stdout } = await run(
        'npm',
        ['run', 'bench', '--ignore-scripts', '--', '--quick', '--reps', '1', '--scenarios', 'drain,idle', '--targets', 'parley,aedes', '--out', out],
        { cwd: REPO_ROOT, timeout: 110_000, maxBuffer: 16 * 1024 * 1024 },
      );
      expect(stdout).toContain('offline drain');

      const report = JSON.parse(readFileSync(out, 'utf8')) as {
        quick: boolean;
        targets: { name: string }[];
        failures: unknown[];
        results: Record<string, Record<string, Record<string, { median: number; n: number }>>>;
        ratios: Record<string, Record<string, number>>;
        machine: { cpus: number };
        records: { scenario: string; target: string; rep: number }[];
      };
      expect(report.quick).toBe(true);
      expect(report.failures).toEqual([]);
      expect(report.targets.map((t) => t.name)).toEqual(['parley', 'aedes']);
      // The targets start side by side (bare Aedes is up long before Parley), and are then run in the order asked for.
      expect(report.records.filter((r) => r.scenario === 'drain').map((r) => r.target)).toEqual(['parley', 'aedes']);
      for (const target of ['parley', 'aedes']) {
        const drain = report.results.drain?.[target];
        expect(drain?.msgPerSec?.n).toBe(1);
        expect(drain?.msgPerSec?.median).toBeGreaterThan(0);
        expect(drain?.generatorCpu?.n).toBe(1);
        // Memory is read after a garbage collection in the server: a failed collection would have failed the run. Both
        // are Node servers, so both have the heap figure too (read through the inspector).
        expect(Number.isFinite(report.results.idle?.[target]?.mibPer1000?.median)).toBe(true);
        expect(Number.isFinite(report.results.idle?.[target]?.heapMibPer1000?.median)).toBe(true);
      }
      // Parley on the embedded store also says how long it waited for the disk (from its commit histogram); a bare broker has no disk.
      expect(Number.isFinite(report.results.drain?.parley?.syncWaitPct?.median)).toBe(true);
      expect(Number.isFinite(report.results.drain?.parley?.syncMeanMs?.median)).toBe(true);
      expect(report.results.drain?.aedes?.syncWaitPct).toBeUndefined();
      expect(report.ratios['parley/aedes']?.['drain.msgPerSec']).toBeGreaterThan(0);
      expect(report.machine.cpus).toBeGreaterThan(0);
      const markdown = readFileSync(out.replace(/\.json$/, '.md'), 'utf8');
      expect(markdown).toContain('| offline drain');
      expect(markdown).toContain('waiting for disk syncs');
      expect(markdown).toContain('| idle memory per 1,000 users (JS heap + buffers)');
    },
  );
});
