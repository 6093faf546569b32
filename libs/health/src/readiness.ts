import { withDeadline } from './deadline.js';

/** A named check that says whether this process can do its work right now. */
export type ReadinessCheck = () => Promise<boolean> | boolean;

export interface ReadinessReport {
  /** Every required check passes. */
  ready: boolean;
  /** Every check by name, required or not. */
  checks: Record<string, boolean>;
  /** The checks that failed but do not make the process unready: it works, with less. */
  degraded: string[];
}

/** The checks behind /readyz. Modules register theirs at start. */
export class Readiness {
  private readonly checks = new Map<string, { check: ReadinessCheck; required: boolean }>();

  /**
   * A check of something the process cannot work without (`required`, the default), or of something it works without,
   * with less (a remote service every gateway shares: taking one gateway out of a load balancer for it helps no one,
   * and taking all of them out stops what still works).
   */
  register(name: string, check: ReadinessCheck, opts: { required?: boolean } = {}): void {
    this.checks.set(name, { check, required: opts.required ?? true });
  }

  /** The process is stopping: not ready from now on, whatever the other checks say (`running` fails). */
  stopping(): void {
    this.register('running', () => false);
  }

  /** Runs every check; a check that throws or takes longer than the timeout counts as failed. */
  async report(timeoutMs = 2000): Promise<ReadinessReport> {
    const entries = await Promise.all(
      [...this.checks].map(async ([name, { check, required }]) => {
        try {
          return { name, required, ok: await withDeadline(Promise.resolve(check()), timeoutMs) };
        } catch {
          return { name, required, ok: false };
        }
      }),
    );
    return {
      ready: entries.every((e) => e.ok || !e.required),
      checks: Object.fromEntries(entries.map((e) => [e.name, e.ok])),
      degraded: entries.filter((e) => !e.ok && !e.required).map((e) => e.name),
    };
  }
}
