import { describe, expect, it } from 'vitest';
import { formatBytes, formatBytesAgainst } from './byte-sizes.js';

describe('byte sizes for people', () => {
  it('reads sizes in binary units with one decimal', () => {
    expect([formatBytes(12), formatBytes(1536), formatBytes(3 * 1024 * 1024), formatBytes(13_107_200), formatBytes(2 ** 30)]).toEqual([
      '12 B',
      '1.5 KiB',
      '3.0 MiB',
      '12.5 MiB',
      '1.0 GiB',
    ]);
    // A figure that rounds up to 1024 of a unit reads as one of the next.
    expect([formatBytes(1023), formatBytes(1024 * 1024 - 1), formatBytes(2 ** 30 - 1)]).toEqual(['1023 B', '1.0 MiB', '1.0 GiB']);
  });

  it('never makes a size over its limit look equal to it', () => {
    expect(formatBytesAgainst(13_107_200, 10 * 1024 * 1024)).toEqual(['12.5 MiB', '10.0 MiB']);
    expect(formatBytesAgainst(16 * 1024 * 1024 + 1, 16 * 1024 * 1024)).toEqual(['16.0 MiB (16777217 bytes)', '16.0 MiB (16777216 bytes)']);
  });
});
