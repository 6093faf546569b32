import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import { startAnswerCuttingProxy, type AnswerCuttingProxy } from '../support/answer-cutting-proxy.js';
import { runCli } from '../support/cli.js';
import { startParley, type ParleyServer } from '../support/parley-server.js';
import { TestUsers } from '../support/test-users.js';

/**
 * `parley send` when the connection drops after the message went out and before the server's answer came: the real
 * server, the real CLI, and a proxy between them that loses the answer (the server has stored the message by then).
 */
let server: ParleyServer;
/** A server of its own, which knows none of the users: a login there is refused as a wrong password would be. */
let stranger: ParleyServer;
let proxy: AnswerCuttingProxy;
const CHEAP_HASHING = { PARLEY_PASSWORD_COST: '10' };

beforeAll(async () => {
  [server, stranger] = await Promise.all([startParley({ env: CHEAP_HASHING }), startParley({ env: CHEAP_HASHING })]);
  proxy = await startAnswerCuttingProxy({ host: '127.0.0.1', port: server.mqttPort });
});

afterAll(async () => {
  await proxy?.close();
  await Promise.all([server?.dispose(), stranger?.dispose()]);
});

/** A user's CLI settings through the proxy, and straight to the server. */
function logins(users: TestUsers) {
  const as = (url: string) => (user: string) => ({ PARLEY_SERVER: url, PARLEY_USER: user, PARLEY_PASSWORD: users.password });
  return { through: as(proxy.url), direct: as(server.mqttUrl) };
}

afterEach(() => {
  proxy.cuts = 0;
  proxy.ops = null;
  proxy.refusing = false;
  proxy.target = { host: '127.0.0.1', port: server.mqttPort };
  proxy.onCut = () => undefined;
});

it(
  'parley send (and a group change) is done once when its answer is lost: it connects again and sends the same id, or names the id that makes running it again safe',
  { timeout: 60_000 },
  async () => {
    const users = new TestUsers(() => [server.mqttUrl]);
    const [alice, bob] = [await users.fresh('alice'), await users.fresh('bob')];
    const { through, direct } = logins(users);

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

it(
  'a request sent again after its answer was lost reads as its first answer would have: read says it marked, group changes and file decisions say what they did',
  { timeout: 90_000 },
  async () => {
    const users = new TestUsers(() => [server.mqttUrl]);
    const [alice, bob, carol] = await Promise.all([users.fresh('alice'), users.fresh('bob'), users.fresh('carol')]);
    const { through, direct } = logins(users);
    /** Runs `parley ARGS` as `user` through the proxy, which loses the answer to its first request of `op`. */
    const cutOnce = async (user: string, op: string, args: string[]) => {
      const before = proxy.cut;
      proxy.ops = [op];
      proxy.cuts = 1;
      const run = await runCli(args, through(user));
      expect(run.code, run.stdout + run.stderr).toBe(0);
      expect(proxy.cut, `the answer to ${op} was lost`).toBe(before + 1);
      return run;
    };

    // The receipt moves alice's cursor, and its answer is lost: sent again, the server finds the cursor there already.
    expect((await runCli(['send', alice, 'one'], direct(bob))).code).toBe(0);
    const read = await cutOnce(alice, 'receipt', ['read', bob]);
    expect(read.stdout).toBe(`marked read up to #1 with ${bob}\n`);
    // Run again (not a resend), it is already read, and says so.
    const again = await runCli(['read', bob], direct(alice));
    expect(again.stdout).toBe(`read already up to #1 with ${bob}\n`);
    expect((await runCli(['send', alice, 'two'], direct(bob))).code).toBe(0);
    const readJson = await cutOnce(alice, 'receipt', ['--json', 'read', bob]);
    expect(readJson.json).toEqual([{ type: 'read', conv: expect.any(String), seq: 2, moved: true }]);

    // Each group change, its answer lost, says what it did: the server answers the same id as it did the first time.
    const made = await runCli(['--json', 'group', 'create', 'crew', bob], direct(alice));
    expect(made.code, made.stderr).toBe(0);
    const id = made.json[0]!.id as string;
    expect((await cutOnce(alice, 'group.rename', ['group', 'rename', id, 'team'])).stdout).toMatch(/^renamed: team \(/);
    const added = await cutOnce(alice, 'group.add', ['--json', 'group', 'add', id, carol]);
    expect(added.json).toEqual([expect.objectContaining({ type: 'group', id, members: [alice, bob, carol] })]);
    const removed = await cutOnce(alice, 'group.remove', ['--json', 'group', 'remove', id, carol]);
    expect(removed.json).toEqual([expect.objectContaining({ type: 'group', id, members: [alice, bob] })]);
    expect((await cutOnce(alice, 'group.owner', ['group', 'owner', id, bob])).stdout).toBe(`${bob} now owns team\n`);
    expect((await cutOnce(alice, 'group.leave', ['group', 'leave', id])).stdout).toBe('left team\n');
    expect((await cutOnce(bob, 'group.delete', ['group', 'delete', id])).stdout).toBe('deleted team\n');

    // An account registered, its answer lost: the same id and password are answered as the first time, not "taken".
    const dave = `dave${randomBytes(3).toString('hex')}`;
    expect((await cutOnce(dave, 'register', ['register'])).stdout).toBe(`registered ${dave}\n`);

    // A file declined, and one withdrawn, their answers lost.
    const dir = mkdtempSync(join(tmpdir(), 'parley-resend-'));
    try {
      writeFileSync(join(dir, 'a.txt'), 'a file');
      writeFileSync(join(dir, 'b.txt'), 'b file');
      const offered = await Promise.all(['a.txt', 'b.txt'].map((f) => runCli(['--json', 'file', 'send', alice, join(dir, f)], direct(bob))));
      const [declining, withdrawing] = offered.map((o) => {
        expect(o.code, o.stderr).toBe(0);
        return (o.json.find((l) => l.type === 'offered')!.offer as { id: string }).id;
      });
      expect((await cutOnce(alice, 'file.decline', ['file', 'decline', declining!])).stdout).toMatch(/^declined a\.txt \(6 B\) from /);
      expect((await cutOnce(bob, 'file.cancel', ['file', 'cancel', withdrawing!])).stdout).toMatch(/^withdrew b\.txt/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
);

it(
  'parley send whose answer is lost, and whose login is refused as it connects again, names the id that makes running it again safe',
  { timeout: 60_000 },
  async () => {
    const users = new TestUsers(() => [server.mqttUrl]);
    const [alice, bob] = await Promise.all([users.fresh('alice'), users.fresh('bob')]);
    const { through, direct } = logins(users);

    // The message is stored, its answer lost; the next login goes to a server that does not know alice (as if her
    // password had changed meanwhile), and is refused for good.
    const cutBefore = proxy.cut;
    proxy.cuts = 1;
    proxy.onCut = () => (proxy.target = { host: '127.0.0.1', port: stranger.mqttPort });
    const sent = await runCli(['--json', 'send', bob, 'stored, answer lost'], through(alice));
    expect(sent.code, sent.stdout + sent.stderr).toBe(1);
    expect(proxy.cut).toBe(cutBefore + 1);
    expect(sent.json).toEqual([{ type: 'error', code: 'connect', message: expect.any(String), id: expect.any(String) }]);
    const id = sent.json[0]!.id as string;
    expect(sent.json[0]!.message).toBe(
      `the connection to the server closed before it answered, and connecting again failed (login refused by ${proxy.url}: wrong user name or password): it may or may not have been done; running the same command again with --id ${id} is safe: the message is stored once`,
    );

    // For a person, the same words on stderr.
    proxy.target = { host: '127.0.0.1', port: server.mqttPort };
    proxy.cuts = 1;
    const human = await runCli(['send', bob, 'second, answer lost'], through(alice));
    expect(human.code).toBe(1);
    expect(human.stderr).toMatch(
      /^error: connect: the connection to the server closed before it answered, and connecting again failed \(login refused by .*: wrong user name or password\): it may or may not have been done; running the same command again with --id \S+ is safe: the message is stored once\n$/,
    );

    // Run again with the id: the message the first try stored, once.
    const again = await runCli(['send', bob, 'stored, answer lost', '--id', id], direct(alice));
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout.split('\n')[0]).toBe('accepted (seq 1)');
    const history = await runCli(['--json', 'history', alice], direct(bob));
    expect(history.json.map((m) => [m.seq, m.text])).toEqual([
      [1, 'stored, answer lost'],
      [2, 'second, answer lost'],
    ]);
  },
);
