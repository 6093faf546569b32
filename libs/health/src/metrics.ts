import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

/** The Prometheus metrics of one process, served on /metrics. */
export class Metrics {
  readonly registry = new Registry();

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
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5],
    registers: [this.registry],
  });
  readonly messagesAccepted = new Counter({
    name: 'parley_messages_accepted_total',
    help: 'Messages durably appended and answered accepted',
    registers: [this.registry],
  });
  readonly messagesPushed = new Counter({
    name: 'parley_messages_pushed_total',
    help: 'Message events handed to the broker for delivery to an inbox',
    registers: [this.registry],
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'parley_process_' });
  }
}
