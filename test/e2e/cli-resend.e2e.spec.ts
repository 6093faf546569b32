import { afterAll, beforeAll, expect, it } from 'vitest';
import { startAnswerCuttingProxy, type AnswerCuttingProxy } from '../support/answer-cutting-proxy.js';
import { runCli } from '../support/cli.js';
import { startParley, type ParleyServer } from '../support/parley-server.js';
import { TestUsers } from '../support/test-users.js';

/**
 * `parley send` when the connection drops after the message went out and before the server's answer came: the real
 * server, the real CLI, and a proxy between them that loses the answer (the server has stored the message by then).
 */
let server: ParleyServer;
let proxy: AnswerCuttingProxy;

beforeAll(async () => {
  server = await startParley();
  proxy = await startAnswerCuttingProxy({ host: '127.0.0.1', port: server.mqttPort });
});

afterAll(async () => {
  await proxy?.close();
  await server?.dispose();
});

it(
  'parley send (and a group change) is done once when its answer is lost: it connects again and sends the same id, or names the id that makes running it again safe',
  { timeout: 60_000 },
  async () => {
    const users = new TestUsers(() => [server.mqttUrl]);
    const [alice, bob] = [await users.fresh('alice'), await users.fresh('bob')];
    const through = (user: string) => ({ PARLEY_SERVER: proxy.url, PARLEY_USER: user, PARLEY_PASSWORD: users.password });
    const direct = (user: string) => ({ PARLEY_SERVER: server.mqttUrl, PARLEY_USER: user, PARLEY_PASSWORD: users.password });

    // An id the server would refuse is a usage mistake, said before connecting.
    const bad = await runCli(['--json', 'send', bob, 'hi', '--id', 'no spaces'], direct(alice));
    expect(bad.code).toBe(2);
    expect(bad.json).toEqual([{ type: 'error', code: 'usage', message: '--id must be 1–64 characters of A-Z a-z 0-9 _ . : - (got "no spaces")' }]);

    // The answer is lost with the connection; the CLI connects again and gets it, for the same id.
    proxy.cuts = 1;
    const first = await runCli(['--json', 'send', bob, 'stored once'], through(alice));
    expect(first.code, first.stdout + first.stderr).toBe(0);
    expect(proxy.cut).toBe(1);
    // bob is offline: `offline` follows.
    expect(first.json).toEqual([expect.objectContaining({ type: 'accepted', to: bob, seq: 1 }), expect.objectContaining({ type: 'offline', user: bob })]);
    const firstId = first.json[0]!.id as string;

    // A group change goes the same way: made once, not a second group of that name.
    proxy.cuts = 1;
    const created = await runCli(['--json', 'group', 'create', 'crew', bob], through(alice));
    expect(created.code, created.stdout + created.stderr).toBe(0);
    expect(proxy.cut).toBe(2);
    const groups = await runCli(['--json', 'group', 'list'], direct(bob));
    expect(groups.json.map((g) => [g.type, g.name, g.id])).toEqual([['group', 'crew', created.json[0]!.id]]);

    // The answer is lost, and the server cannot be reached again: the outcome is unknown, and the error names the id.
    proxy.cuts = 1;
    proxy.onCut = () => (proxy.refusing = true);
    const started = Date.now();
    const second = await runCli(['--json', 'send', bob, 'maybe stored'], through(alice));
    expect(second.code, second.stdout + second.stderr).toBe(1);
    expect(proxy.cut).toBe(3);
    // A few tries, not the whole request timeout (10 s).
    expect(Date.now() - started).toBeLessThan(9000);
    expect(second.json).toEqual([{ type: 'error', code: 'failed', message: expect.any(String), id: expect.any(String) }]);
    const secondId = second.json[0]!.id as string;
    expect(second.json[0]!.message).toBe(
      `the connection to the server closed before it answered, and connecting again failed: it may or may not have been done; running the same command again with --id ${secondId} is safe: the message is stored once`,
    );
    proxy.refusing = false;
    proxy.onCut = () => undefined;

    // Run again with that id: the answer to the message the server had stored, not a second one.
    const again = await runCli(['send', bob, 'maybe stored', '--id', secondId], direct(alice));
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout.split('\n')[0]).toBe('accepted (seq 2)');

    const history = await runCli(['--json', 'history', alice], direct(bob));
    expect(history.code, history.stderr).toBe(0);
    expect(history.json.map((m) => [m.seq, m.id, m.text])).toEqual([
      [1, firstId, 'stored once'],
      [2, secondId, 'maybe stored'],
    ]);
  },
);
