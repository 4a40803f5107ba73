/**
 * A token that hangs during a slow-lane call (key generation on the slow lane's own threads,
 * src/hsm/slow-lane.ts), injected by the fault module (test/fault-module), in async and sync
 * mode: the call answers DependencyTimeoutException at the slow lane's deadline, the event loop
 * keeps answering meanwhile, and once the token answers again the service recovers by itself
 * (its probe runs off the event loop in both modes): key generation, signing and the data plane
 * work as before, and earlier ciphertexts decrypt.
 */
import { CreateKeyCommand, DecryptCommand, EncryptCommand, SignCommand, VerifyCommand } from '@aws-sdk/client-kms';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sleep } from './helpers/fault-load.js';
import { type FaultToken, prepareFaultToken } from './helpers/fault-module.js';
import { errorOf, startTestService, type TestService } from './helpers/service.js';

const SLOW_DEADLINE_MS = 800;

let token: FaultToken;

beforeAll(async () => {
  token = await prepareFaultToken();
});

describe.each(['async', 'sync'] as const)('a hung token during a slow-lane call (%s mode)', (mode) => {
  let t: TestService;
  beforeAll(async () => {
    t = await startTestService({
      ...token.env,
      P11KMS_SYMMETRIC_CALLS: mode,
      P11KMS_HSM_CALL_TIMEOUT_MS: '300',
      P11KMS_SLOW_CALL_TIMEOUT_MS: String(SLOW_DEADLINE_MS),
    });
  });
  afterAll(async () => {
    token?.control.set({});
    await t?.stop();
  });

  async function createKey(KeySpec: string, KeyUsage: string): Promise<string> {
    return (await t.client.send(new CreateKeyCommand({ KeySpec: KeySpec as never, KeyUsage: KeyUsage as never }))).KeyMetadata!.KeyId!;
  }

  it('DependencyTimeoutException at the slow deadline, the loop keeps answering, then recovery without a restart', async () => {
    const aesId = await createKey('SYMMETRIC_DEFAULT', 'ENCRYPT_DECRYPT');
    const before = await t.client.send(new EncryptCommand({ KeyId: aesId, Plaintext: Buffer.from('before the hang') }));

    // Every token call blocks from now on; the generation below takes an idle pooled session
    // (no token call) and hangs in C_GenerateKeyPair on a slow-lane thread.
    token.control.set({ hang: 1 });
    const hungAt = Date.now();
    const generation = errorOf(createKey('RSA_2048', 'SIGN_VERIFY'));
    // The event loop is free while that thread waits in the token: the service answers. (Sync
    // mode makes /healthz's own token call on the event loop, which would hang with the token:
    // there a request that needs no token call shows it.)
    const answered = mode === 'async' ? await fetch(`${t.service.url}/healthz`) : await fetch(`${t.service.url}/readyz`);
    expect([200, 503]).toContain(answered.status);
    const failed = await generation;
    expect(failed.name).toBe('DependencyTimeoutException');
    // Answered at the slow lane's deadline, not at the shorter request-path one.
    expect(Date.now() - hungAt).toBeGreaterThanOrEqual(SLOW_DEADLINE_MS);
    // While the token is down, another slow call fails fast with a retryable error.
    expect(['KeyUnavailableException', 'DependencyTimeoutException']).toContain((await errorOf(createKey('ECC_NIST_P256', 'SIGN_VERIFY'))).name);
    expect((await fetch(`${t.service.url}/healthz`)).status).toBe(503);

    token.control.set({});
    const liftedAt = Date.now();
    let signerId: string | undefined;
    for (let attempt = 0; signerId === undefined && attempt < 100; attempt++) {
      try {
        signerId = await createKey('RSA_2048', 'SIGN_VERIFY');
      } catch (err) {
        expect(['KeyUnavailableException', 'DependencyTimeoutException']).toContain((err as Error).name);
        await sleep(100);
      }
    }
    expect(signerId).toBeDefined();
    console.log(`slow-lane hang (${mode}): first key generated ${Date.now() - liftedAt} ms after the token answered again`);
    const message = Buffer.from('after the hang');
    const signed = await t.client.send(new SignCommand({ KeyId: signerId, Message: message, SigningAlgorithm: 'RSASSA_PSS_SHA_256' }));
    const verified = await t.client.send(new VerifyCommand({ KeyId: signerId, Message: message, Signature: signed.Signature, SigningAlgorithm: 'RSASSA_PSS_SHA_256' }));
    expect(verified.SignatureValid).toBe(true);
    const decrypted = await t.client.send(new DecryptCommand({ CiphertextBlob: before.CiphertextBlob }));
    expect(Buffer.from(decrypted.Plaintext!).toString()).toBe('before the hang');
    expect((await fetch(`${t.service.url}/healthz`)).status).toBe(200);
  });
});
