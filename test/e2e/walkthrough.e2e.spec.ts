import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CliProcess, runCli, TIME } from '../support/cli.js';
import { startTopology, type Topology } from '../support/topology.js';

const T = `\\[${TIME}\\]`;
const rx = (source: string) => new RegExp(`^${source}$`);
const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * docs/walkthrough.md, step by step: one server, and alice, bob and carol in
 * their own terminals, through the parley CLI. Each check is a line the
 * walkthrough shows.
 */
describe('the walkthrough (docs/walkthrough.md)', () => {
  let topo: Topology;
  let home: { alice: string; bob: string; carol: string };
  const running: CliProcess[] = [];
  const PASSWORDS = { alice: 'correct horse', bob: 'battery staple', carol: 'tr0ub4dor&3' };
  type Who = keyof typeof PASSWORDS;

  beforeAll(async () => {
    topo = await startTopology('embedded');
    home = {
      alice: mkdtempSync(join(tmpdir(), 'walk-alice-')),
      bob: mkdtempSync(join(tmpdir(), 'walk-bob-')),
      carol: mkdtempSync(join(tmpdir(), 'walk-carol-')),
    };
  });
  afterAll(async () => {
    if (process.env.WALKTHROUGH_TRANSCRIPT) writeFileSync(process.env.WALKTHROUGH_TRANSCRIPT + '.server', topo.server.output.join('\n'));
    await Promise.all(running.map((p) => p.stop()));
    await topo?.dispose();
    for (const dir of Object.values(home ?? {})) rmSync(dir, { recursive: true, force: true });
  });

  const env = (who: Who) => ({ PARLEY_SERVER: topo.server.mqttUrl, PARLEY_USER: who, PARLEY_PASSWORD: PASSWORDS[who] });
  const run = async (who: Who, args: string[]) => {
    const r = await runCli(args, env(who), { timeoutMs: 30_000 });
    expect(r.code, `parley ${args.join(' ')}: ${r.stderr}`).toBe(0);
    return r.stdout.trim().split('\n');
  };
  const chat = async (who: Who) => {
    const p = CliProcess.start(['chat'], env(who), { cwd: home[who] });
    running.push(p);
    await p.waitForLine(rx(`logged in as ${who}; /help lists the commands`));
    return p;
  };

  it('runs every step of the tour and prints what the walkthrough shows', async () => {
    // Step 0: accounts.
    for (const who of ['alice', 'bob', 'carol'] as const) expect(await run(who, ['register'])).toEqual([`registered ${who}`]);

    // Step 1: alice and bob chat, both ways.
    const alice = await chat('alice');
    const bob = await chat('bob');
    alice.type('/msg bob Hi Bob! Lunch today?');
    await alice.waitForLine(rx(`${T} you → bob: Hi Bob! Lunch today\\? ✓`));
    await bob.waitForLine(rx(`${T} alice → you: Hi Bob! Lunch today\\?`));
    await alice.waitForLine(rx(`${T} you → bob: Hi Bob! Lunch today\\? ✓✓ read ${TIME}`));
    bob.type('Sure, 12:30?');
    await bob.waitForLine(rx(`${T} you → alice: Sure, 12:30\\? ✓`));
    await alice.waitForLine(rx(`${T} bob → you: Sure, 12:30\\?`));

    // Step 2: carol joins; three pairs at once.
    const carol = await chat('carol');
    carol.type('/msg alice Can I come too?');
    carol.type('/msg bob Save me a seat');
    await alice.waitForLine(rx(`${T} carol → you: Can I come too\\?`));
    await bob.waitForLine(rx(`${T} carol → you: Save me a seat`));
    alice.type('/msg carol Of course!');
    bob.type('/msg carol Done');
    await carol.waitForLine(rx(`${T} alice → you: Of course!`));
    await carol.waitForLine(rx(`${T} bob → you: Done`));
    await carol.waitForLine(rx(`\\* alice: online`));

    // Step 3: a group; alice owns it, renames it.
    alice.type('/quit');
    expect(await alice.exited).toBe(0);
    const [created] = await run('alice', ['group', 'create', 'lunch', 'bob', 'carol']);
    expect(created).toMatch(rx(`created lunch \\(g[A-Za-z0-9_-]+\\) owner alice, 3 members: alice, bob, carol`));
    await bob.waitForLine(rx(`${T} \\[lunch\\] \\* alice created the group with you, carol`));
    await carol.waitForLine(rx(`${T} \\[lunch\\] \\* alice created the group with bob, you`));
    expect((await run('alice', ['group', 'rename', 'lunch', 'lunch club']))[0]).toMatch(
      /^renamed: lunch club \(g\S+\) owner alice, 3 members: alice, bob, carol$/,
    );
    await bob.waitForLine(rx(`${T} \\[lunch club\\] \\* alice renamed the group from "lunch" to "lunch club"`));
    bob.type('/g "lunch club" Pizza or sushi?');
    await bob.waitForLine(rx(`${T} \\[lunch club\\] you: Pizza or sushi\\? ✓`));
    await carol.waitForLine(rx(`${T} \\[lunch club\\] bob: Pizza or sushi\\?`));
    // Carol's chat has it and she has read it; alice, with no chat or listen open, has neither.
    await bob.waitForLine(rx(`${T} \\[lunch club\\] you: Pizza or sushi\\? ✓✓ 1/2 delivered, 1 read`));

    // Step 4: membership changes, and carol offline catches up.
    expect((await run('alice', ['group', 'remove', 'lunch club', 'bob']))[0]).toMatch(/owner alice, 2 members: alice, carol$/);
    await bob.waitForLine(rx(`${T} \\[lunch club\\] \\* alice removed you`));
    await carol.waitForLine(rx(`${T} \\[lunch club\\] \\* alice removed bob`));
    expect((await run('alice', ['group', 'add', 'lunch club', 'bob']))[0]).toMatch(/owner alice, 3 members: alice, carol, bob$/);
    await bob.waitForLine(rx(`${T} \\[lunch club\\] \\* alice added you`));
    carol.type('/quit');
    expect(await carol.exited).toBe(0);
    expect((await run('alice', ['who', 'carol']))[0]).toMatch(/^carol: offline, last seen \d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/);
    const sent = await run('alice', ['send', '--group', 'lunch club', 'Sushi it is. 12:30 at the corner place.']);
    expect(sent[0]).toMatch(/^accepted \(seq (\d+), to 2 members of lunch club\)$/);
    const seq = /seq (\d+)/.exec(sent[0]!)![1]!;
    await bob.waitForLine(rx(`${T} \\[lunch club\\] alice: Sushi it is\\. 12:30 at the corner place\\.`));

    // Step 5: who has received and read it.
    await expect
      .poll(async () => (await run('alice', ['info', 'lunch club', seq])).join('\n'), { timeout: 15_000 })
      .toMatch(new RegExp(`^message ${seq} in lunch club, from alice:\n  carol  not delivered {7,}not read\n  bob    delivered ${TIME}  read ${TIME}$`));
    const back = await chat('carol');
    await back.waitForLine(rx(`${T} \\[lunch club\\] alice: Sushi it is\\. 12:30 at the corner place\\.`));
    await expect
      .poll(async () => (await run('alice', ['info', 'lunch club', seq])).join('\n'), { timeout: 15_000 })
      .toMatch(/\n {2}carol {2}delivered \d\d:\d\d:\d\d {2}read \d\d:\d\d:\d\d\n/);

    // Step 6: a file offered and accepted, another declined.
    writeFileSync(join(home.alice, 'menu.txt'), 'Salmon nigiri\nTuna roll\nMiso soup\n');
    writeFileSync(join(home.alice, 'receipt.pdf'), Buffer.alloc(2048, 7));
    const offered = await run('alice', ['file', 'send', 'bob', join(home.alice, 'menu.txt')]);
    expect(offered[0]).toMatch(/^offered menu\.txt \(34 B\) to bob: f[A-Za-z0-9_-]+$/);
    const menu = offered[0]!.split(': ')[1]!;
    await bob.waitForLine(rx(esc(`* alice offers menu.txt (34 B) — /accept ${menu} or /decline ${menu}`)));
    bob.type(`/accept ${menu}`);
    await bob.waitForLine(rx(esc(`received menu.txt (34 B) from alice: ${join(home.bob, 'menu.txt')}`)));
    expect(readFileSync(join(home.bob, 'menu.txt'), 'utf8')).toBe('Salmon nigiri\nTuna roll\nMiso soup\n');

    const receipt = (await run('alice', ['file', 'send', 'carol', join(home.alice, 'receipt.pdf')]))[0]!.split(': ')[1]!;
    await back.waitForLine(rx(esc(`* alice offers receipt.pdf (2.0 KiB) — /accept ${receipt} or /decline ${receipt}`)));
    back.type(`/decline ${receipt}`);
    await back.waitForLine(rx(esc(`declined receipt.pdf (2.0 KiB) from alice`)));
    await expect
      .poll(async () => (await run('alice', ['file', 'list'])).join('\n'), { timeout: 15_000 })
      .toBe([`${menu}  you → bob  menu.txt (34 B)  bob: received`, `${receipt}  you → carol  receipt.pdf (2.0 KiB)  carol: declined`].join('\n'));

    bob.type('/quit');
    back.type('/quit');
    expect(await bob.exited).toBe(0);
    expect(await back.exited).toBe(0);
    if (process.env.WALKTHROUGH_TRANSCRIPT)
      writeFileSync(process.env.WALKTHROUGH_TRANSCRIPT, JSON.stringify({ alice: alice.lines, bob: bob.lines, carol: carol.lines, back: back.lines }, null, 1));
  }, 180_000);
});
