import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { withDeadline } from '#libs/health';
import { topics, type FileChunkResult, type FileEvent, type FileOffer, type FileOfferResult, type FilesEvent, type InboxEvent } from '#libs/protocol';
import { atMost, CliProcess, runCli } from '../support/cli.js';
import { REPO_ROOT, startParley, type ParleyServer } from '../support/parley-server.js';
import { connectClient, endClient, okResult, type MqttUser } from '../support/mqtt-user.js';
import { TestUsers } from '../support/test-users.js';
import { startTopology, type Mode, type Topology } from '../support/topology.js';

const CHUNK = 32 * 1024;
const MAX_FILE = 16 * 1024 * 1024;
const TTL_MS = 20_000;
/**
 * The servers here hash passwords at the lowest cost (about 3 ms a hash rather than 0.1 s): users log in over and over,
 * each CLI command among them. The default cost has a test of its own (server-startup).
 */
const CHEAP_HASHING = { PARLEY_PASSWORD_COST: '10' };

/** Matches one whole line. */
const line = (text: string) => (l: string) => l === text;
const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');
const isFile = (kind: FileEvent['event'], id?: string) => (e: InboxEvent) => e.type === 'file' && e.event === kind && (id === undefined || e.offer.id === id);

/**
 * File transfer end to end: real server processes, real MQTT clients and the
 * real CLI, standalone and with file-offer as its own process over Redis.
 */
describe.each<Mode>(['embedded', 'distributed'])('files (%s)', (mode) => {
  let topo: Topology;
  let redis: Redis | undefined;
  let work: string;
  const users = new TestUsers(() => topo.urls(), 'file transfer password');
  /** Users of one test run beside others: the file's afterEach would close the shared ones' connections when another ends. */
  const usersOfItsOwn = (onTestFinished: (fn: () => Promise<void>) => void) => {
    const own = new TestUsers(() => topo.urls(), users.password);
    onTestFinished(() => own.closeAll());
    return own;
  };

  beforeAll(async () => {
    topo = await startTopology(mode, {
      ...CHEAP_HASHING,
      PARLEY_MAX_FILE_BYTES: String(MAX_FILE),
      PARLEY_FILE_OFFER_TTL_MS: String(TTL_MS),
      PARLEY_FILE_CHUNK_BYTES: String(CHUNK),
      PARLEY_MAX_PENDING_OFFERS: '4',
      PARLEY_FILE_QUOTA_BYTES: String(24 * 1024 * 1024),
      PARLEY_RPC_TIMEOUT_MS: '15000',
    });
    if (topo.redis) redis = new Redis(topo.redis.url);
    work = mkdtempSync(join(tmpdir(), 'parley-files-'));
  });
  afterEach(() => users.closeAll());
  afterAll(async () => {
    redis?.disconnect();
    await topo?.dispose();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  const cli = (user: string, args: string[], timeoutMs = 60_000) =>
    runCli(args, { PARLEY_SERVER: topo.server.mqttUrl, PARLEY_USER: user, PARLEY_PASSWORD: users.password }, { timeoutMs });
  const dir = () => mkdtempSync(join(work, 'd-'));
  const writeTemp = (name: string, data: Buffer | string) => {
    const path = join(dir(), name);
    writeFileSync(path, data);
    return path;
  };

  /** Whether the server still holds any chunk of an offer: files in the data dir, or keys in Redis. */
  async function serverHolds(id: string): Promise<boolean> {
    if (!redis) return existsSync(join(topo.server.dataDir, 'files', id));
    const keys = await redis.keys(`${topo.env.PARLEY_REDIS_PREFIX}file:blob:${id}:*`);
    return keys.length > 0;
  }

  /** Offers and uploads `data` over raw MQTT requests, `upTo` chunks of it. */
  async function rawOffer(u: MqttUser, fields: Record<string, unknown>, data: Buffer, upTo = Infinity, id = `o-${randomBytes(4).toString('hex')}`) {
    const offered = await okResult<FileOfferResult>(u.request({ op: 'file.offer', id, name: 'raw.bin', size: data.length, sha256: sha256(data), ...fields }));
    const { offer } = offered;
    for (let i = offer.uploaded; i < Math.min(offer.chunks, upTo); i++) {
      await okResult<FileChunkResult>(
        u.request({ op: 'file.chunk', offer: offer.id, index: i, data: data.subarray(i * CHUNK, (i + 1) * CHUNK).toString('base64') }),
      );
    }
    return { offer, id };
  }

  it('delivers a text file and a binary file of several MiB byte-identical, with progress on both sides and the sender told of each step', async () => {
    const [a, b] = [await users.fresh('alice'), await users.fresh('bob')];
    const alice = await users.login(a);
    const bob = await users.login(b);
    const text = writeTemp('notes.txt', 'first line\nsecond line, ünïcödé\n');
    const binary = randomBytes(5 * 1024 * 1024 + 12_345);
    const binPath = writeTemp('photo.raw', binary);

    // The two side by side, as two terminals would.
    const [sentText, sentBin] = await Promise.all([cli(a, ['--json', 'file', 'send', b, text]), cli(a, ['--json', 'file', 'send', b, binPath])]);
    expect(sentText.code, sentText.stderr).toBe(0);
    const textOffer = sentText.json.find((l) => l.type === 'offered')!.offer as FileOffer;
    expect(textOffer).toMatchObject({ from: a, name: 'notes.txt', size: readFileSync(text).length, type: 'text/plain', recipients: { [b]: 'pending' } });

    expect(sentBin.code, sentBin.stderr).toBe(0);
    const binOffer = sentBin.json.find((l) => l.type === 'offered')!.offer as FileOffer;
    const upload = sentBin.json.filter((l) => l.type === 'progress');
    expect(upload.length).toBeGreaterThan(10);
    expect(upload.at(-1)).toMatchObject({ direction: 'upload', offer: binOffer.id, bytes: binary.length, total: binary.length });

    // The receiver sees each offer with sender, name, size and hash once it is uploaded.
    const offered = (await bob.waitFor(isFile('offered', binOffer.id))) as FileEvent;
    expect(offered.offer).toMatchObject({ from: a, name: 'photo.raw', size: binary.length, sha256: sha256(binary), type: 'application/octet-stream' });
    await bob.waitFor(isFile('offered', textOffer.id));

    const into = dir();
    const [gotText, gotBin] = await Promise.all([
      cli(b, ['file', 'accept', textOffer.id, '--to', into]),
      cli(b, ['--json', 'file', 'accept', binOffer.id, '--to', into]),
    ]);
    expect(gotText.code, gotText.stderr).toBe(0);
    expect(gotText.stdout).toContain(`received notes.txt (`);
    // Not a terminal: no progress bar.
    expect(gotText.stderr).toBe('');
    expect(readFileSync(join(into, 'notes.txt'))).toEqual(readFileSync(text));

    expect(gotBin.code, gotBin.stderr).toBe(0);
    const download = gotBin.json.filter((l) => l.type === 'progress');
    expect(download.length).toBeGreaterThan(10);
    expect(download.at(-1)).toMatchObject({ direction: 'download', bytes: binary.length, total: binary.length });
    // The offer in the line is as it stands now: received.
    expect(gotBin.json.at(-1)).toMatchObject({ type: 'received', path: join(into, 'photo.raw'), offer: { recipients: { [b]: 'received' } } });
    expect(readFileSync(join(into, 'photo.raw')).equals(binary)).toBe(true);
    // Nothing partial is left behind.
    expect(readdirSync(into).sort()).toEqual(['notes.txt', 'photo.raw']);

    for (const kind of ['accepted', 'received'] as const) await alice.waitFor(isFile(kind, binOffer.id));
    expect(((await alice.waitFor(isFile('received', textOffer.id))) as FileEvent).user).toBe(b);
    // Received by everyone: the server copy is gone.
    await expect.poll(() => serverHolds(binOffer.id), { timeout: 10_000 }).toBe(false);

    // Accepting the same file again never overwrites the one already there.
    const again = await cli(a, ['--json', 'file', 'send', b, text]);
    const second = again.json.find((l) => l.type === 'offered')!.offer as FileOffer;
    expect(second.id).not.toBe(textOffer.id);
    expect((await cli(b, ['file', 'accept', second.id, '--to', into])).code).toBe(0);
    expect(readdirSync(into).sort()).toEqual(['notes (1).txt', 'notes.txt', 'photo.raw']);
  }, 120_000);

  it('deletes the server copy when the receiver declines, and tells the sender', async () => {
    const [a, b] = [await users.fresh('alice'), await users.fresh('bob')];
    const alice = await users.login(a);
    const path = writeTemp('unwanted.bin', randomBytes(3 * CHUNK + 7));
    const sent = await cli(a, ['--json', 'file', 'send', b, path]);
    const offer = sent.json.find((l) => l.type === 'offered')!.offer as FileOffer;
    expect(await serverHolds(offer.id)).toBe(true);

    const declined = await cli(b, ['file', 'decline', offer.id]);
    expect(declined.code, declined.stderr).toBe(0);
    expect(declined.stdout.trim()).toBe(`declined unwanted.bin (96.0 KiB) from ${a}`);
    expect(((await alice.waitFor(isFile('declined', offer.id))) as FileEvent).user).toBe(b);
    expect(await serverHolds(offer.id)).toBe(false);
    const bob = await users.login(b);
    expect(await bob.request({ op: 'file.fetch', offer: offer.id, index: 0 })).toMatchObject({ ok: false, error: { code: 'file_not_ready' } });
    expect(await bob.request({ op: 'file.accept', offer: offer.id })).toMatchObject({ ok: false, error: { code: 'not_allowed' } });
  });

  it('keeps an offer for an offline receiver, who accepts it after the sender has gone offline; the sender learns of it on return', async () => {
    const [a, b] = [await users.fresh('alice'), await users.fresh('bob')];
    const data = randomBytes(200_000);
    const alice = await users.login(a);
    const { offer } = await rawOffer(alice, { to: b, name: 'for-later.bin' }, data);
    await users.logout(alice);

    // Bob comes online: the offer is in his sync, before `synced`.
    const bob = await users.login(b);
    const files = (await bob.waitFor((e) => e.type === 'files')) as FilesEvent;
    expect(files.offers).toEqual([
      expect.objectContaining({ id: offer.id, from: a, name: 'for-later.bin', size: data.length, recipients: { [b]: 'pending' } }),
    ]);
    await bob.waitFor((e) => e.type === 'synced');
    const order = bob.events.map((e) => e.type);
    expect(order.indexOf('files')).toBeLessThan(order.indexOf('synced'));
    await users.logout(bob);

    const into = dir();
    const got = await cli(b, ['file', 'accept', offer.id, '--to', into]);
    expect(got.code, got.stderr).toBe(0);
    expect(readFileSync(join(into, 'for-later.bin')).equals(data)).toBe(true);

    const back = await users.login(a);
    const state = (await back.waitFor((e) => e.type === 'files')) as FilesEvent;
    expect(state.offers.find((o) => o.id === offer.id)?.recipients).toEqual({ [b]: 'received' });
    const listed = await cli(a, ['file', 'list']);
    expect(listed.stdout).toContain(`${offer.id}  you → ${b}  for-later.bin (195.3 KiB)  ${b}: received`);
  });

  it('parley file send tells the sender when the receiver is offline, and when they were last online, as send does', async () => {
    const [a, b] = [await users.fresh('alice'), await users.fresh('bob')];
    const path = join(dir(), 'agenda.txt');
    writeFileSync(path, 'agenda\n');
    const never = await cli(a, ['file', 'send', b, path]);
    expect(never.code, never.stderr).toBe(0);
    expect(never.stderr.trim()).toBe(`${b} is offline (never seen online): they will see the offer when they next connect`);

    await users.logout(await users.login(b));
    const seen = await cli(a, ['--json', 'file', 'send', b, path]);
    expect(seen.code, seen.stderr).toBe(0);
    expect(seen.json.find((l) => l.type === 'offline')).toEqual({ type: 'offline', user: b, lastSeen: expect.any(Number) as number });

    // Online: nothing to say.
    const bob = await users.login(b);
    const online = await cli(a, ['--json', 'file', 'send', b, path]);
    expect(online.code, online.stderr).toBe(0);
    expect(online.json.filter((l) => l.type === 'offline')).toEqual([]);
    await users.logout(bob);
  });

  // Not beside the others: its offers must outlive its many steps (TTL_MS, 20 s), which took over 20 s on a loaded
  // machine with four tests running beside it.
  it('tells the sender of each decision once: a later session shows only what happened since', async ({ expect, onTestFinished }) => {
    const users = usersOfItsOwn(onTestFinished);
    const [a, b] = [await users.fresh('alice'), await users.fresh('bob')];
    const env = { PARLEY_SERVER: topo.server.mqttUrl, PARLEY_USER: a, PARLEY_PASSWORD: users.password };
    const alice = await users.login(a);
    const { offer } = await rawOffer(alice, { to: b, name: 'seen.bin' }, randomBytes(100));
    const bob = await users.login(b);
    await okResult(bob.request({ op: 'file.accept', offer: offer.id }));
    /** What the server says Alice has been shown, once it says it. */
    const seenBecomes = (seen: FileOffer['seen']) =>
      expect
        .poll(async () => (await okResult<{ offers: FileOffer[] }>(alice.request({ op: 'file.list' }))).offers.find((o) => o.id === offer.id)?.seen, {
          timeout: 15_000,
        })
        .toEqual(seen);

    /** One `parley listen` session of Alice's, stopped once `check` is done. */
    const session = async (check: (listen: CliProcess) => Promise<void>) => {
      const listen = CliProcess.start(['listen'], env);
      try {
        await check(listen);
      } finally {
        await listen.stop();
      }
    };

    await session(async (listen) => {
      await listen.waitForLine(line(`* ${b} accepted seen.bin (100 B)`), 30_000);
      await seenBecomes({ [b]: 'accepted' });
    });

    // While Alice is away, Bob downloads the file.
    await okResult(bob.request({ op: 'file.fetch', offer: offer.id, index: 0 }));
    await okResult(bob.request({ op: 'file.received', offer: offer.id }));
    await session(async (listen) => {
      await listen.waitForLine(line(`* ${b} received seen.bin (100 B)`), 30_000);
      await seenBecomes({ [b]: 'received' });
    });

    // Away again: Bob declines another offer. The next session shows that, and nothing of the first offer.
    const other = (await rawOffer(alice, { to: b, name: 'other.bin' }, randomBytes(10))).offer;
    await okResult(bob.request({ op: 'file.decline', offer: other.id }));
    await session(async (listen) => {
      // Every live offer comes in one sync event: once the new decision is shown, an old one would have been too.
      await listen.waitForLine(line(`* ${b} declined other.bin (10 B)`), 30_000);
      expect(listen.lines.filter((l) => l.includes('seen.bin'))).toEqual([]);
    });
    // Only the sender can say what it has seen.
    expect(await bob.request({ op: 'file.seen', offer: offer.id, states: { [b]: 'received' } })).toMatchObject({ ok: false, error: { code: 'not_allowed' } });
    // Both offers now have nothing more to tell Alice (each decision made for good, and shown): the next sync leaves
    // them out, and `file list` still has them.
    await seenBecomes({ [b]: 'received' });
    await expect
      .poll(async () => (await okResult<{ offers: FileOffer[] }>(alice.request({ op: 'file.list' }))).offers.find((o) => o.id === other.id)?.seen, {
        timeout: 15_000,
      })
      .toEqual({ [b]: 'declined' });
    const chat = CliProcess.start(['--json', 'chat'], env);
    try {
      await chat.waitForLine(/"type":"synced"/, 30_000);
      chat.type('/quit');
      await chat.exited;
      expect(chat.json().filter((l) => l.type === 'files')).toEqual([]);
    } finally {
      await chat.stop();
    }
    const listed = await cli(a, ['--json', 'file', 'list']);
    expect(listed.json.map((l) => (l.offer as FileOffer).name).sort()).toEqual(['other.bin', 'seen.bin']);
  });

  // Not beside the others either: the sender's list must still show its offer withdrawn before it expires (TTL_MS).
  it('lets the sender withdraw an offer (parley file cancel): a waiting receiver is told, and the data is gone', async ({ expect, onTestFinished }) => {
    const users = usersOfItsOwn(onTestFinished);
    const [a, b] = [await users.fresh('alice'), await users.fresh('bob')];
    const bob = await users.login(b);
    const alice = await users.login(a);
    const wrong = writeTemp('wrong.txt', 'not this one');
    const sent = await cli(a, ['--json', 'file', 'send', b, wrong]);
    const offer = sent.json.find((l) => l.type === 'offered')!.offer as FileOffer;
    await bob.waitFor(isFile('offered', offer.id));
    const listen = CliProcess.start(['listen'], { PARLEY_SERVER: topo.server.mqttUrl, PARLEY_USER: b, PARLEY_PASSWORD: users.password });
    try {
      await listen.waitForLine(line(`* ${a} offers wrong.txt (12 B) — parley file accept ${offer.id} or parley file decline ${offer.id}`), 30_000);
      // Its receiver is told who may withdraw it, and how to decline it instead; its sender, that only receivers take it.
      expect((await cli(b, ['file', 'cancel', offer.id])).stderr.trim()).toBe(
        `error: not_allowed: ${a} sent file offer ${offer.id} (wrong.txt); only its sender withdraws it; decline it instead (parley file decline ${offer.id})`,
      );
      expect(await alice.request({ op: 'file.accept', offer: offer.id })).toMatchObject({
        ok: false,
        error: { code: 'not_allowed', message: `you sent file offer ${offer.id} (wrong.txt); only its receivers accept it` },
      });
      expect(await alice.request({ op: 'file.fetch', offer: offer.id, index: 0 })).toMatchObject({ ok: false, error: { code: 'not_allowed' } });
      const cancelled = await cli(a, ['file', 'cancel', offer.id]);
      expect(cancelled.code, cancelled.stderr).toBe(0);
      expect(cancelled.stdout.trim()).toBe('withdrew wrong.txt (12 B)');
      expect(((await bob.waitFor(isFile('withdrawn', offer.id))) as FileEvent).offer.from).toBe(a);
      await listen.waitForLine(line(`* ${a} withdrew wrong.txt (12 B)`), 30_000);
    } finally {
      await listen.stop();
    }
    await expect.poll(() => serverHolds(offer.id), { timeout: 10_000 }).toBe(false);
    expect(await bob.request({ op: 'file.accept', offer: offer.id })).toMatchObject({ ok: false, error: { code: 'unknown_file' } });
    // A download of it cut short earlier left a part file: asking for it again says why it is gone, and tidies up.
    const into = dir();
    writeFileSync(join(into, `.${offer.id}.parley-part`), 'not t');
    // These change nothing the others look at: three at a time.
    const three = atMost(3);
    const [late, listedBySender, cancelledAgain, listedByReceiver, sentAgain] = await Promise.all([
      three(() => cli(b, ['file', 'accept', offer.id, '--to', into])),
      three(() => cli(a, ['file', 'list'])),
      three(() => cli(a, ['file', 'cancel', offer.id])),
      three(() => cli(b, ['file', 'list'])),
      three(() => cli(a, ['--json', 'file', 'send', b, wrong])),
    ]);
    expect(late.code).not.toBe(0);
    expect(late.stderr).toContain(`${a} withdrew file offer ${offer.id} (wrong.txt)`);
    expect(readdirSync(into)).toEqual([]);
    // The sender's list shows it withdrawn (until it expires); withdrawing again answers the same.
    expect(listedBySender.stdout).toContain(`${offer.id}  you → ${b}  wrong.txt (12 B)  ${b}: withdrawn`);
    expect(cancelledAgain.stdout.trim()).toBe('withdrew wrong.txt (12 B)');
    expect(listedByReceiver.stdout).not.toContain(offer.id);
    // Sending the same file again is a new offer, with an id of its own: not the one Bob was told is withdrawn.
    const resent = sentAgain.json.find((l) => l.type === 'offered')!.offer as FileOffer;
    expect(resent.id).not.toBe(offer.id);
    await bob.waitFor(isFile('offered', resent.id));
  });

  // The next three run side by side, each with users of its own: one mostly waits for offers to expire (TTL_MS, 20 s),
  // the others' work fits in that time.
  it.concurrent(
    'checks where to save before accepting, so a bad --to tells the sender nothing; a reader that stops early ends the CLI quietly',
    async ({ expect, onTestFinished }) => {
      const users = usersOfItsOwn(onTestFinished);
      const [a, b] = [await users.fresh('alice'), await users.fresh('bob')];
      const alice = await users.login(a);
      const { offer } = await rawOffer(alice, { to: b, name: 'menu.txt' }, Buffer.from('soup'));
      const tos = [join(work, 'no-such-dir'), writeTemp('a-file.txt', 'x')];
      for (const got of await Promise.all(tos.map((to) => cli(b, ['file', 'accept', offer.id, '--to', to])))) {
        expect(got.code).toBe(2);
        expect(got.stderr).toMatch(/is not a directory/);
      }
      expect((await okResult<{ offers: FileOffer[] }>(alice.request({ op: 'file.list' }))).offers[0]?.recipients).toEqual({ [b]: 'pending' });
      expect(alice.events.some(isFile('accepted'))).toBe(false);

      // `parley --json file send … | head -1`: the output closes under a running upload.
      const child = spawn(process.execPath, [join(REPO_ROOT, 'bin/parley.js'), '--json', 'file', 'send', b, writeTemp('big.bin', randomBytes(3 * CHUNK * 8))], {
        env: { PATH: process.env.PATH ?? '', PARLEY_SERVER: topo.server.mqttUrl, PARLEY_USER: a, PARLEY_PASSWORD: users.password },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      child.stdout.once('data', () => child.stdout.destroy());
      const code = await new Promise((resolve) => child.once('close', resolve));
      expect(stderr).not.toMatch(/EPIPE|Error/);
      // As a program ended by SIGPIPE: the upload was cut short.
      expect(code).toBe(141);
    },
  );

  it.concurrent(
    'saves a name at the byte limit again in the same folder, ends two accepts of one offer at once clearly, and offers a settled file anew',
    async ({ expect }) => {
      const [a, b] = [await users.fresh('alice'), await users.fresh('bob')];
      const into = dir();
      const send = async (path: string) => {
        const sent = await cli(a, ['--json', 'file', 'send', b, path]);
        expect(sent.code, sent.stderr).toBe(0);
        return sent.json.find((l) => l.type === 'offered')!.offer as FileOffer;
      };
      // Two runs side by side, each of one offer pending at a time (the server allows four): the long name and then the
      // settled file, and the two races.
      await Promise.all([
        (async () => {
          // A name of 255 bytes: the second copy is numbered within the limit.
          const long = writeTemp(`${'L'.repeat(251)}.txt`, 'long\n');
          for (let i = 0; i < 2; i++) {
            const got = await cli(b, ['file', 'accept', (await send(long)).id, '--to', into]);
            expect(got.code, got.stderr).toBe(0);
          }
          expect(readdirSync(into).sort()).toEqual([`${'L'.repeat(247)} (1).txt`, `${'L'.repeat(251)}.txt`]);

          // Sent again once declined, and again once withdrawn: a new offer each time, pending for bob.
          const sticker = writeTemp('sticker.txt', 'sticker\n');
          const first = await send(sticker);
          expect((await cli(b, ['file', 'decline', first.id])).code).toBe(0);
          const second = await send(sticker);
          expect((await cli(a, ['file', 'cancel', second.id])).code).toBe(0);
          const third = await send(sticker);
          expect(new Set([first.id, second.id, third.id]).size).toBe(3);
          expect(third.recipients).toEqual({ [b]: 'pending' });
          // Sent again while bob has not decided: the same offer, not a second one.
          expect((await send(sticker)).id).toBe(third.id);
        })(),
        (async () => {
          // Two accepts of one offer into one folder at once: one saves it; the other says why it did not, in words.
          const big = randomBytes(40 * CHUNK);
          const offer = await send(writeTemp('big.bin', big));
          const together = dir();
          const both = await Promise.all([0, 1].map(() => cli(b, ['file', 'accept', offer.id, '--to', together])));
          expect(both.map((r) => r.code).sort()).toEqual([0, 1]);
          const refused = both.find((r) => r.code === 1)!;
          expect(refused.stderr).toMatch(
            /^error: (download_in_progress: another download of \S+ into .* is under way|not_allowed: you have received this file already)/,
          );
          expect(readFileSync(join(together, 'big.bin')).equals(big)).toBe(true);
          expect(readdirSync(together).filter((n) => n.startsWith('.'))).toEqual([]);

          // Two accepts into two folders (two devices): one saves it; one that loses the race says so and leaves no part file.
          const twice = await send(writeTemp('twice.bin', big));
          const folders = [dir(), dir()];
          const devices = await Promise.all(folders.map((to) => cli(b, ['file', 'accept', twice.id, '--to', to])));
          expect(devices.some((r) => r.code === 0)).toBe(true);
          for (const r of devices.filter((r) => r.code !== 0)) expect(r.stderr).toMatch(/you have received this file already/);
          for (const to of folders) expect(readdirSync(to).filter((n) => n.startsWith('.'))).toEqual([]);
        })(),
      ]);
    },
    90_000,
  );

  it.concurrent(
    'limits how many offers a sender has open, offers to every other member of a group, and expires what nobody took',
    async ({ expect, onTestFinished }) => {
      const users = usersOfItsOwn(onTestFinished);
      const [a, b, c] = [await users.fresh('alice'), await users.fresh('bob'), await users.fresh('carol')];
      const alice = await users.login(a);
      const bob = await users.login(b);
      const carol = await users.login(c);
      await okResult(alice.request({ op: 'group.create', name: 'crew', members: [b, c] }));
      const { offer } = await rawOffer(alice, { group: 'crew', name: 'plan.txt' }, Buffer.from('the plan'));
      expect(Object.keys(offer.recipients).sort()).toEqual([b, c].sort());
      for (const u of [bob, carol]) expect(((await u.waitFor(isFile('offered', offer.id))) as FileEvent).offer.group).toMatchObject({ name: 'crew' });
      await okResult(bob.request({ op: 'file.decline', offer: offer.id }));
      // Carol has not decided: the data stays.
      expect(await serverHolds(offer.id)).toBe(true);

      for (let i = 0; i < 3; i++) await rawOffer(alice, { to: b, name: `empty${i}.txt` }, Buffer.alloc(0));
      expect(await alice.request({ op: 'file.offer', to: b, name: 'one-more.txt', size: 0, sha256: sha256(Buffer.alloc(0)) })).toMatchObject({
        ok: false,
        // The answer says how to make room now, not only how to wait.
        error: { code: 'too_many_offers', message: expect.stringContaining('or withdraw one') },
      });
      // The CLI names its own commands for it, not the protocol's; --json keeps the line's shape.
      const oneMore = await cli(a, ['--json', 'file', 'send', b, writeTemp('one-more.txt', 'one more')]);
      expect(oneMore.code).toBe(1);
      expect(oneMore.json).toEqual([
        {
          type: 'error',
          code: 'too_many_offers',
          message:
            'you have 4 file offers not yet taken or declined, the most allowed; wait for them, let them expire, or withdraw one (parley file list shows them, parley file cancel ID withdraws one)',
        },
      ]);

      // Nobody took them: they expire, with their data.
      await expect
        .poll(async () => (await okResult<{ offers: FileOffer[] }>(alice.request({ op: 'file.list' }))).offers.length, { timeout: TTL_MS * 3, interval: 1000 })
        .toBe(0);
      await expect.poll(() => serverHolds(offer.id), { timeout: TTL_MS, interval: 500 }).toBe(false);
      expect(await carol.request({ op: 'file.accept', offer: offer.id })).toMatchObject({ ok: false, error: { code: 'unknown_file' } });
    },
    TTL_MS * 4,
  );

  it('resumes an upload interrupted half way, and a download from its part file, from the last acknowledged chunk', async () => {
    const [a, b] = [await users.fresh('alice'), await users.fresh('bob')];
    const data = randomBytes(40 * CHUNK + 99);
    const first = await users.login(a);
    const { offer, id } = await rawOffer(first, { to: b, name: 'resumed.bin' }, data, 20);
    await users.logout(first);

    // Offering again with the same request id tells how far the upload got; the rest follows.
    const alice = await users.login(a);
    const again = await okResult<FileOfferResult>(alice.request({ op: 'file.offer', id, to: b, name: 'resumed.bin', size: data.length, sha256: sha256(data) }));
    expect(again.offer).toMatchObject({ id: offer.id, uploaded: 20, chunks: 41 });
    // A chunk already stored is acknowledged and changes nothing; one ahead of the next is refused.
    expect(await alice.request({ op: 'file.chunk', offer: offer.id, index: 5, data: Buffer.alloc(CHUNK).toString('base64') })).toMatchObject({
      ok: true,
      result: { uploaded: 20, complete: false },
    });
    expect(await alice.request({ op: 'file.chunk', offer: offer.id, index: 22, data: Buffer.alloc(CHUNK).toString('base64') })).toMatchObject({
      ok: false,
      error: { code: 'bad_chunk' },
    });
    await rawOffer(alice, { to: b, name: 'resumed.bin' }, data, Infinity, id);

    // Bob downloads half, is interrupted; the CLI goes on from the part file and fetches only the rest.
    const bob = await users.login(b);
    await okResult(bob.request({ op: 'file.accept', offer: offer.id }));
    const into = dir();
    const half: Buffer[] = [];
    for (let i = 0; i < 17; i++)
      half.push(Buffer.from((await okResult<{ data: string }>(bob.request({ op: 'file.fetch', offer: offer.id, index: i }))).data, 'base64'));
    writeFileSync(join(into, `.${offer.id}.parley-part`), Buffer.concat([...half, randomBytes(100)]));
    const got = await cli(b, ['--json', 'file', 'accept', offer.id, '--to', into]);
    expect(got.code, got.stderr).toBe(0);
    expect(got.json.find((l) => l.type === 'progress')).toMatchObject({ bytes: 17 * CHUNK });
    expect(readFileSync(join(into, 'resumed.bin')).equals(data)).toBe(true);
    expect(readdirSync(into)).toEqual(['resumed.bin']);
  }, 90_000);

  it('sends a fetched chunk to the fetching connection only: not to the user\u2019s other devices, nor across the backplane', async () => {
    const [a, b] = [await users.fresh('alice'), await users.fresh('bob')];
    const data = randomBytes(3 * CHUNK);
    const alice = await users.login(a);
    const { offer } = await rawOffer(alice, { to: b, name: 'direct.bin' }, data);
    const fetching = await users.login(b);
    const otherDevice = await users.login(b);
    // With gateways over Redis, every packet one gateway publishes crosses this channel to all the others.
    const marker = `after-fetch-${randomBytes(4).toString('hex')}`;
    const backplane: Buffer[] = [];
    let markerCrossed: () => void = () => undefined;
    const crossed = new Promise<void>((resolve) => (markerCrossed = resolve));
    const tap = redis?.duplicate();
    if (tap) {
      tap.on('messageBuffer', (_channel: Buffer, message: Buffer) => {
        backplane.push(message);
        if (message.includes(marker)) markerCrossed();
      });
      await tap.subscribe(`${topo.env.PARLEY_REDIS_PREFIX}broker:packets`);
    }
    try {
      await okResult(fetching.request({ op: 'file.accept', offer: offer.id }));
      const got: Buffer[] = [];
      for (let i = 0; i < 3; i++)
        got.push(Buffer.from((await okResult<{ data: string }>(fetching.request({ op: 'file.fetch', offer: offer.id, index: i }))).data, 'base64'));
      expect(Buffer.concat(got).equals(data)).toBe(true);
      // Any other reply still reaches every device, after what was published before it: once the other device has it,
      // it would have had the chunks too, had they been published.
      await okResult(fetching.request({ op: 'who', id: marker, user: a }));
      await otherDevice.waitFor((e) => e.type === 'reply' && e.id === marker);
      expect(otherDevice.events.filter((e) => e.type === 'reply' && e.op === 'file.fetch')).toEqual([]);
      if (tap) {
        await withDeadline(crossed, 10_000);
        expect(Math.max(...backplane.map((m) => m.length))).toBeLessThan(CHUNK);
      }
      // A connection that only publishes (like mosquitto_pub) cannot take a reply itself: its chunk goes on the inbox.
      const publishOnly = await connectClient(topo.server.mqttUrl, { username: b, password: users.password, clientId: `${b}/publish-only` });
      try {
        const id = `publish-only-${randomBytes(4).toString('hex')}`;
        await publishOnly.publishAsync(topics.requests(b), JSON.stringify({ op: 'file.fetch', id, offer: offer.id, index: 1 }), { qos: 1 });
        expect(await otherDevice.waitFor((e) => e.type === 'reply' && e.id === id)).toMatchObject({ ok: true, op: 'file.fetch' });
      } finally {
        await endClient(publishOnly);
      }
      // Nor can one that has left by the time the chunk is read (mosquitto_pub leaves once its PUBLISH is acknowledged).
      const gone = await connectClient(topo.server.mqttUrl, { username: b, password: users.password, clientId: `${b}/gone` });
      const id = `gone-${randomBytes(4).toString('hex')}`;
      await gone.publishAsync(topics.requests(b), JSON.stringify({ op: 'file.fetch', id, offer: offer.id, index: 2 }), { qos: 1 });
      await endClient(gone);
      expect(await otherDevice.waitFor((e) => e.type === 'reply' && e.id === id)).toMatchObject({ ok: true, op: 'file.fetch' });
    } finally {
      tap?.disconnect();
    }
  });

  it('refuses, changing nothing, a file over the limit, a name with ../, a chunk for someone else\u2019s transfer, a chunk out of range, corrupt data and what is over the quota', async () => {
    const [a, b, c] = [await users.fresh('alice'), await users.fresh('bob'), await users.fresh('carol')];
    const alice = await users.login(a);
    const carol = await users.login(c);
    const base = { op: 'file.offer', to: b, sha256: 'a'.repeat(64) };

    expect(await alice.request({ ...base, name: 'huge.iso', size: MAX_FILE + 1 })).toMatchObject({ ok: false, error: { code: 'file_too_large' } });
    for (const name of ['../escape.txt', 'a/b.txt', '..', 'bad\u0007.txt', '.hidden', 'invoice\u202egpj.exe', 'a\u2066b.txt', '\u200b', '\u200b\u2800'])
      expect(await alice.request({ ...base, name, size: 10 }), name).toMatchObject({ ok: false, error: { code: 'invalid_file_name' } });
    expect(await alice.request({ ...base, name: 'page.html', type: 'text/html\u001b[31m', size: 10 })).toMatchObject({
      ok: false,
      error: {
        code: 'bad_request',
        message: 'a content type may not hold control characters, bidirectional controls (U+202A–U+202E, U+2066–U+2069) or half of a surrogate pair',
      },
    });
    expect(await alice.request({ ...base, to: 'nobody-here', name: 'x.txt', size: 1 })).toMatchObject({ ok: false, error: { code: 'unknown_user' } });
    const [tooBig, tooBigJson] = await Promise.all([
      cli(a, ['file', 'send', b, writeTemp('big.bin', Buffer.alloc(MAX_FILE + 1))]),
      cli(a, ['--json', 'file', 'send', b, writeTemp('bigger.bin', Buffer.alloc(MAX_FILE + 4 * 1024 * 1024))]),
    ]);
    expect(tooBig.code).toBe(1);
    expect(tooBig.stderr.trim()).toBe('error: file_too_large: the file is 16.0 MiB (16777217 bytes); the largest allowed is 16.0 MiB (16777216 bytes)');
    expect(tooBigJson.json).toEqual([{ type: 'error', code: 'file_too_large', message: 'the file is 20.0 MiB; the largest allowed is 16.0 MiB' }]);
    expect((await okResult<{ offers: FileOffer[] }>(alice.request({ op: 'file.list' }))).offers).toEqual([]);

    const data = randomBytes(3 * CHUNK);
    const { offer } = await rawOffer(alice, { to: b, name: 'mine.bin' }, data, 1);
    const chunk = data.subarray(CHUNK, 2 * CHUNK).toString('base64');
    expect(await carol.request({ op: 'file.chunk', offer: offer.id, index: 1, data: chunk })).toMatchObject({ ok: false, error: { code: 'unknown_file' } });
    expect(await carol.request({ op: 'file.fetch', offer: offer.id, index: 0 })).toMatchObject({ ok: false, error: { code: 'unknown_file' } });
    expect(await carol.request({ op: 'file.decline', offer: offer.id })).toMatchObject({ ok: false, error: { code: 'unknown_file' } });
    expect(await alice.request({ op: 'file.chunk', offer: offer.id, index: 3, data: chunk })).toMatchObject({
      ok: false,
      error: { code: 'chunk_out_of_range' },
    });
    expect(await alice.request({ op: 'file.chunk', offer: offer.id, index: 1, data: 'AAAA' })).toMatchObject({ ok: false, error: { code: 'bad_chunk' } });
    expect(await alice.request({ op: 'file.chunk', offer: offer.id, index: 1, data: 'not base64!' })).toMatchObject({
      ok: false,
      error: { code: 'bad_request' },
    });
    const [mine] = (await okResult<{ offers: FileOffer[] }>(alice.request({ op: 'file.list' }))).offers;
    expect(mine).toMatchObject({ id: offer.id, uploaded: 1, recipients: { [b]: 'pending' } });
    // Bob cannot see or take a file that is not completely uploaded.
    const bob = await users.login(b);
    expect(await bob.request({ op: 'file.accept', offer: offer.id })).toMatchObject({ ok: false, error: { code: 'unknown_file' } });
    expect((await okResult<{ offers: FileOffer[] }>(bob.request({ op: 'file.list' }))).offers).toEqual([]);

    // Bytes that do not match the announced SHA-256 are refused at the last chunk, and the offer is gone.
    const liar = await rawOffer(alice, { to: b, name: 'liar.bin', sha256: 'b'.repeat(64) }, data, 2);
    const last = await alice.request({ op: 'file.chunk', offer: liar.offer.id, index: 2, data: data.subarray(2 * CHUNK).toString('base64') });
    expect(last).toMatchObject({ ok: false, error: { code: 'checksum_mismatch' } });
    expect(await serverHolds(liar.offer.id)).toBe(false);
    expect(bob.events.some((e) => e.type === 'file')).toBe(false);

    // The sender's open offers may hold so many bytes together (24 MiB here; mine.bin is still open).
    await okResult(alice.request({ ...base, name: 'first.iso', size: MAX_FILE }));
    expect(await alice.request({ ...base, name: 'second.iso', size: 8 * 1024 * 1024 })).toMatchObject({
      ok: false,
      error: {
        code: 'quota_exceeded',
        message:
          'this file (8.0 MiB) would take your open file offers over the 24.0 MiB the server holds for you; wait for them to be taken, let them expire, or withdraw one',
      },
    });
    // The CLI says it in its own words: its commands, not the protocol's.
    const overQuota = await cli(a, ['file', 'send', b, writeTemp('second.iso', Buffer.alloc(8 * 1024 * 1024))]);
    expect(overQuota.code).toBe(1);
    expect(overQuota.stderr.trim()).toBe(
      'error: quota_exceeded: this file (8.0 MiB) would take your open file offers over the 24.0 MiB the server holds for you; wait for them to be taken, let them expire, or withdraw one (parley file list shows them, parley file cancel ID withdraws one)',
    );
    expect((await okResult<{ offers: FileOffer[] }>(alice.request({ op: 'file.list' }))).offers.map((o) => o.name)).toEqual(['mine.bin', 'first.iso']);
  });

  it('tells each receiver of an offer once, however often the sender sends its last chunk again', async () => {
    const [a, b, c] = [await users.fresh('alice'), await users.fresh('bob'), await users.fresh('carol')];
    const alice = await users.login(a);
    const bob = await users.login(b);
    const carol = await users.login(c);
    await okResult(alice.request({ op: 'group.create', name: 'crew', members: [b, c] }));
    const data = randomBytes(CHUNK + 5);
    const { offer } = await rawOffer(alice, { group: 'crew', name: 'once.bin' }, data, 1);
    const last = data.subarray(CHUNK).toString('base64');
    const completing = `last-${randomBytes(4).toString('hex')}`;
    const first = await okResult<FileChunkResult>(alice.request({ op: 'file.chunk', id: completing, offer: offer.id, index: 1, data: last }));
    expect(first).toEqual({ offer: offer.id, index: 1, uploaded: 2, complete: true });
    for (const u of [bob, carol]) await u.waitFor(isFile('offered', offer.id));
    // Repeats with new ids, and the completing request itself again: each answered as the first time.
    const repeats = await Promise.all([
      ...Array.from({ length: 30 }, () => alice.request({ op: 'file.chunk', offer: offer.id, index: 1, data: last })),
      alice.request({ op: 'file.chunk', id: completing, offer: offer.id, index: 1, data: last }),
      alice.request({ op: 'file.chunk', offer: offer.id, index: 0, data: '' }),
    ]);
    for (const r of repeats) expect(r).toMatchObject({ ok: true, result: { offer: offer.id, uploaded: 2, complete: true } });
    // Events to an inbox keep their order: once the withdrawal has arrived, any further offered would have too.
    await okResult(alice.request({ op: 'file.cancel', offer: offer.id }));
    for (const u of [bob, carol]) {
      await u.waitFor(isFile('withdrawn', offer.id));
      expect(u.events.filter(isFile('offered', offer.id))).toHaveLength(1);
    }
  });

  const tmux = spawnSync('tmux', ['-V']).status === 0;
  // Drawing is the CLI's own business, the same in both wirings: one run of it is enough.
  const inOneWiring = mode === 'embedded' ? it.runIf(tmux) : () => undefined;
  inOneWiring(
    'draws progress bars on a terminal, on both sides (real terminal, tmux)',
    async () => {
      const [a, b] = [await users.fresh('alice'), await users.fresh('bob')];
      const big = writeTemp('big.bin', randomBytes(12 * 1024 * 1024));
      const into = dir();
      const session = `parley-files-${randomBytes(4).toString('hex')}`;
      const tm = (...args: string[]) => spawnSync('tmux', args, { encoding: 'utf8' });
      const env = (u: string) => `env PARLEY_SERVER='${topo.server.mqttUrl}' PARLEY_USER='${u}' PARLEY_PASSWORD='${users.password}'`;
      const screen = () => tm('capture-pane', '-t', session, '-p').stdout;
      tm('new-session', '-d', '-s', session, '-x', '150', '-y', '20', `cd ${REPO_ROOT} && ${env(a)} node bin/parley.js file send ${b} ${big}; sleep 600`);
      try {
        await expect.poll(screen, { timeout: 60_000 }).toMatch(/offered big\.bin \(12\.0 MiB\) to \S+: (f\S+)/);
        expect(screen()).toMatch(/↑ big\.bin \[#{24}\] 100% 12\.0 MiB \/ 12\.0 MiB/);
        const id = /: (f\S+)/.exec(screen())![1]!;
        tm('kill-session', '-t', session);
        tm(
          'new-session',
          '-d',
          '-s',
          session,
          '-x',
          '150',
          '-y',
          '20',
          `cd ${REPO_ROOT} && ${env(b)} node bin/parley.js file accept ${id} --to ${into}; sleep 600`,
        );
        await expect.poll(screen, { timeout: 60_000 }).toMatch(/received big\.bin \(12\.0 MiB\)/);
        expect(screen()).toMatch(/↓ big\.bin \[#{24}\] 100% 12\.0 MiB \/ 12\.0 MiB/);
        expect(readFileSync(join(into, 'big.bin')).equals(readFileSync(big))).toBe(true);
      } finally {
        tm('kill-session', '-t', session);
      }
    },
    150_000,
  );

  it('offers, accepts, declines and withdraws in parley chat, where incoming offers show sender, name and size; the receiver\u2019s other device is told', async () => {
    const [a, b] = [await users.fresh('alice'), await users.fresh('bob')];
    const env = (u: string) => ({ PARLEY_SERVER: topo.server.mqttUrl6, PARLEY_USER: u, PARLEY_PASSWORD: users.password });
    const bobDir = dir();
    const alice = CliProcess.start(['chat'], env(a));
    const bob = CliProcess.start(['chat'], env(b), { cwd: bobDir });
    const bobElsewhere = CliProcess.start(['listen'], env(b));
    try {
      await alice.waitForLine(/logged in as/);
      await bob.waitForLine(/logged in as/);
      await bobElsewhere.waitForLine(/listening as/);
      const notes = writeTemp('notes.txt', 'chat file\n');
      alice.type(`/file ${b} ${notes}`);
      const offeredLine = await alice.waitForLine(/^offered notes\.txt \(10 B\) to /, 30_000);
      const id = offeredLine.split(': ').at(-1)!;
      await bob.waitForLine(line(`* ${a} offers notes.txt (10 B) — /accept ${id} or /decline ${id}`), 30_000);
      bob.type(`/accept ${id}`);
      await bob.waitForLine(line(`received notes.txt (10 B) from ${a}: ${join(bobDir, 'notes.txt')}`), 30_000);
      expect(readFileSync(join(bobDir, 'notes.txt'), 'utf8')).toBe('chat file\n');
      await alice.waitForLine(line(`* ${b} accepted notes.txt (10 B)`));
      await alice.waitForLine(line(`* ${b} received notes.txt (10 B)`));

      alice.type(`/file ${b} ${writeTemp('spam.txt', 'no thanks')}`);
      const spam = (await alice.waitForLine(/^offered spam\.txt/, 30_000)).split(': ').at(-1)!;
      await bob.waitForLine(new RegExp(`offers spam\\.txt \\(9 B\\) — /accept ${spam}`), 30_000);
      bob.type(`/decline ${spam}`);
      await bob.waitForLine(line(`declined spam.txt (9 B) from ${a}`));
      await alice.waitForLine(line(`* ${b} declined spam.txt (9 B)`));

      // An offer thought better of is withdrawn from the chat too; its receiver is told.
      alice.type(`/file ${b} ${writeTemp('oops.txt', 'wrong file')}`);
      const oops = (await alice.waitForLine(/^offered oops\.txt/, 30_000)).split(': ').at(-1)!;
      await bob.waitForLine(new RegExp(`offers oops\\.txt \\(10 B\\) — /accept ${oops}`), 30_000);
      alice.type(`/cancel ${oops}`);
      await alice.waitForLine(line(`withdrew oops.txt (10 B)`));
      await bob.waitForLine(new RegExp(`${a} withdrew oops\\.txt`), 30_000);

      // Bob's other device hears what he did here.
      await bobElsewhere.waitForLine(line(`* you accepted notes.txt (10 B) from ${a}`));
      await bobElsewhere.waitForLine(line(`* you received notes.txt (10 B) from ${a}`));
      await bobElsewhere.waitForLine(line(`* you declined spam.txt (9 B) from ${a}`));
      // The chat that did it printed its own lines, not the events too: a message sent after them comes after them.
      alice.type(`/msg ${b} that is all`);
      await bob.waitForLine(new RegExp(`${a} → you: that is all$`));
      expect(bob.lines.filter((l) => l.startsWith('* you '))).toEqual([]);
    } finally {
      await Promise.all([alice.stop('eof'), bob.stop('eof'), bobElsewhere.stop()]);
    }
  }, 90_000);
});

/** File chunks are many requests for one file: they draw on a byte budget of their own, not on the request rate. */
describe('file transfers under tight request limits', () => {
  const SMALL_CHUNK = 4096;
  let server: ParleyServer;
  let work: string;
  const users = new TestUsers(() => [server.mqttUrl], 'file transfer password');

  beforeAll(async () => {
    server = await startParley({
      env: {
        ...CHEAP_HASHING,
        PARLEY_CONNECTION_RATE: '1',
        PARLEY_CONNECTION_BURST: '30',
        PARLEY_USER_RATE: '1',
        PARLEY_USER_BURST: '30',
        PARLEY_FILE_CHUNK_BYTES: String(SMALL_CHUNK),
        // 200 chunks a second after a burst of 50.
        PARLEY_TRANSFER_RATE: String(200 * SMALL_CHUNK),
        PARLEY_TRANSFER_BURST: String(50 * SMALL_CHUNK),
      },
    });
    work = mkdtempSync(join(tmpdir(), 'parley-files-limits-'));
  });
  afterEach(() => users.closeAll());
  afterAll(async () => {
    await server?.dispose();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  const cli = (user: string, args: string[]) =>
    runCli(args, { PARLEY_SERVER: server.mqttUrl, PARLEY_USER: user, PARLEY_PASSWORD: users.password }, { timeoutMs: 60_000 });

  it('moves a file of ten times more chunks than the request burst, holding chunks over the byte budget back instead of refusing them', async () => {
    const [a, b] = [await users.fresh('alice'), await users.fresh('bob')];
    const data = randomBytes(300 * SMALL_CHUNK - 123);
    const path = join(mkdtempSync(join(work, 'd-')), 'many-chunks.bin');
    writeFileSync(path, data);

    const sent = await cli(a, ['--json', 'file', 'send', b, path]);
    expect(sent.code, sent.stderr).toBe(0);
    const offer = sent.json.find((l) => l.type === 'offered')!.offer as FileOffer;
    expect(offer).toMatchObject({ chunks: 300, uploaded: 300 });

    const into = mkdtempSync(join(work, 'in-'));
    const got = await cli(b, ['file', 'accept', offer.id, '--to', into]);
    expect(got.code, got.stderr).toBe(0);
    expect(readFileSync(join(into, 'many-chunks.bin')).equals(data)).toBe(true);

    // Other requests are still held to the request rate: a burst of sends past its size is refused in part.
    const alice = await users.login(a);
    const replies = await Promise.all(Array.from({ length: 40 }, (_, i) => alice.request({ op: 'send', to: b, text: `flood ${i}` })));
    const refused = replies.filter((r) => !r.ok && r.error.code === 'rate_limited').length;
    expect(refused).toBeGreaterThan(0);
    expect(replies.filter((r) => r.ok).length).toBeGreaterThan(0);
  }, 90_000);

  it('counts a chunk request that moves nothing as a request: a flood of chunks and fetches for no offer is refused like any flood', async () => {
    const mallory = await users.login(await users.fresh('mallory'));
    const flood = (make: (i: number) => Record<string, unknown>) => Promise.all(Array.from({ length: 60 }, (_, i) => mallory.request(make(i), 30_000)));
    const codes = (replies: Awaited<ReturnType<typeof flood>>) => replies.map((r) => (r.ok ? 'ok' : r.error.code));
    // A burst of 30 requests, then one a second: of 60 at once, about half are answered, the rest refused.
    const chunks = codes(await flood(() => ({ op: 'file.chunk', offer: 'fNoSuchOffer', index: 0, data: '' })));
    expect(chunks.filter((c) => c === 'rate_limited').length).toBeGreaterThanOrEqual(20);
    expect(chunks.filter((c) => c !== 'rate_limited').every((c) => c === 'unknown_file')).toBe(true);
    const fetches = codes(await flood(() => ({ op: 'file.fetch', offer: 'fNoSuchOffer', index: 0 })));
    expect(fetches.filter((c) => c === 'rate_limited').length).toBeGreaterThanOrEqual(50);
  }, 60_000);
});
