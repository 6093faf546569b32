/**
 * Resolves once `count` of `events` match, those recorded already or to come (the recorder calls each of `listeners`
 * after recording one); rejects with `timedOut()` after `timeoutMs`, leaving nothing behind either way.
 */
export function waitForMatches<T>(
  events: readonly T[],
  listeners: Set<() => void>,
  match: (e: T) => boolean,
  count: number,
  timeoutMs: number,
  timedOut: () => Error,
): Promise<T[]> {
  return new Promise((resolve, reject) => {
    const check = () => {
      const found = events.filter(match);
      if (found.length < count) return;
      cleanup();
      resolve(found);
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(timedOut());
    }, timeoutMs);
    const cleanup = () => {
      clearTimeout(timer);
      listeners.delete(check);
    };
    listeners.add(check);
    check();
  });
}
