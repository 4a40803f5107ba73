/**
 * Key pairs, HMAC keys and ECDH at the Hsm layer against a real SoftHSM2 token: every result is
 * checked with node:crypto, and every private/secret key must refuse to be read or wrapped.
 */
import crypto from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inspectBackingKey, openHsm } from '../src/hsm/pkcs11-token.js';
import type { BackingKeyRef, EcCurve, Hsm, KeyPairType } from '../src/hsm/types.js';
import { makeTempDir, removeTempDirs } from './helpers/temp-dir.js';

let hsm: Hsm;
beforeAll(async () => {
  hsm = await openHsm({ label: 'p11kms-asym', poolSize: 4, symmetricCalls: 'sync' }, makeTempDir('p11kms-asym-'));
});
afterAll(async () => {
  await hsm?.close();
  removeTempDirs();
});

const newRef = (): BackingKeyRef => ({ keyId: crypto.randomUUID(), version: 1 });
const message = Buffer.from('the quick brown fox');

/** P1363 r‖s as node:crypto wants it for ECDSA verification of a prehashed digest. */
function verifiesEcdsa(spki: Buffer, digestAlg: string, raw: Buffer): boolean {
  const key = crypto.createPublicKey({ key: spki, format: 'der', type: 'spki' });
  return crypto.verify(digestAlg, message, { key, dsaEncoding: 'ieee-p1363' }, raw);
}

async function expectLockedDown(ref: BackingKeyRef): Promise<void> {
  const inspection = await inspectBackingKey(hsm, ref);
  expect(inspection.attributes).toMatchObject({ token: true, private: true, sensitive: true, extractable: false, neverExtractable: true });
  expect(['CKR_ATTRIBUTE_SENSITIVE', 'CKR_ATTRIBUTE_TYPE_INVALID']).toContain(inspection.readValueResult);
  expect(inspection.secretReadResult).toBe('CKR_ATTRIBUTE_SENSITIVE');
  expect(inspection.wrapResult).toBe('CKR_KEY_UNEXTRACTABLE');
}

describe('EC key pairs', () => {
  const curves: Array<[EcCurve, string, number]> = [
    ['P-256', 'sha256', 32],
    ['P-384', 'sha384', 48],
    ['P-521', 'sha512', 66],
    ['secp256k1', 'sha256', 32],
  ];
  for (const [curve, hash, bytes] of curves) {
    it(`${curve}: signs digests that node:crypto verifies; token verify agrees; key locked down`, async () => {
      const ref = newRef();
      await hsm.generateKeyPair(ref, { kind: 'ec', curve }, 'sign');
      const spki = await hsm.publicKey(ref);
      expect(crypto.createPublicKey({ key: spki, format: 'der', type: 'spki' }).asymmetricKeyType).toBe('ec');
      const digest = crypto.createHash(hash).update(message).digest();
      const sig = await hsm.sign(ref, { kind: 'ecdsa' }, digest);
      expect(sig.length).toBe(2 * bytes);
      expect(verifiesEcdsa(spki, hash, sig)).toBe(true);
      expect(await hsm.verify(ref, { kind: 'ecdsa' }, digest, sig)).toBe(true);
      const bad = Buffer.from(sig);
      bad[5]! ^= 1;
      expect(await hsm.verify(ref, { kind: 'ecdsa' }, digest, bad)).toBe(false);
      await expectLockedDown(ref);
    });
  }

  it('ECDH: the token and node:crypto agree on the shared secret (P-256, P-384, P-521)', async () => {
    for (const [curve, nodeName] of [
      ['P-256', 'prime256v1'],
      ['P-384', 'secp384r1'],
      ['P-521', 'secp521r1'],
    ] as const) {
      const ref = newRef();
      await hsm.generateKeyPair(ref, { kind: 'ec', curve }, 'derive');
      const peer = crypto.createECDH(nodeName);
      peer.generateKeys();
      const ours = await hsm.deriveSharedSecret(ref, peer.getPublicKey());
      const spki = await hsm.publicKey(ref);
      const jwk = crypto.createPublicKey({ key: spki, format: 'der', type: 'spki' }).export({ format: 'jwk' });
      const point = Buffer.concat([Buffer.from([4]), Buffer.from(jwk.x!, 'base64url'), Buffer.from(jwk.y!, 'base64url')]);
      expect(ours.equals(peer.computeSecret(point))).toBe(true);
      await expectLockedDown(ref);
    }
  });
});

describe('RSA key pairs', () => {
  let signRef: BackingKeyRef;
  let decryptRef: BackingKeyRef;
  beforeAll(async () => {
    signRef = newRef();
    decryptRef = newRef();
    await Promise.all([hsm.generateKeyPair(signRef, { kind: 'rsa', bits: 2048 }, 'sign'), hsm.generateKeyPair(decryptRef, { kind: 'rsa', bits: 2048 }, 'decrypt')]);
  });

  it('PKCS#1 v1.5 and PSS signatures verify in node:crypto and in the token', async () => {
    const key = crypto.createPublicKey({ key: await hsm.publicKey(signRef), format: 'der', type: 'spki' });
    for (const hash of ['sha256', 'sha384', 'sha512'] as const) {
      const digest = crypto.createHash(hash).update(message).digest();
      const pkcs1 = await hsm.sign(signRef, { kind: 'rsa-pkcs1', hash }, digest);
      expect(crypto.verify(hash, message, key, pkcs1)).toBe(true);
      const pss = await hsm.sign(signRef, { kind: 'rsa-pss', hash }, digest);
      const saltLength = crypto.createHash(hash).digest().length;
      expect(crypto.verify(hash, message, { key, padding: crypto.constants.RSA_PKCS1_PSS_PADDING, saltLength }, pss)).toBe(true);
      expect(await hsm.verify(signRef, { kind: 'rsa-pss', hash }, digest, pss)).toBe(true);
      expect(await hsm.verify(signRef, { kind: 'rsa-pkcs1', hash }, digest, pss)).toBe(false);
    }
    await expectLockedDown(signRef);
  });

  it('decrypts OAEP SHA-1 and SHA-256 ciphertexts made by node:crypto; refuses tampered ones', async () => {
    const key = crypto.createPublicKey({ key: await hsm.publicKey(decryptRef), format: 'der', type: 'spki' });
    for (const [hash, max] of [
      ['sha1', 214],
      ['sha256', 190],
    ] as const) {
      for (const size of [1, 17, max]) {
        const plaintext = crypto.randomBytes(size);
        const ct = crypto.publicEncrypt({ key, oaepHash: hash, padding: crypto.constants.RSA_PKCS1_OAEP_PADDING }, plaintext);
        expect((await hsm.decryptRsaOaep(decryptRef, hash, ct)).equals(plaintext)).toBe(true);
      }
      const ct = crypto.publicEncrypt({ key, oaepHash: hash }, Buffer.from('x'));
      ct[10]! ^= 1;
      await expect(hsm.decryptRsaOaep(decryptRef, hash, ct)).rejects.toMatchObject({ kind: 'invalid-ciphertext' });
    }
    // The wrong hash is a wrong ciphertext, not a different plaintext.
    const sha1 = crypto.publicEncrypt({ key, oaepHash: 'sha1' }, Buffer.from('y'));
    await expect(hsm.decryptRsaOaep(decryptRef, 'sha256', sha1)).rejects.toMatchObject({ kind: 'invalid-ciphertext' });
    await expectLockedDown(decryptRef);
  });

  it('keeps usages apart: a signing key cannot decrypt, a decryption key cannot sign', async () => {
    const digest = crypto.createHash('sha256').update(message).digest();
    await expect(hsm.sign(decryptRef, { kind: 'rsa-pss', hash: 'sha256' }, digest)).rejects.toMatchObject({ ckr: 'CKR_KEY_FUNCTION_NOT_PERMITTED' });
    const key = crypto.createPublicKey({ key: await hsm.publicKey(signRef), format: 'der', type: 'spki' });
    await expect(hsm.decryptRsaOaep(signRef, 'sha1', crypto.publicEncrypt({ key, oaepHash: 'sha1' }, Buffer.from('z')))).rejects.toMatchObject({
      ckr: 'CKR_KEY_FUNCTION_NOT_PERMITTED',
    });
  });

  it('destroyKey removes the public key object too', async () => {
    const ref = newRef();
    await hsm.generateKeyPair(ref, { kind: 'ec', curve: 'P-256' }, 'sign');
    await hsm.publicKey(ref);
    await hsm.destroyKey(ref);
    await expect(hsm.publicKey(ref)).rejects.toMatchObject({ kind: 'key-not-found' });
  });
});

describe('Ed25519', () => {
  it('signs messages deterministically; node:crypto verifies', async () => {
    const missing = hsm.missingMechanisms({ kind: 'ed25519' }, 'sign');
    if (missing.length > 0) return; // token without EdDSA
    const ref = newRef();
    await hsm.generateKeyPair(ref, { kind: 'ed25519' }, 'sign');
    const key = crypto.createPublicKey({ key: await hsm.publicKey(ref), format: 'der', type: 'spki' });
    const sig = await hsm.sign(ref, { kind: 'eddsa' }, message);
    expect(sig.length).toBe(64);
    expect(crypto.verify(null, message, key, sig)).toBe(true);
    expect((await hsm.sign(ref, { kind: 'eddsa' }, message)).equals(sig)).toBe(true);
    expect(await hsm.verify(ref, { kind: 'eddsa' }, message, sig)).toBe(true);
    await expectLockedDown(ref);
  });
});

describe('HMAC keys', () => {
  it('MACs are deterministic, verified in the token, and tampering is detected', async () => {
    for (const [hash, bytes] of [
      ['sha224', 28],
      ['sha256', 32],
      ['sha384', 48],
      ['sha512', 64],
    ] as const) {
      const ref = newRef();
      await hsm.generateHmacKey(ref, hash, bytes);
      const mac = await hsm.generateMac(ref, hash, message);
      expect(mac.length).toBe(bytes);
      expect((await hsm.generateMac(ref, hash, message)).equals(mac)).toBe(true);
      expect(await hsm.verifyMac(ref, hash, message, mac)).toBe(true);
      const bad = Buffer.from(mac);
      bad[0]! ^= 1;
      expect(await hsm.verifyMac(ref, hash, message, bad)).toBe(false);
      expect(await hsm.verifyMac(ref, hash, message, mac.subarray(1))).toBe(false);
      const inspection = await inspectBackingKey(hsm, ref);
      expect(inspection.readValueResult).toBe('CKR_ATTRIBUTE_SENSITIVE');
      expect(inspection.wrapResult).toBe('CKR_KEY_UNEXTRACTABLE');
      expect(inspection.attributes.valueLen).toBe(bytes);
    }
  });
});

describe('exportable key pairs (data key pairs)', () => {
  const types: KeyPairType[] = [{ kind: 'rsa', bits: 2048 }, { kind: 'ec', curve: 'P-256' }, { kind: 'ec', curve: 'P-521' }, { kind: 'ec', curve: 'secp256k1' }, { kind: 'ed25519' }];
  for (const type of types) {
    it(`${JSON.stringify(type)}: PKCS#8 and SPKI that belong together`, async () => {
      const { privateKey, publicKey } = await hsm.generateExportableKeyPair(type);
      const priv = crypto.createPrivateKey({ key: privateKey, format: 'der', type: 'pkcs8' });
      const pub = crypto.createPublicKey({ key: publicKey, format: 'der', type: 'spki' });
      const derived = crypto.createPublicKey(priv).export({ type: 'spki', format: 'der' });
      expect(derived.equals(publicKey)).toBe(true);
      const sig = crypto.sign(type.kind === 'ed25519' ? null : 'sha256', message, priv);
      expect(crypto.verify(type.kind === 'ed25519' ? null : 'sha256', message, pub, sig)).toBe(true);
    });
  }
});

describe('mechanism discovery', () => {
  it('names what the token lacks', () => {
    expect(hsm.missingMechanisms({ kind: 'ml-dsa' }, 'sign')).toEqual(['CKM_ML_DSA_KEY_PAIR_GEN', 'CKM_ML_DSA']);
    expect(hsm.missingMechanisms({ kind: 'ec', curve: 'P-256' }, 'sign')).toEqual([]);
    expect(hsm.missingMechanisms({ kind: 'rsa', bits: 2048 }, 'decrypt')).toEqual([]);
  });
});
