import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { MAX_HISTORY_LIMIT } from '#libs/protocol';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { atMost, CliProcess, runCli, TIME } from '../support/cli.js';
import { connectClient, endClient, registerUser } from '../support/mqtt-user.js';
import { REPO_ROOT, startParley, type ParleyServer } from '../support/parley-server.js';
import { sample, scrape } from '../support/prometheus.js';
import { startRefusingBroker, type RefusingBroker } from '../support/refusing-broker.js';
import { startTopology, type Topology } from '../support/topology.js';

/**
 * The servers here hash passwords at the lowest cost (about 3 ms a hash rather than 0.1 s): every CLI command logs in.
 * The default cost has a test of its own (server-startup).
 */
const CHEAP_HASHING = { PARLEY_PASSWORD_COST: '10' };

/** `parley ARGS --help` (no server needed), run once for the whole file: several tests read the same help. */
const helpRuns = new Map<string, ReturnType<typeof runCli>>();
const helpOf = (args: string[]) => {
  const key = args.join(' ');
  if (!helpRuns.has(key)) helpRuns.set(key, runCli([...args, '--help'], {}));
  return helpRuns.get(key)!;
};

/** The parley CLI, as real processes against the real server, as two people in two terminals would use it. */
describe('the parley CLI', () => {
  let topo: Topology;
  const running: CliProcess[] = [];
  const PASSWORD = 'cli password';

  beforeAll(async () => {
    topo = await startTopology('embedded', CHEAP_HASHING);
  });
  afterEach(async () => {
    await Promise.all(running.splice(0).map((p) => p.stop()));
  });
  afterAll(() => topo?.dispose());

  const as = (user: string, password = PASSWORD) => ({ PARLEY_SERVER: topo.server.mqttUrl6, PARLEY_USER: user, PARLEY_PASSWORD: password });
  const start = (args: string[], env: Record<string, string>) => {
    const p = CliProcess.start(args, env);
    running.push(p);
    return p;
  };
  /** A new user, registered over MQTT from here: `parley register` itself has tests of its own below. */
  const fresh = async (base: string) => {
    const name = `${base}${randomBytes(3).toString('hex')}`;
    expect(await registerUser(topo.server.mqttUrl, name, PASSWORD)).toMatchObject({ ok: true });
    return name;
  };

  it('describes every command and subcommand in its help', async () => {
    for (const parent of [[], ['group'], ['file']]) {
      const args = [...parent, '--help'];
      const help = await helpOf(parent);
      expect(help.code, args.join(' ')).toBe(0);
      const commands = help.stdout.split('Commands:\n')[1]!.split('\n\n')[0]!.split('\n');
      // A command's line is its name and arguments, then (after two spaces or more) what it does.
      for (const line of commands.filter((l) => /^ {2}\S/.test(l))) expect(line, args.join(' ')).toMatch(/^ {2}\S.*\S {2,}\S/);
    }
  });

  it("gives every command and subcommand's help an example of it, and the flags that say who you are", { timeout: 120_000 }, async () => {
    const listed = async (parent: string[]) => {
      const help = await helpOf(parent);
      const names = help.stdout
        .split('Commands:\n')[1]!
        .split('\n')
        .flatMap((l) => /^ {2}([a-z]+)/.exec(l)?.[1] ?? []);
      return names.filter((n) => n !== 'help').map((n) => [...parent, n]);
    };
    const commands = [[], ...(await Promise.all([[], ['group'], ['file']].map(listed))).flat()];
    expect(commands.length).toBeGreaterThan(20);
    // Three at a time: each is a process of its own, and none depends on another.
    const three = atMost(3);
    const helps = commands.map((command) => three(() => helpOf(command)));
    for (const [i, command] of commands.entries()) {
      const help = await helps[i]!;
      const name = ['parley', ...command].join(' ');
      expect(help.code, name).toBe(0);
      // Not only the top level's: `parley send --help` is where a newcomer looks for how to say who they are.
      for (const flag of ['--server <url>', '--user <name>', '--password <password>', '--json']) expect(help.stdout, name).toContain(flag);
      const examples = help.stdout.split('\nExamples:\n')[1]?.split('\n\n')[0]?.split('\n') ?? [];
      expect(examples.length, name).toBeGreaterThan(0);
      expect(examples.some((l) => l.includes(name)) || command.length === 0, name).toBe(true);
    }
  });

  it('registers, refuses a taken name, a wrong password and an unreachable server in one clear line', { timeout: 90_000 }, async () => {
    const alice = `alice${randomBytes(3).toString('hex')}`;
    const registered = await runCli(['register'], as(alice));
    expect([registered.code, registered.stdout.trim()]).toEqual([0, `registered ${alice}`]);
    // The rest depend on nothing but her account: three at a time.
    const three = atMost(3);
    const run = (args: string[], env = as(alice)) => three(() => runCli(args, env));
    const [
      again,
      wrong,
      badName,
      dash,
      badOffer,
      nowhere,
      usage,
      noText,
      unknown,
      bare,
      helpUnknown,
      helpUnknownJson,
      groupHelpUnknown,
      groupHelpSub,
      helpSub,
      badEnvServer,
    ] = await Promise.all([
      run(['register']),
      run(['send', alice, 'hi'], as(alice, 'not the password')),
      run(['--user', ' alice', 'send', alice, 'hi']),
      run(['--json', 'send', alice, '-1 for me']),
      run(['file', 'accept', 'bad id!']),
      run(['--server', 'mqtt://127.0.0.1:1', 'send', alice, 'hi']),
      run(['send', alice]),
      run(['send', '--group', 'crew']),
      run(['--json', 'frobnicate']),
      run(['--json', 'group']),
      run(['help', 'frobnicate']),
      run(['--json', 'help', 'group', 'frobnicate']),
      run(['--json', 'group', 'help', 'frobnicate']),
      run(['file', 'help', 'send']),
      run(['help', 'group', 'create']),
      // No user either: the URL, which no user could make work, is said first, named as the setting it came from.
      three(() => runCli(['register'], { PARLEY_SERVER: 'http://localhost:1883' })),
    ]);
    expect(again.code).toBe(1);
    expect(again.stderr.trim()).toBe(`error: user_exists: the name "${alice}" is taken`);

    expect(wrong.code).toBe(1);
    expect(wrong.stderr.trim().split('\n')).toHaveLength(1);
    expect(wrong.stderr).toMatch(/wrong user name or password/);

    // A name no account can have is not sent (a failed login counts towards the lockout): said before connecting.
    expect([badName.code, badName.stderr.trim()]).toEqual([
      2,
      'error: usage: " alice" is no user name (a user name is 2–32 characters: a lowercase letter, then lowercase letters, digits, _ or -)',
    ]);
    // Text that starts with a dash is taken for an option: the error says how to send it.
    expect([dash.code, dash.json]).toEqual([
      2,
      [{ type: 'error', code: 'usage', message: `unknown option '-1 for me' (text that starts with a dash goes after --: parley send bob -- "-1 for me")` }],
    ]);
    expect([badOffer.code, badOffer.stderr.trim()]).toEqual([
      2,
      'error: usage: "bad id!" is no file offer id (an id starts with f; parley file list shows them)',
    ]);
    expect(nowhere.code).toBe(1);
    expect(nowhere.stderr.trim()).toBe('error: connect: cannot reach mqtt://127.0.0.1:1: connection refused (is a Parley server running there?)');

    expect(usage.code).toBe(2);
    expect([noText.code, noText.stderr.trim()]).toEqual([2, 'error: usage: with --group, give the text too']);
    // With --json, a usage error is a JSON line on stdout like any other error.
    expect(unknown.code).toBe(2);
    expect(unknown.json).toEqual([{ type: 'error', code: 'usage', message: "unknown command 'frobnicate'" }]);
    expect([bare.code, bare.json]).toEqual([2, [{ type: 'error', code: 'usage', message: 'give a subcommand (see the help)' }]]);
    // `help` with a name it does not know says which, as a command of that name would, and goes down to subcommands.
    expect([helpUnknown.code, helpUnknown.stderr.split('\n')[0]]).toEqual([2, "error: unknown command 'frobnicate'"]);
    expect([helpUnknownJson.code, helpUnknownJson.json]).toEqual([2, [{ type: 'error', code: 'usage', message: "unknown command 'frobnicate'" }]]);
    // The same below a command: `parley group help NAME`.
    expect([groupHelpUnknown.code, groupHelpUnknown.json]).toEqual([2, [{ type: 'error', code: 'usage', message: "unknown command 'frobnicate'" }]]);
    expect([groupHelpSub.code, groupHelpSub.stdout.split('\n')[0]]).toMatchObject([0, expect.stringMatching(/^Usage: parley file send /)]);
    expect([helpSub.code, helpSub.stdout.split('\n')[0]]).toEqual([0, 'Usage: parley group create [options] <name> [members...]']);
    expect([badEnvServer.code, badEnvServer.stderr.trim()]).toEqual([
      2,
      'error: usage: PARLEY_SERVER must start with mqtt://, mqtts://, ws:// or wss:// (got "http://localhost:1883")',
    ]);
  });

  it('takes a password exactly as given, and the server takes it in either Unicode form: registered precomposed, logged in decomposed', async () => {
    // é and è as one code point each (most keyboards), then as a letter and a combining accent (macOS often sends that).
    const composed = ' cr\u00e8me br\u00fbl\u00e9e ';
    const decomposed = ' cre\u0300me bru\u0302le\u0301e ';
    const name = `uni${randomBytes(3).toString('hex')}`;
    const reg = await runCli(['register'], as(name, composed));
    expect([reg.code, reg.stdout.trim()]).toEqual([0, `registered ${name}`]);
    // The --password flag is taken as given too; the spaces are part of the password, neither side trims them.
    const [fromEnv, fromFlag, trimmed] = await Promise.all([
      runCli(['who', name], as(name, decomposed)),
      runCli(['--password', decomposed, 'who', name], as(name, 'not it')),
      runCli(['who', name], as(name, composed.trim())),
    ]);
    expect(fromEnv.code).toBe(0);
    expect(fromFlag.code).toBe(0);
    expect([trimmed.code, trimmed.stderr]).toEqual([1, expect.stringMatching(/wrong user name or password/)]);
    // Any MQTT client, not only the CLI: the CONNECT password in the other form.
    const client = await connectClient(topo.server.mqttUrl, { clientId: `${name}/raw`, username: name, password: decomposed });
    await endClient(client);
  });

  it('send exits 0 when accepted (with --json lines) and non-zero with the reason when not; listen prints what arrives', async () => {
    const [alice, bob] = [await fresh('alice'), await fresh('bob')];
    const listen = start(['--json', 'listen'], as(bob));
    await listen.waitForLine(/"type":"ready"/);

    const sent = await runCli(['--json', 'send', bob, 'hello bob'], as(alice));
    expect(sent.code).toBe(0);
    expect(sent.json[0]).toMatchObject({ type: 'accepted', to: bob, seq: 1, recipient: { state: 'online' } });
    const line = await listen.waitForLine(/hello bob/);
    expect(JSON.parse(line)).toMatchObject({ type: 'message', from: alice, to: bob, text: 'hello bob', seq: 1 });

    const [refused, empty] = await Promise.all([runCli(['--json', 'send', 'nobody-here', 'hi'], as(alice)), runCli(['send', bob, '   '], as(alice))]);
    expect(refused.code).toBe(1);
    expect(refused.json[0]).toMatchObject({ type: 'error', code: 'unknown_user' });
    expect(empty.code).toBe(1);
    expect(empty.stderr).toMatch(/empty_text/);
  });

  it('chat --json gives each new mark of my messages its status, and in a group the counts, as history --json does', async () => {
    const [alice, bob] = [await fresh('alice'), await fresh('bob')];
    const group = (await runCli(['--json', 'group', 'create', 'marks', bob], as(alice))).json[0]!.id as string;
    const chat = start(['--json', 'chat'], as(alice));
    await chat.waitForLine(/"type":"ready"/);
    const marked = (seq: number, status: string) => (l: string) => l.includes('"type":"mark"') && JSON.parse(l).seq === seq && JSON.parse(l).status === status;

    chat.type(`/msg ${bob} are you there?`);
    await chat.waitForLine(/"type":"accepted"/);
    expect((await runCli(['read', alice], as(bob))).code).toBe(0);
    const direct = JSON.parse(await chat.waitForLine(marked(1, 'read')));
    expect(direct).toEqual({
      type: 'mark',
      conv: expect.stringMatching(/^dm:/),
      seq: 1,
      id: expect.any(String),
      mark: expect.stringMatching(/^✓✓ read /),
      status: 'read',
    });

    chat.type(`/g ${group} lunch?`);
    await chat.waitForLine((l) => l.includes('"type":"accepted"') && JSON.parse(l).group?.id === group);
    expect((await runCli(['read', '--group', group], as(bob))).code).toBe(0);
    const inGroup = JSON.parse(await chat.waitForLine(marked(2, 'read')));
    expect(inGroup).toMatchObject({ type: 'mark', conv: `grp:${group}`, seq: 2, mark: '✓✓ 1/1 read', status: 'read', delivered: 1, read: 1, of: 1 });
    chat.type('/quit');
    expect(await chat.exited).toBe(0);
  });

  it('one-shot commands and user/.name connections are quiet: they neither make the user online nor set last seen', async () => {
    const [alice, bob] = [await fresh('alice'), await fresh('bob')];
    // User names typed in capitals mean the same (lower case) user, at login and as arguments.
    const [passing, groups] = await Promise.all([
      runCli(['send', bob.toUpperCase(), 'just passing'], as(alice.toUpperCase())),
      runCli(['group', 'list'], as(alice)),
    ]);
    expect(passing.code).toBe(0);
    expect(groups.code).toBe(0);
    // A quiet connection of any MQTT client, still open while she is looked up.
    const script = await connectClient(topo.server.mqttUrl, { clientId: `${alice}/.script`, username: alice, password: PASSWORD });
    try {
      expect((await runCli(['who', alice.toUpperCase()], as(bob))).stdout.trim()).toBe(`${alice}: offline, never seen online`);
      // listen counts: she is online while it runs, and seen once it stops.
      const listen = start(['listen'], as(alice));
      await listen.waitForLine(/listening as/);
      expect((await runCli(['who', alice], as(bob))).stdout.trim()).toBe(`${alice}: online`);
      await listen.stop();
      await expect.poll(async () => (await runCli(['who', alice], as(bob))).stdout.trim(), { timeout: 10_000 }).toMatch(/offline, last seen \d{4}-/);
    } finally {
      await endClient(script);
    }
  });

  it('one-shot commands take their replies only: the user’s unread backlog is not sent to each of them again', async () => {
    const [alice, bob] = [await fresh('alice'), await fresh('bob')];
    for (const text of ['one', 'two', 'three']) expect((await runCli(['send', bob, text], as(alice))).code).toBe(0);
    const fromCatchUps = async () => sample(await scrape(topo.server.httpUrl), 'parley_messages_delivered_total', { path: 'sync' }) ?? 0;
    const before = await fromCatchUps();
    const [who, history] = await Promise.all([runCli(['who', alice], as(bob)), runCli(['history', alice], as(bob))]);
    expect(who.code).toBe(0);
    expect(history.stdout).toMatch(/#3 .*: three$/m);
    expect(await fromCatchUps()).toBe(before);
    // listen is brought up to date as ever.
    const listen = start(['listen'], as(bob));
    await listen.waitForLine(/#3 .* → you: three$/);
    expect(await fromCatchUps()).toBe(before + 3);
  });

  it('chat: plain text replies in the conversation last written in, from another device of mine too', async () => {
    const [alice, bob] = [await fresh('alice'), await fresh('bob')];
    const laptop = start(['chat'], as(bob));
    await laptop.waitForLine(/logged in as/);
    expect((await runCli(['send', alice, 'from my phone'], as(bob))).code).toBe(0);
    await laptop.waitForLine(new RegExp(`you → ${alice}: from my phone`));
    laptop.type('and from my laptop');
    await laptop.waitForLine(new RegExp(`you → ${alice}: and from my laptop ✓`));
  });

  it('chat: until you choose, plain text answers the newest message of the catch-up, the one just above the prompt', async () => {
    const [alice, bob, carol] = [await fresh('alice'), await fresh('bob'), await fresh('carol')];
    expect((await runCli(['send', bob, 'yesterday'], as(alice))).code).toBe(0);
    expect((await runCli(['send', bob, 'a minute ago'], as(carol))).code).toBe(0);
    const chat = start(['chat'], as(bob));
    await chat.waitForLine(new RegExp(`${carol} → you: a minute ago$`));
    chat.type('meant for carol');
    await chat.waitForLine(new RegExp(`you → ${carol}: meant for carol ✓`));
    chat.type('/quit');
    expect(await chat.exited).toBe(0);
  });

  it('chat: says a message is not accepted yet while the server does not answer, then marks it accepted once it does', async () => {
    const [alice, bob] = [await fresh('alice'), await fresh('bob')];
    const chat = start(['chat'], as(bob));
    await chat.waitForLine(/logged in as/);
    chat.type(`/msg ${alice} are you there`);
    await chat.waitForLine(new RegExp(`you → ${alice}: are you there ✓`));
    // A server that stops answering (stopped, not gone: the connection stays up).
    topo.server.process.kill('SIGSTOP');
    try {
      chat.type('hello while it is stuck');
      await chat.waitForLine(
        new RegExp(`^\\* not accepted yet \\(your message to ${alice}: "hello while it is stuck"\\): still waiting for the server$`),
        10_000,
      );
    } finally {
      topo.server.process.kill('SIGCONT');
    }
    await chat.waitForLine(new RegExp(`you → ${alice}: hello while it is stuck ✓`), 15_000);
    chat.type('/quit');
    expect(await chat.exited).toBe(0);
    expect(chat.lines.filter((l) => l.includes('not accepted yet'))).toHaveLength(1);
  });

  it('chat: shows first what listen had but nobody read, and marks read only what it showed', async () => {
    const [alice, bob] = [await fresh('alice'), await fresh('bob')];
    const statusOf = async (text: string) =>
      (await runCli(['--json', 'history', bob], as(alice))).json.find((m) => m.text === text)?.status as string | undefined;
    expect((await runCli(['send', bob, 'seen by listen only'], as(alice))).code).toBe(0);
    const listen = start(['listen'], as(bob));
    await listen.waitForLine(/seen by listen only$/);
    await expect.poll(() => statusOf('seen by listen only'), { timeout: 10_000 }).toBe('delivered');
    await listen.stop();
    expect((await runCli(['send', bob, 'not yet delivered'], as(alice))).code).toBe(0);

    const chat = start(['chat'], as(bob));
    // The unread one first, then the backlog, then the prompt's conversation is the newest.
    await chat.waitForLine(new RegExp(`${alice} → you: seen by listen only$`));
    await chat.waitForLine(new RegExp(`${alice} → you: not yet delivered$`));
    await expect.poll(() => statusOf('not yet delivered'), { timeout: 10_000 }).toBe('read');
    expect(await statusOf('seen by listen only')).toBe('read');
    chat.type('/quit');
    expect(await chat.exited).toBe(0);
    const at = (text: string) => chat.lines.findIndex((l) => l.endsWith(text));
    expect(at('seen by listen only')).toBeLessThan(at('not yet delivered'));
    expect(chat.lines.filter((l) => l.includes('seen by listen only'))).toHaveLength(1);
  });

  it('chat: plain text stays with the conversation you chose, whoever writes to you meanwhile', async () => {
    const [alice, bob, carol] = [await fresh('alice'), await fresh('bob'), await fresh('carol')];
    const chat = start(['chat'], as(bob));
    await chat.waitForLine(/logged in as/);
    chat.type(`/msg ${alice}`);
    await chat.waitForLine(new RegExp(`^\\* plain text goes to ${alice} now$`));
    expect((await runCli(['send', bob, 'hi bob, carol here'], as(carol))).code).toBe(0);
    await chat.waitForLine(new RegExp(`${carol} → you: hi bob, carol here$`));
    chat.type('meant for alice');
    await chat.waitForLine(new RegExp(`you → ${alice}: meant for alice ✓`));
    expect((await runCli(['history', bob], as(carol))).stdout).not.toContain('meant for alice');
    chat.type('/quit');
    expect(await chat.exited).toBe(0);
  });

  it('chat: /info GROUP without a seq tells who has received and read my latest message there', async () => {
    const [alice, bob] = [await fresh('alice'), await fresh('bob')];
    const group = (await runCli(['--json', 'group', 'create', 'seqless', bob], as(alice))).json[0]!.id as string;
    const chat = start(['chat'], as(alice));
    await chat.waitForLine(/logged in as/);
    chat.type(`/info ${group}`);
    await chat.waitForLine(/^error: no_such_message: no message of yours among the last \d+ in seqless: \/info GROUP SEQ names an older one/);
    chat.type(`/g ${group} first`);
    chat.type(`/g ${group} second`);
    await chat.waitForLine(/\[seqless\] you: second ✓/);
    expect((await runCli(['read', '--group', group], as(bob))).code).toBe(0);
    await chat.waitForLine(/\[seqless\] you: second ✓✓ 1\/1 read/);
    chat.type(`/info ${group}`);
    await chat.waitForLine(new RegExp(`^message 3 in seqless, from ${alice}:$`));
    await chat.waitForLine(new RegExp(`^  ${bob}  delivered ${TIME}  read ${TIME}$`));
    chat.type('/quit');
    expect(await chat.exited).toBe(0);
  });

  it('chat: plain text never goes to a group deleted or left after its last message, in the catch-up or live', async () => {
    const [alice, bob] = [await fresh('alice'), await fresh('bob')];
    const group = async (name: string) => (await runCli(['--json', 'group', 'create', name, bob], as(alice))).json[0]!.id as string;
    const [gone, left] = [await group('gone'), await group('left')];
    expect((await runCli(['send', '--group', gone, 'last words'], as(alice))).code).toBe(0);
    expect((await runCli(['group', 'delete', gone], as(alice))).code).toBe(0);
    const chat = start(['--json', 'chat'], as(bob));
    const noOne = () => chat.json().filter((l) => l.type === 'error' && l.code === 'usage' && String(l.message).startsWith('no one to reply to yet')).length;
    // The catch-up ends with the group's deletion, after its last message.
    await chat.waitForLine(/"type":"synced"/);
    chat.type('anyone?');
    await expect.poll(noOne).toBe(1);
    // Live: chosen, then left on another device.
    chat.type(`/g ${left} hi`);
    await chat.waitForLine((l) => l.includes('"type":"accepted"') && JSON.parse(l).group?.id === left);
    expect((await runCli(['group', 'leave', left], as(bob))).code).toBe(0);
    await chat.waitForLine((l) => l.includes('"type":"group"') && JSON.parse(l).change.kind === 'member_left');
    chat.type('still there?');
    await expect.poll(noOne).toBe(2);
    expect(chat.json().filter((l) => l.type === 'error' && l.code !== 'usage')).toEqual([]);
    chat.type('/quit');
    expect(await chat.exited).toBe(0);
  });

  it('chat: a /msg or /g that names no one to talk to leaves plain text where it went', async () => {
    const [alice, bob] = [await fresh('alice'), await fresh('bob')];
    const nobody = `nobody${randomBytes(3).toString('hex')}`;
    const chat = start(['chat'], as(bob));
    await chat.waitForLine(/logged in as/);
    chat.type(`/msg ${alice} first`);
    await chat.waitForLine(new RegExp(`you → ${alice}: first ✓`));
    // Each failure is awaited before the next line: a line typed while one is under way goes where it points meanwhile.
    const failed = (code: string) => chat.lines.filter((l) => l.startsWith(`error: ${code}: `)).length;
    chat.type(`/msg ${nobody} hey`);
    await expect.poll(() => failed('unknown_user'), { timeout: 10_000 }).toBe(1);
    chat.type('/g no-such-group hi');
    await expect.poll(() => failed('unknown_group'), { timeout: 10_000 }).toBe(1);
    // Choosing without a text is checked too: nothing says plain text goes there now.
    chat.type(`/msg ${nobody}`);
    await expect.poll(() => failed('unknown_user'), { timeout: 10_000 }).toBe(2);
    chat.type('/g no-such-group');
    await expect.poll(() => failed('unknown_group'), { timeout: 10_000 }).toBe(2);
    chat.type('still for alice');
    await chat.waitForLine(new RegExp(`you → ${alice}: still for alice ✓`));
    expect(chat.lines.filter((l) => l.startsWith('* plain text goes to'))).toEqual([]);
    // A group of yours, chosen by name without a text, is chosen (and told by its name).
    expect((await runCli(['group', 'create', 'pair', alice], as(bob))).code).toBe(0);
    chat.type('/g pair');
    await chat.waitForLine(/^\* plain text goes to \[pair\] now$/);
    chat.type('for the pair');
    await chat.waitForLine(/\[pair\] you: for the pair ✓/);
    expect(chat.lines.filter((l) => l.startsWith('error:'))).toHaveLength(4);
    chat.type('/quit');
    expect(await chat.exited).toBe(0);
  });

  it('send - takes the message from stdin, all of it as one message; an empty stdin is a usage mistake', async () => {
    const [alice, bob] = [await fresh('alice'), await fresh('bob')];
    const sent = await runCli(['send', bob, '-'], as(alice), { input: 'line one\nline two\n' });
    expect(sent.code, sent.stderr).toBe(0);
    const history = await runCli(['--json', 'history', alice], as(bob));
    expect(history.json.map((m) => m.text)).toEqual(['line one\nline two']);
    const empty = await runCli(['send', bob, '-'], as(alice), { input: '' });
    expect(empty.code).toBe(2);
    expect(empty.stderr.trim()).toBe('error: usage: nothing to send: stdin was empty');
  });

  it('group leave says when leaving deleted the group (you were its last member)', async () => {
    const [alice, bob, carol] = [await fresh('alice'), await fresh('bob'), await fresh('carol')];
    // Three groups of hers, each created and left in turn; the three side by side.
    await Promise.all([
      (async () => {
        expect((await runCli(['group', 'create', 'solo'], as(alice))).code).toBe(0);
        const left = await runCli(['group', 'leave', 'solo'], as(alice));
        expect(left.stdout.trim()).toBe('left solo; you were its last member, so it is deleted');
      })(),
      (async () => {
        expect((await runCli(['--json', 'group', 'create', 'duo'], as(alice))).code).toBe(0);
        expect((await runCli(['--json', 'group', 'leave', 'duo'], as(alice))).json).toEqual([
          expect.objectContaining({ type: 'group.left', name: 'duo', deleted: true }),
        ]);
      })(),
      (async () => {
        // Leaving a group one owns hands it to the longest-standing member, and says to whom; a member's leave says nothing of it.
        expect((await runCli(['group', 'create', 'trio', bob, carol], as(alice))).code).toBe(0);
        expect((await runCli(['group', 'leave', 'trio'], as(alice))).stdout.trim()).toBe(`left trio; ${bob} owns it now`);
        expect((await runCli(['--json', 'group', 'leave', 'trio'], as(carol))).json).toEqual([{ type: 'group.left', id: expect.any(String), name: 'trio' }]);
      })(),
    ]);
  });

  it('chat --json: says where the catch-up ends, and that a recipient is offline, as listen and send do', async () => {
    const [alice, bob] = [await fresh('alice'), await fresh('bob')];
    const chat = start(['--json', 'chat'], as(bob));
    await chat.waitForLine(/^\{"type":"synced","messages":0\}$/);
    chat.type(`/msg ${alice} are you there?`);
    await chat.waitForLine(new RegExp(`^\\{"type":"offline","user":"${alice}","lastSeen":null\\}$`));
    // A group message's answer says how many it goes to, as send --group's does.
    expect((await runCli(['group', 'create', 'pair', alice], as(bob))).code).toBe(0);
    chat.type('/g pair hello pair');
    await chat.waitForLine(/^\{"type":"accepted",.*"group":\{.*"name":"pair"\}.*"recipients":1\}$/);
    chat.type('/quit');
    expect(await chat.exited).toBe(0);
  });

  it('--device: a device catches up from where it stood itself, one process per device', async () => {
    const [alice, bob] = [await fresh('alice'), await fresh('bob')];
    const statusOf = async (text: string) =>
      (await runCli(['--json', 'history', bob], as(alice))).json.find((m) => m.text === text)?.status as string | undefined;
    let laptop = start(['--device', 'laptop', 'listen'], as(bob));
    await laptop.waitForLine(new RegExp(`listening as ${bob} \\(device laptop\\)`));
    // One process per device: a second one would take the session from the first, and it back, over and over.
    const [sent, twice] = await Promise.all([runCli(['send', bob, 'one'], as(alice)), runCli(['--device', 'laptop', 'listen'], as(bob))]);
    expect(sent.code).toBe(0);
    await laptop.waitForLine(new RegExp(`#1 ${alice} → you: one$`));
    await expect.poll(() => statusOf('one'), { timeout: 10_000 }).toBe('delivered');
    expect(twice.code).toBe(1);
    expect(twice.stderr).toMatch(/device laptop is in use by another parley here \(process \d+\)/);
    await laptop.stop();

    // The phone (no --device) has the next one, and acknowledges it.
    const phone = start(['listen'], as(bob));
    await phone.waitForLine(/listening as/);
    expect((await runCli(['send', bob, 'two'], as(alice))).code).toBe(0);
    await phone.waitForLine(new RegExp(`#2 ${alice} → you: two$`));
    await expect.poll(() => statusOf('two'), { timeout: 10_000 }).toBe('delivered');
    await phone.stop();

    // Back, the laptop gets it all the same; a listen without --device starts at what the phone acknowledged.
    laptop = start(['--device', 'laptop', '--json', 'listen'], as(bob));
    const other = start(['--json', 'listen'], as(bob));
    // Meanwhile: a bad device name, which one-shot commands do not use.
    const [bad, oneShot] = await Promise.all([runCli(['--device', '.hidden', 'listen'], as(bob)), runCli(['--device', '.hidden', 'who', alice], as(bob))]);
    await laptop.waitForLine((l) => l.includes('"type":"synced"'));
    expect(
      laptop
        .json()
        .filter((e) => e.type === 'message')
        .map((e) => e.text),
    ).toEqual(['two']);
    await other.waitForLine((l) => l.includes('"type":"synced"'));
    expect(other.json().filter((e) => e.type === 'message')).toEqual([]);

    expect([bad.code, bad.stderr.trim()]).toEqual([
      2,
      `error: usage: --device must be 1–64 letters, digits, '_', '.' or '-', not starting with '.' (got ".hidden")`,
    ]);
    // One-shot commands do not use it: they run whatever it says.
    expect(oneShot.code).toBe(0);
  });

  it('offline: says when the recipient was last seen, delivers on return, and the sender sees ✓✓ then read', async () => {
    const [alice, bob] = [await fresh('alice'), await fresh('bob')];
    // Bob has been online once, so he has a last-seen time.
    const first = start(['listen'], as(bob));
    await first.waitForLine(/listening as/);
    await first.stop();

    // A note to self (checked at the end) goes beside the look-up: neither changes what the other sees.
    const [who, note] = await Promise.all([runCli(['who', bob], as(alice)), runCli(['send', alice, 'note to self'], as(alice))]);
    expect(who.stdout.trim()).toMatch(new RegExp(`^${bob}: offline, last seen \\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d$`));
    const sent = await runCli(['send', bob, 'while you were out'], as(alice));
    expect(sent.stdout).toContain('accepted (seq 1)');
    expect(sent.stdout).toMatch(new RegExp(`${bob} is offline \\(last seen \\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d\\)`));
    expect((await runCli(['--json', 'history', bob], as(alice))).json[0]).toMatchObject({ text: 'while you were out', status: 'accepted' });

    const back = start(['listen'], as(bob));
    // Its seq, as receipts and `history --before` name it.
    await back.waitForLine(new RegExp(`^\\[${TIME}\\] #1 ${alice} → you: while you were out$`));
    const [online] = await Promise.all([
      runCli(['who', bob], as(alice)),
      expect.poll(async () => (await runCli(['--json', 'history', bob], as(alice))).json[0]?.status, { timeout: 10_000 }).toBe('delivered'),
    ]);
    expect(online.stdout.trim()).toBe(`${bob}: online`);
    expect((await runCli(['history', bob], as(alice))).stdout).toMatch(/^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] #1 you → .*: while you were out ✓✓$/m);

    const read = await runCli(['read', alice], as(bob));
    expect(read.code).toBe(0);
    expect(read.stdout.trim()).toBe(`marked read up to #1 with ${alice}`);
    const [history, again, againJson] = await Promise.all([
      runCli(['history', bob], as(alice)),
      runCli(['read', alice], as(bob)),
      runCli(['--json', 'read', alice], as(bob)),
    ]);
    expect(history.stdout).toMatch(/^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] #1 you → .*: while you were out ✓✓ read \d\d:\d\d:\d\d$/m);
    // Again, it moves nothing, and says so.
    expect(again.stdout.trim()).toBe(`read already up to #1 with ${alice}`);
    expect(againJson.json).toEqual([{ type: 'read', conv: expect.any(String), seq: 1, moved: false }]);

    // A note to self says nothing about one's own presence (a one-shot connection is quiet, so it reads as offline).
    expect(note.stdout.trim()).toBe('accepted (seq 1)');
  });

  it("chat shows a peer's presence once: not again right after the offline notice of a message, only when it changes", async () => {
    const [alice, bob] = [await fresh('alice'), await fresh('bob')];
    // Alice has been online once: her retained presence says offline, with a last-seen time.
    const once = start(['listen'], as(alice));
    await once.waitForLine(/listening as/);
    await once.stop();
    const chat = start(['chat'], as(bob));
    try {
      await chat.waitForLine(/logged in as/);
      chat.type(`/msg ${alice} are you there?`);
      await chat.waitForLine(new RegExp(`^  ${alice} is offline \\(last seen `));
      // Her coming online is news; it comes after the retained presence the /msg subscribed to.
      const back = start(['listen'], as(alice));
      await chat.waitForLine((l) => l === `* ${alice}: online`);
      await back.stop();
      await chat.waitForLine(new RegExp(`^\\* ${alice}: offline, last seen `));
      expect(chat.lines.filter((l) => l.startsWith(`* ${alice}:`))).toEqual([`* ${alice}: online`, expect.stringMatching(/offline, last seen/)]);
      chat.type('/quit');
      expect(await chat.exited).toBe(0);
    } finally {
      await chat.stop();
    }
  });

  it('chat: /msg sends and shows ✓, incoming lines print as "alice → you", replies go to the last peer', async () => {
    const [alice, bob] = [await fresh('alice'), await fresh('bob')];
    const aliceListen = start(['--json', 'listen'], as(alice));
    await aliceListen.waitForLine(/"type":"ready"/);
    const chat = start(['chat'], as(bob));
    await chat.waitForLine(/logged in as/);
    chat.type(`/msg ${alice} hi from chat`);
    await chat.waitForLine(new RegExp(`^\\[${TIME}\\] you → ${alice}: hi from chat ✓`));
    await aliceListen.waitForLine(/hi from chat/);

    await runCli(['send', bob, 'hi back'], as(alice));
    await chat.waitForLine(new RegExp(`^\\[${TIME}\\] ${alice} → you: hi back$`));
    chat.type('and a reply without /msg');
    await aliceListen.waitForLine(/and a reply without \/msg/);
    // The chat showed "hi back" to a person: Alice's history marks it read.
    await expect.poll(async () => (await runCli(['history', bob], as(alice))).stdout, { timeout: 10_000 }).toMatch(/\] #2 you → .*: hi back ✓✓ read/);
    chat.type('/quit');
    expect(await chat.exited).toBe(0);
  });

  it('groups: create, rename, add, send --group (json has seq), /g in chat, read --group, info NAME SEQ', { timeout: 90_000 }, async () => {
    const [alice, bob, carol] = [await fresh('alice'), await fresh('bob'), await fresh('carol')];
    const created = await runCli(['--json', 'group', 'create', 'physics', bob], as(alice));
    expect(created.json[0]).toMatchObject({ type: 'group', name: 'physics', owner: alice, members: [alice, bob] });
    expect((await runCli(['group', 'rename', 'physics', 'physics 101'], as(alice))).code).toBe(0);
    expect((await runCli(['group', 'add', 'physics 101', carol], as(alice))).stdout).toContain(`${alice}, ${bob}, ${carol}`);
    const bobChat = start(['chat'], as(bob));
    const aliceListen = start(['listen'], as(alice));
    const notOwner = await runCli(['group', 'rename', 'physics 101', 'mine'], as(bob));
    expect(notOwner.code).toBe(1);
    expect(notOwner.stderr).toMatch(/not_group_owner/);

    await bobChat.waitForLine(/logged in as/);
    await aliceListen.waitForLine(/listening as/);
    const sent = await runCli(['--json', 'send', '--group', 'physics 101', 'lab at noon'], as(alice));
    expect(sent.json[0]).toMatchObject({ type: 'accepted', seq: expect.any(Number), group: { name: 'physics 101' }, recipients: expect.any(Number) });
    const seq = sent.json[0]!.seq as number;
    await bobChat.waitForLine(new RegExp(`^\\[${TIME}\\] \\[physics 101\\] ${alice}: lab at noon$`));
    bobChat.type('/g "physics 101" see you there');
    await bobChat.waitForLine(/\[physics 101\] you: see you there ✓/);

    expect((await runCli(['read', '--group', 'physics 101'], as(carol))).code).toBe(0);
    // Alice's listen names the group in the receipts it prints, never the conversation id.
    await aliceListen.waitForLine(new RegExp(`^\\[${TIME}\\] \\[physics 101\\] ${carol} read up to #\\d+$`));
    const eve = await fresh('eve');
    const [info, history, list, members, outsider] = await Promise.all([
      runCli(['info', 'physics 101', String(seq)], as(alice)),
      runCli(['--json', 'history', '--group', 'physics 101'], as(alice)),
      runCli(['group', 'list'], as(carol)),
      runCli(['group', 'members', 'physics 101'], as(carol)),
      runCli(['group', 'members', 'physics 101'], as(eve)),
    ]);
    expect(info.code).toBe(0);
    expect(info.stdout).toMatch(new RegExp(`${bob}\\s+delivered ${TIME}\\s+read ${TIME}`));
    expect(info.stdout).toMatch(new RegExp(`${carol}\\s+delivered ${TIME}\\s+read ${TIME}`));
    // history --json says as much as the ✓✓ counts do: both others have it and have read it.
    expect(history.json.find((m) => m.seq === seq)).toMatchObject({ text: 'lab at noon', status: 'read', delivered: 2, read: 2, of: 2 });
    expect(list.stdout).toMatch(/^physics 101 \(g\w+\) owner /m);
    expect(members.stdout.trim().split('\n')).toEqual([`${alice} (owner)`, bob, carol]);
    expect(outsider.code).toBe(1);
    expect(outsider.stderr).toMatch(/unknown_group/);

    // A second group of the same name: lines about either now carry the group's id.
    const twin = (await runCli(['--json', 'group', 'create', 'physics 101', carol], as(alice))).json[0]!;
    await aliceListen.waitForLine(new RegExp(`^\\[${TIME}\\] #1 \\[physics 101 \\(${String(twin.id)}\\)\\] \\* you created the group`));
  });

  it("listen in a group prints a member's receipt only when it reaches one of your messages; --json prints every one", async () => {
    const [alice, bob, carol] = [await fresh('alice'), await fresh('bob'), await fresh('carol')];
    expect((await runCli(['group', 'create', 'crew', bob, carol], as(alice))).code).toBe(0);
    const listen = start(['listen'], as(alice));
    const script = start(['--json', 'listen'], as(alice));
    await listen.waitForLine(/listening as/);
    await script.waitForLine(/"type":"ready"/);
    const receiptOf = (seq: number) => (l: string) => {
      const r = l.startsWith('{') ? (JSON.parse(l) as Record<string, unknown>) : {};
      return r.type === 'receipt' && r.user === carol && r.status === 'read' && r.seq === seq;
    };

    // Carol reads Bob's message (#2; the group's creation is #1): nothing of Alice's.
    expect((await runCli(['send', '--group', 'crew', 'from bob'], as(bob))).code).toBe(0);
    await listen.waitForLine(new RegExp(`^\\[${TIME}\\] #2 \\[crew\\] ${bob}: from bob$`));
    expect((await runCli(['read', '--group', 'crew'], as(carol))).code).toBe(0);
    await script.waitForLine(receiptOf(2));

    // Then Alice's own (#3): that receipt is news to her. It comes after the first, which has reached her by then.
    expect((await runCli(['send', '--group', 'crew', 'from alice'], as(alice))).code).toBe(0);
    await listen.waitForLine(new RegExp(`^\\[${TIME}\\] #3 \\[crew\\] you: from alice$`));
    expect((await runCli(['read', '--group', 'crew'], as(carol))).code).toBe(0);
    await listen.waitForLine(new RegExp(`^\\[${TIME}\\] \\[crew\\] ${carol} read up to #3$`));
    await script.waitForLine(receiptOf(3));
    expect(listen.lines.filter((l) => l.includes(' up to #'))).toEqual([expect.stringMatching(new RegExp(`${carol} read up to #3$`))]);
  });

  const tmux = spawnSync('tmux', ['-V']).status === 0;
  /** Runs `parley chat` as `user` in a real terminal (tmux, 120×20) until `work` is done; then the shell runs `after`, if given. */
  const inTmuxChat = async (
    user: string,
    work: (t: { tm: (...args: string[]) => { stdout: string }; session: string; screen: () => string }) => Promise<void>,
    after = '',
  ) => {
    const session = `parley-${randomBytes(4).toString('hex')}`;
    const tm = (...args: string[]) => spawnSync('tmux', args, { encoding: 'utf8' });
    const env = Object.entries(as(user)).map(([k, v]) => `${k}='${v}'`);
    tm('new-session', '-d', '-s', session, '-x', '120', '-y', '20', `cd ${REPO_ROOT} && env ${env.join(' ')} node bin/parley.js chat${after}`);
    try {
      const screen = () => tm('capture-pane', '-t', session, '-p').stdout;
      await expect.poll(screen, { timeout: 10_000 }).toContain(`${user}>`);
      await work({ tm, session, screen });
    } finally {
      tm('kill-session', '-t', session);
    }
  };

  it.runIf(tmux)('leaves the terminal on a new line when chat ends with Ctrl-C or Ctrl-D, and on none more after /quit (real terminal, tmux)', async () => {
    const bob = await fresh('bob');
    for (const [keys, how] of [
      [['C-c'], 'Ctrl-C'],
      [['C-d'], 'Ctrl-D'],
      [['-l', '/quit'], '/quit'],
    ] as const) {
      // What the shell prints next stands for its prompt: it must start a row of its own, right below the chat's.
      await inTmuxChat(
        bob,
        async ({ tm, session, screen }) => {
          tm('send-keys', '-t', session, ...keys);
          if (how === '/quit') tm('send-keys', '-t', session, 'Enter');
          await expect.poll(screen, { timeout: 10_000 }).toMatch(/^\[exit \d+\]$/m);
          const lines = screen().split('\n');
          const at = lines.findIndex((l) => l.startsWith('[exit'));
          expect(lines[at], how).toBe('[exit 0]');
          expect(lines[at - 1], how).toBe(how === '/quit' ? `${bob}> /quit` : `${bob}>`);
        },
        '; echo "[exit $?]"; read x',
      );
    }
  });

  it.runIf(tmux)('send - at a terminal says how to end the message, instead of waiting without a word (real terminal, tmux)', async () => {
    const [alice, bob] = [await fresh('alice'), await fresh('bob')];
    const session = `parley-${randomBytes(4).toString('hex')}`;
    const tm = (...args: string[]) => spawnSync('tmux', args, { encoding: 'utf8' });
    const env = Object.entries(as(alice)).map(([k, v]) => `${k}='${v}'`);
    tm('new-session', '-d', '-s', session, '-x', '120', '-y', '20', `cd ${REPO_ROOT} && env ${env.join(' ')} node bin/parley.js send ${bob} -; read x`);
    try {
      const screen = () => tm('capture-pane', '-t', session, '-p').stdout;
      await expect.poll(screen, { timeout: 10_000 }).toContain('type the message; Ctrl-D on a line of its own sends it');
      tm('send-keys', '-t', session, '-l', 'typed by hand');
      tm('send-keys', '-t', session, 'Enter', 'C-d');
      await expect.poll(screen, { timeout: 10_000 }).toContain('accepted (seq 1)');
    } finally {
      tm('kill-session', '-t', session);
    }
    expect((await runCli(['history', alice, '--json'], as(bob))).json).toMatchObject([{ from: alice, text: 'typed by hand' }]);
  });

  it.runIf(tmux)('asks for a password not given, at a terminal, without showing it; a new account’s twice (real terminal, tmux)', async () => {
    const bob = await fresh('bob');
    const alice = `alice${randomBytes(3).toString('hex')}`;
    const session = `parley-pw-${process.pid}`;
    const tm = (...args: string[]) => spawnSync('tmux', args, { encoding: 'utf8' });
    const env = `PARLEY_SERVER='${as(bob).PARLEY_SERVER}' PARLEY_USER='${alice}'`;
    const cli = `cd ${REPO_ROOT} && env ${env} node bin/parley.js`;
    tm('new-session', '-d', '-s', session, '-x', '120', '-y', '20', `${cli} register && ${cli} send ${bob} 'typed unseen'; read x`);
    try {
      const screen = () => tm('capture-pane', '-t', session, '-p').stdout;
      const type = (keys: string) => (tm('send-keys', '-t', session, '-l', keys), tm('send-keys', '-t', session, 'Enter'));
      await expect.poll(screen, { timeout: 10_000 }).toContain(`password for the new user ${alice}:`);
      type(PASSWORD);
      await expect.poll(screen, { timeout: 5000 }).toContain('the same password again:');
      type(PASSWORD);
      await expect.poll(screen, { timeout: 10_000 }).toContain(`password for ${alice}:`);
      type(PASSWORD);
      await expect.poll(screen, { timeout: 10_000 }).toContain('accepted (seq 1)');
      expect(screen()).toContain(`registered ${alice}`);
      expect(screen()).not.toContain(PASSWORD);
    } finally {
      tm('kill-session', '-t', session);
    }
    expect((await runCli(['history', alice, '--json'], as(bob))).json).toMatchObject([{ from: alice, text: 'typed unseen' }]);
    // Not at a terminal, a missing password is still a usage mistake.
    const piped = await runCli(['send', bob, 'hi'], { PARLEY_SERVER: as(bob).PARLEY_SERVER, PARLEY_USER: alice });
    expect([piped.code, piped.stderr.trim()]).toEqual([
      2,
      'error: usage: no password: pass --password, set PARLEY_PASSWORD, or run it at a terminal to be asked for it',
    ]);
  });

  it.runIf(tmux)('Ctrl-C clears a typed line, as a shell does, and leaves on an empty one (real terminal, tmux)', async () => {
    const bob = await fresh('bob');
    await inTmuxChat(
      bob,
      async ({ tm, session, screen }) => {
        tm('send-keys', '-t', session, '-l', 'a line I changed my mind about');
        tm('send-keys', '-t', session, 'Left', 'Left');
        await expect.poll(screen, { timeout: 5000 }).toContain('my mind about');
        tm('send-keys', '-t', session, 'C-c');
        await expect.poll(screen, { timeout: 5000 }).not.toContain('my mind');
        // Still there, with an empty prompt; the next Ctrl-C leaves.
        expect(screen().trimEnd().split('\n').at(-1)).toBe(`${bob}>`);
        tm('send-keys', '-t', session, 'C-c');
        await expect.poll(screen, { timeout: 10_000 }).toMatch(/^\[exit \d+\]$/m);
        expect(screen()).toMatch(/^\[exit 0\]$/m);
      },
      '; echo "[exit $?]"; read x',
    );
  });

  it.runIf(tmux)('never garbles the line you are typing when a message arrives (real terminal, tmux)', async () => {
    const [alice, bob] = [await fresh('alice'), await fresh('bob')];
    await inTmuxChat(bob, async ({ tm, session, screen }) => {
      tm('send-keys', '-t', session, '-l', `/msg ${alice} half a sen`);
      await expect.poll(screen, { timeout: 5000 }).toContain('half a sen');
      await runCli(['send', bob, 'an interruption'], as(alice));
      await expect.poll(screen, { timeout: 10_000 }).toMatch(new RegExp(`${alice} → you: an interruption`));
      const lines = screen().split('\n');
      // The message has a line of its own, and the prompt below it still holds the partial input intact.
      expect(lines.find((l) => l.includes('an interruption'))).toMatch(new RegExp(`^\\[${TIME}\\] ${alice} → you: an interruption$`));
      // The prompt now names alice, who wrote first: plain text would go to her.
      expect(lines.filter((l) => l.includes('half a sen'))).toEqual([`${bob} → ${alice}> /msg ${alice} half a sen`]);
      tm('send-keys', '-t', session, '-l', 'tence');
      tm('send-keys', '-t', session, 'Enter');
      await expect.poll(screen, { timeout: 10_000 }).toMatch(new RegExp(`you → ${alice}: half a sentence ✓`));
    });
  });

  it.runIf(tmux)('clears every row of a typed line that wraps, and redraws marks above it, in a narrow terminal (real terminal, tmux)', async () => {
    const [alice, bob] = [await fresh('alice'), await fresh('bob')];
    await inTmuxChat(bob, async ({ tm, session, screen }) => {
      tm('resize-window', '-t', session, '-x', '60');
      tm('send-keys', '-t', session, '-l', `/msg ${alice} one`);
      tm('send-keys', '-t', session, 'Enter');
      await expect.poll(screen, { timeout: 10_000 }).toMatch(/is offline \(never seen online\)/);
      // Three rows of 60 columns, the cursor on the last.
      const typed = `${'a line that wraps '.repeat(7)}END`;
      tm('send-keys', '-t', session, '-l', typed);
      await expect.poll(() => screen().replace(/\n/g, ''), { timeout: 5000 }).toContain('wraps END');

      expect((await runCli(['send', bob, 'an interruption'], as(alice))).code).toBe(0);
      await expect.poll(screen, { timeout: 10_000 }).toMatch(new RegExp(`^\\[${TIME}\\] ${alice} → you: an interruption$`, 'm'));
      expect((await runCli(['read', bob], as(alice))).code).toBe(0);
      const readMark = new RegExp(`^\\[${TIME}\\] you → ${alice}: one ✓✓ read ${TIME}$`);
      await expect.poll(() => screen().split('\n'), { timeout: 10_000 }).toContainEqual(expect.stringMatching(readMark));

      const lines = screen().split('\n');
      // The mark went to the message's own row, not to a row of the notice below it; the typed line is on the screen
      // once, below the message that came (no stale first rows of it above that).
      expect(lines.filter((l) => l.includes(`: one`))).toEqual([expect.stringMatching(readMark)]);
      expect(lines.filter((l) => l.includes('is offline'))).toEqual([`  ${alice} is offline (never seen online)`]);
      expect(lines.filter((l) => l.startsWith(`${bob} → ${alice}> a line`))).toHaveLength(1);
      const at = lines.findIndex((l) => l.includes('an interruption'));
      // (Rows lose their trailing spaces in a capture.)
      expect(
        lines
          .slice(at + 1)
          .join('')
          .replace(/ /g, ''),
      ).toBe(`${bob}→${alice}>${typed}`.replace(/ /g, ''));
      tm('send-keys', '-t', session, 'Enter');
      await expect.poll(() => screen().replace(/\n/g, ''), { timeout: 10_000 }).toMatch(new RegExp(`you → ${alice}: a line that wraps.*END ✓`));
    });
  });

  it.runIf(tmux)('redraws a receipt mark on its own message line, whatever was typed or printed below it since (real terminal, tmux)', async () => {
    const [alice, bob] = [await fresh('alice'), await fresh('bob')];
    await inTmuxChat(bob, async ({ tm, session, screen }) => {
      tm('send-keys', '-t', session, '-l', `/msg ${alice} one`);
      tm('send-keys', '-t', session, 'Enter');
      // Alice has never been online: a notice follows the message.
      await expect.poll(screen, { timeout: 10_000 }).toMatch(/is offline \(never seen online\)/);
      // Below it: an empty line entered, and an error.
      tm('send-keys', '-t', session, 'Enter');
      tm('send-keys', '-t', session, '-l', '/who nobody-at-all');
      tm('send-keys', '-t', session, 'Enter');
      await expect.poll(screen, { timeout: 10_000 }).toMatch(/^error: unknown_user: /m);
      const before = screen().split('\n');

      // Alice reads it.
      const read = await runCli(['read', bob], as(alice));
      expect(read.code, read.stderr).toBe(0);
      await expect.poll(screen, { timeout: 10_000 }).toMatch(new RegExp(`you → ${alice}: one ✓✓ read ${TIME}$`, 'm'));
      const after = screen().split('\n');
      // Of what was on the screen, only the message's line changed (Alice's presence lines follow, where the prompt was).
      const at = before.findIndex((l) => l.includes(`you → ${alice}: one`));
      const upTo = before.findIndex((l) => l.startsWith('error: unknown_user'));
      expect(upTo).toBeGreaterThan(at);
      const shown = (lines: string[]) => lines.slice(0, upTo + 1).map((l, i) => (i === at ? 'the message' : l));
      expect(shown(after)).toEqual(shown(before));
    });
  });

  it.runIf(tmux)('redraws marks on the right rows above a message of wide characters that wraps (real terminal, tmux)', async () => {
    const [alice, bob] = [await fresh('alice'), await fresh('bob')];
    // 60 CJK characters: 120 columns, with the line's start more than the pane's width.
    const wide = '漢字'.repeat(30);
    await inTmuxChat(bob, async ({ tm, session, screen }) => {
      for (const [i, text] of ['message A', wide, 'message C'].entries()) {
        tm('send-keys', '-t', session, '-l', `/msg ${alice} ${text}`);
        tm('send-keys', '-t', session, 'Enter');
        // Alice has never been online: a notice follows each message.
        await expect
          .poll(
            () =>
              screen()
                .split('\n')
                .filter((l) => l.includes('is offline')).length,
            { timeout: 10_000 },
          )
          .toBe(i + 1);
      }
      const read = await runCli(['read', bob], as(alice));
      expect(read.code, read.stderr).toBe(0);
      const readMark = new RegExp(`✓✓ read ${TIME}$`);
      await expect
        .poll(
          () =>
            screen()
              .split('\n')
              .filter((l) => readMark.test(l)).length,
          { timeout: 10_000 },
        )
        .toBe(3);
      const lines = screen().split('\n');
      // Each message's line took its mark, once; the notices between them are as they were.
      const sent = (text: string) => lines.filter((l) => l.includes(`you → ${alice}: ${text}`));
      expect(sent('message A')).toEqual([expect.stringMatching(readMark)]);
      expect(sent('message C')).toEqual([expect.stringMatching(readMark)]);
      expect(lines.filter((l) => l.includes('is offline'))).toHaveLength(3);
      // The wide one takes two rows: it is printed again below with its mark, rather than redrawn, cut short to one row.
      const rows = lines.map((l, i) => (l.includes(`you → ${alice}: 漢字`) ? i : -1)).filter((i) => i >= 0);
      expect(rows).toHaveLength(2);
      expect(lines[rows[1]!]).toMatch(new RegExp(`^\\[${TIME}\\] you → ${alice}: [漢字]+… ✓✓ read ${TIME}$`));
    });
  });
});

describe('the parley CLI against a server that asks it to slow down', () => {
  let server: ParleyServer;
  const PASSWORD = 'slow down password';

  beforeAll(async () => {
    // Two requests at once per user, then one a second.
    server = await startParley({ env: { ...CHEAP_HASHING, PARLEY_USER_RATE: '1', PARLEY_USER_BURST: '2' } });
  });
  afterAll(() => server?.dispose());

  it('retries a rate_limited request with the same id, so a burst of sends all get through, each stored once', async () => {
    const as = (user: string) => ({ PARLEY_SERVER: server.mqttUrl, PARLEY_USER: user, PARLEY_PASSWORD: PASSWORD });
    const [alice, bob] = [`alice${randomBytes(3).toString('hex')}`, `bob${randomBytes(3).toString('hex')}`];
    for (const u of [alice, bob]) expect(await registerUser(server.mqttUrl, u, PASSWORD)).toMatchObject({ ok: true });
    const sends = await Promise.all([1, 2, 3, 4].map((n) => runCli(['send', bob, `burst ${n}`], as(alice), { timeoutMs: 30_000 })));
    for (const s of sends) expect(s.code, s.stderr).toBe(0);
    const history = await runCli(['--json', 'history', bob, '--limit', '50'], as(alice));
    expect(history.json.map((m) => m.text).sort()).toEqual(['burst 1', 'burst 2', 'burst 3', 'burst 4']);
  }, 60_000);
});

describe('the parley CLI against a server that follows few users per connection', () => {
  let server: ParleyServer;
  const PASSWORD = 'few follows password';

  beforeAll(async () => {
    // Besides its inbox, a connection may follow one user's presence.
    server = await startParley({ env: { ...CHEAP_HASHING, PARLEY_MAX_SUBSCRIPTIONS: '1' } });
  });
  afterAll(() => server?.dispose());

  it("chat says when the server will not follow a peer's presence, and goes on sending to that peer", async () => {
    const as = (user: string) => ({ PARLEY_SERVER: server.mqttUrl, PARLEY_USER: user, PARLEY_PASSWORD: PASSWORD });
    const [alice, bob, carol] = ['alice', 'bob', 'carol'].map((n) => `${n}${randomBytes(3).toString('hex')}`) as [string, string, string];
    for (const u of [alice, bob, carol]) expect(await registerUser(server.mqttUrl, u, PASSWORD)).toMatchObject({ ok: true });
    const chat = CliProcess.start(['chat'], as(bob));
    try {
      await chat.waitForLine(/logged in as/);
      chat.type(`/msg ${alice} first`);
      await chat.waitForLine(new RegExp(`you → ${alice}: first ✓`));
      chat.type(`/msg ${carol} second`);
      await chat.waitForLine(new RegExp(`^error: refused: .*${carol}'s presence will not be shown`));
      await chat.waitForLine(new RegExp(`you → ${carol}: second ✓`));
      chat.type('/quit');
      expect(await chat.exited).toBe(0);
    } finally {
      await chat.stop();
    }
  });
});

/**
 * `chat` and `listen` when logins are refused after they connected: a distributed server whose account store (Redis)
 * restarts answers CONNACK 3 ("try again") for a while; a changed password answers 4, a lockout 5. A plain Aedes
 * broker stands in for the server, refusing with the code the test sets.
 */
// Its tests wait mostly on the CLI's retry timers, each with users of its own: they run side by side.
describe.concurrent('the parley CLI against a server that refuses logins for a while', () => {
  let refusing: RefusingBroker;
  let url: string;
  const refuse = (user: string, code: number) => refusing.refuse.set(user, code);
  const refused = (user: string) => refusing.refused.get(user);

  beforeAll(async () => {
    refusing = await startRefusingBroker();
    url = refusing.url;
  });
  afterAll(() => refusing.close());

  const as = (user: string) => ({ PARLEY_SERVER: url, PARLEY_USER: user, PARLEY_PASSWORD: 'unused' });
  const drop = (user: string) => refusing.drop(user);

  it('listen --json rides out "try again" (CONNACK 3), saying when the connection is lost and back; a lockout (5) ends it, with the reason and status 1', async ({
    expect,
  }) => {
    const listen = CliProcess.start(['--json', 'listen'], as('ivy'));
    try {
      await listen.waitForLine((l) => l.includes('"type":"ready"'));
      refuse('ivy', 3);
      await drop('ivy');
      await listen.waitForLine((l) => l === JSON.stringify({ type: 'connection', state: 'lost' }));
      await expect.poll(() => refused('ivy') ?? 0, { timeout: 15_000 }).toBeGreaterThanOrEqual(2);
      refuse('ivy', 0);
      await listen.waitForLine((l) => l === JSON.stringify({ type: 'connection', state: 'back' }), 15_000);
      expect(listen.child.exitCode).toBe(null);

      refuse('ivy', 5);
      await drop('ivy');
      expect(await listen.exited).toBe(1);
      expect(listen.json().at(-1)).toEqual({
        type: 'error',
        code: 'connect',
        message: `login refused by ${url}: not authorized: too many failed logins or open connections; try again later`,
      });
    } finally {
      await listen.stop();
    }
  }, 40_000);

  it('listen and chat keep trying a first login refused with "try again" (CONNACK 3), saying so; a one-shot command tries for 10 s, then exits 1 with the reason', async ({
    expect,
  }) => {
    for (const user of ['lee', 'max', 'ned']) refuse(user, 3);
    const retrying = `* login refused by ${url}: the server said to try again later: it cannot check logins now, or this user logs in too often; retrying…`;
    const listen = CliProcess.start(['listen'], as('lee'));
    const chat = CliProcess.start(['chat'], as('max'));
    try {
      const started = Date.now();
      const who = runCli(['who', 'bob'], as('ned'));
      await listen.waitForLine((l) => l === retrying);
      await chat.waitForLine((l) => l === retrying);
      // Refused again (a try every 2 s), still running, and said once.
      await expect.poll(() => Math.min(refused('lee') ?? 0, refused('max') ?? 0), { timeout: 15_000 }).toBeGreaterThanOrEqual(2);
      expect([listen.child.exitCode, chat.child.exitCode]).toEqual([null, null]);
      refuse('lee', 0);
      refuse('max', 0);
      await listen.waitForLine(/^listening as lee/, 15_000);
      await chat.waitForLine(/^logged in as max/, 15_000);
      expect(listen.lines.filter((l) => l === retrying)).toHaveLength(1);

      const ended = await who;
      expect(Date.now() - started).toBeGreaterThanOrEqual(10_000);
      expect(ended.code).toBe(1);
      expect(ended.stderr.trim().split('\n')).toEqual([
        retrying,
        `error: connect: login refused by ${url}: the server said to try again later: it cannot check logins now, or this user logs in too often (tried for 10 s)`,
      ]);
      expect(refused('ned')).toBeGreaterThanOrEqual(3);
    } finally {
      await Promise.all([listen.stop(), chat.stop('eof')]);
    }
  }, 40_000);

  it('listen and chat end with the reason and status 1 when the password is refused (CONNACK 4), instead of waiting in silence', async ({ expect }) => {
    const listen = CliProcess.start(['listen'], as('jay'));
    const chat = CliProcess.start(['chat'], as('kim'));
    try {
      await listen.waitForLine(/listening as jay/);
      await chat.waitForLine(/logged in as kim/);
      refuse('jay', 4);
      refuse('kim', 4);
      await Promise.all([drop('jay'), drop('kim')]);
      expect(await listen.exited).toBe(1);
      expect(await chat.exited).toBe(1);
      expect(listen.lines).toContain('* connection lost; reconnecting…');
      expect(listen.lines.at(-1)).toBe(`error: connect: login refused by ${url}: wrong user name or password`);
      expect(chat.lines.at(-1)).toBe(`error: connect: login refused by ${url}: wrong user name or password`);
    } finally {
      await Promise.all([listen.stop(), chat.stop()]);
    }
  }, 40_000);
});

describe('the parley CLI before it connects', () => {
  // Nothing listens on port 1: a usage mistake is caught before any connection is tried.
  const env = { PARLEY_SERVER: 'mqtt://127.0.0.1:1', PARLEY_USER: 'ann', PARLEY_PASSWORD: 'unused' };

  it('says in one line on stderr, with status 1, that it cannot write its output (> /dev/full), instead of a stack trace', () => {
    const full = openSync('/dev/full', 'w');
    try {
      for (const args of [['--help'], ['--version'], ['--json', 'who', 'bob']]) {
        const r = spawnSync(process.execPath, [join(REPO_ROOT, 'bin/parley.js'), ...args], {
          env: { PATH: process.env.PATH ?? '', ...env },
          stdio: ['ignore', full, 'pipe'],
          encoding: 'utf8',
          timeout: 20_000,
        });
        expect([r.status, r.stderr], args.join(' ')).toEqual([1, 'error: cannot write the output: ENOSPC: no space left on device, write\n']);
      }
    } finally {
      closeSync(full);
    }
  });

  it('prints its version with --version or -V, and names the default server and PARLEY_SERVER in its help', async () => {
    const { version } = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string };
    const flags = ['--version', '-V'];
    const [help, ...runs] = await Promise.all([helpOf([]), ...flags.map((flag) => runCli([flag], env))]);
    for (const [i, r] of runs.entries()) expect([r.code, r.stdout, r.stderr], flags[i]).toEqual([0, `${version}\n`, '']);
    expect(help.stdout.replace(/\s+/g, ' ')).toMatch(/--server <url> .*\(env PARLEY_SERVER; default mqtt:\/\/localhost:1883\)/);
  });

  it('takes a history --limit over the protocol maximum for a usage mistake (exit 2, naming the maximum), like 0 or abc', async () => {
    const bads = ['0', 'abc', '-1'];
    const three = atMost(3);
    const [over, most, ...badRuns] = await Promise.all([
      three(() => runCli(['history', 'bob', '--limit', String(MAX_HISTORY_LIMIT + 1)], env)),
      three(() => runCli(['history', 'bob', '--limit', String(MAX_HISTORY_LIMIT)], env)),
      ...bads.map((bad) => three(() => runCli(['--json', 'history', 'bob', `--limit=${bad}`], env))),
    ]);
    expect([over.code, over.stderr.trim()]).toEqual([2, `error: usage: --limit must be at most ${MAX_HISTORY_LIMIT}`]);
    for (const [i, r] of badRuns.entries()) {
      expect([r.code, r.json], bads[i]).toEqual([2, [{ type: 'error', code: 'usage', message: '--limit must be a positive whole number' }]]);
    }
    // The maximum itself goes to the server (none here).
    expect([most.code, most.stderr.trim()]).toEqual([
      1,
      'error: connect: cannot reach mqtt://127.0.0.1:1: connection refused (is a Parley server running there?)',
    ]);
  });
});
