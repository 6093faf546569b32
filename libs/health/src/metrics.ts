import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { withDeadline } from './deadline.js';

/** How many calls wait in one service's queue, as read at scrape time. */
export interface QueueDepth {
  service: string;
  /** Not yet taken by any replica (null: the queue cannot tell, e.g. after trimming). */
  waiting: number | null;
  /** Taken by a replica and not yet answered. */
  pending: number;
}

/** Reads queue depths; registered by whoever owns the queues (the RPC transport). */
export type QueueDepthSource = () => Promise<QueueDepth[]>;

/** Outcome label of a request or call: `ok`, or the error code it ended with. */
export type Outcome = string;

const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5];
/** Finer at the low end: a synced commit takes a fraction of a millisecond on a quiet SSD, and its tail is what matters. */
const COMMIT_BUCKETS = [0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5];
/** A scrape waits this long at most for a queue depth (Redis may be away); the gauge is then left out. */
const DEPTH_TIMEOUT_MS = 1000;

/** The Prometheus metrics of one process, served on /metrics. */
export class Metrics {
  readonly registry = new Registry();
  private readonly depthSources = new Set<QueueDepthSource>();

  readonly connections = new Gauge({ name: 'parley_mqtt_connections', help: 'MQTT connections that completed login', registers: [this.registry] });
  readonly loginsFailed = new Counter({
    name: 'parley_logins_failed_total',
    help: 'CONNECTs refused',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  readonly requests = new Counter({
    name: 'parley_requests_total',
    help: 'Requests answered, by op and outcome',
    labelNames: ['op', 'outcome'] as const,
    registers: [this.registry],
  });
  readonly requestSeconds = new Histogram({
    name: 'parley_request_duration_seconds',
    help: 'Time from a request arriving to its reply being published',
    labelNames: ['op'] as const,
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });
  readonly requestsInProgress = new Gauge({
    name: 'parley_requests_in_progress',
    help: 'Requests received from clients and not yet answered (queued behind their connection or being handled)',
    registers: [this.registry],
  });
  readonly messagesAccepted = new Counter({
    name: 'parley_messages_accepted_total',
    help: 'Messages durably appended and answered accepted',
    registers: [this.registry],
  });
  readonly messagesDelivered = new Counter({
    name: 'parley_messages_delivered_total',
    help: 'Messages handed to the broker for an inbox: live (to each member, once accepted) or sync (a backlog sent to a connection catching up)',
    labelNames: ['path'] as const,
    registers: [this.registry],
  });
  readonly storeCommitSeconds = new Histogram({
    name: 'parley_store_commit_duration_seconds',
    help: "Synced commits of the embedded store's message appends (one per event-loop turn that had appends), from begin to synced to the disk: the server's main thread waits for each",
    buckets: COMMIT_BUCKETS,
    registers: [this.registry],
  });
  readonly rpcCallSeconds = this.rpcLatency(
    'parley_rpc_call_duration_seconds',
    'Calls to a remote service, from sending to the answer (or to giving up), by service, method and outcome',
  );
  readonly rpcHandleSeconds = this.rpcLatency(
    'parley_rpc_handle_duration_seconds',
    'Calls this service ran, from taking one off its queue to acknowledging it, by service, method and outcome',
  );
  readonly rpcQueueDepth = new Gauge({
    name: 'parley_rpc_queue_depth',
    help: 'Calls in a service queue: waiting (no replica has taken them) or pending (taken, not yet answered)',
    labelNames: ['service', 'state'] as const,
    registers: [this.registry],
    collect: () => this.collectQueueDepths(),
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'parley_process_' });
  }

  /** The calling and the serving side of the RPC transport report latencies in the same shape. */
  private rpcLatency(name: string, help: string): Histogram<'service' | 'method' | 'outcome'> {
    return new Histogram({ name, help, labelNames: ['service', 'method', 'outcome'] as const, buckets: LATENCY_BUCKETS, registers: [this.registry] });
  }

  /** Adds a source of queue depths, read on every scrape. */
  watchQueues(source: QueueDepthSource): void {
    this.depthSources.add(source);
  }

  private async collectQueueDepths(): Promise<void> {
    this.rpcQueueDepth.reset();
    const results = await Promise.allSettled([...this.depthSources].map((source) => withDeadline(source(), DEPTH_TIMEOUT_MS)));
    for (const result of results) {
      if (result.status !== 'fulfilled') continue;
      for (const { service, waiting, pending } of result.value) {
        if (waiting !== null) this.rpcQueueDepth.set({ service, state: 'waiting' }, waiting);
        this.rpcQueueDepth.set({ service, state: 'pending' }, pending);
      }
    }
  }
}
