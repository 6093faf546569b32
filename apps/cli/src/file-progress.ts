import { formatBytes } from '#libs/protocol';
import type { Printer } from './output.js';
import { shortened, terminalWidth } from './terminal-width.js';

const DRAW_AFTER_MS = 300;
const REDRAW_MS = 100;
const BAR_WIDTH = 24;
/** The rate is that of the last few seconds (a transfer that slows down says so soon), once a second has passed. */
const RATE_WINDOW_MS = 5000;
const RATE_AFTER_MS = 1000;
/** Columns of its name a bar keeps on a narrow terminal before it gives up the bar itself. */
const MIN_NAME_COLUMNS = 12;

/**
 * Progress of one transfer: with --json, `progress` lines (at most one per
 * percent, and the last); for people, a bar on stderr, only on a terminal and
 * only once the transfer has taken more than a moment. Both say how fast it goes
 * and, for people, how long is left, once that can be told.
 */
export interface BarOptions {
  /** Where the bar is drawn (stderr); only a terminal gets one, as wide as its `columns` allow. */
  stream?: Pick<NodeJS.WriteStream, 'isTTY' | 'write'> & { columns?: number };
  /** Called once the bar's line is ended: the screen has one row more (`parley chat` counts its rows). */
  onLineEnd?: () => void;
  now?: () => number;
}

export class TransferProgress {
  private readonly started: number;
  private lastDraw = 0;
  private lastPercent = -1;
  private drawn = false;
  /** Recent (time, bytes) points, oldest first: the rate is measured across them. */
  private readonly points: { at: number; bytes: number }[] = [];
  private readonly stream: NonNullable<BarOptions['stream']>;
  private readonly now: () => number;

  constructor(
    private readonly printer: Printer,
    private readonly direction: 'upload' | 'download',
    private readonly offer: string,
    private readonly name: string,
    private readonly total: number,
    private readonly bar: BarOptions = {},
  ) {
    this.stream = bar.stream ?? process.stderr;
    this.now = bar.now ?? Date.now;
    this.started = this.now();
  }

  update(bytes: number): void {
    const now = this.now();
    const rate = this.rateAt(now, bytes);
    const percent = this.total === 0 ? 100 : Math.floor((bytes / this.total) * 100);
    if (this.printer.json) {
      if (percent === this.lastPercent && bytes !== this.total) return;
      this.lastPercent = percent;
      const speed = rate === null ? {} : { bytesPerSecond: Math.round(rate) };
      this.printer.emit(null, { type: 'progress', direction: this.direction, offer: this.offer, name: this.name, bytes, total: this.total, ...speed });
      return;
    }
    if (!this.stream.isTTY) return;
    if (now - this.started < DRAW_AFTER_MS || (now - this.lastDraw < REDRAW_MS && bytes !== this.total)) return;
    this.lastDraw = now;
    this.drawn = true;
    this.stream.write(`\r${this.line(bytes, percent, rate)}\u001b[K`);
  }

  /**
   * Bytes a second over the last few seconds of this transfer (a resumed one counts from where it resumed), or null
   * while too little time has passed to tell.
   */
  private rateAt(now: number, bytes: number): number | null {
    this.points.push({ at: now, bytes });
    while (this.points.length > 2 && now - this.points[1]!.at >= RATE_WINDOW_MS) this.points.shift();
    const first = this.points[0]!;
    if (now - first.at < RATE_AFTER_MS) return null;
    return ((bytes - first.bytes) * 1000) / (now - first.at);
  }

  /**
   * The bar's line, fitted to the terminal (a line that wraps would leave its first row behind at each redraw): the
   * rate and time left go first, then the name is shortened.
   */
  private line(bytes: number, percent: number, rate: number | null): string {
    const filled = Math.round((percent / 100) * BAR_WIDTH);
    const verb = this.direction === 'upload' ? '↑' : '↓';
    const figures = `${String(percent).padStart(3)}% ${formatBytes(bytes)} / ${formatBytes(this.total)}`;
    const withBar = `[${'#'.repeat(filled)}${'-'.repeat(BAR_WIDTH - filled)}] ${figures}`;
    const speed = rate === null || bytes === this.total ? '' : `  ${formatBytes(Math.round(rate))}/s${timeLeft(this.total - bytes, rate)}`;
    // The last column is left free: some terminals wrap a line that fills it.
    const room = (this.stream.columns ?? Infinity) - 1;
    const fits = (rest: string) => terminalWidth(`${verb} ${this.name} ${rest}`) <= room;
    if (fits(`${withBar}${speed}`)) return `${verb} ${this.name} ${withBar}${speed}`;
    if (fits(withBar)) return `${verb} ${this.name} ${withBar}`;
    // A few characters of the name at least, then the bar goes before them.
    const rest = room - terminalWidth(`${verb}  ${withBar}`) >= MIN_NAME_COLUMNS ? withBar : figures;
    // Narrower still (under some 26 columns): whatever fits of the line.
    return shortened(`${verb} ${shortened(this.name, Math.max(1, room - terminalWidth(`${verb}  ${rest}`)))} ${rest}`, room);
  }

  /** Ends the bar's line (if one was drawn). */
  done(): void {
    if (!this.drawn) return;
    this.stream.write('\n');
    this.drawn = false;
    this.bar.onLineEnd?.();
  }
}

/** `, 1:05 left` (or `, 2:03:10 left`); nothing while no bytes move (no time can be told). */
function timeLeft(bytes: number, rate: number): string {
  if (rate <= 0) return '';
  const s = Math.ceil(bytes / rate);
  const [h, m, sec] = [Math.floor(s / 3600), Math.floor((s % 3600) / 60), s % 60];
  const two = (n: number) => String(n).padStart(2, '0');
  return `, ${h > 0 ? `${h}:${two(m)}` : String(m)}:${two(sec)} left`;
}
