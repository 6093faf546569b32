import { describe, expect, it } from 'vitest';
import { TransferProgress } from './file-progress.js';
import { Printer } from './output.js';

/** A terminal that records what is written to it, and a clock the test moves. */
function terminal(columns?: number) {
  const written: string[] = [];
  const clock = { now: 0 };
  return { written, clock, stream: { isTTY: true, columns, write: (s: string) => (written.push(s), true) }, now: () => clock.now };
}

describe('TransferProgress', () => {
  it('draws a bar only once a transfer takes more than a moment, and says when its line ends', () => {
    const t = terminal();
    let ended = 0;
    const bar = new TransferProgress(new Printer(false), 'download', 'f1', 'a.bin', 2048, { stream: t.stream, now: t.now, onLineEnd: () => ended++ });
    bar.update(512);
    expect(t.written).toEqual([]);
    t.clock.now = 1000;
    bar.update(1024);
    expect(t.written.at(-1)).toMatch(/^\r↓ a\.bin \[#{12}-{12}\] {2}50% 1\.0 KiB \/ 2\.0 KiB/);
    bar.update(2048);
    bar.done();
    expect(t.written.at(-1)).toBe('\n');
    expect(ended).toBe(1);
    // A quick transfer draws nothing, so its end adds no row.
    const quick = new TransferProgress(new Printer(false), 'upload', 'f2', 'b.bin', 10, { stream: t.stream, now: t.now, onLineEnd: () => ended++ });
    quick.update(10);
    quick.done();
    expect(ended).toBe(1);
  });

  it('says how fast the transfer goes and how long is left, once a second has passed, measured over the last seconds', () => {
    const t = terminal(200);
    const mib = 1024 * 1024;
    const bar = new TransferProgress(new Printer(false), 'upload', 'f1', 'big.iso', 100 * mib, { stream: t.stream, now: t.now });
    bar.update(0);
    t.clock.now = 500;
    bar.update(mib);
    expect(t.written.at(-1)).not.toMatch(/\/s|left/);
    t.clock.now = 2000;
    bar.update(4 * mib);
    // 4 MiB in 2 s: 2 MiB/s, 96 MiB left, 48 s.
    expect(t.written.at(-1)).toContain('4.0 MiB / 100.0 MiB  2.0 MiB/s, 0:48 left\u001b[K');
    // It slows to 0.5 MiB/s: after the window has moved past the fast start, the rate and time left follow.
    for (let s = 3; s <= 10; s++) {
      t.clock.now = s * 1000;
      bar.update(4 * mib + (s - 2) * (mib / 2));
    }
    expect(t.written.at(-1)).toMatch(/ 512\.0 KiB\/s, 3:04 left/);
    bar.update(100 * mib);
    expect(t.written.at(-1)).not.toMatch(/left/);
  });

  it('gives --json lines the rate once it is known', () => {
    const lines: unknown[] = [];
    const printer = new Printer(true, (line) => lines.push(JSON.parse(line)));
    const clock = { now: 0 };
    const progress = new TransferProgress(printer, 'download', 'f1', 'a.bin', 4000, { now: () => clock.now });
    progress.update(0);
    clock.now = 2000;
    progress.update(1000);
    expect(lines).toEqual([
      { type: 'progress', direction: 'download', offer: 'f1', name: 'a.bin', bytes: 0, total: 4000 },
      { type: 'progress', direction: 'download', offer: 'f1', name: 'a.bin', bytes: 1000, total: 4000, bytesPerSecond: 500 },
    ]);
  });

  it('fits its line to the terminal: the rate goes first, then the name is shortened', () => {
    const name = 'a-rather-long-file-name-for-a-narrow-terminal.tar.gz';
    const lines = new Map<number, string>();
    for (const columns of [130, 110, 80, 40, 20]) {
      const t = terminal(columns);
      const bar = new TransferProgress(new Printer(false), 'download', 'f1', name, 10_000, { stream: t.stream, now: t.now });
      bar.update(0);
      t.clock.now = 2000;
      bar.update(5000);
      const line = t.written.at(-1)!.slice('\r'.length, -'\u001b[K'.length);
      expect(line.length).toBeLessThan(columns);
      lines.set(columns, line);
    }
    expect(lines.get(130)).toBe(`↓ ${name} [############------------]  50% 4.9 KiB / 9.8 KiB  2.4 KiB/s, 0:02 left`);
    expect(lines.get(110)).toBe(`↓ ${name} [############------------]  50% 4.9 KiB / 9.8 KiB`);
    expect(lines.get(80)).toBe('↓ a-rather-long-file-name-fo… [############------------]  50% 4.9 KiB / 9.8 KiB');
    expect(lines.get(40)).toBe('↓ a-rather-long…  50% 4.9 KiB / 9.8 KiB');
    // Narrower than the figures themselves: what fits of the line, in one row.
    expect(lines.get(20)).toBe('↓ …  50% 4.9 KiB /…');
  });
});
