import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MessageEvent, Reply, topics } from '#libs/protocol';
import { startParley, type ParleyServer } from '../support/parley-server.js';
import { MqttUser, registerUser } from '../support/mqtt-user.js';

/**
 * Any MQTT client is a Parley client: mosquitto_sub and mosquitto_pub, logged
 * in as users, see and send exactly what docs/topics.md says.
 */
const PASSWORD = 'mosquitto interop';

interface Sub {
  /** The next JSON payload mosquitto_sub printed, parsed. */
  next(timeoutMs?: number): Promise<unknown>;
  stop(): void;
}

/** Starts mosquitto_sub with -d and resolves once its SUBACK arrived; payload lines (JSON) are queued apart from the debug lines. */
function mosquittoSub(args: string[]): Promise<Sub> {
  // stdbuf: mosquitto_sub block-buffers its debug lines when stdout is a pipe.
  const child = spawn('stdbuf', ['-oL', 'mosquitto_sub', '-V', 'mqttv311', '-q', '1', '-d', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const payloads: string[] = [];
  const waiting: ((l: string) => void)[] = [];
  let subscribed: () => void = () => undefined;
  createInterface({ input: child.stdout }).on('line', (l) => {
    if (/received SUBACK/.test(l)) return subscribed();
    if (!l.startsWith('{')) return;
    // The inbox opens with sync bookkeeping (where each conversation stands); these tests read what follows.
    if (/^\{"type":"sync(ed)?"/.test(l)) return;
    const w = waiting.shift();
    if (w) w(l);
    else payloads.push(l);
  });
  const sub: Sub = {
    next: (timeoutMs = 10_000) =>
      new Promise((resolve, reject) => {
        const queued = payloads.shift();
        if (queued !== undefined) return resolve(JSON.parse(queued));
        const timer = setTimeout(() => reject(new Error(`mosquitto_sub printed no payload within ${timeoutMs} ms`)), timeoutMs);
        waiting.push((l) => {
          clearTimeout(timer);
          resolve(JSON.parse(l));
        });
      }),
    stop: () => child.kill('SIGTERM'),
  };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('mosquitto_sub did not subscribe within 10 s')), 10_000);
    subscribed = () => {
      clearTimeout(timer);
      resolve(sub);
    };
    child.once('exit', (code) => reject(new Error(`mosquitto_sub exited with ${code}`)));
  });
}

function mosquittoPub(args: string[]): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn('mosquitto_pub', ['-V', 'mqttv311', '-q', '1', ...args], { stdio: 'ignore' });
    child.once('exit', (code) => resolve(code ?? -1));
  });
}

describe('mosquitto_sub and mosquitto_pub as Parley clients', () => {
  let server: ParleyServer;
  const alice = `alice${randomBytes(3).toString('hex')}`;
  const bob = `bob${randomBytes(3).toString('hex')}`;
  const subs: Sub[] = [];

  beforeAll(async () => {
    server = await startParley();
    for (const u of [alice, bob]) expect(await registerUser(server.mqttUrl, u, PASSWORD)).toMatchObject({ ok: true });
  });
  afterAll(async () => {
    for (const s of subs) s.stop();
    await server?.dispose();
  });

  const login = (user: string, device: string) => ['-h', '::1', '-p', String(server.mqttPort), '-u', user, '-P', PASSWORD, '-i', `${user}/${device}`];

  it('receives a message sent with mosquitto_pub, and the sender gets its accepted reply', async () => {
    const bobSub = await mosquittoSub([...login(bob, 'sub'), '-t', topics.inbox(bob)]);
    const aliceSub = await mosquittoSub([...login(alice, 'sub'), '-t', topics.inbox(alice)]);
    subs.push(bobSub, aliceSub);

    const code = await mosquittoPub([
      ...login(alice, 'pub'),
      '-t',
      topics.requests(alice),
      '-m',
      JSON.stringify({ op: 'send', id: 'm1', to: bob, text: 'hello from mosquitto' }),
    ]);
    expect(code).toBe(0);

    const msg = MessageEvent.parse(await bobSub.next());
    expect(msg).toMatchObject({ type: 'message', from: alice, to: bob, text: 'hello from mosquitto', id: 'm1', seq: 1 });

    // Alice's inbox gets the accepted reply and her copy of the message (for her other devices).
    const aliceEvents = [await aliceSub.next(), await aliceSub.next()];
    const reply = aliceEvents.map((e) => Reply.safeParse(e)).find((r) => r.success)?.data;
    expect(reply).toMatchObject({ type: 'reply', id: 'm1', ok: true, result: { status: 'accepted', seq: 1 } });
  });

  it('delivers a message from an MQTT.js user to mosquitto_sub, and refuses another user\u2019s inbox', async () => {
    const bobSub = await mosquittoSub([...login(bob, 'sub2'), '-t', topics.inbox(bob)]);
    subs.push(bobSub);
    const a = await MqttUser.connect(server.mqttUrl, alice, PASSWORD);
    try {
      expect(await a.request({ op: 'send', to: bob, text: 'from mqtt.js' })).toMatchObject({ ok: true });
    } finally {
      await a.close();
    }
    // A new subscriber gets the backlog after Bob's delivered cursor (nothing was acknowledged yet) and the new message;
    // the live one may overtake the backlog, which is why every message carries its seq.
    const got = [(await bobSub.next()) as MessageEvent, (await bobSub.next()) as MessageEvent].sort((x, y) => x.seq - y.seq);
    expect(got).toMatchObject([
      { type: 'message', from: alice, text: 'hello from mosquitto', seq: 1 },
      { type: 'message', from: alice, text: 'from mqtt.js', seq: 2 },
    ]);
    // Alice subscribing to Bob's inbox is refused (SUBACK 0x80); mosquitto_sub reports it and exits.
    const denied = await new Promise<string>((resolve) => {
      const child = spawn('mosquitto_sub', ['-V', 'mqttv311', '-q', '1', ...login(alice, 'spy'), '-t', topics.inbox(bob), '-W', '5'], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (out += d.toString()));
      child.once('exit', () => resolve(out));
    });
    expect(denied).toMatch(/denied|fail/i);
  });
});
