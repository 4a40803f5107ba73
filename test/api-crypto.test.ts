/**
 * Symmetric cryptography through the real AWS SDK: Encrypt, Decrypt, ReEncrypt, GenerateDataKey,
 * GenerateDataKeyWithoutPlaintext, GenerateRandom, encryption-context binding, tampering, DryRun.
 */
import { createCipheriv, createDecipheriv } from 'node:crypto';
import {
  CreateAliasCommand,
  CreateKeyCommand,
  DecryptCommand,
  DisableKeyCommand,
  EncryptCommand,
  GenerateDataKeyCommand,
  GenerateDataKeyWithoutPlaintextCommand,
  GenerateRandomCommand,
  ReEncryptCommand,
  ScheduleKeyDeletionCommand,
} from '@aws-sdk/client-kms';
import { beforeAll, describe, expect, it } from 'vitest';
import { errorOf, useTestService } from './helpers/service.js';

const t = useTestService();
let keyA: { KeyId: string; Arn: string };
let keyB: { KeyId: string; Arn: string };

beforeAll(async () => {
  const create = async () => (await t.client.send(new CreateKeyCommand({}))).KeyMetadata as { KeyId: string; Arn: string };
  keyA = await create();
  keyB = await create();
  await t.client.send(new CreateAliasCommand({ AliasName: 'alias/crypto-a', TargetKeyId: keyA.KeyId }));
});

const bytes = (s: string) => Buffer.from(s, 'utf8');

describe('Encrypt and Decrypt', () => {
  it('round-trips through every KeyId form, with and without KeyId on Decrypt', async () => {
    for (const keyId of [keyA.KeyId, keyA.Arn, 'alias/crypto-a', keyA.Arn.replace(/key\/.*/, 'alias/crypto-a')]) {
      const enc = await t.client.send(new EncryptCommand({ KeyId: keyId, Plaintext: bytes('hello HSM') }));
      expect(enc.KeyId).toBe(keyA.Arn);
      expect(enc.EncryptionAlgorithm).toBe('SYMMETRIC_DEFAULT');
      const dec = await t.client.send(new DecryptCommand({ CiphertextBlob: enc.CiphertextBlob }));
      expect(Buffer.from(dec.Plaintext!).toString()).toBe('hello HSM');
      expect(dec.KeyId).toBe(keyA.Arn);
      expect(dec.EncryptionAlgorithm).toBe('SYMMETRIC_DEFAULT');
      expect(dec.KeyMaterialId).toMatch(/^[0-9a-f]{64}$/);
      const withKey = await t.client.send(new DecryptCommand({ CiphertextBlob: enc.CiphertextBlob, KeyId: keyId }));
      expect(Buffer.from(withKey.Plaintext!).toString()).toBe('hello HSM');
    }
  });

  it('uses a fresh IV each time (same plaintext, different ciphertexts)', async () => {
    const a = await t.client.send(new EncryptCommand({ KeyId: keyA.KeyId, Plaintext: bytes('same') }));
    const b = await t.client.send(new EncryptCommand({ KeyId: keyA.KeyId, Plaintext: bytes('same') }));
    expect(Buffer.from(a.CiphertextBlob!).equals(Buffer.from(b.CiphertextBlob!))).toBe(false);
  });

  it('handles 1 and 4096 bytes and rejects 4097 and empty plaintexts', async () => {
    for (const size of [1, 4096]) {
      const pt = Buffer.alloc(size, 7);
      const enc = await t.client.send(new EncryptCommand({ KeyId: keyA.KeyId, Plaintext: pt }));
      const dec = await t.client.send(new DecryptCommand({ CiphertextBlob: enc.CiphertextBlob }));
      expect(Buffer.from(dec.Plaintext!).equals(pt)).toBe(true);
    }
    expect((await errorOf(t.client.send(new EncryptCommand({ KeyId: keyA.KeyId, Plaintext: Buffer.alloc(4097) })))).name).toBe('ValidationException');
    expect((await errorOf(t.client.send(new EncryptCommand({ KeyId: keyA.KeyId, Plaintext: Buffer.alloc(0) })))).name).toBe('ValidationException');
  });

  it('binds the encryption context exactly, with an unambiguous encoding', async () => {
    const enc = await t.client.send(new EncryptCommand({ KeyId: keyA.KeyId, Plaintext: bytes('ctx'), EncryptionContext: { a: 'bc' } }));
    const ok = await t.client.send(new DecryptCommand({ CiphertextBlob: enc.CiphertextBlob, EncryptionContext: { a: 'bc' } }));
    expect(Buffer.from(ok.Plaintext!).toString()).toBe('ctx');
    for (const wrong of [undefined, {}, { ab: 'c' }, { a: 'bC' }, { a: 'bc', x: '' }, { A: 'bc' }]) {
      const err = await errorOf(t.client.send(new DecryptCommand({ CiphertextBlob: enc.CiphertextBlob, EncryptionContext: wrong })));
      expect(err.name).toBe('InvalidCiphertextException');
    }
    const multi = await t.client.send(new EncryptCommand({ KeyId: keyA.KeyId, Plaintext: bytes('m'), EncryptionContext: { z: '1', a: '2', m: '3' } }));
    const reordered = await t.client.send(new DecryptCommand({ CiphertextBlob: multi.CiphertextBlob, EncryptionContext: { m: '3', z: '1', a: '2' } }));
    expect(Buffer.from(reordered.Plaintext!).toString()).toBe('m');
  });

  it('answers IncorrectKeyException when KeyId names another key', async () => {
    const enc = await t.client.send(new EncryptCommand({ KeyId: keyA.KeyId, Plaintext: bytes('x') }));
    const err = await errorOf(t.client.send(new DecryptCommand({ CiphertextBlob: enc.CiphertextBlob, KeyId: keyB.KeyId })));
    expect(err).toMatchObject({ name: 'IncorrectKeyException', status: 400 });
  });

  it('detects every tampered byte and refuses foreign blobs', async () => {
    const enc = await t.client.send(new EncryptCommand({ KeyId: keyA.KeyId, Plaintext: bytes('tamper me') }));
    const blob = Buffer.from(enc.CiphertextBlob!);
    let refused = 0;
    for (let i = 0; i < blob.length; i++) {
      const bad = Buffer.from(blob);
      bad[i] ^= 0x01;
      const err = await errorOf(t.client.send(new DecryptCommand({ CiphertextBlob: bad })));
      // Flipping a key-ID byte names a key that does not exist: AccessDenied, as AWS answers.
      expect(['InvalidCiphertextException', 'AccessDeniedException']).toContain(err.name);
      refused++;
    }
    expect(refused).toBe(blob.length);
    expect((await errorOf(t.client.send(new DecryptCommand({ CiphertextBlob: Buffer.from('not a kms blob at all, not at all') })))).name).toBe('InvalidCiphertextException');
    expect((await errorOf(t.client.send(new DecryptCommand({ CiphertextBlob: blob.subarray(0, blob.length - 1) })))).name).toBe('InvalidCiphertextException');
  });

  it('refuses non-symmetric algorithms for a symmetric key', async () => {
    const err = await errorOf(t.client.send(new EncryptCommand({ KeyId: keyA.KeyId, Plaintext: bytes('x'), EncryptionAlgorithm: 'RSAES_OAEP_SHA_256' })));
    expect(err.name).toBe('InvalidKeyUsageException');
  });

  it('keeps disabled and pending-deletion keys from decrypting', async () => {
    const k = (await t.client.send(new CreateKeyCommand({}))).KeyMetadata!;
    const enc = await t.client.send(new EncryptCommand({ KeyId: k.KeyId, Plaintext: bytes('x') }));
    await t.client.send(new DisableKeyCommand({ KeyId: k.KeyId }));
    expect((await errorOf(t.client.send(new DecryptCommand({ CiphertextBlob: enc.CiphertextBlob })))).name).toBe('DisabledException');
    await t.client.send(new ScheduleKeyDeletionCommand({ KeyId: k.KeyId, PendingWindowInDays: 7 }));
    expect((await errorOf(t.client.send(new DecryptCommand({ CiphertextBlob: enc.CiphertextBlob })))).name).toBe('KMSInvalidStateException');
  });

  it('DryRun answers DryRunOperationException (400, as AWS sends it) without doing the work', async () => {
    const err = await errorOf(t.client.send(new EncryptCommand({ KeyId: keyA.KeyId, Plaintext: bytes('x'), DryRun: true })));
    expect(err).toMatchObject({ name: 'DryRunOperationException', status: 400 });
    const enc = await t.client.send(new EncryptCommand({ KeyId: keyA.KeyId, Plaintext: bytes('x') }));
    expect((await errorOf(t.client.send(new DecryptCommand({ CiphertextBlob: enc.CiphertextBlob, DryRun: true })))).name).toBe('DryRunOperationException');
    expect(
      (await errorOf(t.client.send(new DecryptCommand({ KeyId: keyA.KeyId, DryRun: true, DryRunModifiers: ['IGNORE_CIPHERTEXT'] })))).name,
    ).toBe('DryRunOperationException');
    expect((await errorOf(t.client.send(new GenerateDataKeyCommand({ KeyId: keyA.KeyId, KeySpec: 'AES_256', DryRun: true })))).name).toBe('DryRunOperationException');
  });
});

describe('ReEncrypt', () => {
  it('moves a ciphertext to another key and context', async () => {
    const enc = await t.client.send(new EncryptCommand({ KeyId: keyA.KeyId, Plaintext: bytes('move me'), EncryptionContext: { from: 'a' } }));
    const re = await t.client.send(
      new ReEncryptCommand({
        CiphertextBlob: enc.CiphertextBlob,
        SourceEncryptionContext: { from: 'a' },
        DestinationKeyId: 'alias/crypto-a',
        DestinationEncryptionContext: { to: 'b' },
      }),
    );
    expect(re.SourceKeyId).toBe(keyA.Arn);
    expect(re.KeyId).toBe(keyA.Arn);
    expect(re.SourceEncryptionAlgorithm).toBe('SYMMETRIC_DEFAULT');
    expect(re.DestinationEncryptionAlgorithm).toBe('SYMMETRIC_DEFAULT');
    expect(re.SourceKeyMaterialId).toMatch(/^[0-9a-f]{64}$/);
    const re2 = await t.client.send(new ReEncryptCommand({ CiphertextBlob: re.CiphertextBlob, SourceEncryptionContext: { to: 'b' }, DestinationKeyId: keyB.Arn }));
    expect(re2.KeyId).toBe(keyB.Arn);
    const dec = await t.client.send(new DecryptCommand({ CiphertextBlob: re2.CiphertextBlob }));
    expect(Buffer.from(dec.Plaintext!).toString()).toBe('move me');
    expect(dec.KeyId).toBe(keyB.Arn);
    expect(
      (await errorOf(t.client.send(new ReEncryptCommand({ CiphertextBlob: re.CiphertextBlob, DestinationKeyId: keyB.KeyId })))).name,
    ).toBe('InvalidCiphertextException');
    expect(
      (await errorOf(t.client.send(new ReEncryptCommand({ CiphertextBlob: re.CiphertextBlob, SourceKeyId: keyB.KeyId, SourceEncryptionContext: { to: 'b' }, DestinationKeyId: keyB.KeyId })))).name,
    ).toBe('IncorrectKeyException');
  });
});

describe('GenerateDataKey', () => {
  it('returns a usable AES data key whose ciphertext decrypts to the same bytes (envelope encryption)', async () => {
    const dk = await t.client.send(new GenerateDataKeyCommand({ KeyId: 'alias/crypto-a', KeySpec: 'AES_256', EncryptionContext: { purpose: 'envelope' } }));
    expect(dk.KeyId).toBe(keyA.Arn);
    expect(dk.Plaintext).toHaveLength(32);
    expect(dk.KeyMaterialId).toMatch(/^[0-9a-f]{64}$/);
    // Use the data key locally, as the AWS Encryption SDK would.
    const iv = Buffer.alloc(12, 1);
    const cipher = createCipheriv('aes-256-gcm', dk.Plaintext!, iv);
    const sealed = Buffer.concat([cipher.update('payload'), cipher.final()]);
    const tag = cipher.getAuthTag();
    const recovered = await t.client.send(new DecryptCommand({ CiphertextBlob: dk.CiphertextBlob, EncryptionContext: { purpose: 'envelope' } }));
    expect(Buffer.from(recovered.Plaintext!).equals(Buffer.from(dk.Plaintext!))).toBe(true);
    const decipher = createDecipheriv('aes-256-gcm', recovered.Plaintext!, iv);
    decipher.setAuthTag(tag);
    expect(Buffer.concat([decipher.update(sealed), decipher.final()]).toString()).toBe('payload');
  });

  it('supports AES_128 and NumberOfBytes 1..1024, and requires exactly one of them', async () => {
    expect((await t.client.send(new GenerateDataKeyCommand({ KeyId: keyA.KeyId, KeySpec: 'AES_128' }))).Plaintext).toHaveLength(16);
    for (const n of [1, 1024]) {
      const dk = await t.client.send(new GenerateDataKeyCommand({ KeyId: keyA.KeyId, NumberOfBytes: n }));
      expect(dk.Plaintext).toHaveLength(n);
      const dec = await t.client.send(new DecryptCommand({ CiphertextBlob: dk.CiphertextBlob }));
      expect(Buffer.from(dec.Plaintext!).equals(Buffer.from(dk.Plaintext!))).toBe(true);
    }
    expect((await errorOf(t.client.send(new GenerateDataKeyCommand({ KeyId: keyA.KeyId })))).name).toBe('ValidationException');
    expect((await errorOf(t.client.send(new GenerateDataKeyCommand({ KeyId: keyA.KeyId, KeySpec: 'AES_256', NumberOfBytes: 32 })))).name).toBe('ValidationException');
    expect((await errorOf(t.client.send(new GenerateDataKeyCommand({ KeyId: keyA.KeyId, NumberOfBytes: 1025 })))).name).toBe('ValidationException');
    expect((await errorOf(t.client.send(new GenerateDataKeyCommand({ KeyId: keyA.KeyId, NumberOfBytes: 0 })))).name).toBe('ValidationException');
  });

  it('WithoutPlaintext returns only a ciphertext that Decrypt opens', async () => {
    const dk = await t.client.send(new GenerateDataKeyWithoutPlaintextCommand({ KeyId: keyA.KeyId, KeySpec: 'AES_256' }));
    expect((dk as { Plaintext?: unknown }).Plaintext).toBeUndefined();
    expect(dk.KeyId).toBe(keyA.Arn);
    const dec = await t.client.send(new DecryptCommand({ CiphertextBlob: dk.CiphertextBlob }));
    expect(dec.Plaintext).toHaveLength(32);
  });
});

describe('GenerateRandom', () => {
  it('returns 1..1024 random bytes from the token', async () => {
    const a = await t.client.send(new GenerateRandomCommand({ NumberOfBytes: 1024 }));
    const b = await t.client.send(new GenerateRandomCommand({ NumberOfBytes: 1024 }));
    expect(a.Plaintext).toHaveLength(1024);
    expect(Buffer.from(a.Plaintext!).equals(Buffer.from(b.Plaintext!))).toBe(false);
    expect((await t.client.send(new GenerateRandomCommand({ NumberOfBytes: 1 }))).Plaintext).toHaveLength(1);
    expect((await errorOf(t.client.send(new GenerateRandomCommand({ NumberOfBytes: 1025 })))).name).toBe('ValidationException');
    expect((await errorOf(t.client.send(new GenerateRandomCommand({ NumberOfBytes: 0 })))).name).toBe('ValidationException');
    expect((await errorOf(t.client.send(new GenerateRandomCommand({})))).name).toBe('ValidationException');
  });
});
