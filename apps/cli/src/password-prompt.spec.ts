import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { canPrompt, promptPassword } from './password-prompt.js';
import { UsageError } from './settings.js';

/** A terminal's input the test types into, and what the prompt writes. */
function terminal() {
  const input = new PassThrough();
  const written: string[] = [];
  return { input, written, io: { input, output: { write: (s: string) => written.push(s) > 0 } } };
}

describe('promptPassword', () => {
  it('reads a line without showing any of it, and ends the prompt’s line', async () => {
    const t = terminal();
    const asked = promptPassword('password for ann: ', t.io);
    t.input.write('correct horse\r');
    expect(await asked).toBe('correct horse');
    expect(t.written.join('')).toBe('password for ann: \n');
  });

  it('gives up with a usage error when the input ends (Ctrl-D) before a line', async () => {
    const t = terminal();
    const asked = promptPassword('password for ann: ', t.io);
    t.input.end();
    await expect(asked).rejects.toBeInstanceOf(UsageError);
  });

  it('asks only where a person types at a terminal: stdin and stderr both one', () => {
    expect(canPrompt({ input: { isTTY: true }, output: { isTTY: true } })).toBe(true);
    expect(canPrompt({ input: { isTTY: false }, output: { isTTY: true } })).toBe(false);
    expect(canPrompt({ input: { isTTY: true }, output: {} })).toBe(false);
  });
});
