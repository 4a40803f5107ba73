/**
 * Imported key material (BYOK) through the real AWS SDK: every wrapping algorithm (wrapped here
 * with node:crypto), expiry with a moved clock, re-import, wrong material, import tokens,
 * DeleteImportedKeyMaterial, and on-demand rotation of imported keys.
 */
import { constants, createCipheriv, createDecipheriv, createHmac, createPublicKey, publicEncrypt, randomBytes } from 'node:crypto';
import {
  CreateKeyCommand,
  DecryptCommand,
  DeleteImportedKeyMaterialCommand,
  DescribeKeyCommand,
  EncryptCommand,
  GenerateMacCommand,
  GetParametersForImportCommand,
  VerifyMacCommand,
  ImportKeyMaterialCommand,
  ListKeyRotationsCommand,
  RotateKeyOnDemandCommand,
  type AlgorithmSpec,
  type ImportKeyMaterialCommandInput,
  type WrappingKeySpec,
} from '@aws-sdk/client-kms';
import { beforeAll, describe, expect, it } from 'vitest';
import { additionalData, parseBlob } from '../src/kms/ciphertext.js';
import { DAY_MS, TestClock } from './helpers/clock.js';
import { errorOf, useTestService } from './helpers/service.js';

// Both call modes: import's token calls run in the slow lane in each (key-import-common.ts).
describe.each(['sync', 'async'] as const)('%s mode', (mode) => {
  const clock = new TestClock();
  const t = useTestService({ P11KMS_SYMMETRIC_CALLS: mode }, clock.now);
  beforeAll(() => clock.connect(t.service.url));

  const send = <T>(command: T) => clock.client.send(command as never) as Promise<any>;

  async function createExternalKey(): Promise<string> {
    const { KeyMetadata } = await send(new CreateKeyCommand({ Origin: 'EXTERNAL' }));
    return KeyMetadata.KeyId;
  }

  /** What an AWS customer does with the public key (AWS's documented wrapping formats). */
  function wrap(material: Buffer, publicKeyDer: Uint8Array, algorithm: AlgorithmSpec): Buffer {
    const key = createPublicKey({ key: Buffer.from(publicKeyDer), format: 'der', type: 'spki' });
    const oaepHash = algorithm.endsWith('SHA_256') ? 'sha256' : 'sha1';
    const rsa = (data: Buffer) => publicEncrypt({ key, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash }, data);
    if (algorithm.startsWith('RSAES_OAEP')) return rsa(material);
    const ephemeral = randomBytes(32);
    const kwp = createCipheriv('id-aes256-wrap-pad', ephemeral, Buffer.from('A65959A6', 'hex'));
    return Buffer.concat([rsa(ephemeral), kwp.update(material), kwp.final()]);
  }

  async function importMaterial(keyId: string, material: Buffer, options: Partial<ImportKeyMaterialCommandInput> & { algorithm?: AlgorithmSpec; spec?: WrappingKeySpec } = {}) {
    const algorithm = options.algorithm ?? 'RSAES_OAEP_SHA_1';
    const params = await send(new GetParametersForImportCommand({ KeyId: keyId, WrappingAlgorithm: algorithm, WrappingKeySpec: options.spec ?? 'RSA_2048' }));
    const { algorithm: _a, spec: _s, ...rest } = options;
    return send(
      new ImportKeyMaterialCommand({
        KeyId: keyId,
        ImportToken: params.ImportToken,
        EncryptedKeyMaterial: wrap(material, params.PublicKey, algorithm),
        ExpirationModel: 'KEY_MATERIAL_DOES_NOT_EXPIRE',
        ...rest,
      }),
    );
  }

  async function encrypt(keyId: string, text: string): Promise<Buffer> {
    return Buffer.from((await send(new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from(text) }))).CiphertextBlob);
  }

  async function decrypt(blob: Buffer): Promise<string> {
    return Buffer.from((await send(new DecryptCommand({ CiphertextBlob: blob }))).Plaintext).toString();
  }

  /** Opens a blob outside the service with the material we imported: proves the token uses it. */
  function openLocally(blob: Buffer, material: Buffer): string {
    const parsed = parseBlob(blob);
    const decipher = createDecipheriv('aes-256-gcm', material, parsed.iv);
    decipher.setAAD(additionalData(parsed.header, undefined));
    decipher.setAuthTag(parsed.sealed.subarray(parsed.sealed.length - 16));
    return Buffer.concat([decipher.update(parsed.sealed.subarray(0, parsed.sealed.length - 16)), decipher.final()]).toString();
  }

  describe('Origin EXTERNAL', () => {
    it('creates a key pending import, with no key material', async () => {
      const { KeyMetadata } = await send(new CreateKeyCommand({ Origin: 'EXTERNAL', Description: 'byok' }));
      expect(KeyMetadata).toMatchObject({ Origin: 'EXTERNAL', KeyState: 'PendingImport', Enabled: false, KeySpec: 'SYMMETRIC_DEFAULT' });
      expect(KeyMetadata.CurrentKeyMaterialId).toBeUndefined();
      expect((await errorOf(send(new EncryptCommand({ KeyId: KeyMetadata.KeyId, Plaintext: Buffer.from('x') })))).name).toBe('KMSInvalidStateException');
    });

    it('GetParametersForImport returns an RSA SPKI public key and a token valid for 24 hours', async () => {
      const keyId = await createExternalKey();
      const asked = clock.now().getTime();
      const params = await send(new GetParametersForImportCommand({ KeyId: keyId, WrappingAlgorithm: 'RSAES_OAEP_SHA_1', WrappingKeySpec: 'RSA_3072' }));
      const key = createPublicKey({ key: Buffer.from(params.PublicKey), format: 'der', type: 'spki' });
      expect(key.asymmetricKeyDetails?.modulusLength).toBe(3072);
      expect(params.KeyId).toMatch(/:key\//);
      expect(params.ParametersValidTo.getTime()).toBeGreaterThanOrEqual(asked + DAY_MS - 1_000);
      expect(params.ParametersValidTo.getTime()).toBeLessThanOrEqual(clock.now().getTime() + DAY_MS + 1_000);
      const pkcs1 = await errorOf(send(new GetParametersForImportCommand({ KeyId: keyId, WrappingAlgorithm: 'RSAES_PKCS1_V1_5', WrappingKeySpec: 'RSA_2048' })));
      expect(pkcs1.name).toBe('UnsupportedOperationException');
      const generated = (await send(new CreateKeyCommand({}))).KeyMetadata.KeyId;
      const notExternal = await errorOf(send(new GetParametersForImportCommand({ KeyId: generated, WrappingAlgorithm: 'RSAES_OAEP_SHA_1', WrappingKeySpec: 'RSA_2048' })));
      expect(notExternal.name).toBe('UnsupportedOperationException');
    });
  });

  describe('ImportKeyMaterial', () => {
    for (const algorithm of ['RSAES_OAEP_SHA_1', 'RSAES_OAEP_SHA_256', 'RSA_AES_KEY_WRAP_SHA_1', 'RSA_AES_KEY_WRAP_SHA_256'] as const) {
      it(`imports material wrapped with ${algorithm}; the key then encrypts with exactly that material`, async () => {
        const keyId = await createExternalKey();
        const material = randomBytes(32);
        const imported = await importMaterial(keyId, material, { algorithm });
        expect(imported.KeyMaterialId).toMatch(/^[0-9a-f]{64}$/);
        const { KeyMetadata } = await send(new DescribeKeyCommand({ KeyId: keyId }));
        expect(KeyMetadata).toMatchObject({ KeyState: 'Enabled', CurrentKeyMaterialId: imported.KeyMaterialId, ExpirationModel: 'KEY_MATERIAL_DOES_NOT_EXPIRE' });
        const blob = await encrypt(keyId, `sealed under ${algorithm}`);
        expect(openLocally(blob, material)).toBe(`sealed under ${algorithm}`);
        expect(await decrypt(blob)).toBe(`sealed under ${algorithm}`);
      });
    }

    it('refuses AES material that is not 256 bits, whatever the wrapping algorithm', async () => {
      const keyId = await createExternalKey();
      for (const algorithm of ['RSAES_OAEP_SHA_1', 'RSAES_OAEP_SHA_256', 'RSA_AES_KEY_WRAP_SHA_1', 'RSA_AES_KEY_WRAP_SHA_256'] as const) {
        for (const bytes of [16, 24, 31, 33, 40]) {
          const err = await errorOf(importMaterial(keyId, randomBytes(bytes), { algorithm }));
          expect(`${algorithm} ${bytes}: ${err.name}`).toBe(`${algorithm} ${bytes}: IncorrectKeyMaterialException`);
        }
      }
      expect((await send(new DescribeKeyCommand({ KeyId: keyId }))).KeyMetadata.KeyState).toBe('PendingImport');
    });

    it('refuses tokens of another key, tampered tokens and material that does not open', async () => {
      const a = await createExternalKey();
      const b = await createExternalKey();
      const params = await send(new GetParametersForImportCommand({ KeyId: a, WrappingAlgorithm: 'RSAES_OAEP_SHA_1', WrappingKeySpec: 'RSA_2048' }));
      const wrapped = wrap(randomBytes(32), params.PublicKey, 'RSAES_OAEP_SHA_1');
      const base = { ImportToken: params.ImportToken, EncryptedKeyMaterial: wrapped, ExpirationModel: 'KEY_MATERIAL_DOES_NOT_EXPIRE' as const };
      expect((await errorOf(send(new ImportKeyMaterialCommand({ KeyId: b, ...base })))).name).toBe('InvalidImportTokenException');
      const tampered = Buffer.from(params.ImportToken);
      tampered[tampered.length - 1]! ^= 1;
      expect((await errorOf(send(new ImportKeyMaterialCommand({ KeyId: a, ...base, ImportToken: tampered })))).name).toBe('InvalidImportTokenException');
      const garbage = Buffer.alloc(256, 7);
      expect((await errorOf(send(new ImportKeyMaterialCommand({ KeyId: a, ...base, EncryptedKeyMaterial: garbage })))).name).toBe('InvalidCiphertextException');
      expect((await errorOf(send(new ImportKeyMaterialCommand({ KeyId: a, ...base, ExpirationModel: 'KEY_MATERIAL_EXPIRES' })))).name).toBe('ValidationException');
      await send(new ImportKeyMaterialCommand({ KeyId: a, ...base }));
    });

    it('makes expired material stop working at ValidTo; the same material re-imported restores every ciphertext', async () => {
      const keyId = await createExternalKey();
      const material = randomBytes(32);
      const validTo = new Date(clock.now().getTime() + 2 * DAY_MS);
      const { KeyMaterialId } = await importMaterial(keyId, material, { ExpirationModel: 'KEY_MATERIAL_EXPIRES', ValidTo: validTo });
      const described = (await send(new DescribeKeyCommand({ KeyId: keyId }))).KeyMetadata;
      expect(described.ExpirationModel).toBe('KEY_MATERIAL_EXPIRES');
      expect(Math.abs(described.ValidTo.getTime() - validTo.getTime())).toBeLessThan(1_000);
      const blob = await encrypt(keyId, 'expiring');
      const staleParams = await send(new GetParametersForImportCommand({ KeyId: keyId, WrappingAlgorithm: 'RSAES_OAEP_SHA_1', WrappingKeySpec: 'RSA_2048' }));

      clock.advanceDays(3);
      // As AWS: the key still names its (now expired) current material.
      expect((await send(new DescribeKeyCommand({ KeyId: keyId }))).KeyMetadata).toMatchObject({ KeyState: 'PendingImport', CurrentKeyMaterialId: KeyMaterialId });
      expect((await errorOf(send(new DecryptCommand({ CiphertextBlob: blob })))).name).toBe('KMSInvalidStateException');
      await t.service.runDueWork();

      // The parameters fetched before expiry are 3 days old now.
      const expired = await errorOf(
        send(new ImportKeyMaterialCommand({ KeyId: keyId, ImportToken: staleParams.ImportToken, EncryptedKeyMaterial: wrap(material, staleParams.PublicKey, 'RSAES_OAEP_SHA_1'), ExpirationModel: 'KEY_MATERIAL_DOES_NOT_EXPIRE' })),
      );
      expect(expired.name).toBe('ExpiredImportTokenException');

      const wrong = await errorOf(importMaterial(keyId, randomBytes(32)));
      expect(wrong.name).toBe('IncorrectKeyMaterialException');
      expect((await send(new DescribeKeyCommand({ KeyId: keyId }))).KeyMetadata.KeyState).toBe('PendingImport');

      await importMaterial(keyId, material, { ImportType: 'EXISTING_KEY_MATERIAL' });
      expect((await send(new DescribeKeyCommand({ KeyId: keyId }))).KeyMetadata.KeyState).toBe('Enabled');
      expect(await decrypt(blob)).toBe('expiring');
    });

    it('DeleteImportedKeyMaterial makes the key PendingImport until the same material comes back', async () => {
      const keyId = await createExternalKey();
      const material = randomBytes(32);
      const { KeyMaterialId } = await importMaterial(keyId, material, { algorithm: 'RSA_AES_KEY_WRAP_SHA_1' });
      const blob = await encrypt(keyId, 'kept');
      const deleted = await send(new DeleteImportedKeyMaterialCommand({ KeyId: keyId }));
      expect(deleted.KeyMaterialId).toBe(KeyMaterialId);
      // As AWS: the key still names its (now deleted) current material.
      expect((await send(new DescribeKeyCommand({ KeyId: keyId }))).KeyMetadata).toMatchObject({ KeyState: 'PendingImport', CurrentKeyMaterialId: KeyMaterialId });
      expect((await errorOf(send(new DecryptCommand({ CiphertextBlob: blob })))).name).toBe('KMSInvalidStateException');
      const again = await importMaterial(keyId, material, { algorithm: 'RSAES_OAEP_SHA_256' });
      expect(again.KeyMaterialId).toBe(KeyMaterialId);
      expect(await decrypt(blob)).toBe('kept');
      const generated = (await send(new CreateKeyCommand({}))).KeyMetadata.KeyId;
      expect((await errorOf(send(new DeleteImportedKeyMaterialCommand({ KeyId: generated })))).name).toBe('UnsupportedOperationException');
    });

    it('NEW_KEY_MATERIAL waits in PENDING_ROTATION until RotateKeyOnDemand makes it current', async () => {
      const keyId = await createExternalKey();
      const first = randomBytes(32);
      const second = randomBytes(32);
      const one = await importMaterial(keyId, first);
      const old = await encrypt(keyId, 'first material');
      expect((await errorOf(send(new RotateKeyOnDemandCommand({ KeyId: keyId })))).name).toBe('KMSInvalidStateException');
      const two = await importMaterial(keyId, second, { ImportType: 'NEW_KEY_MATERIAL', KeyMaterialDescription: 'second' });
      expect(two.KeyMaterialId).not.toBe(one.KeyMaterialId);
      const all = await send(new ListKeyRotationsCommand({ KeyId: keyId, IncludeKeyMaterial: 'ALL_KEY_MATERIAL' }));
      expect(all.Rotations.map((r: any) => [r.KeyMaterialState, r.ImportState])).toEqual([
        ['CURRENT', 'IMPORTED'],
        ['PENDING_ROTATION', 'IMPORTED'],
      ]);
      expect(openLocally(await encrypt(keyId, 'still first'), first)).toBe('still first');
      await send(new RotateKeyOnDemandCommand({ KeyId: keyId }));
      const rotations = await send(new ListKeyRotationsCommand({ KeyId: keyId }));
      expect(rotations.Rotations).toHaveLength(1);
      expect(rotations.Rotations[0]).toMatchObject({ KeyMaterialId: two.KeyMaterialId, RotationType: 'ON_DEMAND', KeyMaterialState: 'CURRENT', KeyMaterialDescription: 'second' });
      expect(openLocally(await encrypt(keyId, 'now second'), second)).toBe('now second');
      expect(await decrypt(old)).toBe('first material');
      // Re-importing the first material as new material is refused: it is already this key's.
      expect((await errorOf(importMaterial(keyId, first, { ImportType: 'NEW_KEY_MATERIAL' }))).name).toBe('IncorrectKeyMaterialException');
    });
  });

  describe('imported HMAC keys', () => {
    it('MAC with exactly the imported secret, refuse secrets of the wrong length and keep their first material', async () => {
      const keyId = (await send(new CreateKeyCommand({ Origin: 'EXTERNAL', KeySpec: 'HMAC_256', KeyUsage: 'GENERATE_VERIFY_MAC' }))).KeyMetadata.KeyId;
      expect((await errorOf(importMaterial(keyId, randomBytes(16), { algorithm: 'RSA_AES_KEY_WRAP_SHA_1' }))).name).toBe('IncorrectKeyMaterialException');
      expect((await errorOf(importMaterial(keyId, randomBytes(16)))).name).toBe('IncorrectKeyMaterialException');
      expect((await errorOf(importMaterial(keyId, randomBytes(100)))).name).toBe('IncorrectKeyMaterialException');
      expect((await errorOf(importMaterial(keyId, randomBytes(100), { algorithm: 'RSA_AES_KEY_WRAP_SHA_256' }))).name).toBe('IncorrectKeyMaterialException');
      const secret = randomBytes(48);
      await importMaterial(keyId, secret, { algorithm: 'RSA_AES_KEY_WRAP_SHA_1' });
      expect((await send(new DescribeKeyCommand({ KeyId: keyId }))).KeyMetadata).toMatchObject({ KeyState: 'Enabled', ExpirationModel: 'KEY_MATERIAL_DOES_NOT_EXPIRE' });
      const message = Buffer.from('hello');
      const { Mac } = await send(new GenerateMacCommand({ KeyId: keyId, MacAlgorithm: 'HMAC_SHA_256', Message: message }));
      expect(Buffer.from(Mac).equals(createHmac('sha256', secret).update(message).digest())).toBe(true);
      expect((await errorOf(importMaterial(keyId, secret, { ImportType: 'NEW_KEY_MATERIAL' }))).name).toBe('ValidationException');
      expect((await errorOf(importMaterial(keyId, randomBytes(48)))).name).toBe('IncorrectKeyMaterialException');
      await send(new DeleteImportedKeyMaterialCommand({ KeyId: keyId }));
      expect((await errorOf(send(new VerifyMacCommand({ KeyId: keyId, MacAlgorithm: 'HMAC_SHA_256', Message: message, Mac })))).name).toBe('KMSInvalidStateException');
      await importMaterial(keyId, secret);
      expect((await send(new VerifyMacCommand({ KeyId: keyId, MacAlgorithm: 'HMAC_SHA_256', Message: message, Mac }))).MacValid).toBe(true);
    });
  });
});
