/** `12 B`, `1.5 KiB`, `3.0 MiB`: a size as people read it (binary units, one decimal). */
export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let value = n / 1024;
  let unit = 0;
  // Up a unit once the rounded figure would reach 1024: 1,048,575 bytes is 1.0 MiB, not 1024.0 KiB.
  while (Number(value.toFixed(1)) >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(1)} ${units[unit]}`;
}

/**
 * A size and the limit it is set against, as people read them: `12.5 MiB` and `10.0 MiB`. Where both would read the
 * same (a file one byte over the limit), each also gives its exact number of bytes, so the two never look equal.
 */
export function formatBytesAgainst(size: number, limit: number): [size: string, limit: string] {
  const [a, b] = [formatBytes(size), formatBytes(limit)];
  if (a !== b || size === limit) return [a, b];
  return [`${a} (${size} bytes)`, `${b} (${limit} bytes)`];
}
