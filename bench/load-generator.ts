/**
 * The load generator: one child process per job, forked by the bench runner.
 * It connects its clients, says `ready`, runs the job when told `go`, reports
 * its counts, samples and own CPU time, closes every client and exits. Every
 * phase is bounded in time.
 */
import { performance } from 'node:perf_hooks';
import { LoadClient, bounded, openAll, type Endpoint } from './load-client.js';

export interface PairsJob {
  kind: 'pairs';
  /** [sender, recipient]: each sender sends to its recipient only. */
  pairs: [string, string][];
  /** Closed loop: this many messages in flight per pair (a message is done when delivered and acknowledged). */
  window?: number;
  /** Open loop instead: this many messages per second over all pairs, whatever the answers. */
  ratePerSec?: number;
  /** Record send→delivery and send→ack latencies (the probe). */
  latency?: boolean;
  warmupMs: number;
  measureMs: number;
}

export interface FanoutJob {
  kind: 'fanout';
  sender: string;
  members: string[];
  /** Parley: the group id; bare broker: the topic name. */
  group: string;
  window: number;
  warmupMs: number;
  measureMs: number;
}

export interface DrainJob {
  kind: 'drain';
  sender: string;
  receiver: string;
  count: number;
  window: number;
}

export interface IdleJob {
  kind: 'idle';
  users: string[];
}

export type JobBody = PairsJob | FanoutJob | DrainJob | IdleJob;
export type Job = JobBody & { endpoint: Endpoint; payloadBytes: number; tag: string };

export interface JobResult {
  /** Messages done (pairs, drain) or deliveries (fan-out) inside the measured window. */
  completed: number;
  seconds: number;
  /** Refused sends (error replies, failed PUBACKs) and messages still unanswered at the end. */
  errors: number;
  lost: number;
  deliveryMs?: number[];
  ackMs?: number[];
  /** Generator CPU time (user + system) over the run phase, in ms. */
  cpuMs: number;
  wallMs: number;
}

export type ToGenerator = { type: 'job'; job: Job } | { type: 'go' };
export type FromGenerator = { type: 'ready' } | { type: 'result'; result: JobResult } | { type: 'failed'; error: string };

/** How long the tail of a run may take to settle (messages in flight when sending stopped). */
const SETTLE_MS = 10_000;
const CONNECT_CONCURRENCY = 50;

function send(msg: FromGenerator): void {
  process.send?.(msg);
}

function nextMessage(): Promise<ToGenerator> {
  return new Promise((resolve) => process.once('message', (m) => resolve(m as ToGenerator)));
}

/** A unit of work that has connected and waits for `go`. */
interface Prepared {
  run(): Promise<Omit<JobResult, 'cpuMs' | 'wallMs'>>;
  clients: LoadClient[];
}

async function prepare(job: Job): Promise<Prepared> {
  const ep = job.endpoint;
  const opts = { payloadBytes: job.payloadBytes };
  switch (job.kind) {
    case 'pairs': {
      const users = job.pairs.flat();
      const clients = await openAll(users, CONNECT_CONCURRENCY, (u) => LoadClient.open(ep, u, opts));
      const byUser = new Map(clients.map((c) => [c.user, c]));
      return { clients, run: () => runPairs(job, byUser) };
    }
    case 'fanout': {
      const groups = ep.protocol === 'mqtt' ? [job.group] : [];
      const sender = await LoadClient.open(ep, job.sender, opts);
      const members = await openAll(job.members, CONNECT_CONCURRENCY, (u) => LoadClient.open(ep, u, { ...opts, groups }));
      return { clients: [sender, ...members], run: () => runFanout(job, sender, members) };
    }
    case 'drain': {
      const sender = await LoadClient.open(ep, job.sender, opts);
      if (ep.protocol === 'mqtt') {
        // The persistent session that will hold the backlog: subscribed, then offline.
        const session = await LoadClient.open(ep, job.receiver, { ...opts, session: true });
        await session.close();
      }
      return { clients: [sender], run: () => runDrain(job, sender) };
    }
    case 'idle': {
      const clients = await openAll(job.users, CONNECT_CONCURRENCY, (u) => LoadClient.open(ep, u, opts));
      return { clients, run: () => Promise.resolve({ completed: clients.length, seconds: 0, errors: 0, lost: 0 }) };
    }
  }
}

/** Tracks one message until it is both delivered and acknowledged. */
interface InFlight {
  sentAt: number;
  acked: boolean;
  deliveries: number;
  measured: boolean;
}

function runPairs(job: PairsJob & { tag: string }, byUser: Map<string, LoadClient>): Promise<Omit<JobResult, 'cpuMs' | 'wallMs'>> {
  return new Promise((resolve) => {
    const start = performance.now();
    const measureFrom = start + job.warmupMs;
    const measureTo = measureFrom + job.measureMs;
    const inflight = new Map<string, InFlight & { pair: number }>();
    const deliveryMs: number[] = [];
    const ackMs: number[] = [];
    let completed = 0;
    let errors = 0;
    let counter = 0;
    let sending = true;
    const pairs = job.pairs.map(([from, to]) => ({ from: byUser.get(from)!, to }));

    const sendOne = (pair: number) => {
      const id = `${job.tag}-${pair}-${counter++}`;
      const now = performance.now();
      inflight.set(id, { sentAt: now, acked: false, deliveries: 0, measured: now >= measureFrom && now < measureTo, pair });
      pairs[pair]!.from.sendTo(pairs[pair]!.to, id);
    };
    const maybeDone = (id: string, m: InFlight & { pair: number }) => {
      if (!m.acked || m.deliveries === 0) return;
      inflight.delete(id);
      const now = performance.now();
      if (now >= measureFrom && now < measureTo) completed++;
      if (sending && job.window !== undefined) sendOne(m.pair);
      else if (!sending && inflight.size === 0) finish();
    };
    for (const sender of pairs) {
      sender.from.events.acked = (id, ok) => {
        const m = inflight.get(id);
        if (!m) return;
        if (!ok) errors++;
        m.acked = true;
        if (job.latency && m.measured) ackMs.push(performance.now() - m.sentAt);
        maybeDone(id, m);
      };
    }
    for (const [, to] of job.pairs) {
      byUser.get(to)!.events.delivered = (id) => {
        const m = inflight.get(id);
        if (!m) return;
        m.deliveries++;
        if (job.latency && m.measured) deliveryMs.push(performance.now() - m.sentAt);
        maybeDone(id, m);
      };
    }

    let finished = false;
    const timers: NodeJS.Timeout[] = [];
    const finish = () => {
      if (finished) return;
      finished = true;
      for (const t of timers) clearTimeout(t);
      resolve({ completed, seconds: job.measureMs / 1000, errors, lost: inflight.size, deliveryMs, ackMs });
    };
    const stopSending = () => {
      sending = false;
      // Nothing in flight: done now. (A settle timer armed after that would hold the process open for its whole length.)
      if (inflight.size === 0) finish();
      else timers.push(setTimeout(finish, SETTLE_MS));
    };

    if (job.window !== undefined) {
      for (let p = 0; p < pairs.length; p++) for (let w = 0; w < job.window; w++) sendOne(p);
    } else {
      // Open loop at a fixed rate: every tick sends what is due, round robin over the pairs.
      const rate = job.ratePerSec ?? 1000;
      let sent = 0;
      const tick = setInterval(() => {
        const due = Math.floor(((performance.now() - start) / 1000) * rate);
        for (; sent < due; sent++) sendOne(sent % pairs.length);
      }, 2);
      timers.push(tick);
    }
    timers.push(
      setTimeout(() => {
        for (const t of timers) clearInterval(t);
        stopSending();
      }, job.warmupMs + job.measureMs),
    );
  });
}

function runFanout(job: FanoutJob & { tag: string }, sender: LoadClient, members: LoadClient[]): Promise<Omit<JobResult, 'cpuMs' | 'wallMs'>> {
  return new Promise((resolve) => {
    const start = performance.now();
    const measureFrom = start + job.warmupMs;
    const measureTo = measureFrom + job.measureMs;
    const inflight = new Map<string, InFlight>();
    let deliveries = 0;
    let errors = 0;
    let counter = 0;
    let sending = true;
    let finished = false;
    let settle: NodeJS.Timeout | undefined;

    const finish = () => {
      if (finished) return;
      finished = true;
      clearTimeout(settle);
      resolve({ completed: deliveries, seconds: job.measureMs / 1000, errors, lost: inflight.size });
    };
    const sendOne = () => {
      const id = `${job.tag}-g-${counter++}`;
      inflight.set(id, { sentAt: performance.now(), acked: false, deliveries: 0, measured: false });
      sender.sendToGroup(job.group, id);
    };
    const maybeDone = (id: string, m: InFlight) => {
      if (!m.acked || m.deliveries < members.length) return;
      inflight.delete(id);
      if (sending) sendOne();
      else if (inflight.size === 0) finish();
    };
    sender.events.acked = (id, ok) => {
      const m = inflight.get(id);
      if (!m) return;
      if (!ok) errors++;
      m.acked = true;
      maybeDone(id, m);
    };
    for (const member of members) {
      member.events.delivered = (id) => {
        const m = inflight.get(id);
        if (!m) return;
        m.deliveries++;
        const now = performance.now();
        if (now >= measureFrom && now < measureTo) deliveries++;
        maybeDone(id, m);
      };
    }
    for (let w = 0; w < job.window; w++) sendOne();
    setTimeout(() => {
      sending = false;
      if (inflight.size === 0) finish();
      else settle = setTimeout(finish, SETTLE_MS);
    }, job.warmupMs + job.measureMs);
  });
}

async function runDrain(job: DrainJob & { tag: string; endpoint: Endpoint }, sender: LoadClient): Promise<Omit<JobResult, 'cpuMs' | 'wallMs'>> {
  // Fill: the backlog for the offline receiver, a window of sends at a time, each acknowledged.
  const ids: string[] = Array.from({ length: job.count }, (_, i) => `${job.tag}-d-${i}`);
  let errors = 0;
  await bounded(
    new Promise<void>((resolve) => {
      let next = 0;
      let acked = 0;
      sender.events.acked = (_id, ok) => {
        if (!ok) errors++;
        acked++;
        if (next < ids.length) sender.sendTo(job.receiver, ids[next++]!);
        else if (acked === ids.length) resolve();
      };
      for (; next < Math.min(job.window, ids.length); next++) sender.sendTo(job.receiver, ids[next]!);
    }),
    60_000,
    'drain: filling the backlog',
  );

  // Drain: time from the connect to the last of the backlog delivered.
  const wanted = new Set(ids);
  let got = 0;
  let last: { conv: string; seq: number } | undefined;
  let done!: () => void;
  const drained = new Promise<void>((resolve) => (done = resolve));
  const start = performance.now();
  const receiver = await LoadClient.resume(job.endpoint, job.receiver, {
    delivered: (id, conv, seq) => {
      if (!wanted.delete(id)) return;
      got++;
      if (conv !== undefined && seq !== undefined && (last === undefined || seq > last.seq)) last = { conv, seq };
      if (got === ids.length) done();
    },
  });
  try {
    await bounded(drained, 60_000, `drain: ${got} of ${ids.length} delivered`);
    const seconds = (performance.now() - start) / 1000;
    // Parley: acknowledge the backlog, so the next repetition starts from an empty one.
    if (job.endpoint.protocol === 'parley' && last) {
      await receiver.request({ op: 'receipt', id: `${job.tag}-ack`, conv: last.conv, seq: last.seq, status: 'delivered' });
    }
    return { completed: got, seconds, errors, lost: ids.length - got };
  } finally {
    await receiver.close();
  }
}

async function main(): Promise<void> {
  const first = await bounded(nextMessage(), 30_000, 'no job');
  if (first.type !== 'job') throw new Error('expected a job');
  const job = first.job;
  const prepared = await bounded(prepare(job), 120_000, `${job.kind}: connecting`);
  send({ type: 'ready' });
  const go = await bounded(nextMessage(), 120_000, 'no go');
  if (go.type !== 'go') throw new Error('expected go');
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const outcome = await prepared.run();
  const cpu = process.cpuUsage(cpu0);
  const result: JobResult = { ...outcome, cpuMs: (cpu.user + cpu.system) / 1000, wallMs: performance.now() - t0 };
  // The result goes first: disconnecting (a Parley client acknowledges what it got) is not part of what was measured.
  send({ type: 'result', result });
  await Promise.all(prepared.clients.map((c) => c.close()));
}

main().then(
  () => process.disconnect?.(),
  (e: unknown) => {
    send({ type: 'failed', error: e instanceof Error ? e.message : String(e) });
    process.exitCode = 1;
    process.disconnect?.();
  },
);
