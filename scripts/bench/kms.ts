/**
 * The p11kms side of the bench: starting a service on a scratch data dir, creating keys through
 * @aws-sdk/client-kms, and wrk points that replay one pre-signed request (checked once first).
 */
import crypto from 'node:crypto';
import path from 'node:path';
import { CreateKeyCommand, EncryptCommand, KMSClient, type CreateKeyCommandInput } from '@aws-sdk/client-kms';
import {
  ROOT_CREDENTIALS,
  REGION,
  SERVICE_MAIN,
  childEnv,
  freePort,
  progress,
  startNode,
  waitForOk,
  type Proc,
  type Settings,
} from './common.js';
import { presign, sendOnce, type Credentials, type SignedRequest } from './sign.js';
import { runWrk, type WrkResult } from './wrk.js';

export const PLAINTEXT = crypto.randomBytes(32);
/** Seconds of discarded wrk load before the first point on a fresh service or request. */
export const WARM_UP_SECONDS = 2;

export interface Service {
  proc: Proc;
  port: number;
  client: KMSClient;
  startupMs: number;
}

/** Starts the service on `dataDir` with the bench's root credentials; `extra` adds P11KMS_* settings,
 *  `nodeArgs` node's own options (--cpu-prof). */
export async function startService(name: string, dataDir: string, work: string, settings: Settings, extra: Record<string, string | undefined> = {}, nodeArgs: string[] = []): Promise<Service> {
  const port = await freePort();
  const env = serviceEnv(dataDir, port, settings, extra);
  // As `npm start` and the image run it: a 32 MiB semi-space, so per-request garbage dies young.
  const proc = startNode(name, SERVICE_MAIN, [], env, path.join(work, `${name}.log`), ['--max-semi-space-size=32', ...nodeArgs]);
  const startupMs = await waitForOk(proc, port);
  const client = kmsClient(port, ROOT_CREDENTIALS);
  return { proc, port, client, startupMs };
}

/** A bench service's environment: loopback `port`, the bench's root credentials, `extra` on top. */
export function serviceEnv(dataDir: string, port: number, settings: Settings, extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  return childEnv({
    P11KMS_DATA_DIR: dataDir,
    P11KMS_HOST: '127.0.0.1',
    P11KMS_PORT: String(port),
    P11KMS_ROOT_ACCESS_KEY_ID: ROOT_CREDENTIALS.accessKeyId,
    P11KMS_ROOT_SECRET_ACCESS_KEY: ROOT_CREDENTIALS.secretAccessKey,
    P11KMS_REGION: REGION,
    P11KMS_LOG_LEVEL: 'warn',
    P11KMS_WORKERS: settings.workers,
    ...extra,
  });
}

export function kmsClient(port: number, credentials: Credentials): KMSClient {
  return new KMSClient({ endpoint: `http://127.0.0.1:${port}`, region: REGION, credentials, maxAttempts: 1 });
}

export async function stopService(service: Service): Promise<void> {
  service.client.destroy();
  await service.proc.stop();
}

export interface Created {
  ids: string[];
  /** message → count of CreateKey calls that failed with it. */
  errors: Map<string, number>;
  failed: number;
}

export const MAX_CREATE_ERRORS = 50;

export function errorMessage(e: unknown): string {
  const err = e as { name?: string; message?: string; $metadata?: { httpStatusCode?: number } };
  return `${err.name ?? 'Error'} (HTTP ${err.$metadata?.httpStatusCode ?? '?'}): ${err.message ?? String(e)}`;
}

/** Creates up to `count` keys, `concurrency` at a time, starting no new call after `deadline`
 *  (performance.now() time) or once `stop()` says so. Failed calls are counted, not thrown;
 *  creation stops after MAX_CREATE_ERRORS failures. */
export async function createKeys(
  client: KMSClient,
  count: number,
  concurrency: number,
  createdAt?: number[],
  deadline = Infinity,
  input: CreateKeyCommandInput = { Description: 'p11kms bench' },
  stop: () => boolean = () => false,
): Promise<Created> {
  const created: Created = { ids: [], errors: new Map(), failed: 0 };
  let next = 0;
  const worker = async () => {
    while (next < count && performance.now() < deadline && !stop() && created.failed < MAX_CREATE_ERRORS) {
      next++;
      try {
        const out = await client.send(new CreateKeyCommand(input));
        created.ids.push(out.KeyMetadata!.KeyId!);
        createdAt?.push(performance.now());
      } catch (e) {
        const msg = errorMessage(e);
        created.errors.set(msg, (created.errors.get(msg) ?? 0) + 1);
        created.failed++;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  return created;
}

export function errorSummary(created: Created): string {
  return [...created.errors].map(([msg, n]) => `${n}× ${msg}`).join('; ');
}

/** The first `count` keys of a service; every call must succeed. */
export async function firstKeys(client: KMSClient, count: number, input?: CreateKeyCommandInput): Promise<string[]> {
  const created = await createKeys(client, count, 4, undefined, Infinity, input);
  if (created.failed > 0) throw new Error(`CreateKey failed: ${errorSummary(created)}`);
  return created.ids;
}

export type Op = 'Encrypt' | 'Decrypt' | 'GenerateDataKey';

export interface Target {
  port: number;
  keyId: string;
  ciphertext: string;
}

export function inputFor(op: Op, target: Target): unknown {
  switch (op) {
    case 'Encrypt':
      return { KeyId: target.keyId, Plaintext: PLAINTEXT.toString('base64') };
    case 'Decrypt':
      return { KeyId: target.keyId, CiphertextBlob: target.ciphertext };
    case 'GenerateDataKey':
      return { KeyId: target.keyId, KeySpec: 'AES_256' };
  }
}

export function logPoint(label: string, result: WrkResult): void {
  progress(`${label.padEnd(34)} c=${String(result.clients).padStart(2)}  ${Math.round(result.rps).toString().padStart(6)} req/s  p50 ${result.p50Ms.toFixed(2)} ms  p99 ${result.p99Ms.toFixed(2)} ms`);
}

export interface SignedPoint {
  label: string;
  port: number;
  /** X-Amz-Target operation name. */
  operation: string;
  input: unknown;
  clients: number;
  credentials?: Credentials;
  /** Extra check of the one answer before wrk runs (throws when it is wrong). */
  check?: (responseText: string) => void;
  /** Distinguishes wrk's script/output files of repeated points with the same label. */
  fileTag?: string;
  /** Runs wrk this many seconds first and discards it (JIT, caches, connections of a fresh service). */
  warmUpSeconds?: number;
  /** The CA of a TLS listener: the point runs over HTTPS. */
  tlsCa?: Buffer;
}

/** Signs the request right now, sends it once (must be 200 and pass `check`), then runs wrk. */
export async function signedWrkPoint(wrk: string, settings: Settings, work: string, point: SignedPoint): Promise<WrkResult> {
  const request = await presign(point.port, point.operation, point.input, point.credentials ?? ROOT_CREDENTIALS, REGION);
  const once = await sendOnce(point.port, request, point.tlsCa);
  const scheme = point.tlsCa ? 'https' : 'http';
  if (once.status !== 200) throw new Error(`${point.label}: the pre-signed ${point.operation} answered HTTP ${once.status}: ${once.text}`);
  point.check?.(once.text);
  if (point.warmUpSeconds) {
    await runWrk(wrk, { label: `${point.label} warm-up`, port: point.port, clients: point.clients, seconds: point.warmUpSeconds, request, workDir: work, fileTag: point.fileTag, scheme });
  }
  const result = await runWrk(wrk, { label: point.label, port: point.port, clients: point.clients, seconds: settings.seconds, request, workDir: work, fileTag: point.fileTag, scheme });
  logPoint(point.label, result);
  return result;
}

/** Signs `op` right now, sends it once (must be 200), then runs wrk with it. */
export async function wrkPoint(wrk: string, settings: Settings, work: string, label: string, op: Op, target: Target, clients: number, fileTag?: string, warmUpSeconds?: number): Promise<WrkResult> {
  return signedWrkPoint(wrk, settings, work, { label, port: target.port, operation: op, input: inputFor(op, target), clients, fileTag, warmUpSeconds });
}

export async function bareWrkPoint(wrk: string, settings: Settings, work: string, port: number, request: SignedRequest, clients: number): Promise<WrkResult> {
  const result = await runWrk(wrk, { label: 'bare node:http', port, clients, seconds: settings.seconds, request, workDir: work });
  logPoint('bare node:http', result);
  return result;
}

/** The Encrypt ciphertext for `keyId`, via the real SDK. */
export async function ciphertextFor(client: KMSClient, keyId: string): Promise<string> {
  const out = await client.send(new EncryptCommand({ KeyId: keyId, Plaintext: PLAINTEXT }));
  return Buffer.from(out.CiphertextBlob!).toString('base64');
}
