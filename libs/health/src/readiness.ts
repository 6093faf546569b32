import { withDeadline } from './deadline.js';

/** A named check that says whether this process can do its work right now. */
export type ReadinessCheck = () => Promise<boolean> | boolean;

/** The checks behind /readyz. Modules register theirs at start. */
export class Readiness {
  private readonly checks = new Map<string, ReadinessCheck>();

  register(name: string, check: ReadinessCheck): void {
    this.checks.set(name, check);
  }

  /** Runs every check; a check that throws or takes longer than the timeout counts as not ready. */
  async report(timeoutMs = 2000): Promise<{ ready: boolean; checks: Record<string, boolean> }> {
    const entries = await Promise.all(
      [...this.checks].map(async ([name, check]) => {
        try {
          return [name, await withDeadline(Promise.resolve(check()), timeoutMs)] as const;
        } catch {
          return [name, false] as const;
        }
      }),
    );
    const checks = Object.fromEntries(entries);
    return { ready: entries.every(([, ok]) => ok), checks };
  }
}
