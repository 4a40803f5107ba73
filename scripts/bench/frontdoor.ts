/**
 * Phase "frontdoor" (issue 12): what TLS and the quota check cost. Three services side by side:
 * plain HTTP, HTTPS (a throw-away CA, TLS 1.3, keep-alive connections, as wrk holds them), and
 * plain HTTP with P11KMS_QUOTAS set to a file whose quotas are far above the load (every request
 * passes an account family bucket, an operation bucket and a per-principal bucket, none throttles).
 * Encrypt at 1, 8 and 32 clients rotates among them point by point, BENCH_FRONTDOOR_ROUNDS rounds
 * (default 2), median reported; plus the quota check alone, timed in this process.
 */
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { KMSClient } from '@aws-sdk/client-kms';
import { operationNames } from '../../src/http/model.js';
import { loadRequestQuotas } from '../../src/kms/quotas/quotas.js';
import { ROOT_CREDENTIALS, REGION, SERVICE_MAIN, freePort, progress, sleep, startNode, type Proc, type Settings } from './common.js';
import { WARM_UP_SECONDS, firstKeys, inputFor, serviceEnv, signedWrkPoint, startService, stopService, type Service, type Target } from './kms.js';
import { makeCa } from './test-ca.js';
import type { WrkResult } from './wrk.js';

export const FRONTDOOR_CLIENTS = [1, 8, 32];

export interface FrontDoorResult {
  rounds: number;
  http: WrkResult[];
  https: WrkResult[];
  quotas: WrkResult[];
  /** RequestQuotas.admit for an Encrypt with three buckets to pass, ns per call (median of 5 runs). */
  admitNs: number;
}

const ROOT_ARN = 'arn:aws:iam::111122223333:root';
const GENEROUS_QUOTAS = { families: { symmetric: 1e9 }, operations: { Encrypt: 1e9 }, principals: { [ROOT_ARN]: { families: { symmetric: 1e9 } } } };

export async function frontDoorPhase(wrk: string, settings: Settings, work: string): Promise<FrontDoorResult> {
  const rounds = Number(process.env.BENCH_FRONTDOOR_ROUNDS ?? 2);
  progress(`frontdoor: Encrypt over HTTP vs HTTPS vs HTTP with quotas (${rounds} rounds)`);
  const quotaFile = path.join(work, 'frontdoor-quotas.json');
  fs.writeFileSync(quotaFile, JSON.stringify(GENEROUS_QUOTAS));
  const ca = makeCa(path.join(work, 'frontdoor-ca'), 'p11kms bench CA');
  const server = ca.issue('server', { subject: '/CN=localhost', server: true });
  const caPem = fs.readFileSync(ca.caFile);
  let plain: Service | undefined;
  let quoted: Service | undefined;
  let tls: { proc: Proc; port: number; client: KMSClient } | undefined;
  try {
    plain = await startService('service-frontdoor-http', path.join(work, 'frontdoor-http-data'), work, settings, { P11KMS_QUOTAS: 'off' });
    quoted = await startService('service-frontdoor-quotas', path.join(work, 'frontdoor-quotas-data'), work, settings, { P11KMS_QUOTAS: quotaFile });
    tls = await startTlsService(work, settings, server, caPem);
    const targets = {
      http: { port: plain.port, keyId: (await firstKeys(plain.client, 1))[0]!, ciphertext: '' } satisfies Target,
      quotas: { port: quoted.port, keyId: (await firstKeys(quoted.client, 1))[0]!, ciphertext: '' } satisfies Target,
      https: { port: tls.port, keyId: (await firstKeys(tls.client, 1))[0]!, ciphertext: '' } satisfies Target,
    };
    const result: FrontDoorResult = { rounds, http: [], https: [], quotas: [], admitNs: quotaCheckNs() };
    progress(`frontdoor: quota check ${result.admitNs.toFixed(0)} ns per request (3 buckets)`);
    const kinds = ['http', 'https', 'quotas'] as const;
    for (let round = 0; round < rounds; round++) {
      for (const clients of FRONTDOOR_CLIENTS) {
        const order = kinds.map((_, i) => kinds[(i + round) % kinds.length]!);
        for (const kind of order) {
          const target = targets[kind];
          result[kind].push(
            await signedWrkPoint(wrk, settings, work, {
              label: `Encrypt, ${kind === 'quotas' ? 'HTTP + quotas' : kind.toUpperCase()}`,
              port: target.port,
              operation: 'Encrypt',
              input: inputFor('Encrypt', target),
              clients,
              fileTag: `r${round}`,
              warmUpSeconds: round === 0 && clients === FRONTDOOR_CLIENTS[0] ? WARM_UP_SECONDS : 0,
              tlsCa: kind === 'https' ? caPem : undefined,
            }),
          );
        }
      }
    }
    return result;
  } finally {
    if (plain) await stopService(plain);
    if (quoted) await stopService(quoted);
    if (tls) {
      tls.client.destroy();
      await tls.proc.stop();
    }
  }
}

/** The quota check by itself: admit() for an Encrypt against the generous table, in this process. */
function quotaCheckNs(): number {
  const file = path.join(fs.mkdtempSync(path.join(process.env.TMPDIR ?? '/tmp', 'p11kms-quotas-')), 'q.json');
  fs.writeFileSync(file, JSON.stringify(GENEROUS_QUOTAS));
  const quotas = loadRequestQuotas(file, REGION, operationNames)!;
  const input = { KeyId: 'k', Plaintext: 'x' };
  const runs: number[] = [];
  for (let run = 0; run < 5; run++) {
    const n = 1_000_000;
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) quotas.admit('Encrypt', input, ROOT_ARN);
    runs.push(Number(process.hrtime.bigint() - t0) / n);
  }
  fs.rmSync(path.dirname(file), { recursive: true, force: true });
  return runs.sort((a, b) => a - b)[2]!;
}

async function startTlsService(work: string, settings: Settings, server: { certFile: string; keyFile: string }, ca: Buffer) {
  const port = await freePort();
  const env = serviceEnv(path.join(work, 'frontdoor-https-data'), port, settings, { P11KMS_TLS_CERT_FILE: server.certFile, P11KMS_TLS_KEY_FILE: server.keyFile });
  const proc = startNode('service-frontdoor-https', SERVICE_MAIN, [], env, path.join(work, 'service-frontdoor-https.log'));
  const agent = new https.Agent({ ca, keepAlive: true });
  const deadline = performance.now() + 60_000;
  for (;;) {
    if (proc.child.exitCode !== null) throw new Error(`service-frontdoor-https exited:\n${proc.logTail()}`);
    const status = await new Promise<number>((resolve) => {
      https.get(`https://127.0.0.1:${port}/healthz`, { agent }, (res) => (res.resume(), resolve(res.statusCode ?? 0))).on('error', () => resolve(0));
    });
    if (status === 200) break;
    if (performance.now() > deadline) throw new Error(`service-frontdoor-https not healthy:\n${proc.logTail()}`);
    await sleep(20);
  }
  const client = new KMSClient({ endpoint: `https://127.0.0.1:${port}`, region: REGION, credentials: ROOT_CREDENTIALS, maxAttempts: 1, requestHandler: { httpsAgent: agent } });
  return { proc, port, client };
}
