/**
 * The composition root: configuration → principals, token, store → HTTP server. Used by main.ts
 * and by the tests, which start real services on loopback.
 */
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { ApiAuditor } from './audit/api-call.js';
import { type AuditTrail, disabledAuditTrail, openAuditTrail } from './audit/trail.js';
import { KmsAuthorizer } from './auth/kms-authorizer.js';
import { loadPrincipals } from './auth/principals.js';
import { SigV4Verifier } from './auth/sigv4.js';
import type { Config } from './config.js';
import { setPkcs11Observer } from './hsm/instrument.js';
import { openHsm } from './hsm/pkcs11-token.js';
import type { Hsm } from './hsm/types.js';
import { createRequestListener } from './http/server.js';
import type { Services } from './kms/context.js';
import { checkConsistency, isConsistent } from './kms/lifecycle/consistency.js';
import { GcmEncryptionMeter } from './kms/lifecycle/gcm-wear.js';
import { KeyUseTracker } from './kms/key-usage.js';
import { type DueWorkSummary, type LifecycleScheduler, startLifecycleScheduler } from './kms/lifecycle/scheduler.js';
import { applySeedFile } from './kms/seed/apply.js';
import { createLogger, type Logger } from './log.js';
import { Metrics } from './metrics.js';
import { describeStore, openStore } from './store/open.js';
import type { MetadataStore } from './store/types.js';

export { DATABASE_FILE } from './config.js';

export interface RunningService {
  url: string;
  port: number;
  services: Services;
  log: Logger;
  /** The audit trail (a no-op one with P11KMS_AUDIT=off). */
  audit: AuditTrail;
  metrics: Metrics;
  /** Runs one lifecycle pass now (rotations, deletions, expiry due by the service clock). */
  runDueWork(): Promise<DueWorkSummary>;
  close(): Promise<void>;
}

/** How long a /healthz answer (a real token round trip) is reused; failures are retried sooner. */
const HEALTH_CACHE_MS = 10_000;
const HEALTH_FAILURE_CACHE_MS = 2_000;

export interface StartOptions {
  now?: () => Date;
  log?: Logger;
}

export async function startService(config: Config, options: StartOptions = {}): Promise<RunningService> {
  const log = options.log ?? createLogger(config.logLevel);
  fs.mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  const principals = loadPrincipals(config, (msg) => log.info(msg));
  const hsm = await openHsm(config.token, config.dataDir, (level, msg) => log[level](msg));
  let store: MetadataStore | undefined;
  let authorizer: KmsAuthorizer;
  try {
    store = await openStore(config.database);
    // Compiles the principals' identity policies: an invalid one stops the start.
    authorizer = new KmsAuthorizer({ store, principals, accountId: config.accountId });
    await reportDivergence(hsm, store, log);
  } catch (e) {
    await store?.close();
    await hsm.close();
    throw e;
  }
  const now = options.now ?? (() => new Date());
  const account = { partition: config.partition, region: config.region, accountId: config.accountId };
  const metrics = new Metrics(hsm);
  setPkcs11Observer(metrics.pkcs11);
  let audit: AuditTrail;
  try {
    audit = config.audit.enabled ? await openServiceAuditTrail(config, hsm, account, now, log, metrics) : disabledAuditTrail();
    if (!config.audit.enabled) log.warn('audit trail disabled (P11KMS_AUDIT=off): requests are not recorded');
  } catch (e) {
    await store.close();
    await hsm.close();
    throw e;
  }
  const services: Services = {
    account,
    store,
    hsm,
    authorizer,
    now,
    audit,
    strictKeyCustody: config.lifecycle.strictKeyCustody,
    gcmWear: { meter: new GcmEncryptionMeter(), rotateAfter: config.lifecycle.gcmRotateAfter },
    keyUses: new KeyUseTracker(config.audit.enabled),
  };
  // Seed first, then the first lifecycle pass catches up on whatever came due while stopped.
  let lifecycle: LifecycleScheduler;
  try {
    if (config.lifecycle.seedFile) await applySeedFile(services, config.lifecycle.seedFile, log);
    lifecycle = await startLifecycleScheduler(services, log, config.lifecycle.intervalMs);
  } catch (e) {
    await audit.close().catch(() => undefined);
    await store.close();
    await hsm.close();
    throw e;
  }
  // The token round trip is cached; the store's is not (one cheap query), so that /healthz names a
  // database outage at once, before cached metadata stops being served (README "Several nodes").
  const health = cachedHealthCheck(() => hsm.ping(), (up) => metrics.setTokenUp(up));
  const verifier = new SigV4Verifier(
    { region: config.region, service: 'kms', maxSkewSeconds: config.maxClockSkewSeconds, now },
    principals.secretFor,
  );
  const listener = createRequestListener({
    services,
    principals,
    verifier,
    log,
    checkHealth: async () => {
      await health.check();
      await store.ping();
    },
    auditor: audit.enabled ? new ApiAuditor(audit, services) : undefined,
    metrics,
    checkReady: () => {
      if (closing) return 'shutting down';
      return audit.problem() ?? (health.lastFailed ? 'the last health check failed' : undefined);
    },
  });
  const server = http.createServer({ keepAliveTimeout: 65_000 }, listener);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.port, config.host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const host = config.host.includes(':') ? `[${config.host}]` : config.host;
  log.info({ url: `http://${host}:${port}`, token: hsm.info.label, tokenModel: hsm.info.model, mechanisms: hsm.info.mechanismCount, store: describeStore(config.database) }, 'p11kms listening');

  let closing: Promise<void> | undefined;
  return {
    url: `http://${host}:${port}`,
    port,
    services,
    log,
    audit,
    metrics,
    runDueWork: () => lifecycle.runDueWork(),
    close: () =>
      (closing ??= (async () => {
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeIdleConnections();
        });
        await lifecycle.stop();
        // Flushes and signs the final digest while the token is still open.
        await audit.close().catch((e: unknown) => log.error({ err: e instanceof Error ? e.message : String(e) }, 'closing the audit trail failed'));
        setPkcs11Observer(undefined);
        await store.close();
        await hsm.close();
      })()),
  };
}

async function openServiceAuditTrail(config: Config, hsm: Hsm, account: Services['account'], now: () => Date, log: Logger, metrics: Metrics): Promise<AuditTrail> {
  let signingKey;
  try {
    signingKey = await hsm.auditSigningKey?.(true);
  } catch (e) {
    log.warn({ err: e instanceof Error ? e.message : String(e) }, 'no audit signing key in the token; audit digests will be unsigned');
  }
  return openAuditTrail({
    dataDir: config.dataDir,
    account,
    now,
    fileMaxBytes: config.audit.fileMaxBytes,
    digestIntervalSeconds: config.audit.digestIntervalSeconds,
    retentionDays: config.audit.retentionDays,
    signingKey,
    log: { info: (o, m) => log.info(o, m), warn: (o, m) => log.warn(o, m), error: (o, m) => log.error(o, m) },
    observer: metrics.audit,
  });
}

/** A deep health check (real token round trip) whose answer is reused for up to 10 s. */
function cachedHealthCheck(probe: () => Promise<void>, report: (up: boolean) => void) {
  let last: { at: number; result: Promise<void>; failed: boolean | undefined } | undefined;
  return {
    get lastFailed(): boolean {
      return last?.failed === true;
    },
    check(): Promise<void> {
      const t = Date.now();
      const maxAge = last?.failed ? HEALTH_FAILURE_CACHE_MS : HEALTH_CACHE_MS;
      if (last === undefined || t - last.at >= maxAge) {
        const entry: { at: number; result: Promise<void>; failed: boolean | undefined } = { at: t, result: probe(), failed: undefined };
        entry.result.then(
          () => {
            entry.failed = false;
            report(true);
          },
          () => {
            entry.failed = true;
            report(false);
          },
        );
        last = entry;
      }
      return last.result;
    },
  };
}

/** Token objects without metadata (e.g. a crash between the two writes of CreateKey), metadata
 *  without token objects and versions out of order are reported, never silently repaired
 *  (`p11kms doctor --repair`). */
async function reportDivergence(hsm: Hsm, store: MetadataStore, log: Logger): Promise<void> {
  const report = await checkConsistency(hsm, store);
  if (isConsistent(report)) return;
  const name = (r: { keyId: string; version: number }) => `${r.keyId}#${r.version}`;
  const { orphanObjects, missingObjects, versionProblems, orphanWrappingKeys, staleImportParameters } = report;
  if (orphanObjects.length > 0) log.warn({ count: orphanObjects.length, objects: orphanObjects.slice(0, 20).map(name) }, 'token objects without metadata (orphans)');
  if (missingObjects.length > 0) log.error({ count: missingObjects.length, versions: missingObjects.slice(0, 20).map(name) }, 'key versions whose token objects are missing');
  if (versionProblems.length > 0) log.error({ keys: versionProblems.slice(0, 20) }, 'key versions out of order');
  if (orphanWrappingKeys.length + staleImportParameters.length > 0) log.warn({ orphanWrappingKeys, staleImportParameters }, 'import wrapping keys and parameters out of step');
  log.warn('run `p11kms doctor` to inspect and repair token/database divergences');
}
