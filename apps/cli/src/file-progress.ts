import { formatBytes } from '#libs/protocol';
import type { Printer } from './output.js';

const DRAW_AFTER_MS = 300;
const REDRAW_MS = 100;
const BAR_WIDTH = 24;

/**
 * Progress of one transfer: with --json, `progress` lines (at most one per
 * percent, and the last); for people, a bar on stderr, only on a terminal and
 * only once the transfer has taken more than a moment.
 */
export interface BarOptions {
  /** Where the bar is drawn (stderr); only a terminal gets one. */
  stream?: Pick<NodeJS.WriteStream, 'isTTY' | 'write'>;
  /** Called once the bar's line is ended: the screen has one row more (`parley chat` counts its rows). */
  onLineEnd?: () => void;
  now?: () => number;
}

export class TransferProgress {
  private readonly started: number;
  private lastDraw = 0;
  private lastPercent = -1;
  private drawn = false;
  private readonly stream: Pick<NodeJS.WriteStream, 'isTTY' | 'write'>;
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
    const percent = this.total === 0 ? 100 : Math.floor((bytes / this.total) * 100);
    if (this.printer.json) {
      if (percent === this.lastPercent && bytes !== this.total) return;
      this.lastPercent = percent;
      this.printer.emit(null, { type: 'progress', direction: this.direction, offer: this.offer, name: this.name, bytes, total: this.total });
      return;
    }
    if (!this.stream.isTTY) return;
    const now = this.now();
    if (now - this.started < DRAW_AFTER_MS || (now - this.lastDraw < REDRAW_MS && bytes !== this.total)) return;
    this.lastDraw = now;
    this.drawn = true;
    const filled = Math.round((percent / 100) * BAR_WIDTH);
    const bar = '#'.repeat(filled) + '-'.repeat(BAR_WIDTH - filled);
    const verb = this.direction === 'upload' ? '↑' : '↓';
    this.stream.write(`\r${verb} ${this.name} [${bar}] ${String(percent).padStart(3)}% ${formatBytes(bytes)} / ${formatBytes(this.total)}\u001b[K`);
  }

  /** Ends the bar's line (if one was drawn). */
  done(): void {
    if (!this.drawn) return;
    this.stream.write('\n');
    this.drawn = false;
    this.bar.onLineEnd?.();
  }
}
