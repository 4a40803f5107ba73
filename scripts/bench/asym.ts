/**
 * Phase "asym" (issue 3): Sign (ECDSA P-256, RSA-2048 PSS), Verify (ECDSA P-256) and GenerateMac
 * (HMAC-SHA-256) over HTTP with wrk at 1 and 8 clients, beside the raw token rate of the same
 * operations (asym-token-child.js); and Encrypt at 8 clients while RSA-4096 CreateKey calls run,
 * against the same point without them.
 */
import crypto from 'node:crypto';
import path from 'node:path';
import { CreateKeyCommand, SignCommand, type KeySpec, type KeyUsageType } from '@aws-sdk/client-kms';
import { DIST_BENCH, childEnv, median, progress, runNodeJson, sleep, type Settings } from './common.js';
import type { AsymTokenRate } from './asym-token-child.js';
import { WARM_UP_SECONDS, createKeys, errorSummary, firstKeys, inputFor, signedWrkPoint, startService, stopService, wrkPoint, type Target } from './kms.js';
import type { WrkResult } from './wrk.js';

export const ASYM_CLIENTS = [1, 8];
const MESSAGE = crypto.randomBytes(32);

export type AsymOp = 'Sign ECDSA_SHA_256 (P-256)' | 'Sign RSASSA_PSS_SHA_256 (RSA-2048)' | 'Verify ECDSA_SHA_256 (P-256)' | 'GenerateMac HMAC_SHA_256';

/** Which raw token loop each HTTP operation is compared with. */
export const RAW_KIND_OF: Record<AsymOp, AsymTokenRate['kind']> = {
  'Sign ECDSA_SHA_256 (P-256)': 'ecdsaSign',
  'Sign RSASSA_PSS_SHA_256 (RSA-2048)': 'rsaPssSign',
  'Verify ECDSA_SHA_256 (P-256)': 'ecdsaVerify',
  'GenerateMac HMAC_SHA_256': 'hmacSha256',
};

export interface AsymTokenResult {
  rates: AsymTokenRate[];
}

export interface BesideRsa4096 {
  /** Concurrent RSA-4096 CreateKey loops during the `with` point. */
  concurrency: number;
  without: WrkResult;
  with: WrkResult;
  /** RSA-4096 keys whose CreateKey finished inside the `with` window. */
  createdDuringPoint: number;
  /** All RSA-4096 keys created (including calls still in flight when the point ended). */
  created: number;
  failed: number;
  errors: string;
  /** Median CreateKey RSA_4096 latency (every call of the loops). */
  createMedianMs: number | undefined;
}

export interface AsymResult {
  /** CreateKey time per spec, ms (one key each). */
  createKeyMs: Record<string, number>;
  points: WrkResult[];
  beside?: BesideRsa4096;
}

/** Raw pkcs11js rates of the four operations, in a child process with its own token. */
export async function asymTokenPhase(settings: Settings, work: string): Promise<AsymTokenResult> {
  progress(`asym token baselines: raw pkcs11js ECDSA sign, RSA-PSS sign, ECDSA verify, HMAC (${settings.tokenSeconds} s each)`);
  const result = await runNodeJson<AsymTokenResult>(
    'asym token baseline',
    path.join(DIST_BENCH, 'asym-token-child.js'),
    { dataDir: path.join(work, 'asym-token-data'), seconds: settings.tokenSeconds, rounds: 3 },
    childEnv({}),
    path.join(work, 'asym-token-child.log'),
    120_000 + settings.tokenSeconds * 4 * 3_000,
  );
  progress(`raw token: ${result.rates.map((r) => `${r.kind} ${Math.round(r.opsPerSec)} ops/s`).join(', ')}`);
  return result;
}

const expectJson = (label: string, test: (body: Record<string, unknown>) => boolean) => (text: string) => {
  const body = JSON.parse(text) as Record<string, unknown>;
  if (!test(body)) throw new Error(`${label}: unexpected answer ${text.slice(0, 300)}`);
};

/**
 * `onFailure` records a failure of the RSA-4096 comparison without losing the table before it.
 */
export async function asymPhase(wrk: string, settings: Settings, work: string, onFailure: (name: string, message: string) => void): Promise<AsymResult> {
  progress('asym: Sign / Verify / GenerateMac over HTTP');
  const service = await startService('service-asym', path.join(work, 'asym-data'), work, settings);
  try {
    const createKeyMs: Record<string, number> = {};
    const create = async (spec: KeySpec, usage: KeyUsageType): Promise<string> => {
      const t0 = performance.now();
      const out = await service.client.send(new CreateKeyCommand({ KeySpec: spec, KeyUsage: usage, Description: `p11kms bench ${spec}` }));
      createKeyMs[spec] = performance.now() - t0;
      return out.KeyMetadata!.KeyId!;
    };
    const ecc = await create('ECC_NIST_P256', 'SIGN_VERIFY');
    const rsa = await create('RSA_2048', 'SIGN_VERIFY');
    const hmac = await create('HMAC_256', 'GENERATE_VERIFY_MAC');
    const signature = await service.client.send(new SignCommand({ KeyId: ecc, Message: MESSAGE, MessageType: 'RAW', SigningAlgorithm: 'ECDSA_SHA_256' }));
    const message = MESSAGE.toString('base64');
    const ops: Record<AsymOp, { operation: string; input: unknown; check: (text: string) => void }> = {
      'Sign ECDSA_SHA_256 (P-256)': {
        operation: 'Sign',
        input: { KeyId: ecc, Message: message, MessageType: 'RAW', SigningAlgorithm: 'ECDSA_SHA_256' },
        check: expectJson('Sign ECDSA', (b) => typeof b.Signature === 'string'),
      },
      'Sign RSASSA_PSS_SHA_256 (RSA-2048)': {
        operation: 'Sign',
        input: { KeyId: rsa, Message: message, MessageType: 'RAW', SigningAlgorithm: 'RSASSA_PSS_SHA_256' },
        check: expectJson('Sign RSA-PSS', (b) => typeof b.Signature === 'string'),
      },
      'Verify ECDSA_SHA_256 (P-256)': {
        operation: 'Verify',
        input: { KeyId: ecc, Message: message, MessageType: 'RAW', SigningAlgorithm: 'ECDSA_SHA_256', Signature: Buffer.from(signature.Signature!).toString('base64') },
        check: expectJson('Verify', (b) => b.SignatureValid === true),
      },
      'GenerateMac HMAC_SHA_256': {
        operation: 'GenerateMac',
        input: { KeyId: hmac, Message: message, MacAlgorithm: 'HMAC_SHA_256' },
        check: expectJson('GenerateMac', (b) => typeof b.Mac === 'string'),
      },
    };
    const points: WrkResult[] = [];
    for (const clients of ASYM_CLIENTS) {
      for (const [label, op] of Object.entries(ops)) {
        const warmUpSeconds = clients === ASYM_CLIENTS[0] ? WARM_UP_SECONDS : 0;
        points.push(await signedWrkPoint(wrk, settings, work, { label, port: service.port, operation: op.operation, input: op.input, clients, check: op.check, warmUpSeconds }));
      }
    }

    let beside: BesideRsa4096 | undefined;
    if (settings.rsa4096Concurrency > 0) {
      try {
        beside = await besideRsa4096(wrk, settings, work, service.port, service.client);
      } catch (e) {
        onFailure('asym: Encrypt beside RSA-4096 CreateKey', e instanceof Error ? e.message : String(e));
      }
    }
    return { createKeyMs, points, beside };
  } finally {
    await stopService(service);
  }
}

async function besideRsa4096(wrk: string, settings: Settings, work: string, port: number, client: Parameters<typeof firstKeys>[0]): Promise<BesideRsa4096> {
  const [keyId] = await firstKeys(client, 1);
  const target: Target = { port, keyId: keyId!, ciphertext: '' };
  const without = await wrkPoint(wrk, settings, work, 'Encrypt, alone', 'Encrypt', target, 8, undefined, WARM_UP_SECONDS);

  progress(`Encrypt at 8 clients beside ${settings.rsa4096Concurrency} RSA-4096 CreateKey loops`);
  const createdAt: number[] = [];
  const durations: number[] = [];
  let stop = false;
  // createKeys only calls send(): time each call.
  const timed = {
    send: async (cmd: CreateKeyCommand) => {
      const t0 = performance.now();
      try {
        return await client.send(cmd);
      } finally {
        durations.push(performance.now() - t0);
      }
    },
  };
  const creating = createKeys(
    timed as unknown as typeof client,
    Number.MAX_SAFE_INTEGER,
    settings.rsa4096Concurrency,
    createdAt,
    Infinity,
    { KeySpec: 'RSA_4096', KeyUsage: 'SIGN_VERIFY', Description: 'p11kms bench RSA-4096 beside Encrypt' },
    () => stop,
  );
  let withLoad: WrkResult;
  let windowStart: number;
  let windowEnd: number;
  try {
    await sleep(200); // the first key generations are under way
    windowStart = performance.now();
    withLoad = await signedWrkPoint(wrk, settings, work, {
      label: 'Encrypt, beside RSA-4096 CreateKey',
      port,
      operation: 'Encrypt',
      input: inputFor('Encrypt', target),
      clients: 8,
    });
    windowEnd = performance.now();
  } finally {
    stop = true;
  }
  const created = await creating;
  if (created.failed > 0) throw new Error(`RSA-4096 CreateKey failed: ${errorSummary(created)}`);
  return {
    concurrency: settings.rsa4096Concurrency,
    without,
    with: withLoad,
    createdDuringPoint: createdAt.filter((t) => t >= windowStart && t <= windowEnd).length,
    created: created.ids.length,
    failed: created.failed,
    errors: errorSummary(created),
    createMedianMs: durations.length > 0 ? median(durations) : undefined,
  };
}
