/**
 * The composition root: configuration → principals, token, store → HTTP server. Used by main.ts
 * and by the tests, which start real services on loopback.
 */
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { ApiAuditor } from './audit/api-call.js';
import { openDigestCopy } from './audit/digest-copy.js';
import { type AuditRecordWriter, type AuditTrail, disabledAuditTrail, openAuditTrail } from './audit/trail.js';
import { KmsAuthorizer } from './auth/kms-authorizer.js';
import { loadPrincipals, type PrincipalRegistry } from './auth/principals.js';
import { SigV4Verifier } from './auth/sigv4.js';
import type { Config, XksConfig } from './config.js';
import { XksAuditor } from './audit/xks-call.js';
import { XksCredentials } from './auth/xks-credentials.js';
import { XksAuthorization } from './kms/xks/authorization.js';
import { XKS_API_PATH, createXksHandler } from './http/xks/router.js';
import { PRODUCT_VERSION } from './package-info.js';
import { ensureDataDir } from './data-dir.js';
import { setPkcs11Observer } from './hsm/instrument.js';
import type { Hsm } from './hsm/types.js';
import { createConsoleRoutes } from './http/console-static.js';
import { createOperatorRoutes } from './http/operator-api.js';
import { createPeerRoutes } from './http/peer-api.js';
import { loadPeers } from './kms/peers.js';
import { SiteReplication } from './kms/site-replication.js';
import { createClientErrorListener, createRequestListener, type HttpDeps } from './http/server.js';
import { ConnectionGuard, connectionsCheckingIntervalMs } from './http/connections.js';
import { operationNames } from './http/model.js';
import { reloadTlsMaterial, tlsServerOptions } from './http/tls.js';
import { loadRequestQuotas } from './kms/quotas/quotas.js';
import type { Services } from './kms/context.js';
import { checkConsistency, isConsistent } from './kms/lifecycle/consistency.js';
import { GcmEncryptionMeter } from './kms/lifecycle/gcm-wear.js';
import { KeyUseTracker } from './kms/key-usage.js';
import { type DueWorkSummary, type LifecycleScheduler, startLifecycleScheduler } from './kms/lifecycle/scheduler.js';
import { regionalStore } from './kms/regional-store.js';
import { applySeedFile } from './kms/seed/apply.js';
import { openBoundHsm } from './kms/token-binding.js';
import { createLogger, type Logger } from './log.js';
import { Metrics } from './metrics.js';
import { markServing } from './service-presence.js';
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
  /** Re-reads the TLS certificate, key and client CA (SIGHUP); open connections are kept. */
  reloadTls(): void;
  /** Graceful stop: /readyz 503, then (after P11KMS_SHUTDOWN_DELAY_MS) stop accepting, finish
   *  in-flight requests within P11KMS_SHUTDOWN_TIMEOUT_MS, flush key usage and the audit trail. */
  close(): Promise<void>;
}

/** How long a /healthz answer (a real token round trip) is reused; failures are retried sooner.
 *  A fault any request saw turns health red at once (Hsm.problem), whatever is cached. */
const HEALTH_CACHE_MS = 1_000;
const HEALTH_FAILURE_CACHE_MS = 500;

export interface StartOptions {
  now?: () => Date;
  log?: Logger;
  /** Wraps the audit trail's record writes (tests inject a failing disk). */
  auditRecordWriter?: AuditRecordWriter;
}

export async function startService(config: Config, options: StartOptions = {}): Promise<RunningService> {
  const log = options.log ?? createLogger(config.logLevel);
  ensureDataDir(config.dataDir);
  const principals = loadPrincipals(config, (msg) => log.info(msg));
  try {
    return await startWith(config, options, log, principals);
  } catch (e) {
    // A start that fails leaves no root credentials behind (the next one generates them anew).
    principals.discardGeneratedCredentials();
    throw e;
  }
}

async function startWith(config: Config, options: StartOptions, log: Logger, principals: PrincipalRegistry): Promise<RunningService> {
  // Before the token opens: a bad XKS credentials or rules file, TLS or quota setting stops the
  // start with nothing to undo.
  const xksSettings = config.xks && loadXksSettings(config.xks, log);
  const { tls, connections } = config.frontDoor;
  if (!tls?.clientCaFile && principals.all().some((p) => p.certificate)) {
    throw new Error('principals bound to a client certificate need mutual TLS (P11KMS_TLS_CLIENT_CA_FILE)');
  }
  const quotas = loadRequestQuotas(config.frontDoor.quotas, config.region, operationNames);
  const serverOptions = { keepAliveTimeout: connections.keepAliveTimeoutMs, connectionsCheckingInterval: connectionsCheckingIntervalMs(connections) };
  const server = tls ? https.createServer({ ...serverOptions, ...tlsServerOptions(tls, connections.headersTimeoutMs) }) : http.createServer(serverOptions);
  const guard = new ConnectionGuard(server, connections);
  const store = await openStore(config.database);
  let hsm: Hsm;
  try {
    hsm = await openBoundHsm(config, store, log);
  } catch (e) {
    await store.close();
    throw e;
  }
  let authorizer: KmsAuthorizer;
  try {
    // Compiles the principals' identity policies: an invalid one stops the start.
    authorizer = new KmsAuthorizer({ store, principals, accountId: config.accountId });
    await reportDivergence(hsm, store, log);
  } catch (e) {
    await store.close();
    await hsm.close();
    throw e;
  }
  const now = options.now ?? (() => new Date());
  const account = { partition: config.partition, region: config.region, accountId: config.accountId };
  const metrics = new Metrics(hsm);
  setPkcs11Observer(metrics.pkcs11);
  let audit: AuditTrail;
  try {
    audit = config.audit.enabled ? await openServiceAuditTrail(config, hsm, store, account, now, log, metrics, options.auditRecordWriter) : disabledAuditTrail();
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
  // Peer deployments (other sites) of multi-Region keys; an invalid file stops the start.
  let peers;
  try {
    peers = config.peersFile === undefined ? undefined : loadPeers(config.peersFile, config.regions);
  } catch (e) {
    await audit.close().catch(() => undefined);
    await store.close();
    await hsm.close();
    throw e;
  }
  if (peers) services.sites = new SiteReplication(peers, log);
  // Each Region sees only its own keys (src/kms/regional-store.ts; also with one Region, whose
  // multi-Region keys are rows per Region too); the lifecycle works on the whole store.
  const regionalServices = new Map(
    config.regions.map((region): [string, Services] => [
      region,
      { ...services, account: { ...account, region }, store: regionalStore(store, region), regionServices: (r) => regionalServices.get(r) },
    ]),
  );
  // Rotations a stop may have kept from replicas at peer sites: the first lifecycle pass pushes them.
  await services.sites?.queueAllRemoteReplicas(services).catch((e: unknown) => log.warn({ err: e instanceof Error ? e.message : String(e) }, "listing replicas at peer sites failed"));
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
  const health = cachedHealthCheck(() => hsm.ping(), (up) => metrics.setTokenUp(up), () => hsm.problem?.());
  const verifier = new SigV4Verifier(
    { region: config.region, regions: config.regions, service: 'kms', maxSkewSeconds: config.maxClockSkewSeconds, now },
    principals.secretFor,
  );
  const xksFrontDoor = xksSettings && openXksFrontDoor(config, xksSettings, services, audit, metrics, log, now);
  const auditor = audit.enabled ? new ApiAuditor(audit, services) : undefined;
  const checkHealth = async () => {
    await health.check();
    await store.ping();
  };
  const stsVerifier = new SigV4Verifier(
    { region: config.region, service: 'sts', maxSkewSeconds: config.maxClockSkewSeconds, now },
    principals.secretFor,
  );
  const httpDeps: HttpDeps = {
    sts: { principals, verifier: stsVerifier },
    services,
    regionalServices,
    principals,
    verifier,
    log,
    checkHealth,
    auditor,
    metrics,
    routes: [
      createOperatorRoutes({ services, principals, verifier, log, dataDir: config.dataDir, database: config.database, checkHealth, auditor, metrics }),
      createConsoleRoutes({ region: config.region, accountId: config.accountId }),
      ...(peers ? [createPeerRoutes({ peers, regionalServices, home: regionalServices.get(config.region)!, whole: services, principalOf: principals.principalOf, maxSkewSeconds: config.maxClockSkewSeconds, log })] : []),
    ],
    checkReady: () => {
      if (closing) return 'shutting down';
      return audit.problem() ?? (health.lastFailed ? 'the last health check failed' : undefined);
    },
    xks: xksFrontDoor?.handler,
    quotas,
    connections: guard,
  };
  server.on('request', createRequestListener(httpDeps));
  server.on('clientError', createClientErrorListener(httpDeps));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.port, config.host, () => resolve());
  });
  const unmarkServing = markServing(config.dataDir);
  const port = (server.address() as AddressInfo).port;
  const host = config.host.includes(':') ? `[${config.host}]` : config.host;
  const url = `${tls ? 'https' : 'http'}://${host}:${port}`;
  // What this process loaded, for the operator; names and counts only, never a secret or PIN.
  log.info(
    {
      url,
      tls: tls ? (tls.clientCaFile ? 'mutual' : 'server') : 'off',
      quotas: config.frontDoor.quotas,
      xks: config.xks ? `${config.xks.uriPrefix}/kms/xks/v1` : 'off',
      accountId: config.accountId,
      region: config.region,
      principals: principals.all().length,
      principalsFile: config.principalsFile,
      token: { label: hsm.info.label, manufacturer: hsm.info.manufacturerId, model: hsm.info.model, serial: hsm.info.serialNumber, module: config.token.module ?? 'self-provisioned SoftHSM2', mechanisms: hsm.info.mechanismCount, sessions: config.token.poolSize },
      store: describeStore(config.database),
      keys: await store.countKeys(),
      audit: config.audit.enabled ? path.join(config.dataDir, 'audit') : 'off',
      seedFile: config.lifecycle.seedFile,
      workers: config.workers,
    },
    'p11kms listening',
  );

  let closing: Promise<void> | undefined;
  return {
    url,
    port,
    services,
    log,
    audit,
    metrics,
    runDueWork: () => lifecycle.runDueWork(),
    reloadTls: () => {
      if (!tls) return;
      reloadTlsMaterial(server as https.Server, tls);
      log.info({ cert: tls.certFile }, 'TLS certificate and key reloaded');
    },
    close: () =>
      (closing ??= (async () => {
        // /readyz answers 503 from here on; load balancers take the instance out meanwhile.
        if (config.frontDoor.shutdownDelayMs > 0) await new Promise((r) => setTimeout(r, config.frontDoor.shutdownDelayMs));
        await guard.drain(config.frontDoor.shutdownTimeoutMs);
        // Saves key uses and GCM counts.
        await lifecycle.stop();
        xksFrontDoor?.credentials.close();
        // Flushes and signs the final digest while the token is still open.
        await audit.close().catch((e: unknown) => log.error({ err: e instanceof Error ? e.message : String(e) }, 'closing the audit trail failed'));
        setPkcs11Observer(undefined);
        await store.close();
        await hsm.close();
        unmarkServing();
      })()),
  };
}

function loadXksSettings(xksConfig: XksConfig, log: Logger) {
  const authorization = xksConfig.authorizationFile ? XksAuthorization.fromFile(xksConfig.authorizationFile) : undefined;
  const credentials = xksConfig.credentialsFile
    ? XksCredentials.fromFile(xksConfig.credentialsFile, (level, msg) => log[level](msg))
    : new XksCredentials([xksConfig.credential!]);
  return { uriPrefix: xksConfig.uriPrefix, credentials, authorization };
}

/** The XKS proxy API on the same keys: its own SigV4 credential (service kms-xks-proxy), its own
 *  optional authorization rules, the same token, store and audit trail. */
function openXksFrontDoor(
  config: Config,
  { uriPrefix, credentials, authorization }: ReturnType<typeof loadXksSettings>,
  svc: Services,
  audit: AuditTrail,
  metrics: Metrics,
  log: Logger,
  now: () => Date,
) {
  const verifier = new SigV4Verifier({ region: config.region, service: 'kms-xks-proxy', maxSkewSeconds: config.maxClockSkewSeconds, now }, credentials.secretFor);
  const handler = createXksHandler({
    uriPrefix,
    verifier,
    xks: { svc, authorization, productVersion: PRODUCT_VERSION },
    log,
    auditor: audit.enabled ? new XksAuditor(audit, svc.account) : undefined,
    metrics,
  });
  log.info({ path: `${uriPrefix}${XKS_API_PATH}`, accessKeys: credentials.accessKeyIds.length, secondaryAuthorization: authorization !== undefined }, 'XKS proxy API enabled');
  return { handler, credentials };
}

async function openServiceAuditTrail(
  config: Config,
  hsm: Hsm,
  store: MetadataStore,
  account: Services['account'],
  now: () => Date,
  log: Logger,
  metrics: Metrics,
  recordWriter: AuditRecordWriter | undefined,
): Promise<AuditTrail> {
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
    registry: store.auditChains,
    digestCopy: config.audit.digestCopy === undefined ? undefined : openDigestCopy(config.audit.digestCopy),
    recordWriter,
  });
}

/** A deep health check (real token round trip) whose answer is reused for up to 1 s, unless the
 *  token is known to be down right now. */
function cachedHealthCheck(probe: () => Promise<void>, report: (up: boolean) => void, knownProblem: () => string | undefined) {
  let last: { at: number; result: Promise<void>; failed: boolean | undefined } | undefined;
  return {
    get lastFailed(): boolean {
      return last?.failed === true || knownProblem() !== undefined;
    },
    check(): Promise<void> {
      const problem = knownProblem();
      if (problem !== undefined) {
        report(false);
        last = undefined;
        return Promise.reject(new Error(problem));
      }
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
