import WebSocket from 'ws';

/**
 * Node flags that open the V8 inspector on a free loopback port. A Node target started with them can be asked, from
 * outside, for a full garbage collection (`collectGarbage`), so that its resident memory is read with no garbage in
 * it: the idle scenario compares servers by memory per connection, and garbage waiting for a collection (the login
 * burst's, more in one server than another) made that figure swing by tens of MiB from one repetition to the next.
 */
export const INSPECT_ARGS = ['--inspect=127.0.0.1:0'];

/** The inspector address a Node process printed on its stderr at start (`Debugger listening on ws://…`). */
export function inspectorUrlIn(lines: readonly string[]): string | undefined {
  for (const line of lines) {
    const m = /Debugger listening on (ws:\/\/\S+)/.exec(line);
    if (m) return m[1];
  }
  return undefined;
}

const ANSWER_MS = 30_000;

/** Runs a full garbage collection in the process behind the inspector address, and resolves once it is done. */
export async function collectGarbage(url: string): Promise<void> {
  const ws = new WebSocket(url);
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no answer from the inspector at ${url} within ${ANSWER_MS} ms`)), ANSWER_MS);
      ws.once('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
      ws.on('message', (data: Buffer) => {
        const reply = JSON.parse(data.toString('utf8')) as { id?: number; error?: { message: string } };
        if (reply.id !== 1) return;
        clearTimeout(timer);
        if (reply.error) reject(new Error(`HeapProfiler.collectGarbage: ${reply.error.message}`));
        else resolve();
      });
      ws.once('open', () => ws.send(JSON.stringify({ id: 1, method: 'HeapProfiler.collectGarbage' })));
    });
  } finally {
    ws.terminate();
  }
}
