/**
 * HMAC keys (GenerateMac/VerifyMac), key agreement (DeriveSharedSecret against node:crypto),
 * data key pairs for every DataKeyPairSpec, every wrong-usage error, and the token-side check that
 * every private and secret key refuses to be read or wrapped — all through the real AWS SDK.
 */
import crypto from 'node:crypto';
import {
  CreateKeyCommand,
  type CreateKeyCommandInput,
  DecryptCommand,
  DeriveSharedSecretCommand,
  EncryptCommand,
  GenerateDataKeyCommand,
  GenerateDataKeyPairCommand,
  GenerateDataKeyPairWithoutPlaintextCommand,
  GenerateMacCommand,
  GetPublicKeyCommand,
  type KeyMetadata,
  type MacAlgorithmSpec,
  SignCommand,
  VerifyCommand,
  VerifyMacCommand,
} from '@aws-sdk/client-kms';
import { beforeAll, describe, expect, it } from 'vitest';
import { inspectBackingKey } from '../src/hsm/pkcs11-token.js';
import { errorOf, useTestService } from './helpers/service.js';

const t = useTestService();

const created: KeyMetadata[] = [];
async function createKey(input: CreateKeyCommandInput): Promise<KeyMetadata> {
  const key = (await t.client.send(new CreateKeyCommand(input))).KeyMetadata!;
  created.push(key);
  return key;
}

describe('GenerateMac and VerifyMac', () => {
  const specs: Array<[string, MacAlgorithmSpec, number]> = [
    ['HMAC_224', 'HMAC_SHA_224', 28],
    ['HMAC_256', 'HMAC_SHA_256', 32],
    ['HMAC_384', 'HMAC_SHA_384', 48],
    ['HMAC_512', 'HMAC_SHA_512', 64],
  ];
  for (const [spec, MacAlgorithm, bytes] of specs) {
    it(`${spec}: deterministic, verifiable, tamper-evident`, async () => {
      const key = await createKey({ KeySpec: spec as never, KeyUsage: 'GENERATE_VERIFY_MAC' });
      const Message = Buffer.from('authenticate me');
      const a = await t.client.send(new GenerateMacCommand({ KeyId: key.KeyId, Message, MacAlgorithm }));
      expect(a).toMatchObject({ KeyId: key.Arn, MacAlgorithm });
      expect(a.Mac!.length).toBe(bytes);
      const b = await t.client.send(new GenerateMacCommand({ KeyId: key.Arn, Message, MacAlgorithm }));
      expect(Buffer.from(b.Mac!).equals(Buffer.from(a.Mac!))).toBe(true);
      const other = await t.client.send(new GenerateMacCommand({ KeyId: key.KeyId, Message: Buffer.from('authenticate mE'), MacAlgorithm }));
      expect(Buffer.from(other.Mac!).equals(Buffer.from(a.Mac!))).toBe(false);
      const ok = await t.client.send(new VerifyMacCommand({ KeyId: key.KeyId, Message, MacAlgorithm, Mac: a.Mac }));
      expect(ok).toMatchObject({ KeyId: key.Arn, MacValid: true, MacAlgorithm });
      const tampered = Buffer.from(a.Mac!);
      tampered[0]! ^= 0x80;
      for (const [mac, msg] of [
        [tampered, Message],
        [Buffer.from(a.Mac!), Buffer.from('authenticate mE')],
        [Buffer.from(a.Mac!).subarray(0, bytes - 1), Message],
      ] as const) {
        const err = await errorOf(t.client.send(new VerifyMacCommand({ KeyId: key.KeyId, Message: msg, MacAlgorithm, Mac: mac })));
        expect(err.name).toBe('KMSInvalidMacException');
      }
      // Keys differ: a second key of the same spec gives a different MAC for the same message.
      const second = await createKey({ KeySpec: spec as never, KeyUsage: 'GENERATE_VERIFY_MAC' });
      const c = await t.client.send(new GenerateMacCommand({ KeyId: second.KeyId, Message, MacAlgorithm }));
      expect(Buffer.from(c.Mac!).equals(Buffer.from(a.Mac!))).toBe(false);
    });
  }

  it('refuses an algorithm of another HMAC spec', async () => {
    const key = await createKey({ KeySpec: 'HMAC_256', KeyUsage: 'GENERATE_VERIFY_MAC' });
    const err = await errorOf(t.client.send(new GenerateMacCommand({ KeyId: key.KeyId, Message: Buffer.from('m'), MacAlgorithm: 'HMAC_SHA_512' })));
    expect(err.name).toBe('InvalidKeyUsageException');
  });
});

describe('DeriveSharedSecret', () => {
  for (const [spec, curve] of [
    ['ECC_NIST_P256', 'prime256v1'],
    ['ECC_NIST_P384', 'secp384r1'],
    ['ECC_NIST_P521', 'secp521r1'],
  ] as const) {
    it(`${spec}: equals node:crypto ECDH computed from the other side`, async () => {
      const key = await createKey({ KeySpec: spec, KeyUsage: 'KEY_AGREEMENT' });
      const pub = await t.client.send(new GetPublicKeyCommand({ KeyId: key.KeyId }));
      expect(pub).toMatchObject({ KeyUsage: 'KEY_AGREEMENT', KeyAgreementAlgorithms: ['ECDH'] });
      const peer = crypto.generateKeyPairSync('ec', { namedCurve: curve });
      const out = await t.client.send(
        new DeriveSharedSecretCommand({ KeyId: key.KeyId, KeyAgreementAlgorithm: 'ECDH', PublicKey: peer.publicKey.export({ type: 'spki', format: 'der' }) }),
      );
      expect(out).toMatchObject({ KeyId: key.Arn, KeyAgreementAlgorithm: 'ECDH', KeyOrigin: 'AWS_KMS' });
      const kmsPublic = crypto.createPublicKey({ key: Buffer.from(pub.PublicKey!), format: 'der', type: 'spki' });
      const expected = crypto.diffieHellman({ privateKey: peer.privateKey, publicKey: kmsPublic });
      expect(Buffer.from(out.SharedSecret!).equals(expected)).toBe(true);
    });
  }

  it('refuses a public key on another curve or not a key at all', async () => {
    const key = await createKey({ KeySpec: 'ECC_NIST_P256', KeyUsage: 'KEY_AGREEMENT' });
    const p384 = crypto.generateKeyPairSync('ec', { namedCurve: 'secp384r1' }).publicKey.export({ type: 'spki', format: 'der' });
    for (const PublicKey of [p384, Buffer.from('garbage')]) {
      const err = await errorOf(t.client.send(new DeriveSharedSecretCommand({ KeyId: key.KeyId, KeyAgreementAlgorithm: 'ECDH', PublicKey })));
      expect(err.name).toBe('ValidationException');
    }
  });
});

describe('GenerateDataKeyPair', () => {
  const specs = ['RSA_2048', 'RSA_3072', 'ECC_NIST_P256', 'ECC_NIST_P384', 'ECC_NIST_P521', 'ECC_SECG_P256K1', 'ECC_NIST_EDWARDS25519'] as const;
  let wrapping: KeyMetadata;
  beforeAll(async () => {
    wrapping = await createKey({});
  });

  for (const KeyPairSpec of specs) {
    it(`${KeyPairSpec}: PKCS#8 + SPKI that match; the blob decrypts under the symmetric key`, async () => {
      const out = await t.client.send(new GenerateDataKeyPairCommand({ KeyId: wrapping.KeyId, KeyPairSpec, EncryptionContext: { use: 'pair' } }));
      expect(out).toMatchObject({ KeyId: wrapping.Arn, KeyPairSpec });
      expect(out.KeyMaterialId).toMatch(/^[0-9a-f]{64}$/);
      const privateDer = Buffer.from(out.PrivateKeyPlaintext!);
      const privateKey = crypto.createPrivateKey({ key: privateDer, format: 'der', type: 'pkcs8' });
      const publicDer = Buffer.from(out.PublicKey!);
      expect(crypto.createPublicKey(privateKey).export({ type: 'spki', format: 'der' }).equals(publicDer)).toBe(true);
      const opened = await t.client.send(new DecryptCommand({ CiphertextBlob: out.PrivateKeyCiphertextBlob, EncryptionContext: { use: 'pair' } }));
      expect(Buffer.from(opened.Plaintext!).equals(privateDer)).toBe(true);
      const bare = await t.client.send(new GenerateDataKeyPairWithoutPlaintextCommand({ KeyId: wrapping.KeyId, KeyPairSpec }));
      expect(bare.PrivateKeyPlaintext).toBeUndefined();
      const bareKey = Buffer.from((await t.client.send(new DecryptCommand({ CiphertextBlob: bare.PrivateKeyCiphertextBlob }))).Plaintext!);
      const barePublic = crypto.createPublicKey(crypto.createPrivateKey({ key: bareKey, format: 'der', type: 'pkcs8' })).export({ type: 'spki', format: 'der' });
      expect(barePublic.equals(Buffer.from(bare.PublicKey!))).toBe(true);
      expect(barePublic.equals(publicDer)).toBe(false); // a fresh pair each call
    });
  }

  it('RSA_4096 works too', async () => {
    const out = await t.client.send(new GenerateDataKeyPairWithoutPlaintextCommand({ KeyId: wrapping.KeyId, KeyPairSpec: 'RSA_4096' }));
    const key = crypto.createPublicKey({ key: Buffer.from(out.PublicKey!), format: 'der', type: 'spki' });
    expect(key.asymmetricKeyDetails?.modulusLength).toBe(4096);
  });

  it('SM2 is unsupported', async () => {
    const err = await errorOf(t.client.send(new GenerateDataKeyPairCommand({ KeyId: wrapping.KeyId, KeyPairSpec: 'SM2' })));
    expect(err.name).toBe('UnsupportedOperationException');
  });
});

describe('wrong key usage', () => {
  it('answers the errors AWS documents', async () => {
    const sym = await createKey({});
    const rsaSign = await createKey({ KeySpec: 'RSA_2048', KeyUsage: 'SIGN_VERIFY' });
    const rsaEncrypt = await createKey({ KeySpec: 'RSA_2048', KeyUsage: 'ENCRYPT_DECRYPT' });
    const ecSign = await createKey({ KeySpec: 'ECC_NIST_P256', KeyUsage: 'SIGN_VERIFY' });
    const ecdh = await createKey({ KeySpec: 'ECC_NIST_P256', KeyUsage: 'KEY_AGREEMENT' });
    const hmac = await createKey({ KeySpec: 'HMAC_256', KeyUsage: 'GENERATE_VERIFY_MAC' });
    const m = Buffer.from('m');
    const peer = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'der' });
    const calls: Array<[string, Promise<unknown>, string]> = [
      ['Sign with ENCRYPT_DECRYPT RSA', t.client.send(new SignCommand({ KeyId: rsaEncrypt.KeyId, Message: m, SigningAlgorithm: 'RSASSA_PSS_SHA_256' })), 'InvalidKeyUsageException'],
      ['Sign with symmetric', t.client.send(new SignCommand({ KeyId: sym.KeyId, Message: m, SigningAlgorithm: 'RSASSA_PSS_SHA_256' })), 'InvalidKeyUsageException'],
      ['Sign with KEY_AGREEMENT', t.client.send(new SignCommand({ KeyId: ecdh.KeyId, Message: m, SigningAlgorithm: 'ECDSA_SHA_256' })), 'InvalidKeyUsageException'],
      ['Verify with HMAC', t.client.send(new VerifyCommand({ KeyId: hmac.KeyId, Message: m, Signature: m, SigningAlgorithm: 'ECDSA_SHA_256' })), 'InvalidKeyUsageException'],
      ['Encrypt with SIGN_VERIFY RSA', t.client.send(new EncryptCommand({ KeyId: rsaSign.KeyId, Plaintext: m, EncryptionAlgorithm: 'RSAES_OAEP_SHA_1' })), 'InvalidKeyUsageException'],
      ['Encrypt with HMAC', t.client.send(new EncryptCommand({ KeyId: hmac.KeyId, Plaintext: m })), 'InvalidKeyUsageException'],
      ['Encrypt with ECC', t.client.send(new EncryptCommand({ KeyId: ecSign.KeyId, Plaintext: m })), 'InvalidKeyUsageException'],
      ['Encrypt symmetric with OAEP', t.client.send(new EncryptCommand({ KeyId: sym.KeyId, Plaintext: m, EncryptionAlgorithm: 'RSAES_OAEP_SHA_1' })), 'InvalidKeyUsageException'],
      [
        'Decrypt with SIGN_VERIFY RSA',
        t.client.send(new DecryptCommand({ KeyId: rsaSign.KeyId, CiphertextBlob: Buffer.alloc(256, 1), EncryptionAlgorithm: 'RSAES_OAEP_SHA_1' })),
        'InvalidKeyUsageException',
      ],
      ['Decrypt with HMAC key', t.client.send(new DecryptCommand({ KeyId: hmac.KeyId, CiphertextBlob: Buffer.alloc(64, 1) })), 'InvalidKeyUsageException'],
      ['GenerateDataKey with RSA', t.client.send(new GenerateDataKeyCommand({ KeyId: rsaEncrypt.KeyId, KeySpec: 'AES_256' })), 'InvalidKeyUsageException'],
      ['GenerateDataKeyPair with RSA', t.client.send(new GenerateDataKeyPairCommand({ KeyId: rsaEncrypt.KeyId, KeyPairSpec: 'ECC_NIST_P256' })), 'InvalidKeyUsageException'],
      ['GenerateDataKeyPair with HMAC', t.client.send(new GenerateDataKeyPairCommand({ KeyId: hmac.KeyId, KeyPairSpec: 'ECC_NIST_P256' })), 'InvalidKeyUsageException'],
      ['GenerateMac with symmetric', t.client.send(new GenerateMacCommand({ KeyId: sym.KeyId, Message: m, MacAlgorithm: 'HMAC_SHA_256' })), 'InvalidKeyUsageException'],
      ['VerifyMac with ECC', t.client.send(new VerifyMacCommand({ KeyId: ecSign.KeyId, Message: m, Mac: m, MacAlgorithm: 'HMAC_SHA_256' })), 'InvalidKeyUsageException'],
      ['DeriveSharedSecret with SIGN_VERIFY', t.client.send(new DeriveSharedSecretCommand({ KeyId: ecSign.KeyId, KeyAgreementAlgorithm: 'ECDH', PublicKey: peer })), 'InvalidKeyUsageException'],
      ['DeriveSharedSecret with symmetric', t.client.send(new DeriveSharedSecretCommand({ KeyId: sym.KeyId, KeyAgreementAlgorithm: 'ECDH', PublicKey: peer })), 'InvalidKeyUsageException'],
      ['GetPublicKey of symmetric', t.client.send(new GetPublicKeyCommand({ KeyId: sym.KeyId })), 'UnsupportedOperationException'],
      ['GetPublicKey of HMAC', t.client.send(new GetPublicKeyCommand({ KeyId: hmac.KeyId })), 'UnsupportedOperationException'],
    ];
    for (const [what, call, expected] of calls) expect((await errorOf(call)).name, what).toBe(expected);
  });
});

describe('backing keys in the token', () => {
  it('every private and secret key created above refuses C_GetAttributeValue and C_WrapKey and has a single usage', async () => {
    const hsm = t.service.services.hsm;
    expect(created.length).toBeGreaterThan(10);
    for (const key of created) {
      const inspection = await inspectBackingKey(hsm, { keyId: key.KeyId!, version: 1 });
      const what = `${key.KeySpec}/${key.KeyUsage}`;
      expect(inspection.objectCount, what).toBe(1);
      expect(inspection.attributes, what).toMatchObject({ token: true, private: true, sensitive: true, extractable: false, alwaysSensitive: true, neverExtractable: true });
      expect(inspection.secretReadResult, what).toBe('CKR_ATTRIBUTE_SENSITIVE');
      expect(inspection.wrapResult, what).toBe('CKR_KEY_UNEXTRACTABLE');
      const { sign, decrypt, derive } = inspection.attributes;
      const expected = {
        SIGN_VERIFY: { sign: true, decrypt: false, derive: false },
        GENERATE_VERIFY_MAC: { sign: true, decrypt: false, derive: false },
        ENCRYPT_DECRYPT: { sign: false, decrypt: true, derive: false },
        KEY_AGREEMENT: { sign: false, decrypt: false, derive: true },
      }[key.KeyUsage!];
      expect({ sign, decrypt, derive }, what).toEqual(expected);
    }
  });
});
