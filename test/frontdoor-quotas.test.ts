/**
 * Request quotas (P11KMS_QUOTAS) with AWS's semantics: token buckets in requests per second,
 * shared by the operations of one family, per account and per principal on top; the answer is
 * ThrottlingException naming the quota, counted in /metrics and audited; the SDK's standard retry
 * gets through afterwards. Back-pressure: a full PKCS#11 session queue answers ThrottlingException.
 */
import fs from 'node:fs';
import path from 'node:path';
import {
  CreateKeyCommand,
  DescribeKeyCommand,
  EncryptCommand,
  GenerateDataKeyPairCommand,
  GenerateDataKeyPairWithoutPlaintextCommand,
  GenerateRandomCommand,
  KMSClient,
  ListKeysCommand,
  SignCommand,
} from '@aws-sdk/client-kms';
import { describe, expect, it } from 'vitest';
import { queryAuditRecords } from '../src/audit/query.js';
import { operationNames } from '../src/http/model.js';
import { awsDefaultQuotas } from '../src/kms/quotas/aws-defaults.js';
import { loadRequestQuotas } from '../src/kms/quotas/quotas.js';
import { credentials, identityPolicy, testUser, writePrincipalsFile } from './helpers/principals.js';
import { spawnTestService, waitHealthy } from './helpers/process.js';
import { parsePrometheusText, sampleOf } from './helpers/prom-text.js';
import { REGION, ROOT, startTestService, tempDir, useTestService } from './helpers/service.js';

const alice = testUser('alice', [identityPolicy({ Effect: 'Allow', Action: 'kms:*', Resource: '*' })]);

function quotaFile(content: unknown, name = 'quotas.json'): string {
  const file = path.join(tempDir('p11kms-quotas-'), name);
  fs.writeFileSync(file, typeof content === 'string' ? content : JSON.stringify(content));
  return file;
}

const t = useTestService(() => ({
  P11KMS_PRINCIPALS_FILE: writePrincipalsFile([alice]),
  P11KMS_QUOTAS: quotaFile({
    families: { symmetric: 5, rsa: 2, ecc: 2, 'GenerateDataKeyPair (ECC_NIST_P256)': 1 },
    operations: { ListKeys: 2, DescribeKey: 1 },
    principals: { [alice.arn]: { families: { symmetric: 2 } } },
  }),
}));

const refill = () => new Promise((r) => setTimeout(r, 1100));

/** Sends `n` requests at once; counts what passed and the throttling errors' messages. */
async function burst(n: number, send: () => Promise<unknown>): Promise<{ ok: number; throttled: string[]; other: string[]; ms: number }> {
  const t0 = performance.now();
  const results = await Promise.allSettled(Array.from({ length: n }, send));
  const ms = performance.now() - t0;
  const throttled: string[] = [];
  const other: string[] = [];
  let ok = 0;
  for (const r of results) {
    if (r.status === 'fulfilled') ok++;
    else if ((r.reason as Error).name === 'ThrottlingException') throttled.push((r.reason as Error).message);
    else other.push(`${(r.reason as Error).name}: ${(r.reason as Error).message}`);
  }
  return { ok, throttled, other, ms };
}

/** What a token bucket of `rate`/s (holding one second, at least 1) lets through of a burst: all of
 *  its capacity, plus at most what refilled while the burst was being served; the rest throttled. */
function expectBucket(r: { ok: number; throttled: string[]; other: string[]; ms: number }, n: number, rate: number): void {
  const capacity = Math.max(1, rate);
  expect(r.other).toEqual([]);
  expect(r.ok).toBeGreaterThanOrEqual(Math.min(n, capacity));
  expect(r.ok).toBeLessThanOrEqual(capacity + Math.floor((r.ms / 1000) * rate));
  expect(r.throttled.length).toBe(n - r.ok);
  expect(r.throttled.length).toBeGreaterThan(0);
}

const random = (client: KMSClient) => () => client.send(new GenerateRandomCommand({ NumberOfBytes: 16 }));

describe('request quotas from a quota file', () => {
  it('throttles the (N+k)-th request of a second with ThrottlingException naming the quota', async () => {
    await refill();
    const r = await burst(12, random(t.client));
    expectBucket(r, 12, 5);
    expect(r.throttled[0]).toContain('You have exceeded the rate at which you may call KMS');
    expect(r.throttled[0]).toContain('Cryptographic operations (symmetric) request rate: 5 per second');
  });

  it('answers throttling as AWS does: HTTP 400, __type ThrottlingException; the SDK standard retry then succeeds', async () => {
    // DescribeKey at 1 per second: one call empties the bucket for a whole second, however slow the machine.
    const key = (await t.client.send(new CreateKeyCommand({}))).KeyMetadata!.KeyId!;
    await refill();
    await t.client.send(new DescribeKeyCommand({ KeyId: key }));
    const err = await t.client.send(new DescribeKeyCommand({ KeyId: key })).catch((e: { name: string; $metadata: { httpStatusCode?: number } }) => e);
    expect((err as { name: string }).name).toBe('ThrottlingException');
    expect((err as { $metadata: { httpStatusCode?: number } }).$metadata.httpStatusCode).toBe(400);
    const retrying = new KMSClient({ endpoint: t.service.url, region: REGION, credentials: ROOT, maxAttempts: 8, retryMode: 'standard' });
    await refill();
    await t.client.send(new DescribeKeyCommand({ KeyId: key }));
    const out = await retrying.send(new DescribeKeyCommand({ KeyId: key }));
    expect(out.KeyMetadata!.KeyId).toBe(key);
    expect(out.$metadata.attempts).toBeGreaterThan(1);
    retrying.destroy();
  });

  it('keeps families independent: with the symmetric quota used up, RSA and ECC requests pass', async () => {
    await refill();
    const rsa = (await t.client.send(new CreateKeyCommand({ KeySpec: 'RSA_2048', KeyUsage: 'ENCRYPT_DECRYPT' }))).KeyMetadata!.KeyId!;
    const ecc = (await t.client.send(new CreateKeyCommand({ KeySpec: 'ECC_NIST_P256', KeyUsage: 'SIGN_VERIFY' }))).KeyMetadata!.KeyId!;
    const symmetric = await burst(12, random(t.client));
    expectBucket(symmetric, 12, 5);
    await expect(t.client.send(new EncryptCommand({ KeyId: rsa, Plaintext: Buffer.from('x'), EncryptionAlgorithm: 'RSAES_OAEP_SHA_256' }))).resolves.toBeDefined();
    await expect(t.client.send(new SignCommand({ KeyId: ecc, Message: Buffer.from('m'), SigningAlgorithm: 'ECDSA_SHA_256' }))).resolves.toBeDefined();
    // ... and the RSA family has its own bucket: 2 per second, the Encrypt above took one.
    await refill();
    const rsaBurst = await burst(6, () => t.client.send(new EncryptCommand({ KeyId: rsa, Plaintext: Buffer.from('x'), EncryptionAlgorithm: 'RSAES_OAEP_SHA_1' })));
    expectBucket(rsaBurst, 6, 2);
    expect(rsaBurst.throttled[0]).toContain('Cryptographic operations (RSA) request rate: 2 per second');
  });

  it('gives GenerateDataKeyPair a quota per key pair spec, and single operations their own', async () => {
    await refill();
    const key = (await t.client.send(new CreateKeyCommand({}))).KeyMetadata!.KeyId!;
    const pairs = await burst(3, () => t.client.send(new GenerateDataKeyPairCommand({ KeyId: key, KeyPairSpec: 'ECC_NIST_P256' })));
    expectBucket(pairs, 3, 1);
    expect(pairs.throttled[0]).toContain('GenerateDataKeyPair (ECC_NIST_P256) request rate: 1 per second');
    await expect(t.client.send(new GenerateDataKeyPairCommand({ KeyId: key, KeyPairSpec: 'ECC_NIST_P384' }))).resolves.toBeDefined();
    const lists = await burst(6, () => t.client.send(new ListKeysCommand({})));
    expectBucket(lists, 6, 2);
    expect(lists.throttled[0]).toContain('ListKeys request rate: 2 per second');
  });

  it("isolates a principal with a quota of its own: alice is throttled at 2/s while root goes on", async () => {
    await refill();
    const asAlice = t.clientFor(credentials(alice));
    const r = await burst(6, random(asAlice));
    expectBucket(r, 6, 2);
    expect(r.throttled[0]).toContain(`for ${alice.arn}`);
    await expect(random(t.client)()).resolves.toBeDefined();
    asAlice.destroy();
  });

  it('counts throttled requests in p11kms_throttled_requests_total{operation,family} and audits them', async () => {
    await refill();
    const r = await burst(12, random(t.client));
    expectBucket(r, 12, 5);
    const metrics = parsePrometheusText(await (await fetch(`${t.service.url}/metrics`)).text());
    const sample = sampleOf(metrics, 'p11kms_throttled_requests_total', 'p11kms_throttled_requests_total', { operation: 'GenerateRandom', family: 'symmetric' });
    expect(sample?.value).toBeGreaterThanOrEqual(r.throttled.length);
    const records = [];
    for await (const rec of queryAuditRecords(t.dataDir, { eventName: 'GenerateRandom' })) if (rec.errorCode === 'ThrottlingException') records.push(rec);
    expect(records.length).toBeGreaterThanOrEqual(r.throttled.length);
    expect(records[0]!.userIdentity?.arn).toMatch(/:root$/);
  });
});

describe('the quota setting', () => {
  it('stops the start on a bad quota file, naming the problem', async () => {
    const cases: Array<[unknown, string, RegExp]> = [
      [{ families: { symetric: 5 } }, 'q.json', /families: families may name only symmetric/],
      [{ families: { symmetric: -1 } }, 'q.json', /families\.symmetric: .*(too small|>0|positive)/i],
      [{ operations: { Encrypts: 5 } }, 'q.json', /unknown KMS operation Encrypts/],
      [{ principals: { alice: {} } }, 'q.json', /principals\.alice: must be an IAM principal ARN/],
      [{ limits: {} }, 'q.json', /Unrecognized key.*limits/i],
      ['families: [1', 'q.yaml', /cannot be read/],
      ['{', 'q.json', /cannot be read/],
    ];
    for (const [content, name, message] of cases) {
      await expect(startTestService({ P11KMS_QUOTAS: quotaFile(content, name) })).rejects.toThrow(message);
    }
    await expect(startTestService({ P11KMS_QUOTAS: '/nonexistent/quotas.json' })).rejects.toThrow(/P11KMS_QUOTAS \/nonexistent\/quotas.json cannot be read/);
  });

  it('reads YAML quota files by extension', () => {
    const file = quotaFile('families:\n  symmetric: 1\noperations:\n  CreateKey: 0.5\n', 'quotas.yaml');
    const quotas = loadRequestQuotas(file, 'us-east-1', operationNames)!;
    quotas.admit('GenerateRandom', {}, 'arn:aws:iam::111122223333:root');
    expect(() => quotas.admit('Encrypt', {}, 'arn:aws:iam::111122223333:root')).toThrow(/symmetric\) request rate: 1 per second/);
    quotas.admit('CreateKey', {}, 'arn:aws:iam::111122223333:root');
    expect(() => quotas.admit('CreateKey', {}, 'arn:aws:iam::111122223333:root')).toThrow(/CreateKey request rate: 0.5 per second/);
  });

  it("'aws' applies AWS's documented defaults for the Region; 'off' applies none", () => {
    expect(awsDefaultQuotas('us-east-1').families.symmetric).toBe(100_000);
    expect(awsDefaultQuotas('eu-central-1').families.symmetric).toBe(20_000);
    expect(awsDefaultQuotas('sa-east-1').families.symmetric).toBe(10_000);
    expect(awsDefaultQuotas('sa-east-1').families.rsa).toBe(1000);
    expect(awsDefaultQuotas('sa-east-1').operations.CreateKey).toBe(5);
    const aws = loadRequestQuotas('aws', 'sa-east-1', operationNames)!;
    for (let i = 0; i < 5; i++) aws.admit('CreateKey', {}, 'arn:aws:iam::111122223333:root');
    expect(() => aws.admit('CreateKey', {}, 'arn:aws:iam::111122223333:root')).toThrow(/CreateKey request rate: 5 per second/);
    expect(loadRequestQuotas('off', 'us-east-1', operationNames)).toBeUndefined();
  });
});

describe('back-pressure from the token', () => {
  it('answers ThrottlingException promptly when every session is busy and the queue is full', async () => {
    // Three slow-lane threads, so that more key generations want the one session than its queue
    // holds (beyond the lane's threads, slow calls wait in the lane, holding no session).
    const { proc, port } = await spawnTestService({ P11KMS_SESSION_POOL_SIZE: '1', P11KMS_SESSION_QUEUE_MAX: '1', P11KMS_SLOW_CALL_THREADS: '3' });
    const url = `http://127.0.0.1:${port}`;
    const client = new KMSClient({ endpoint: url, region: REGION, credentials: ROOT, maxAttempts: 1 });
    try {
      await waitHealthy(url, proc);
      // Generating an RSA-4096 data key pair holds the one session for a long while (on a slow-lane thread).
      const key = (await client.send(new CreateKeyCommand({}))).KeyMetadata!.KeyId!;
      const started = Date.now();
      const sign = () => client.send(new GenerateDataKeyPairWithoutPlaintextCommand({ KeyId: key, KeyPairSpec: 'RSA_4096' })).then(
        () => ({ ok: true, name: 'OK', ms: Date.now() - started }),
        (e: Error) => ({ ok: false, name: e.name, ms: Date.now() - started }),
      );
      const results = await Promise.all(Array.from({ length: 6 }, sign));
      const refused = results.filter((r) => !r.ok);
      expect(results.filter((r) => r.ok).length).toBeGreaterThanOrEqual(2); // one on the session, one queued
      expect(refused.length).toBeGreaterThan(0);
      expect(new Set(refused.map((r) => r.name))).toEqual(new Set(['ThrottlingException']));
      // Refused at once, not after waiting for the session.
      const slowestSuccess = Math.max(...results.filter((r) => r.ok).map((r) => r.ms));
      for (const r of refused) expect(r.ms).toBeLessThan(slowestSuccess);
      const metrics = parsePrometheusText(await (await fetch(`${url}/metrics`)).text());
      expect(sampleOf(metrics, 'p11kms_throttled_requests_total', 'p11kms_throttled_requests_total', { operation: 'GenerateDataKeyPairWithoutPlaintext', family: 'pkcs11-sessions' })?.value).toBe(refused.length);
    } finally {
      client.destroy();
      expect(await proc.stop()).toBe(0);
    }
  });
});
