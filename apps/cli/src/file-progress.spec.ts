import { describe, expect, it } from 'vitest';
import { TransferProgress } from './file-progress.js';
import { Printer } from './output.js';

/** A terminal that records what is written to it, and a clock the test moves. */
function terminal() {
  const written: string[] = [];
  const clock = { now: 0 };
  return { written, clock, stream: { isTTY: true, write: (s: string) => (written.push(s), true) }, now: () => clock.now };
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
});
