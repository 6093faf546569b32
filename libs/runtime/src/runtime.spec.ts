import { afterEach, describe, expect, it, vi } from 'vitest';
import { loadConfig } from '#libs/config';
import { routeConsoleToLog } from './runtime.js';

describe('routeConsoleToLog', () => {
  const saved = { ...console };
  afterEach(() => {
    Object.assign(console, saved);
    vi.restoreAllMocks();
  });

  it('makes what a library prints with console JSON log lines on stdout, a trace with where it was called from', () => {
    const written: string[] = [];
    vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => (written.push(String(chunk)), true));
    routeConsoleToLog(loadConfig({}));
    console.error('Write error:', new Error('No space left on device'));
    console.trace('where from');
    const lines = written
      .join('')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { level: string; message: Record<string, string> });
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatchObject({ level: 'error', message: { event: 'library_output', console: 'error' } });
    expect(lines[0]!.message.text).toMatch(/^Write error: Error: No space left on device\n\s+at /);
    expect(lines[1]).toMatchObject({ level: 'error', message: { event: 'library_output', console: 'trace', text: 'where from' } });
    expect(lines[1]!.message.stack).toMatch(/runtime\.spec\.ts/);
  });
});
