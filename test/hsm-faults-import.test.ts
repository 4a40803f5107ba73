/**
 * Key import against a token that hangs in the import's short calls (object lookups, attribute
 * reads), injected by the fault module (test/fault-module, hang with hang_calls), in both call
 * modes: while GetParametersForImport or ImportKeyMaterial waits in the token, the service keeps
 * serving (Encrypt under another key completes, a timer ticks), because every token call of the
 * import runs in the slow lane (src/hsm/key-import-common.ts). Once the token answers, the
 * pending call completes and the imported key works. In async mode the same holds for
 * GenerateRandom once the random reserve ran dry (Hsm.generateRandomAsync).
 */
import { constants, createPublicKey, publicEncrypt, randomBytes } from 'node:crypto';
import {
  CreateKeyCommand,
  DecryptCommand,
  EncryptCommand,
  GenerateRandomCommand,
  GetParametersForImportCommand,
  ImportKeyMaterialCommand,
  ListKeysCommand,
} from '@aws-sdk/client-kms';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sleep } from './helpers/fault-load.js';
import { type FaultSettings, type FaultToken, prepareFaultToken } from './helpers/fault-module.js';
import { startTestService, type TestService } from './helpers/service.js';

let token: FaultToken;

beforeAll(async () => {
  token = await prepareFaultToken();
});

/** Resolves once at least `count` token calls are blocked in the fault module's hang. */
async function untilHanging(count: number): Promise<void> {
  for (let attempt = 0; attempt < 1000 && token.control.stats().hanging < count; attempt++) await sleep(10);
  expect(token.control.stats().hanging).toBeGreaterThanOrEqual(count);
}

/** Tracks whether a promise has settled, without handling its outcome. */
function tracked<T>(promise: Promise<T>): { promise: Promise<T>; settled: () => boolean } {
  let done = false;
  void promise.then(
    () => (done = true),
    () => (done = true),
  );
  return { promise, settled: () => done };
}

describe.each(['async', 'sync'] as const)('key import with a hung token (%s mode)', (mode) => {
  let t: TestService;
  let otherKeyId: string;
  beforeAll(async () => {
    // Deadlines far beyond the hangs below: the pending calls must complete, not time out.
    t = await startTestService({ ...token.env, P11KMS_SYMMETRIC_CALLS: mode, P11KMS_HSM_CALL_TIMEOUT_MS: '60000', P11KMS_SLOW_CALL_TIMEOUT_MS: '60000' });
    otherKeyId = (await t.client.send(new CreateKeyCommand({}))).KeyMetadata!.KeyId!;
    await t.client.send(new EncryptCommand({ KeyId: otherKeyId, Plaintext: Buffer.from('warm-up') }));
  });
  afterAll(async () => {
    token?.control.set({});
    await t?.stop();
  });

  /** While `pending` hangs in the token: Encrypt under another key completes and a timer ticks. */
  async function expectServingWhile(pending: { settled: () => boolean }): Promise<void> {
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    try {
      for (let i = 0; i < 5; i++) {
        const sealed = await t.client.send(new EncryptCommand({ KeyId: otherKeyId, Plaintext: Buffer.from(`during the hang ${i}`) }));
        const opened = await t.client.send(new DecryptCommand({ CiphertextBlob: sealed.CiphertextBlob }));
        expect(Buffer.from(opened.Plaintext!).toString()).toBe(`during the hang ${i}`);
      }
      await sleep(5);
    } finally {
      clearInterval(timer);
    }
    expect(ticks).toBeGreaterThan(0);
    expect(pending.settled()).toBe(false);
  }

  async function getParameters(keyId: string) {
    return t.client.send(new GetParametersForImportCommand({ KeyId: keyId, WrappingAlgorithm: 'RSAES_OAEP_SHA_256', WrappingKeySpec: 'RSA_2048' }));
  }

  function wrapped(material: Buffer, publicKey: Uint8Array): Buffer {
    const key = createPublicKey({ key: Buffer.from(publicKey), format: 'der', type: 'spki' });
    return publicEncrypt({ key, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, material);
  }

  async function importKey(keyId: string, material: Buffer, params: { ImportToken?: Uint8Array; PublicKey?: Uint8Array }) {
    return t.client.send(
      new ImportKeyMaterialCommand({
        KeyId: keyId,
        ImportToken: params.ImportToken,
        EncryptedKeyMaterial: wrapped(material, params.PublicKey!),
        ExpirationModel: 'KEY_MATERIAL_DOES_NOT_EXPIRE',
      }),
    );
  }

  async function expectUsable(keyId: string): Promise<void> {
    const sealed = await t.client.send(new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from('under imported material') }));
    const opened = await t.client.send(new DecryptCommand({ CiphertextBlob: sealed.CiphertextBlob }));
    expect(Buffer.from(opened.Plaintext!).toString()).toBe('under imported material');
  }

  async function withHang<T>(settings: FaultSettings, run: () => Promise<T>, hanging = 1): Promise<T> {
    token.control.set({ hang: 1, ...settings });
    const pending = tracked(run());
    try {
      await untilHanging(hanging);
      await expectServingWhile(pending);
    } finally {
      token.control.set({});
    }
    return pending.promise;
  }

  it('ImportKeyMaterial waits in a hung object lookup without blocking the service, then imports', async () => {
    const keyId = (await t.client.send(new CreateKeyCommand({ Origin: 'EXTERNAL' }))).KeyMetadata!.KeyId!;
    const params = await getParameters(keyId);
    const material = randomBytes(32);
    // The import's first token call looks up the import token's MAC key (C_FindObjectsInit).
    await withHang({ hang_calls: 'C_FindObjectsInit' }, () => importKey(keyId, material, params));
    await expectUsable(keyId);
  });

  it('GetParametersForImport waits in a hung attribute read without blocking the service, then its parameters import', async () => {
    const keyId = (await t.client.send(new CreateKeyCommand({ Origin: 'EXTERNAL' }))).KeyMetadata!.KeyId!;
    // After the wrapping key pair is generated, its public key is read (C_GetAttributeValue).
    const params = await withHang({ hang_calls: 'C_GetAttributeValue' }, () => getParameters(keyId));
    expect(params.PublicKey?.length).toBeGreaterThan(0);
    await importKey(keyId, randomBytes(32), params);
    await expectUsable(keyId);
  });

});

describe('GenerateRandom with a hung token (async mode)', () => {
  let t: TestService;
  beforeAll(async () => {
    t = await startTestService({ ...token.env, P11KMS_SYMMETRIC_CALLS: 'async', P11KMS_HSM_CALL_TIMEOUT_MS: '60000' });
    await t.client.send(new CreateKeyCommand({}));
  });
  afterAll(async () => {
    token?.control.set({});
    await t?.stop();
  });

  it('GenerateRandom past the random reserve waits in a hung C_GenerateRandom without blocking the service', async () => {
    token.control.set({ hang: 1, hang_calls: 'C_GenerateRandom' });
    // More than the 64 KiB reserve: the refill and the draws beyond it reach the hung token.
    const draws = Array.from({ length: 80 }, () => t.client.send(new GenerateRandomCommand({ NumberOfBytes: 1024 })));
    const all = tracked(Promise.allSettled(draws));
    try {
      await untilHanging(2);
      // No token call: answered while the draws wait in the token.
      expect((await t.client.send(new ListKeysCommand({}))).Keys!.length).toBeGreaterThan(0);
      expect(all.settled()).toBe(false);
    } finally {
      token.control.set({});
    }
    const results = await all.promise;
    const served = new Set<string>();
    for (const result of results) {
      if (result.status === 'rejected') {
        // Beyond the session pool's queue a draw is refused, retryably.
        expect((result.reason as Error).name).toBe('ThrottlingException');
        continue;
      }
      expect(result.value.Plaintext!.length).toBe(1024);
      served.add(Buffer.from(result.value.Plaintext!).toString('hex'));
    }
    expect(served.size).toBe(results.filter((r) => r.status === 'fulfilled').length);
    expect(served.size).toBeGreaterThan(64);
  });
});
