/**
 * The slow lane (src/hsm/slow-lane.ts): key generation and RSA/EC private-key operations run on
 * threads of their own, in sync and async mode alike. Through the AWS SDK against a started
 * service on the real SoftHSM2 token: the asymmetric operations still work in both modes, their
 * calls (and the async call workers') reach the PKCS#11 call metrics, Encrypt keeps completing
 * while key generations are pending, the lane never runs more calls than it has threads, and a
 * queue beyond its bound answers ThrottlingException.
 */
import { constants, createPublicKey, publicEncrypt, verify as verifySignature } from 'node:crypto';
import { availableParallelism } from 'node:os';
import {
  CreateKeyCommand,
  DecryptCommand,
  DeriveSharedSecretCommand,
  EncryptCommand,
  GenerateDataKeyPairCommand,
  GenerateMacCommand,
  GetPublicKeyCommand,
  SignCommand,
  VerifyCommand,
  VerifyMacCommand,
} from '@aws-sdk/client-kms';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parsePrometheusText, sampleOf } from './helpers/prom-text.js';
import { errorOf, startTestService, type TestService, useTestService } from './helpers/service.js';

async function scrape(t: TestService): Promise<ReturnType<typeof parsePrometheusText>> {
  return parsePrometheusText(await (await fetch(`${t.service.url}/metrics`)).text());
}

function callCount(families: ReturnType<typeof parsePrometheusText>, fn: string): number {
  const f = 'p11kms_pkcs11_call_duration_seconds';
  return sampleOf(families, f, `${f}_count`, { function: fn })?.value ?? 0;
}

function lane(families: ReturnType<typeof parsePrometheusText>, state: string): number | undefined {
  return sampleOf(families, 'p11kms_slow_lane_calls', 'p11kms_slow_lane_calls', { state })?.value;
}

/** The slow-lane gauge alone, read from the scrape's text (frequent scrapes: the event-loop
 *  lag gauges have no samples yet then, which the strict parser refuses). */
async function laneNow(t: TestService): Promise<{ running: number; queued: number }> {
  const text = await (await fetch(`${t.service.url}/metrics`)).text();
  const read = (state: string) => Number(new RegExp(`^p11kms_slow_lane_calls\\{state="${state}"\\} (\\S+)$`, 'm').exec(text)?.[1]);
  return { running: read('running'), queued: read('queued') };
}

async function createKey(t: TestService, KeySpec: string, KeyUsage: string): Promise<string> {
  const out = await t.client.send(new CreateKeyCommand({ KeySpec: KeySpec as never, KeyUsage: KeyUsage as never }));
  return out.KeyMetadata!.KeyId!;
}

describe.each(['sync', 'async'] as const)('%s mode', (mode) => {
  let t: TestService;
  beforeAll(async () => {
    t = await startTestService({ P11KMS_SYMMETRIC_CALLS: mode, P11KMS_SLOW_CALL_THREADS: '2' });
  });
  afterAll(async () => {
    await t?.stop();
  });

  it('RSA and ECC keys: CreateKey, Sign/Verify, Decrypt, DeriveSharedSecret, HMAC, data key pairs', async () => {
    const message = Buffer.from(`slow lane ${mode}`);
    for (const [spec, algorithm] of [
      ['RSA_4096', 'RSASSA_PSS_SHA_256'],
      ['RSA_2048', 'RSASSA_PKCS1_V1_5_SHA_256'],
      ['ECC_NIST_P256', 'ECDSA_SHA_256'],
      ['ECC_NIST_P384', 'ECDSA_SHA_384'],
    ] as const) {
      const keyId = await createKey(t, spec, 'SIGN_VERIFY');
      const signed = await t.client.send(new SignCommand({ KeyId: keyId, Message: message, SigningAlgorithm: algorithm }));
      const verified = await t.client.send(new VerifyCommand({ KeyId: keyId, Message: message, Signature: signed.Signature, SigningAlgorithm: algorithm }));
      expect(verified.SignatureValid, spec).toBe(true);
      const tampered = Buffer.from(signed.Signature!);
      tampered[tampered.length - 1]! ^= 1;
      const refused = await errorOf(t.client.send(new VerifyCommand({ KeyId: keyId, Message: message, Signature: tampered, SigningAlgorithm: algorithm })));
      expect(refused.name, spec).toBe('KMSInvalidSignatureException');
      // The signature is a real one under the public key GetPublicKey returns.
      const spki = (await t.client.send(new GetPublicKeyCommand({ KeyId: keyId }))).PublicKey!;
      const publicKey = createPublicKey({ key: Buffer.from(spki), format: 'der', type: 'spki' });
      const options = algorithm.startsWith('RSASSA_PSS')
        ? { key: publicKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 }
        : algorithm.startsWith('ECDSA')
          ? { key: publicKey, dsaEncoding: 'der' as const }
          : publicKey;
      expect(verifySignature(algorithm.endsWith('384') ? 'sha384' : 'sha256', message, options, Buffer.from(signed.Signature!)), spec).toBe(true);
    }

    const rsaId = await createKey(t, 'RSA_2048', 'ENCRYPT_DECRYPT');
    const rsaSpki = (await t.client.send(new GetPublicKeyCommand({ KeyId: rsaId }))).PublicKey!;
    const offline = publicEncrypt({ key: createPublicKey({ key: Buffer.from(rsaSpki), format: 'der', type: 'spki' }), padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, message);
    const decrypted = await t.client.send(new DecryptCommand({ KeyId: rsaId, CiphertextBlob: offline, EncryptionAlgorithm: 'RSAES_OAEP_SHA_256' }));
    expect(Buffer.from(decrypted.Plaintext!).equals(message)).toBe(true);
    const bad = Buffer.from(offline);
    bad[10]! ^= 1;
    expect((await errorOf(t.client.send(new DecryptCommand({ KeyId: rsaId, CiphertextBlob: bad, EncryptionAlgorithm: 'RSAES_OAEP_SHA_256' })))).name).toBe('InvalidCiphertextException');

    const agreeId = await createKey(t, 'ECC_NIST_P256', 'KEY_AGREEMENT');
    const peer = await t.client.send(new GenerateDataKeyPairCommand({ KeyId: await createKey(t, 'SYMMETRIC_DEFAULT', 'ENCRYPT_DECRYPT'), KeyPairSpec: 'ECC_NIST_P256' }));
    const shared = await t.client.send(new DeriveSharedSecretCommand({ KeyId: agreeId, KeyAgreementAlgorithm: 'ECDH', PublicKey: peer.PublicKey }));
    expect(shared.SharedSecret?.length).toBe(32);

    const rsaPair = await t.client.send(new GenerateDataKeyPairCommand({ KeyId: await createKey(t, 'SYMMETRIC_DEFAULT', 'ENCRYPT_DECRYPT'), KeyPairSpec: 'RSA_2048' }));
    expect(createPublicKey({ key: Buffer.from(rsaPair.PublicKey!), format: 'der', type: 'spki' }).asymmetricKeyDetails?.modulusLength).toBe(2048);

    const macId = await createKey(t, 'HMAC_256', 'GENERATE_VERIFY_MAC');
    const mac = await t.client.send(new GenerateMacCommand({ KeyId: macId, Message: message, MacAlgorithm: 'HMAC_SHA_256' }));
    expect((await t.client.send(new VerifyMacCommand({ KeyId: macId, Message: message, Mac: mac.Mac, MacAlgorithm: 'HMAC_SHA_256' }))).MacValid).toBe(true);
    const wrongMac = Buffer.from(mac.Mac!);
    wrongMac[0]! ^= 1;
    expect((await errorOf(t.client.send(new VerifyMacCommand({ KeyId: macId, Message: message, Mac: wrongMac, MacAlgorithm: 'HMAC_SHA_256' })))).name).toBe('KMSInvalidMacException');
  });

  it('calls on worker threads reach the PKCS#11 call metrics', async () => {
    const before = await scrape(t);
    const keyId = await createKey(t, 'SYMMETRIC_DEFAULT', 'ENCRYPT_DECRYPT');
    const signer = await createKey(t, 'ECC_NIST_P256', 'SIGN_VERIFY');
    const ENCRYPTS = 12;
    for (let i = 0; i < ENCRYPTS; i++) await t.client.send(new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from(`m${i}`) }));
    await t.client.send(new SignCommand({ KeyId: signer, Message: Buffer.from('x'), SigningAlgorithm: 'ECDSA_SHA_256' }));
    const after = await scrape(t);
    const grew = (fn: string) => callCount(after, fn) - callCount(before, fn);
    // Key generation and signing run in the slow lane in both modes.
    expect(grew('C_GenerateKey')).toBeGreaterThanOrEqual(1);
    expect(grew('C_GenerateKeyPair')).toBeGreaterThanOrEqual(1);
    expect(grew('C_SignInit')).toBeGreaterThanOrEqual(1);
    expect(grew('C_Sign')).toBeGreaterThanOrEqual(1);
    // AES-GCM runs on the call workers in async mode, on the event loop in sync mode: counted alike.
    expect(grew('C_EncryptInit')).toBeGreaterThanOrEqual(ENCRYPTS);
    expect(grew('C_Encrypt')).toBeGreaterThanOrEqual(ENCRYPTS);
    expect(lane(after, 'threads')).toBe(2);
  });

  it('Encrypt keeps completing while 6 RSA_3072 generations are pending; at most 2 run at once', async () => {
    const keyId = await createKey(t, 'SYMMETRIC_DEFAULT', 'ENCRYPT_DECRYPT');
    let encrypts = 0;
    let encryptsBeforeFirstKey: number | undefined;
    const samples: Array<{ running: number; queued: number }> = [];
    let generating = true;
    const creations = Array.from({ length: 6 }, () =>
      createKey(t, 'RSA_3072', 'SIGN_VERIFY').then((id) => {
        encryptsBeforeFirstKey ??= encrypts;
        return id;
      }),
    );
    const all = Promise.all(creations).finally(() => (generating = false));
    const encryptLoops = Array.from({ length: 4 }, async () => {
      while (generating) {
        await t.client.send(new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from('during key generation') }));
        encrypts++;
      }
    });
    const watcher = (async () => {
      while (generating) samples.push(await laneNow(t));
    })();
    const created = await all;
    console.log(`slow lane: ${encryptsBeforeFirstKey} encrypts before the first key, ${encrypts} in all; max running ${Math.max(...samples.map((s) => s.running))}, max queued ${Math.max(...samples.map((s) => s.queued))}, ${samples.length} samples`);
    await Promise.all([...encryptLoops, watcher]);
    expect(new Set(created).size).toBe(6);
    // Structural, not timed: Encrypt requests finished while the first generation was pending.
    expect(encryptsBeforeFirstKey).toBeGreaterThan(10);
    expect(samples.length).toBeGreaterThan(0);
    expect(samples.every((s) => Number.isInteger(s.running) && Number.isInteger(s.queued))).toBe(true);
    expect(Math.max(...samples.map((s) => s.running))).toBeLessThanOrEqual(2);
    // The 3rd to 6th generations waited for a thread.
    expect(Math.max(...samples.map((s) => s.queued))).toBeGreaterThanOrEqual(1);
  });
});

describe('the default thread count', () => {
  const t = useTestService();
  it('is half the CPU cores, at least 1, for a local software token', async () => {
    const text = await (await fetch(`${t.service.url}/metrics`)).text();
    expect(text).toMatch(new RegExp(`^p11kms_slow_lane_calls\\{state="threads"\\} ${Math.max(1, Math.floor(availableParallelism() / 2))}$`, 'm'));
  });
});

describe('a slow-lane queue beyond its bound', () => {
  let t: TestService;
  beforeAll(async () => {
    t = await startTestService({ P11KMS_SLOW_CALL_THREADS: '1', P11KMS_SLOW_CALL_QUEUE_MAX: '1' });
  });
  afterAll(async () => {
    await t?.stop();
  });

  it('answers ThrottlingException; the admitted generations complete', async () => {
    const messages: string[] = [];
    const outcomes = await Promise.all(
      Array.from({ length: 4 }, () =>
        createKey(t, 'RSA_4096', 'SIGN_VERIFY').then(
          () => 'OK',
          (err: Error) => {
            messages.push(err.message);
            return err.name;
          },
        ),
      ),
    );
    // The refusal names the slow lane, not the session pool.
    expect(messages.some((m) => /key generations and private-key operations are waiting/.test(m))).toBe(true);
    expect(outcomes.filter((o) => o === 'OK').length).toBeGreaterThanOrEqual(2);
    expect(outcomes).toContain('ThrottlingException');
    expect(outcomes.every((o) => o === 'OK' || o === 'ThrottlingException')).toBe(true);
    const families = await scrape(t);
    expect(lane(families, 'threads')).toBe(1);
    expect(lane(families, 'running')).toBe(0);
  });
});
