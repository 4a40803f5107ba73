/**
 * Imported asymmetric key material through the real AWS SDK: PKCS#8 private keys made with
 * node:crypto, wrapped here with RSA_AES_KEY_WRAP_* as AWS documents it, unwrapped in the token.
 * GetPublicKey must give the very public key, signatures/decryptions/shared secrets must match
 * node:crypto, re-import keeps the material, and the private key never becomes readable.
 */
import crypto, { constants, createCipheriv, createPublicKey, publicEncrypt, randomBytes } from 'node:crypto';
import {
  CreateKeyCommand,
  DecryptCommand,
  DeleteImportedKeyMaterialCommand,
  DeriveSharedSecretCommand,
  DescribeKeyCommand,
  EncryptCommand,
  GetParametersForImportCommand,
  GetPublicKeyCommand,
  ImportKeyMaterialCommand,
  type KeySpec,
  type KeyUsageType,
  SignCommand,
  type SigningAlgorithmSpec,
  VerifyCommand,
  type WrappingKeySpec,
} from '@aws-sdk/client-kms';
import { describe, expect, it } from 'vitest';
import { keyImporterOf } from '../src/hsm/key-import.js';
import { inspectBackingKey } from '../src/hsm/pkcs11-token.js';
import { errorOf, useTestService } from './helpers/service.js';

// Both call modes: import's token calls run in the slow lane in each (key-import-common.ts).
describe.each(['sync', 'async'] as const)('%s mode', (mode) => {
  const t = useTestService({ P11KMS_SYMMETRIC_CALLS: mode });

  const send = <T>(command: T) => t.client.send(command as never) as Promise<any>;

  type WrapAlgorithm = 'RSA_AES_KEY_WRAP_SHA_1' | 'RSA_AES_KEY_WRAP_SHA_256' | 'RSAES_OAEP_SHA_1' | 'RSAES_OAEP_SHA_256';

  /** AWS's RSA_AES_KEY_WRAP_*: RSA-OAEP(ephemeral AES-256 key) ‖ AES-KWP (RFC 5649) of the PKCS#8
   *  DER; RSAES_OAEP_* (ECC only): RSA-OAEP of the PKCS#8 DER itself. */
  function wrap(pkcs8: Buffer, publicKeyDer: Uint8Array, algorithm: WrapAlgorithm): Buffer {
    const key = createPublicKey({ key: Buffer.from(publicKeyDer), format: 'der', type: 'spki' });
    const oaepHash = algorithm.endsWith('SHA_256') ? 'sha256' : 'sha1';
    if (algorithm.startsWith('RSAES_OAEP')) return publicEncrypt({ key, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash }, pkcs8);
    const ephemeral = randomBytes(32);
    const kwp = createCipheriv('id-aes256-wrap-pad', ephemeral, Buffer.from('A65959A6', 'hex'));
    return Buffer.concat([publicEncrypt({ key, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash }, ephemeral), kwp.update(pkcs8), kwp.final()]);
  }

  async function createExternalKey(keySpec: KeySpec, keyUsage: KeyUsageType): Promise<string> {
    const { KeyMetadata } = await send(new CreateKeyCommand({ Origin: 'EXTERNAL', KeySpec: keySpec, KeyUsage: keyUsage }));
    expect(KeyMetadata).toMatchObject({ KeyState: 'PendingImport', Origin: 'EXTERNAL', KeySpec: keySpec, KeyUsage: keyUsage });
    return KeyMetadata.KeyId;
  }

  async function importPrivateKey(keyId: string, privateKey: crypto.KeyObject, algorithm: WrapAlgorithm = 'RSA_AES_KEY_WRAP_SHA_256', spec: WrappingKeySpec = 'RSA_3072') {
    const params = await send(new GetParametersForImportCommand({ KeyId: keyId, WrappingAlgorithm: algorithm, WrappingKeySpec: spec }));
    const pkcs8 = privateKey.export({ type: 'pkcs8', format: 'der' });
    return send(
      new ImportKeyMaterialCommand({
        KeyId: keyId,
        ImportToken: params.ImportToken,
        EncryptedKeyMaterial: wrap(pkcs8, params.PublicKey, algorithm),
        ExpirationModel: 'KEY_MATERIAL_DOES_NOT_EXPIRE',
      }),
    );
  }

  async function spkiOf(keyId: string): Promise<Buffer> {
    return Buffer.from((await send(new GetPublicKeyCommand({ KeyId: keyId }))).PublicKey);
  }

  const localSpki = (key: crypto.KeyObject) => key.export({ type: 'spki', format: 'der' });

  async function signWithKms(keyId: string, message: Buffer, algorithm: SigningAlgorithmSpec): Promise<Buffer> {
    return Buffer.from((await send(new SignCommand({ KeyId: keyId, Message: message, MessageType: 'RAW', SigningAlgorithm: algorithm }))).Signature);
  }

  /** The private key never leaves the token: no CKA_VALUE/CKA_PRIVATE_EXPONENT, no C_WrapKey, one usage. */
  async function expectLockedDown(keyId: string, usage: { sign: boolean; decrypt: boolean; derive: boolean }) {
    const inspection = await inspectBackingKey(t.service.services.hsm, { keyId, version: 1 });
    expect(inspection.objectCount).toBe(1);
    // C_UnwrapKey leaves CKA_LOCAL, CKA_ALWAYS_SENSITIVE and CKA_NEVER_EXTRACTABLE false (PKCS#11).
    expect(inspection.attributes).toMatchObject({ token: true, private: true, sensitive: true, extractable: false, ...usage });
    expect(inspection.readValueResult).not.toBe('readable');
    expect(inspection.secretReadResult).toBe('CKR_ATTRIBUTE_SENSITIVE');
    expect(inspection.wrapResult).toBe('CKR_KEY_UNEXTRACTABLE');
  }

  describe('imported RSA key pairs', () => {
    it('RSA_2048 SIGN_VERIFY: the public key, signatures, re-import and wrong material', async () => {
      const { privateKey, publicKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
      const keyId = await createExternalKey('RSA_2048', 'SIGN_VERIFY');
      const imported = await importPrivateKey(keyId, privateKey);
      expect(imported.KeyMaterialId).toMatch(/^[0-9a-f]{64}$/);
      // As at AWS, CurrentKeyMaterialId is shown for symmetric encryption keys only.
      expect((await send(new DescribeKeyCommand({ KeyId: keyId }))).KeyMetadata).toMatchObject({ KeyState: 'Enabled', ExpirationModel: 'KEY_MATERIAL_DOES_NOT_EXPIRE' });
      expect((await spkiOf(keyId)).equals(localSpki(publicKey))).toBe(true);

      const message = Buffer.from('signed by imported material');
      const pss = await signWithKms(keyId, message, 'RSASSA_PSS_SHA_256');
      expect(crypto.verify('sha256', message, { key: publicKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 }, pss)).toBe(true);
      const pkcs1 = await signWithKms(keyId, message, 'RSASSA_PKCS1_V1_5_SHA_384');
      expect(pkcs1.equals(crypto.sign('sha384', message, privateKey))).toBe(true); // deterministic: the same key
      const local = crypto.sign('sha256', message, privateKey);
      expect((await send(new VerifyCommand({ KeyId: keyId, Message: message, Signature: local, SigningAlgorithm: 'RSASSA_PKCS1_V1_5_SHA_256' }))).SignatureValid).toBe(true);
      await expectLockedDown(keyId, { sign: true, decrypt: false, derive: false });

      // Asymmetric material never changes: no NEW_KEY_MATERIAL, other material is refused.
      const other = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
      expect((await errorOf(importPrivateKey(keyId, other))).name).toBe('IncorrectKeyMaterialException');
      await send(new DeleteImportedKeyMaterialCommand({ KeyId: keyId }));
      expect((await send(new DescribeKeyCommand({ KeyId: keyId }))).KeyMetadata.KeyState).toBe('PendingImport');
      expect((await errorOf(signWithKms(keyId, message, 'RSASSA_PSS_SHA_256'))).name).toBe('KMSInvalidStateException');
      expect((await errorOf(importPrivateKey(keyId, other))).name).toBe('IncorrectKeyMaterialException');
      expect((await send(new DescribeKeyCommand({ KeyId: keyId }))).KeyMetadata.KeyState).toBe('PendingImport');
      const again = await importPrivateKey(keyId, privateKey, 'RSA_AES_KEY_WRAP_SHA_1');
      expect(again.KeyMaterialId).toBe(imported.KeyMaterialId);
      expect((await spkiOf(keyId)).equals(localSpki(publicKey))).toBe(true);
      expect((await signWithKms(keyId, message, 'RSASSA_PKCS1_V1_5_SHA_384')).equals(pkcs1)).toBe(true);
      expect((await send(new VerifyCommand({ KeyId: keyId, Message: message, Signature: pss, SigningAlgorithm: 'RSASSA_PSS_SHA_256' }))).SignatureValid).toBe(true);
      await expectLockedDown(keyId, { sign: true, decrypt: false, derive: false });
    });

    it('RSA_2048 ENCRYPT_DECRYPT: local OAEP ciphertexts decrypt through KMS and KMS ciphertexts locally', async () => {
      const { privateKey, publicKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
      const keyId = await createExternalKey('RSA_2048', 'ENCRYPT_DECRYPT');
      await importPrivateKey(keyId, privateKey);
      expect((await spkiOf(keyId)).equals(localSpki(publicKey))).toBe(true);
      for (const [algorithm, oaepHash] of [['RSAES_OAEP_SHA_256', 'sha256'], ['RSAES_OAEP_SHA_1', 'sha1']] as const) {
        const sealed = publicEncrypt({ key: publicKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash }, Buffer.from(`local ${algorithm}`));
        const opened = await send(new DecryptCommand({ KeyId: keyId, CiphertextBlob: sealed, EncryptionAlgorithm: algorithm }));
        expect(Buffer.from(opened.Plaintext).toString()).toBe(`local ${algorithm}`);
        const blob = (await send(new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from(`kms ${algorithm}`), EncryptionAlgorithm: algorithm }))).CiphertextBlob;
        const plain = crypto.privateDecrypt({ key: privateKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash }, Buffer.from(blob));
        expect(plain.toString()).toBe(`kms ${algorithm}`);
      }
      await expectLockedDown(keyId, { sign: false, decrypt: true, derive: false });
    });

    it('refuses RSA material of another size or algorithm, and RSAES_OAEP_* wrapping', async () => {
      const keyId = await createExternalKey('RSA_2048', 'SIGN_VERIFY');
      const oaep = await errorOf(send(new GetParametersForImportCommand({ KeyId: keyId, WrappingAlgorithm: 'RSAES_OAEP_SHA_256', WrappingKeySpec: 'RSA_4096' })));
      expect(oaep.name).toBe('UnsupportedOperationException');
      const bigger = crypto.generateKeyPairSync('rsa', { modulusLength: 3072 }).privateKey;
      expect((await errorOf(importPrivateKey(keyId, bigger))).name).toBe('IncorrectKeyMaterialException');
      const ec = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
      expect((await errorOf(importPrivateKey(keyId, ec))).name).toBe('IncorrectKeyMaterialException');
      expect((await send(new DescribeKeyCommand({ KeyId: keyId }))).KeyMetadata.KeyState).toBe('PendingImport');
      const inspection = errorOf(inspectBackingKey(t.service.services.hsm, { keyId, version: 1 }));
      expect((await inspection).name).toBe('HsmError'); // nothing was left behind
    });
  });

  describe('imported EC key pairs', () => {
    /** P-256 keys whose public y is even and odd: both candidate points must be told apart. */
    function p256KeysOfBothParities(): crypto.KeyPairKeyObjectResult[] {
      const found = new Map<number, crypto.KeyPairKeyObjectResult>();
      while (found.size < 2) {
        const pair = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
        const y = Buffer.from(pair.publicKey.export({ format: 'jwk' }).y!, 'base64url');
        found.set(y[y.length - 1]! & 1, pair);
      }
      return [...found.values()];
    }

    it('ECC_NIST_P256 SIGN_VERIFY: the public key (either parity of y), signatures, re-import and wrong material', async () => {
      for (const { privateKey, publicKey } of p256KeysOfBothParities()) {
        const keyId = await createExternalKey('ECC_NIST_P256', 'SIGN_VERIFY');
        const imported = await importPrivateKey(keyId, privateKey);
        expect((await spkiOf(keyId)).equals(localSpki(publicKey))).toBe(true);
        const message = Buffer.from('ecdsa with imported material');
        const signature = await signWithKms(keyId, message, 'ECDSA_SHA_256');
        expect(crypto.verify('sha256', message, publicKey, signature)).toBe(true);
        const local = crypto.sign('sha256', message, privateKey);
        expect((await send(new VerifyCommand({ KeyId: keyId, Message: message, Signature: local, SigningAlgorithm: 'ECDSA_SHA_256' }))).SignatureValid).toBe(true);
        await expectLockedDown(keyId, { sign: true, decrypt: false, derive: false });

        const other = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
        expect((await errorOf(importPrivateKey(keyId, other))).name).toBe('IncorrectKeyMaterialException');
        await send(new DeleteImportedKeyMaterialCommand({ KeyId: keyId }));
        expect((await errorOf(signWithKms(keyId, message, 'ECDSA_SHA_256'))).name).toBe('KMSInvalidStateException');
        expect((await errorOf(importPrivateKey(keyId, other, 'RSA_AES_KEY_WRAP_SHA_1'))).name).toBe('IncorrectKeyMaterialException');
        const again = await importPrivateKey(keyId, privateKey, 'RSA_AES_KEY_WRAP_SHA_1');
        expect(again.KeyMaterialId).toBe(imported.KeyMaterialId);
        expect((await spkiOf(keyId)).equals(localSpki(publicKey))).toBe(true);
        expect(crypto.verify('sha256', message, publicKey, await signWithKms(keyId, message, 'ECDSA_SHA_256'))).toBe(true);
        await expectLockedDown(keyId, { sign: true, decrypt: false, derive: false });
      }
    });

    it('ECC_NIST_P256 KEY_AGREEMENT: DeriveSharedSecret equals node:crypto ECDH', async () => {
      for (const { privateKey, publicKey } of p256KeysOfBothParities()) {
        const keyId = await createExternalKey('ECC_NIST_P256', 'KEY_AGREEMENT');
        await importPrivateKey(keyId, privateKey);
        expect((await spkiOf(keyId)).equals(localSpki(publicKey))).toBe(true);
        const peer = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
        const derived = await send(
          new DeriveSharedSecretCommand({ KeyId: keyId, KeyAgreementAlgorithm: 'ECDH', PublicKey: peer.publicKey.export({ type: 'spki', format: 'der' }) }),
        );
        expect(Buffer.from(derived.SharedSecret).equals(crypto.diffieHellman({ privateKey, publicKey: peer.publicKey }))).toBe(true);
        await expectLockedDown(keyId, { sign: false, decrypt: false, derive: true });
      }
    });

    it('imports P-384, P-521 and secp256k1 keys; refuses another curve and Ed25519', async () => {
      for (const [keySpec, namedCurve, hash, algorithm] of [
        ['ECC_NIST_P384', 'P-384', 'sha384', 'ECDSA_SHA_384'],
        ['ECC_NIST_P521', 'P-521', 'sha512', 'ECDSA_SHA_512'],
        ['ECC_SECG_P256K1', 'secp256k1', 'sha256', 'ECDSA_SHA_256'],
      ] as const) {
        const { privateKey, publicKey } = crypto.generateKeyPairSync('ec', { namedCurve });
        const keyId = await createExternalKey(keySpec, 'SIGN_VERIFY');
        await importPrivateKey(keyId, privateKey);
        expect((await spkiOf(keyId)).equals(localSpki(publicKey)), keySpec).toBe(true);
        const message = Buffer.from(`signed on ${namedCurve}`);
        expect(crypto.verify(hash, message, publicKey, await signWithKms(keyId, message, algorithm)), keySpec).toBe(true);
      }
      const keyId = await createExternalKey('ECC_NIST_P256', 'SIGN_VERIFY');
      const p384 = crypto.generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey;
      expect((await errorOf(importPrivateKey(keyId, p384))).name).toBe('IncorrectKeyMaterialException');
      const ed = await errorOf(send(new CreateKeyCommand({ Origin: 'EXTERNAL', KeySpec: 'ECC_NIST_EDWARDS25519', KeyUsage: 'SIGN_VERIFY' })));
      expect(ed.name).toBe('UnsupportedOperationException');
      expect(ed.message).toMatch(/Ed25519/);
    });

    it('RSAES_OAEP_* wraps ECC material directly (C_UnwrapKey with OAEP), as AWS allows', async () => {
      const { privateKey, publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
      const keyId = await createExternalKey('ECC_NIST_P256', 'SIGN_VERIFY');
      const p384 = crypto.generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey;
      expect((await errorOf(importPrivateKey(keyId, p384, 'RSAES_OAEP_SHA_1', 'RSA_2048'))).name).toBe('IncorrectKeyMaterialException');
      const imported = await importPrivateKey(keyId, privateKey, 'RSAES_OAEP_SHA_1', 'RSA_2048');
      expect((await spkiOf(keyId)).equals(localSpki(publicKey))).toBe(true);
      const message = Buffer.from('oaep-wrapped ecdsa');
      expect(crypto.verify('sha256', message, publicKey, await signWithKms(keyId, message, 'ECDSA_SHA_256'))).toBe(true);
      await expectLockedDown(keyId, { sign: true, decrypt: false, derive: false });
      await send(new DeleteImportedKeyMaterialCommand({ KeyId: keyId }));
      expect((await importPrivateKey(keyId, privateKey)).KeyMaterialId).toBe(imported.KeyMaterialId);

      // OAEP-SHA-256: only where the token unwraps with it itself (never by unpadding in the service).
      const sha256 = send(new GetParametersForImportCommand({ KeyId: keyId, WrappingAlgorithm: 'RSAES_OAEP_SHA_256', WrappingKeySpec: 'RSA_2048' }));
      if (await keyImporterOf(t.service.services.hsm).hasOaepSha256()) await sha256;
      else expect((await errorOf(sha256)).name).toBe('UnsupportedOperationException');

      const p521 = await createExternalKey('ECC_NIST_P521', 'KEY_AGREEMENT');
      const tooSmall = await errorOf(send(new GetParametersForImportCommand({ KeyId: p521, WrappingAlgorithm: 'RSAES_OAEP_SHA_1', WrappingKeySpec: 'RSA_2048' })));
      expect(tooSmall.name).toBe('UnsupportedOperationException');
      const pair = crypto.generateKeyPairSync('ec', { namedCurve: 'P-521' });
      await importPrivateKey(p521, pair.privateKey, 'RSAES_OAEP_SHA_1', 'RSA_3072');
      expect((await spkiOf(p521)).equals(localSpki(pair.publicKey))).toBe(true);
      const peer = crypto.generateKeyPairSync('ec', { namedCurve: 'P-521' });
      const derived = await send(new DeriveSharedSecretCommand({ KeyId: p521, KeyAgreementAlgorithm: 'ECDH', PublicKey: peer.publicKey.export({ type: 'spki', format: 'der' }) }));
      expect(Buffer.from(derived.SharedSecret).equals(crypto.diffieHellman({ privateKey: pair.privateKey, publicKey: peer.publicKey }))).toBe(true);
      await expectLockedDown(p521, { sign: false, decrypt: false, derive: true });
    });
  });
});
