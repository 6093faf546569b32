import type { ChildProcess } from 'node:child_process';
import WebSocket from 'ws';

/**
 * Node flags that open the V8 inspector on a free loopback port. A Node target started with them can be asked, from
 * outside, for a full garbage collection and then for its heap in use (`collectGarbage`), so that its memory is read
 * with no garbage in it: the idle scenario compares servers by memory per connection, and garbage waiting for a
 * collection (the login burst's, more in one server than another) made that figure swing by tens of MiB from one
 * repetition to the next.
 */
export const INSPECT_ARGS = ['--inspect=127.0.0.1:0'];

/** The inspector address a Node process printed on its stderr at start (`Debugger listening on ws://…`). */
function inspectorUrlIn(lines: readonly string[]): string | undefined {
  for (const line of lines) {
    const m = INSPECTOR_LINE.exec(line);
    if (m) return m[1];
  }
  return undefined;
}

const INSPECTOR_LINE = /Debugger listening on (ws:\/\/\S+)/;
/** The same, in raw output: only once its line has ended, so that a chunk cut inside the address is not taken for it. */
const INSPECTOR_LINE_ENDED = /Debugger listening on (ws:\/\/\S+)\r?\n/;
const INSPECTOR_LINE_MS = 10_000;

/**
 * The inspector address of a child that has started: from the output read so far (`lines`), or else from its stderr as
 * it comes. Node prints it before the program runs, but the child's stdout and stderr are separate pipes, so its
 * "listening" line on stdout may be read first (it was, with several servers starting at once).
 */
export function inspectorUrlOf(child: ChildProcess, lines: readonly string[], what: string): Promise<string> {
  const seen = inspectorUrlIn(lines);
  if (seen) return Promise.resolve(seen);
  const stderr = child.stderr;
  if (!stderr) return Promise.reject(new Error(`${what}: its stderr is not piped, so its inspector address cannot be read`));
  if (child.exitCode !== null || child.signalCode !== null) return Promise.reject(new Error(`${what} exited before printing its inspector address`));
  return new Promise((resolve, reject) => {
    let text = '';
    const finish = (outcome: () => void) => {
      clearTimeout(timer);
      stderr.off('data', onData);
      child.off('exit', onExit);
      outcome();
    };
    const onData = (chunk: Buffer | string) => {
      text += chunk.toString();
      // What came before this listener was attached went to `lines` only (read line by line): look there too.
      const url = INSPECTOR_LINE_ENDED.exec(text)?.[1] ?? inspectorUrlIn(lines);
      if (url) finish(() => resolve(url));
    };
    const onExit = () => finish(() => reject(new Error(`${what} exited before printing its inspector address`)));
    const timer = setTimeout(
      () =>
        finish(() =>
          reject(new Error(`${what}: no inspector address in its output within ${INSPECTOR_LINE_MS} ms (needed to collect garbage before reading memory)`)),
        ),
      INSPECTOR_LINE_MS,
    );
    stderr.on('data', onData);
    child.once('exit', onExit);
  });
}

const ANSWER_MS = 30_000;

/** What a Node process's JS keeps: V8's heap in use, and the memory of its buffers outside that heap (`external`). */
export interface HeapUse {
  heapUsed: number;
  external: number;
}

/** What the process reports of its memory, read in it through the inspector. */
const MEMORY_USAGE = 'JSON.stringify((({ heapUsed, external }) => ({ heapUsed, external }))(process.memoryUsage()))';

/**
 * Runs a full garbage collection in the process behind the inspector address, then reads its heap in use and its
 * buffers' memory (`process.memoryUsage()`), and resolves with them.
 */
export async function collectGarbage(url: string): Promise<HeapUse> {
  const ws = new WebSocket(url);
  try {
    return await new Promise<HeapUse>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no answer from the inspector at ${url} within ${ANSWER_MS} ms`)), ANSWER_MS);
      const fail = (e: Error) => {
        clearTimeout(timer);
        reject(e);
      };
      ws.once('error', fail);
      ws.on('message', (data: Buffer) => {
        const reply = JSON.parse(data.toString('utf8')) as { id?: number; error?: { message: string }; result?: { result?: { value?: unknown } } };
        if (reply.id === 1) {
          if (reply.error) return fail(new Error(`HeapProfiler.collectGarbage: ${reply.error.message}`));
          ws.send(JSON.stringify({ id: 2, method: 'Runtime.evaluate', params: { expression: MEMORY_USAGE, returnByValue: true } }));
        } else if (reply.id === 2) {
          const value = reply.result?.result?.value;
          const use = typeof value === 'string' ? (JSON.parse(value) as Partial<HeapUse>) : {};
          if (reply.error || typeof use.heapUsed !== 'number' || typeof use.external !== 'number')
            return fail(new Error(`reading process.memoryUsage(): ${reply.error?.message ?? JSON.stringify(reply.result)}`));
          clearTimeout(timer);
          resolve({ heapUsed: use.heapUsed, external: use.external });
        }
      });
      ws.once('open', () => ws.send(JSON.stringify({ id: 1, method: 'HeapProfiler.collectGarbage' })));
    });
  } finally {
    ws.terminate();
  }
}
