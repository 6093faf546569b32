/**
 * Keeps a failure that repeats from flooding the log: the first of a kind in a window is logged, the rest of the window
 * only counted, and the next one logged says how many were left out (a full disk refuses every write at once, and one
 * line a second says as much as a thousand). Given `leftOutAtEnd`, a window that left some out says so as it ends,
 * whether or not another of its kind comes: a flood that stops is counted all the same.
 */
export class LogThrottle {
  private readonly windows = new Map<string, Window>();
  /** When ended windows were last dropped: at most once a window, so many kinds (addresses) do not cost a scan each. */
  private sweptAt = -Infinity;

  /** `burst`: how many of a kind are logged in one window before the rest are only counted. */
  constructor(
    private readonly windowMs = 10_000,
    private readonly now: () => number = () => performance.now(),
    private readonly burst = 1,
    /** Told, as a window ends, how many of a kind it left out (none told when none were); those are not counted again. */
    private readonly leftOutAtEnd?: (kind: string, leftOut: number) => void,
  ) {}

  /** Null when this one is left out; else how many of its kind were left out since the last one logged. */
  admit(kind: string): { leftOut: number } | null {
    const now = this.now();
    const w = this.windows.get(kind);
    if (w && now < w.until) {
      if (w.admitted < this.burst) {
        w.admitted++;
        return { leftOut: 0 };
      }
      if (w.left++ === 0 && this.leftOutAtEnd) setTimeout(LogThrottle.endWindow, w.until - now, this, kind, w).unref();
      return null;
    }
    // Windows that have ended are dropped as they are found: a kind seen once does not stay.
    if (this.windows.size > 1000 && now - this.sweptAt >= this.windowMs) {
      this.sweptAt = now;
      for (const [k, v] of this.windows) if (now >= v.until) this.windows.delete(k);
    }
    this.windows.set(kind, { until: now + this.windowMs, admitted: 1, left: 0 });
    return { leftOut: w?.left ?? 0 };
  }

  /**
   * A window's end: what it left out is told, unless the next of its kind has told it already (it replaced the window).
   * One function for every window's timer, not a closure per window.
   */
  private static endWindow(this: void, throttle: LogThrottle, kind: string, w: Window): void {
    if (throttle.windows.get(kind) !== w || w.left === 0) return;
    throttle.leftOutAtEnd?.(kind, w.left);
    w.left = 0;
  }

  /** As `admit`, as fields for the log line: null when left out, else `alikeLeftOut` when some were. */
  logFields(kind: string): { alikeLeftOut?: number } | null {
    const admitted = this.admit(kind);
    if (!admitted) return null;
    return admitted.leftOut > 0 ? { alikeLeftOut: admitted.leftOut } : {};
  }
}

interface Window {
  until: number;
  admitted: number;
  left: number;
}
