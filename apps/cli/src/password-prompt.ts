import { createInterface } from 'node:readline';
import { Writable } from 'node:stream';
import { UsageError } from './settings.js';

/** Where a prompt reads and writes: the terminal (stdin, and stderr, so that stdout keeps only a command's output). */
export interface PromptIo {
  input: NodeJS.ReadableStream & { isTTY?: boolean };
  output: Pick<NodeJS.WriteStream, 'write'>;
}

const TERMINAL: PromptIo = { input: process.stdin, output: process.stderr };

/** Whether a password can be asked for: stdin and stderr are a terminal, where a person can type it unseen. */
export function canPrompt(io: { input: { isTTY?: boolean }; output: { isTTY?: boolean } } = TERMINAL as never): boolean {
  return io.input.isTTY === true && io.output.isTTY === true;
}

/**
 * Asks for a password at the terminal, without showing what is typed (nothing, not even stars: its length is no one's
 * business), as `ssh` and `sudo` do. A password given as a flag shows in `ps` and the shell's history. Ctrl-C stops the
 * command as it would anywhere else (SIGINT, exit 130); Ctrl-D gives up with a usage error.
 */
export async function promptPassword(question: string, io: PromptIo = TERMINAL): Promise<string> {
  io.output.write(question);
  // What is typed is echoed into nothing; the terminal itself is in raw mode meanwhile (readline sets it, and back).
  const silent = new Writable({ write: (_chunk, _encoding, done) => done() });
  const rl = createInterface({ input: io.input, output: silent, terminal: true });
  try {
    return await new Promise<string>((resolve, reject) => {
      rl.once('line', resolve);
      rl.once('close', () => reject(new UsageError('no password given')));
      rl.once('SIGINT', () => {
        rl.close();
        process.kill(process.pid, 'SIGINT');
      });
    });
  } finally {
    rl.close();
    io.output.write('\n');
  }
}
