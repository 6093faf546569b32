import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll } from 'vitest';

/**
 * A small file system of its own to fill (a tmpfs of `size`, e.g. `3m`), for tests of a full disk, mounted before the
 * tests of the describe block that asks for it and taken away after them; so a run whose filter (`-t`) leaves out every
 * one of them mounts nothing. Mounting needs root with the right to mount (a container's root may lack it), as the
 * networks test needs its namespaces: null otherwise, and the tests skip.
 */
export function mountSmallDisk(size: string): { readonly dir: string; unmount: () => void } | null {
  if (!canMount()) return null;
  let dir: string | undefined;
  const unmount = (): void => {
    if (dir === undefined) return;
    spawnSync('umount', [dir]);
    rmSync(dir, { recursive: true, force: true });
    dir = undefined;
  };
  beforeAll(() => {
    const made = mkdtempSync(join(tmpdir(), 'parley-full-disk-'));
    const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', made]);
    if (mounted.status !== 0) {
      rmSync(made, { recursive: true, force: true });
      throw new Error(`could not mount a ${size} tmpfs as root: ${mounted.stderr.toString().trim()}`);
    }
    dir = made;
  });
  afterAll(unmount);
  return {
    get dir(): string {
      if (dir === undefined) throw new Error('the small disk is mounted only while its tests run');
      return dir;
    },
    unmount,
  };
}

let mountable: boolean | undefined;

/** Whether this process may mount a tmpfs: tried once, on a throwaway mount taken away at once. */
function canMount(): boolean {
  if (mountable !== undefined) return mountable;
  if (process.getuid?.() !== 0) return (mountable = false);
  const probe = mkdtempSync(join(tmpdir(), 'parley-mount-probe-'));
  mountable = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', probe]).status === 0;
  if (mountable) spawnSync('umount', [probe]);
  rmSync(probe, { recursive: true, force: true });
  return mountable;
}

/**
 * Fills what is left of the disk at `dir` with ballast files, `ballast-<size>-<n>`, of each of `sizes` in turn (the big
 * first, then smaller ones towards its last block); returns their paths.
 */
export function fillDisk(dir: string, sizes: number[] = [256 * 1024, 4096, 1]): string[] {
  const ballast: string[] = [];
  for (const size of sizes) {
    for (let i = 0; i < 100_000; i++) {
      const path = join(dir, `ballast-${size}-${i}`);
      try {
        writeFileSync(path, Buffer.alloc(size));
        ballast.push(path);
      } catch {
        rmSync(path, { force: true });
        break;
      }
    }
  }
  return ballast;
}
