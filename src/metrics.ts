/**
 * Prometheus metrics (prom-client), served at GET /metrics. One registry per service instance
 * (tests run several services in one process). Hot-path updates go through label children cached
 * in plain Maps, so a request costs two Map lookups, one counter increment and one histogram
 * observation; gauges that describe state (session pool, audit) are read at scrape time.
 *
 * With P11KMS_WORKERS > 1 a scrape reaches whichever worker accepted the connection, so that
 * worker asks the primary, which merges every worker's registry (prom-client's
 * AggregatorRegistry): /metrics always describes the whole service.
 */
import cluster from 'node:cluster';
import client from 'prom-client';
import type { AuditObserver } from './audit/trail.js';
import type { Pkcs11Observer } from './hsm/instrument.js';
import type { Hsm } from './hsm/types.js';

const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];
const PKCS11_BUCKETS = [0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1];

export class Metrics {
  readonly registry = new client.Registry();
  private readonly requests: client.Counter<'operation' | 'code'>;
  private readonly requestSeconds: client.Histogram<'operation'>;
  private readonly pkcs11Seconds: client.Histogram<'function'>;
  private readonly pkcs11Errors: client.Counter<'function' | 'ckr'>;
  private readonly tokenUp: client.Gauge;
  private readonly throttledRequests: client.Counter<'operation' | 'family'>;
  private readonly requestChildren = new Map<string, client.Counter.Internal>();
  private readonly latencyChildren = new Map<string, client.Histogram.Internal<'operation'>>();
  private readonly pkcs11Children = new Map<string, client.Histogram.Internal<'function'>>();

  /** Feeds PKCS#11 call latency and errors (install with setPkcs11Observer). */
  readonly pkcs11: Pkcs11Observer;
  /** Feeds audit batch sizes, fsync latency, digests and write errors. */
  readonly audit: AuditObserver;

  constructor(hsm: Hsm) {
    const registers = [this.registry];
    if (cluster.isWorker) {
      client.AggregatorRegistry.setRegistries([this.registry]);
      new client.AggregatorRegistry(); // answers the primary's collection requests
    }
    client.collectDefaultMetrics({ register: this.registry, eventLoopMonitoringPrecision: 10 });
    this.requests = new client.Counter({
      name: 'p11kms_requests_total',
      help: 'KMS API requests by operation and outcome (OK or the AWS error code).',
      labelNames: ['operation', 'code'],
      registers,
    });
    this.requestSeconds = new client.Histogram({
      name: 'p11kms_request_duration_seconds',
      help: 'KMS API request latency, from first byte read to response written (including the audit fsync).',
      labelNames: ['operation'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.pkcs11Seconds = new client.Histogram({
      name: 'p11kms_pkcs11_call_duration_seconds',
      help: 'PKCS#11 call latency by function (C_Encrypt, C_Decrypt, ...; *Async calls under their base name).',
      labelNames: ['function'],
      buckets: PKCS11_BUCKETS,
      registers,
    });
    this.throttledRequests = new client.Counter({
      name: 'p11kms_throttled_requests_total',
      help: 'Requests refused with ThrottlingException, by operation and the quota family that refused them (the operation\'s own quota: "-"; requests-in-flight and pkcs11-sessions: back-pressure).',
      labelNames: ['operation', 'family'],
      registers,
    });
    this.pkcs11Errors = new client.Counter({
      name: 'p11kms_pkcs11_errors_total',
      help: 'Failed PKCS#11 calls by function and CKR_* return value.',
      labelNames: ['function', 'ckr'],
      registers,
    });
    new client.Gauge({
      name: 'p11kms_session_pool_sessions',
      help: 'PKCS#11 session pool: sessions open, checked out (busy), callers waiting, and the maximum.',
      labelNames: ['state'],
      registers,
      collect() {
        const s = hsm.poolStats?.();
        if (!s) return;
        this.set({ state: 'open' }, s.open);
        this.set({ state: 'busy' }, s.busy);
        this.set({ state: 'waiting' }, s.waiting);
        this.set({ state: 'max' }, s.max);
      },
    });
    new client.Gauge({
      name: 'p11kms_slow_lane_calls',
      help: 'Slow token calls (key generation, private-key operations) on the slow lane\'s own threads: running (never above threads), queued, and threads.',
      labelNames: ['state'],
      registers,
      collect() {
        const s = hsm.slowLaneStats?.();
        if (!s) return;
        this.set({ state: 'running' }, s.running);
        this.set({ state: 'queued' }, s.queued);
        this.set({ state: 'threads' }, s.threads);
      },
    });
    this.tokenUp = new client.Gauge({
      name: 'p11kms_token_up',
      help: 'Whether the last health check reached the token (1) or not (0); the lowest across workers.',
      registers,
      aggregator: 'min',
    });
    const tokenInfo = new client.Gauge({
      name: 'p11kms_token_info',
      help: 'The PKCS#11 token in use (value 1).',
      labelNames: ['label', 'model', 'manufacturer', 'library'],
      registers,
      aggregator: 'max',
    });
    tokenInfo.set({ label: hsm.info.label, model: hsm.info.model, manufacturer: hsm.info.manufacturerId, library: hsm.info.libraryDescription }, 1);
    this.tokenUp.set(1);

    const auditRecords = new client.Counter({ name: 'p11kms_audit_records_total', help: 'Audit records made durable.', registers });
    const auditBatch = new client.Histogram({
      name: 'p11kms_audit_batch_records',
      help: 'Records per audit group commit (one write + fdatasync).',
      buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512],
      registers,
    });
    const auditFsync = new client.Histogram({
      name: 'p11kms_audit_commit_duration_seconds',
      help: 'Audit group commit latency (write + fdatasync).',
      buckets: PKCS11_BUCKETS,
      registers,
    });
    const auditDigests = new client.Counter({ name: 'p11kms_audit_digests_total', help: 'Audit digests written, by whether the token signed them.', labelNames: ['signed'], registers });
    const auditErrors = new client.Counter({ name: 'p11kms_audit_write_errors_total', help: 'Audit write failures (the service then refuses requests).', registers });
    auditErrors.inc(0);

    this.pkcs11 = {
      call: (fn, seconds) => {
        let child = this.pkcs11Children.get(fn);
        if (child === undefined) {
          child = this.pkcs11Seconds.labels(fn);
          this.pkcs11Children.set(fn, child);
        }
        child.observe(seconds);
      },
      error: (fn, ckr) => this.pkcs11Errors.labels(fn, ckr).inc(),
    };
    this.audit = {
      batch: (records, seconds) => {
        auditRecords.inc(records);
        auditBatch.observe(records);
        auditFsync.observe(seconds);
      },
      digest: (signed) => auditDigests.labels(signed ? 'true' : 'false').inc(),
      writeError: () => auditErrors.inc(),
    };
  }

  /** One finished API request: `code` is 'OK' or the error type. */
  request(operation: string, code: string, seconds: number): void {
    const key = `${operation}|${code}`;
    let counter = this.requestChildren.get(key);
    if (counter === undefined) {
      counter = this.requests.labels(operation, code);
      this.requestChildren.set(key, counter);
    }
    counter.inc();
    let latency = this.latencyChildren.get(operation);
    if (latency === undefined) {
      latency = this.requestSeconds.labels(operation);
      this.latencyChildren.set(operation, latency);
    }
    latency.observe(seconds);
  }

  /** Requests so far by operation and outcome (this process), for the console's service page. */
  async requestSummary(): Promise<{ operation: string; code: string; count: number }[]> {
    const metric = await this.requests.get();
    return metric.values.map((v) => ({ operation: String(v.labels.operation), code: String(v.labels.code), count: v.value }));
  }

  /** One request refused with ThrottlingException. */
  throttled(operation: string, family: string): void {
    this.throttledRequests.labels(operation, family).inc();
  }

  setTokenUp(up: boolean): void {
    this.tokenUp.set(up ? 1 : 0);
  }

  contentType(): string {
    return this.registry.contentType;
  }

  render(): Promise<string> {
    return cluster.isWorker && process.send ? askPrimaryForMetrics() : this.registry.metrics();
  }
}

const METRICS_REQUEST = 'p11kms:metrics-request';
const METRICS_REPLY = 'p11kms:metrics-reply';
let nextRequestId = 0;

interface MetricsReply {
  type: typeof METRICS_REPLY;
  id: number;
  text?: string;
  error?: string;
}

function askPrimaryForMetrics(): Promise<string> {
  const id = nextRequestId++;
  return new Promise((resolve, reject) => {
    const onReply = (message: MetricsReply) => {
      if (message?.type !== METRICS_REPLY || message.id !== id) return;
      process.off('message', onReply);
      clearTimeout(timer);
      if (message.text !== undefined) resolve(message.text);
      else reject(new Error(message.error ?? 'no metrics'));
    };
    const timer = setTimeout(() => {
      process.off('message', onReply);
      reject(new Error('the primary process did not answer the metrics request'));
    }, 10_000);
    process.on('message', onReply);
    process.send!({ type: METRICS_REQUEST, id });
  });
}

/** In the primary of a multi-process service: merges the workers' metrics for whichever asks. */
export function serveClusterMetrics(): void {
  const aggregator = new client.AggregatorRegistry();
  cluster.on('message', (worker, message: { type?: string; id?: number }) => {
    if (message?.type !== METRICS_REQUEST) return;
    const reply = (fields: Partial<MetricsReply>) => {
      if (worker.isConnected()) worker.send({ type: METRICS_REPLY, id: message.id, ...fields });
    };
    aggregator.clusterMetrics().then(
      (text) => reply({ text }),
      (err: unknown) => reply({ error: err instanceof Error ? err.message : String(err) }),
    );
  });
}
