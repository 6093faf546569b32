import request from 'supertest';

/** The Prometheus text exposition a process serves on /metrics; rejects when it is not served within `timeoutMs`. */
export async function scrape(httpUrl: string, timeoutMs = 10_000): Promise<string> {
  return (await request(httpUrl).get('/metrics').timeout(timeoutMs).expect(200)).text;
}

/**
 * The value of the sample `name{labels}` (exactly those labels) in a
 * Prometheus text exposition, or undefined when there is none.
 */
export function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  const wanted = Object.entries(labels);
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = new Map([...(m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((l) => [l[1]!, l[2]!]));
    if (have.size === wanted.length && wanted.every(([k, v]) => have.get(k) === v)) return Number(m[3]);
  }
  return undefined;
}
