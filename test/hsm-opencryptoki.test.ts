/**
 * A second PKCS#11 stack: openCryptoki's software token (3.8 on Debian 12: RSA with OAEP-SHA-256
 * and PSS, HMAC-SHA-256/384/512, AES without GCM, no EC). What it has works through the AWS SDK;
 * every spec it cannot serve answers UnsupportedOperationException from mechanism discovery,
 * naming the missing mechanism; `p11kms doctor` prints the same capability table.
 */
import { execFileSync } from 'node:child_process';
import {
  CreateKeyCommand,
  DecryptCommand,
  EncryptCommand,
  GenerateMacCommand,
  SignCommand,
  VerifyCommand,
  VerifyMacCommand,
} from '@aws-sdk/client-kms';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { capabilityTable } from '../src/kms/capabilities.js';
import type { Pkcs11Hsm } from '../src/hsm/pkcs11-hsm.js';
import { prepareOpenCryptokiToken } from './helpers/opencryptoki.js';
import { errorOf, startTestService, type TestService } from './helpers/service.js';

let env: Record<string, string>;
let t: TestService;

beforeAll(async () => {
  env = prepareOpenCryptokiToken();
  t = await startTestService(env);
});
afterAll(async () => {
  await t?.stop();
});

const create = (KeySpec: string, KeyUsage: string) => t.client.send(new CreateKeyCommand({ KeySpec: KeySpec as never, KeyUsage: KeyUsage as never }));

describe('openCryptoki software token', () => {
  it('is detected as openCryptoki, a local software token (sync calls)', () => {
    const hsm = t.service.services.hsm as unknown as Pkcs11Hsm;
    expect(hsm.profile.name).toBe('opencryptoki');
    expect(hsm.syncCalls).toBe(true);
  });

  it('RSA_2048 ENCRYPT_DECRYPT: RSAES_OAEP_SHA_256 decrypts inside the token', async () => {
    const keyId = (await create('RSA_2048', 'ENCRYPT_DECRYPT')).KeyMetadata!.KeyId!;
    for (const algorithm of ['RSAES_OAEP_SHA_256', 'RSAES_OAEP_SHA_1'] as const) {
      const blob = (await t.client.send(new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from(`secret ${algorithm}`), EncryptionAlgorithm: algorithm }))).CiphertextBlob!;
      const out = await t.client.send(new DecryptCommand({ KeyId: keyId, CiphertextBlob: blob, EncryptionAlgorithm: algorithm }));
      expect(Buffer.from(out.Plaintext!).toString()).toBe(`secret ${algorithm}`);
    }
  });

  it('RSA_2048 SIGN_VERIFY: PSS and PKCS#1 v1.5 signatures verify', async () => {
    const keyId = (await create('RSA_2048', 'SIGN_VERIFY')).KeyMetadata!.KeyId!;
    for (const algorithm of ['RSASSA_PSS_SHA_256', 'RSASSA_PKCS1_V1_5_SHA_256'] as const) {
      const sig = (await t.client.send(new SignCommand({ KeyId: keyId, Message: Buffer.from('m'), SigningAlgorithm: algorithm }))).Signature!;
      const ok = await t.client.send(new VerifyCommand({ KeyId: keyId, Message: Buffer.from('m'), Signature: sig, SigningAlgorithm: algorithm }));
      expect(ok.SignatureValid).toBe(true);
    }
  });

  it('HMAC_256: MACs verify', async () => {
    const keyId = (await create('HMAC_256', 'GENERATE_VERIFY_MAC')).KeyMetadata!.KeyId!;
    const mac = (await t.client.send(new GenerateMacCommand({ KeyId: keyId, Message: Buffer.from('m'), MacAlgorithm: 'HMAC_SHA_256' }))).Mac!;
    expect((await t.client.send(new VerifyMacCommand({ KeyId: keyId, Message: Buffer.from('m'), Mac: mac, MacAlgorithm: 'HMAC_SHA_256' }))).MacValid).toBe(true);
  });

  it('specs the token cannot serve answer UnsupportedOperationException naming the missing mechanism', async () => {
    for (const [spec, usage, mechanism] of [
      ['SYMMETRIC_DEFAULT', 'ENCRYPT_DECRYPT', 'CKM_AES_GCM'],
      ['ECC_NIST_P256', 'SIGN_VERIFY', 'CKM_EC_KEY_PAIR_GEN'],
      ['ECC_NIST_P384', 'KEY_AGREEMENT', 'CKM_EC_KEY_PAIR_GEN'],
      ['HMAC_224', 'GENERATE_VERIFY_MAC', 'CKM_SHA224_HMAC'],
    ]) {
      const err = await errorOf(create(spec!, usage!));
      expect(err.name, spec).toBe('UnsupportedOperationException');
      expect(err.message, spec).toContain(mechanism);
    }
  });

  it('the capability table says the same, and `p11kms doctor` prints it', async () => {
    const rows = capabilityTable(t.service.services);
    const row = (spec: string, usage: string) => rows.find((r) => r.keySpec === spec && r.keyUsage === usage)!;
    expect(row('SYMMETRIC_DEFAULT', 'ENCRYPT_DECRYPT')).toMatchObject({ served: false, reason: expect.stringContaining('CKM_AES_GCM') });
    expect(row('RSA_3072', 'SIGN_VERIFY')).toMatchObject({ served: true });
    expect(row('HMAC_512', 'GENERATE_VERIFY_MAC')).toMatchObject({ served: true });
    expect(row('ECC_SECG_P256K1', 'SIGN_VERIFY')).toMatchObject({ served: false, reason: expect.stringContaining('CKM_EC_KEY_PAIR_GEN') });

    await t.stop();
    const out = execFileSync(process.execPath, ['dist/src/cli.js', 'doctor'], {
      env: { ...process.env, ...env, P11KMS_DATA_DIR: t.dataDir, P11KMS_LOG_LEVEL: 'silent' },
      encoding: 'utf8',
    });
    expect(out).toMatch(/SYMMETRIC_DEFAULT ENCRYPT_DECRYPT\s+no\s+.*CKM_AES_GCM/);
    expect(out).toMatch(/RSA_2048 ENCRYPT_DECRYPT\s+yes\s+RSAES_OAEP_SHA_1, RSAES_OAEP_SHA_256/);
    t = await startTestService({ ...env, P11KMS_DATA_DIR: t.dataDir });
  });
});
