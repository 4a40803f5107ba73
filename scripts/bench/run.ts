/**
 * `npm run bench`: p11kms over HTTP with SigV4 against a bare node:http server and the raw token,
 * all in one run so the ratios compare on a noisy machine; then asymmetric/HMAC operations beside
 * their raw token rates (asym.ts), authorization cost (authz.ts) and audit cost (audit.ts). Prints
 * the machine and Markdown tables on stdout; writes results.json / results.md (plus wrk outputs and logs) under
 * <tmpdir>/p11kms-bench/.
 *
 * Settings (environment): BENCH_SECONDS (per wrk point, default 5), BENCH_TOKEN_SECONDS (per token
 * loop, default min(BENCH_SECONDS, 5)), BENCH_KEYS (scale phase, default 2000),
 * BENCH_CREATE_CONCURRENCY (default 8), BENCH_CREATE_SECONDS (cap on key creation, default 150),
 * BENCH_KEYGENS (event-loop phase, default 1000),
 * BENCH_WORKERS (passed to every service as P11KMS_WORKERS), BENCH_KEEP=1 (keep scratch dirs),
 * BENCH_PHASES (comma-separated subset of token,targets,loop,http,scale,asym,authz,audit,frontdoor,nodes;
 * default all), BENCH_QUICK=1 (phases token,targets unless BENCH_PHASES says otherwise, 3 s points,
 * 2 s token loops: a few minutes), BENCH_LOCK_SECONDS (targets: how long an outside process holds
 * the SQLite write lock, default 20), BENCH_PEER_BIN / BENCH_PEER_ARGS (targets: a peer KMS
 * emulator run on loopback beside the service; its column is skipped when unset),
 * BENCH_RSA4096_CONCURRENCY (asym: RSA-4096 CreateKey loops beside Encrypt, default 2, 0 skips),
 * BENCH_GRANTS (authz: grants on the policied key, default 100), BENCH_AUTHZ_ROUNDS (default 2),
 * BENCH_AUDIT_ROUNDS (audit: on/off rounds, default 2), BENCH_FRONTDOOR_ROUNDS (frontdoor: rounds of
 * HTTP/HTTPS/quotas points, default 2).
 */
import fs from 'node:fs';
import path from 'node:path';
import { asymPhase, asymTokenPhase, type AsymResult, type AsymTokenResult } from './asym.js';
import { auditPhase, type AuditResult } from './audit.js';
import { authzPhase, type AuthzResult } from './authz.js';
import { frontDoorPhase, type FrontDoorResult } from './frontdoor.js';
import { nodesPhase, type NodesResult } from './nodes.js';
import { targetsPhase, type TargetsResult } from './targets.js';
import {
  DIST_BENCH,
  ROOT_CREDENTIALS,
  REGION,
  SERVICE_MAIN,
  childEnv,
  freePort,
  installCleanupHandlers,
  killAllChildren,
  loadSettings,
  progress,
  removeOnSignal,
  resultsDir,
  rssMiB,
  runNodeJson,
  sleep,
  startNode,
  waitForOk,
  type Proc,
  type Settings,
} from './common.js';
import {
  MAX_CREATE_ERRORS,
  bareWrkPoint,
  ciphertextFor,
  createKeys,
  errorSummary,
  firstKeys,
  inputFor,
  startService,
  stopService,
  wrkPoint,
  type Service,
  type Target,
} from './kms.js';
import { describeMachine, type Machine } from './machine.js';
import { renderMarkdown } from './report.js';
import { presign, sendOnce } from './sign.js';
import { ensureWrk, wrkVersion, type WrkResult } from './wrk.js';

// ---- result shapes (also the JSON file) -------------------------------------------------------

export interface Rate {
  ops: number;
  /** Median over the rounds. */
  opsPerSec: number;
  rounds: number[];
}

export interface TokenResult {
  token: { library: string; model: string; manufacturer: string };
  rawPkcs11: Rate;
  hsmWrapper: Rate;
  nodeCrypto: Rate;
}

interface DelaySummary {
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  meanMs: number;
  samples: number;
}

export interface LoopDelayResult {
  keygens: number;
  poolSize: number;
  uvThreadpoolSize: number;
  resolutionMs: number;
  totalMs: number;
  keysPerSec: number;
  failed: number;
  tokenKeys: number;
  errors: { message: string; count: number }[];
  idle: DelaySummary;
  busy: DelaySummary;
}

export interface ScaleResult {
  keys: number;
  keysWanted: number;
  createStoppedByDeadline: boolean;
  createFailed: number;
  createErrors: { message: string; count: number }[];
  concurrency: number;
  createSeconds: number;
  keysPerSecAlone: number | undefined;
  keysPerSecUnderLoad: number;
  keysCreatedDuringLoad: number;
  encryptDuringCreate: WrkResult;
  tenKeys: WrkResult[];
  /** Where the 10-key comparison points come from. */
  tenKeysSource: string;
  manyKeys: WrkResult[];
  afterRestart: WrkResult;
  startupEmptyMs: number;
  startupMs: number;
  rssAfterRunMiB: number;
  rssAfterRestartMiB: number;
  processes: number;
}

export interface Results {
  startedAt: string;
  durationSeconds: number;
  settings: Settings;
  machine: Machine;
  token?: TokenResult;
  loopDelay?: LoopDelayResult;
  http?: { p11kms: WrkResult[]; bare: WrkResult[] };
  main?: { startupEmptyMs: number; rssMiB: number; processes: number; bareStartupMs: number; bareRssMiB: number };
  scale?: ScaleResult;
  /** Issue 3: Sign / Verify / GenerateMac over HTTP, Encrypt beside RSA-4096 CreateKey. */
  asym?: AsymResult;
  /** Issue 3: raw pkcs11js rates of the same operations. */
  asymToken?: AsymTokenResult;
  /** Issue 4: root + default policy vs IAM user + 10-statement policy + grants. */
  authz?: AuthzResult;
  /** Issue 6: audit sink on vs off. */
  audit?: AuditResult;
  /** Issue 12: Encrypt over HTTPS vs HTTP, and the quota check's cost. */
  frontdoor?: FrontDoorResult;
  /** Issue 11: one and two nodes on PostgreSQL beside SQLite. */
  nodes?: NodesResult;
  /** Issue 15: the data-plane targets as ratios to bare node:http, the raw token and a peer. */
  targets?: TargetsResult;
  /** Phase → why it failed. A failed phase leaves its figures out; the bench then exits 1. */
  failures: Record<string, string>;
}

// ---- helpers ----------------------------------------------------------------------------------

const CLIENTS = [1, 8, 32];

// ---- phases -----------------------------------------------------------------------------------

async function tokenPhase(settings: Settings, work: string): Promise<TokenResult> {
  progress(`token baselines: raw pkcs11js, Hsm wrapper, Node crypto (${settings.tokenSeconds} s each)`);
  const dataDir = path.join(work, 'token-data');
  const result = await runNodeJson<TokenResult>(
    'token baseline',
    path.join(DIST_BENCH, 'token-child.js'),
    { dataDir, seconds: settings.tokenSeconds, rounds: 5 },
    childEnv({}),
    path.join(work, 'token-child.log'),
    120_000 + settings.tokenSeconds * 6_000,
  );
  progress(
    `raw pkcs11js ${Math.round(result.rawPkcs11.opsPerSec)} ops/s, Hsm wrapper ${Math.round(result.hsmWrapper.opsPerSec)} ops/s, Node crypto ${Math.round(result.nodeCrypto.opsPerSec)} ops/s`,
  );
  return result;
}

async function loopDelayPhase(settings: Settings, work: string): Promise<LoopDelayResult> {
  progress(`event loop: ${settings.keygens} concurrent generateAesKey`);
  const result = await runNodeJson<LoopDelayResult>(
    'event-loop delay',
    path.join(DIST_BENCH, 'loop-delay-child.js'),
    { dataDir: path.join(work, 'keygen-data'), keygens: settings.keygens },
    childEnv({}),
    path.join(work, 'loop-delay-child.log'),
    600_000,
  );
  progress(
    `${result.keygens} keygens in ${(result.totalMs / 1000).toFixed(1)} s${result.failed ? ` (${result.failed} FAILED: ${result.errors[0]?.message})` : ''}; ` +
      `loop delay p99 ${result.busy.p99Ms.toFixed(2)} ms, max ${result.busy.maxMs.toFixed(2)} ms`,
  );
  return result;
}

interface HttpPhase {
  http: NonNullable<Results['http']>;
  main: NonNullable<Results['main']>;
  /** The 10-key service, left running as the reference for the scale comparison. */
  reference: { service: Service; target: Target };
}

async function httpPhase(wrk: string, settings: Settings, work: string): Promise<HttpPhase> {
  progress('p11kms service (10 keys) and bare node:http');
  const service = await startService('service-main', path.join(work, 'main-data'), work, settings);
  let bare: Proc | undefined;
  let ok = false;
  try {
    const keyIds = await firstKeys(service.client, 10);
    const target: Target = { port: service.port, keyId: keyIds[0]!, ciphertext: await ciphertextFor(service.client, keyIds[0]!) };

    // The bare server answers with the body of a real Encrypt response.
    const encryptReq = await presign(service.port, 'Encrypt', inputFor('Encrypt', target), ROOT_CREDENTIALS, REGION);
    const real = await sendOnce(service.port, encryptReq);
    if (real.status !== 200) throw new Error(`Encrypt answered ${real.status}: ${real.text}`);
    const bodyFile = path.join(work, 'encrypt-response.json');
    fs.writeFileSync(bodyFile, real.text);
    const barePort = await freePort();
    bare = startNode('bare-node-http', path.join(DIST_BENCH, 'bare-server.js'), [String(barePort), bodyFile], childEnv({}), path.join(work, 'bare-server.log'));
    const bareStartupMs = await waitForOk(bare, barePort);

    const p11kms: WrkResult[] = [];
    const bareResults: WrkResult[] = [];
    // Interleaved per client count, so drift on a shared machine hits both sides alike.
    for (const clients of CLIENTS) {
      const bareReq = await presign(barePort, 'Encrypt', inputFor('Encrypt', target), ROOT_CREDENTIALS, REGION);
      bareResults.push(await bareWrkPoint(wrk, settings, work, barePort, bareReq, clients));
      for (const op of ['Encrypt', 'Decrypt', 'GenerateDataKey'] as const) {
        p11kms.push(await wrkPoint(wrk, settings, work, op, op, target, clients));
      }
    }
    const rss = rssMiB(service.proc.pid);
    const bareRss = rssMiB(bare.pid);
    ok = true;
    return {
      http: { p11kms, bare: bareResults },
      main: { startupEmptyMs: service.startupMs, rssMiB: rss.mib, processes: rss.processes, bareStartupMs, bareRssMiB: bareRss.mib },
      reference: { service, target },
    };
  } finally {
    await bare?.stop();
    if (!ok) await stopService(service);
  }
}

/**
 * `reference`: the 10-key service of the HTTP phase, still running. The N-key points then
 * alternate with 10-key points on it (drift on a shared machine hits both alike); without it the
 * 10-key points are taken on this service before the keys are created.
 */
async function scalePhase(wrk: string, settings: Settings, work: string, reference: Target | undefined): Promise<ScaleResult> {
  const dataDir = path.join(work, 'scale-data');
  progress(`scale: ${settings.keys} keys (CreateKey through the API, ${settings.createConcurrency} concurrent)`);
  let service = await startService('service-scale', dataDir, work, settings);
  try {
    const startupEmptyMs = service.startupMs;
    const first = await firstKeys(service.client, 10);
    const target: Target = { port: service.port, keyId: first[0]!, ciphertext: '' };
    const tenKeys: WrkResult[] = [];
    if (!reference) for (const clients of [1, 8]) tenKeys.push(await wrkPoint(wrk, settings, work, 'Encrypt, 10 keys', 'Encrypt', target, clients));

    // Create the rest; Encrypt under wrk at 8 clients during the first BENCH_SECONDS of it.
    const createdAt: number[] = [];
    const createStart = performance.now();
    const deadline = createStart + settings.createSeconds * 1000;
    const creating = createKeys(service.client, settings.keys - 10, settings.createConcurrency, createdAt, deadline);
    await sleep(100);
    const windowStart = performance.now();
    const encryptDuringCreate = await wrkPoint(wrk, settings, work, 'Encrypt during CreateKey', 'Encrypt', target, 8);
    const windowEnd = performance.now();
    progress(`load point done; ${createdAt.length} of ${settings.keys - 10} keys created so far`);
    const rest = await creating;
    const createEnd = performance.now();
    if (rest.failed > 0) progress(`CreateKey: ${rest.failed} calls FAILED: ${errorSummary(rest)}`);
    const all = [...first, ...rest.ids];
    const duringLoad = createdAt.filter((t) => t >= windowStart && t <= windowEnd).length;
    const after = createdAt.filter((t) => t > windowEnd).length;
    const createSeconds = (createEnd - createStart) / 1000;
    const stopped = createEnd >= deadline && all.length + rest.failed < settings.keys && rest.failed < MAX_CREATE_ERRORS;
    progress(`${all.length} keys; CreateKey phase ${createSeconds.toFixed(1)} s${stopped ? ` (stopped by BENCH_CREATE_SECONDS=${settings.createSeconds})` : ''}`);

    const manyKeys: WrkResult[] = [];
    const label = `Encrypt, ${all.length} keys`;
    for (const clients of [1, 8]) {
      if (reference) tenKeys.push(await wrkPoint(wrk, settings, work, 'Encrypt, 10 keys (reference)', 'Encrypt', reference, clients));
      manyKeys.push(await wrkPoint(wrk, settings, work, label, 'Encrypt', target, clients));
    }
    const rssAfterRun = rssMiB(service.proc.pid);

    // Restart on the same data dir: spawn → first 200 on /healthz.
    await stopService(service);
    service = await startService('service-scale-restart', dataDir, work, settings);
    progress(`restart with ${all.length} keys: ${Math.round(service.startupMs)} ms to first 200 on /healthz`);
    const restartTarget: Target = { port: service.port, keyId: all[Math.floor(all.length / 2)]!, ciphertext: '' };
    const afterRestart = await wrkPoint(wrk, settings, work, `Encrypt after restart, ${all.length} keys`, 'Encrypt', restartTarget, 8);
    const rssAfterRestart = rssMiB(service.proc.pid);

    return {
      keys: all.length,
      keysWanted: settings.keys,
      createStoppedByDeadline: stopped,
      createFailed: rest.failed,
      createErrors: [...rest.errors].map(([message, count]) => ({ message, count })),
      concurrency: settings.createConcurrency,
      createSeconds,
      keysPerSecAlone: after >= 20 ? after / ((createEnd - windowEnd) / 1000) : undefined,
      keysPerSecUnderLoad: duringLoad / ((windowEnd - windowStart) / 1000),
      keysCreatedDuringLoad: duringLoad,
      encryptDuringCreate,
      tenKeys,
      tenKeysSource: reference ? 'the HTTP-table service (10 keys), alternating with these points' : 'this service before the other keys were created',
      manyKeys,
      afterRestart,
      startupEmptyMs,
      startupMs: service.startupMs,
      rssAfterRunMiB: rssAfterRun.mib,
      rssAfterRestartMiB: rssAfterRestart.mib,
      processes: rssAfterRun.processes,
    };
  } finally {
    await stopService(service);
  }
}

// ---- main -------------------------------------------------------------------------------------

async function main(): Promise<void> {
  installCleanupHandlers();
  // The SDK's "Node 22 will be required from 2027" notice is noise in a benchmark's output.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const settings = loadSettings();
  if (!fs.existsSync(SERVICE_MAIN)) throw new Error(`${SERVICE_MAIN} is missing: run \`npm run build\` (or use \`npm run bench\`)`);
  const wrk = ensureWrk();
  const machine = describeMachine(wrkVersion(wrk));
  const out = resultsDir();
  const work = fs.mkdtempSync(path.join(out, 'run-'));
  if (!settings.keep) removeOnSignal(work);
  const startedAt = new Date();
  const t0 = performance.now();
  progress(`settings ${JSON.stringify(settings)}; scratch ${work}`);
  const results: Results = { startedAt: startedAt.toISOString(), durationSeconds: 0, settings, machine, failures: {} };
  /** Runs one phase; a failure is recorded and the next phase still runs. */
  const phase = async <T>(name: string, run: () => Promise<T>): Promise<T | undefined> => {
    try {
      return await run();
    } catch (e) {
      const message = e instanceof Error ? e.message : String(e);
      results.failures[name] = message;
      progress(`PHASE FAILED: ${name}: ${message}`);
      return undefined;
    }
  };
  const on = (p: Settings['phases'][number]) => settings.phases.includes(p);
  try {
    if (on('token')) results.token = await phase('token baselines', () => tokenPhase(settings, work));
    if (on('targets')) results.targets = await phase('targets', () => targetsPhase(wrk, settings, work));
    if (on('loop')) results.loopDelay = await phase('event-loop delay', () => loopDelayPhase(settings, work));
    const httpMain = on('http') ? await phase('HTTP', () => httpPhase(wrk, settings, work)) : undefined;
    results.http = httpMain?.http;
    results.main = httpMain?.main;
    try {
      if (on('scale')) results.scale = await phase('scale', () => scalePhase(wrk, settings, work, httpMain?.reference.target));
    } finally {
      if (httpMain) await stopService(httpMain.reference.service);
    }
    if (on('asym')) {
      results.asymToken = await phase('asym token baselines', () => asymTokenPhase(settings, work));
      results.asym = await phase('asym', () =>
        asymPhase(wrk, settings, work, (name, message) => {
          results.failures[name] = message;
          progress(`PHASE FAILED: ${name}: ${message}`);
        }),
      );
    }
    if (on('authz')) results.authz = await phase('authz', () => authzPhase(wrk, settings, work));
    if (on('audit')) results.audit = await phase('audit', () => auditPhase(wrk, settings, work));
    if (on('frontdoor')) results.frontdoor = await phase('frontdoor', () => frontDoorPhase(wrk, settings, work));
    if (on('nodes')) results.nodes = await phase('nodes', () => nodesPhase(wrk, settings, work));
    if (results.scale?.createFailed) {
      results.failures['CreateKey'] = `${results.scale.createFailed} CreateKey calls failed: ${results.scale.createErrors.map((e) => `${e.count}× ${e.message}`).join('; ')}`;
    }
    for (const [scenario, why] of Object.entries(results.targets?.errors ?? {})) results.failures[`targets: ${scenario}`] = why;
    if (results.loopDelay?.failed) results.failures['event-loop delay'] = `${results.loopDelay.failed} of ${results.loopDelay.keygens} generateAesKey calls failed: ${results.loopDelay.errors.map((e) => `${e.count}× ${e.message}`).join('; ')}`;
    results.durationSeconds = (performance.now() - t0) / 1000;
    const markdown = renderMarkdown(results);
    const json = `${JSON.stringify(results, null, 2)}\n`;
    const stamp = startedAt.toISOString().replace(/[:.]/g, '-');
    for (const name of ['results', `results-${stamp}`]) {
      fs.writeFileSync(path.join(out, `${name}.json`), json);
      fs.writeFileSync(path.join(out, `${name}.md`), markdown);
    }
    process.stdout.write(markdown);
    progress(`done in ${results.durationSeconds.toFixed(0)} s; results in ${out}/results.{json,md}`);
  } finally {
    killAllChildren();
    const failed = Object.keys(results.failures).length > 0;
    if (!failed && !settings.keep) fs.rmSync(work, { recursive: true, force: true });
    else progress(`scratch data, logs and wrk outputs kept in ${work}`);
  }
  if (Object.keys(results.failures).length > 0) {
    process.stderr.write(`bench: ${Object.keys(results.failures).length} phase(s) failed: ${Object.keys(results.failures).join(', ')}\n`);
    process.exitCode = 1;
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`bench failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  killAllChildren();
  process.exit(1);
});
