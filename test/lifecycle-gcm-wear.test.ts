/**
 * AES-GCM wear-out: a generated key whose current material reached P11KMS_GCM_ROTATE_AFTER
 * encryptions (here 5, instead of 2^31) rotates at the next lifecycle pass, exactly once, with
 * every older ciphertext still decrypting; the counts survive a restart.
 */
import path from 'node:path';
import Database from 'better-sqlite3';
import {
  CreateKeyCommand,
  DecryptCommand,
  DisableKeyCommand,
  EnableKeyCommand,
  EncryptCommand,
  GenerateDataKeyCommand,
  GetKeyRotationStatusCommand,
  ListKeyRotationsCommand,
} from '@aws-sdk/client-kms';
import { afterAll, describe, expect, it } from 'vitest';
import { parseBlob } from '../src/kms/ciphertext.js';
import { DATABASE_FILE } from '../src/service.js';
import { startTestService, tempDir, type TestService } from './helpers/service.js';

const dataDir = tempDir('p11kms-gcm-wear-');
const env = { P11KMS_DATA_DIR: dataDir, P11KMS_GCM_ROTATE_AFTER: '5' };
let t: TestService;

afterAll(async () => {
  await t?.stop();
});

async function encrypt(keyId: string, text: string): Promise<Uint8Array> {
  return (await t.client.send(new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from(text) }))).CiphertextBlob!;
}

const versionOf = (blob: Uint8Array) => parseBlob(Buffer.from(blob)).version;

function storedCounts(keyId: string): Array<{ version: number; gcm_encryptions: number }> {
  const db = new Database(path.join(dataDir, DATABASE_FILE), { readonly: true, timeout: 5000 });
  try {
    return db.prepare('SELECT version, gcm_encryptions FROM key_versions WHERE key_id = ? ORDER BY version').all(keyId) as Array<{ version: number; gcm_encryptions: number }>;
  } finally {
    db.close();
  }
}

describe('rotation at the AES-GCM encryption threshold', () => {
  it('counts every encryption and rotates a worn key once, keeping old ciphertexts readable', async () => {
    t = await startTestService(env);
    const keyId = (await t.client.send(new CreateKeyCommand({}))).KeyMetadata!.KeyId!;
    const blobs = [await encrypt(keyId, 'one'), await encrypt(keyId, 'two')];
    blobs.push((await t.client.send(new GenerateDataKeyCommand({ KeyId: keyId, KeySpec: 'AES_256' }))).CiphertextBlob!);
    expect((await t.service.runDueWork()).rotatedForWear).toEqual([]);
    expect(storedCounts(keyId)).toEqual([{ version: 1, gcm_encryptions: 3 }]);

    blobs.push(await encrypt(keyId, 'four'), await encrypt(keyId, 'five'));
    expect((await t.service.runDueWork()).rotatedForWear).toEqual([keyId]);
    expect((await t.service.runDueWork()).rotatedForWear).toEqual([]);

    const { Rotations } = await t.client.send(new ListKeyRotationsCommand({ KeyId: keyId }));
    expect(Rotations!.map((r) => r.RotationType)).toEqual(['AUTOMATIC']);
    // The automatic schedule the owner controls is untouched.
    expect((await t.client.send(new GetKeyRotationStatusCommand({ KeyId: keyId }))).KeyRotationEnabled).toBe(false);

    const after = await encrypt(keyId, 'six');
    expect(versionOf(after)).toBe(2);
    for (const blob of blobs) expect(versionOf(blob)).toBe(1);
    expect(Buffer.from((await t.client.send(new DecryptCommand({ CiphertextBlob: blobs[0] }))).Plaintext!).toString()).toBe('one');
    expect(Buffer.from((await t.client.send(new DecryptCommand({ CiphertextBlob: after }))).Plaintext!).toString()).toBe('six');
    await t.service.runDueWork();
    expect(storedCounts(keyId)).toEqual([
      { version: 1, gcm_encryptions: 5 },
      { version: 2, gcm_encryptions: 1 },
    ]);
  });

  it('leaves a disabled key alone until it is enabled and used again', async () => {
    const keyId = (await t.client.send(new CreateKeyCommand({}))).KeyMetadata!.KeyId!;
    for (const text of ['1', '2', '3', '4', '5']) await encrypt(keyId, text);
    await t.client.send(new DisableKeyCommand({ KeyId: keyId }));
    expect((await t.service.runDueWork()).rotatedForWear).toEqual([]);
    await t.client.send(new EnableKeyCommand({ KeyId: keyId }));
    expect(versionOf(await encrypt(keyId, '6'))).toBe(1);
    expect((await t.service.runDueWork()).rotatedForWear).toEqual([keyId]);
  });

  it('keeps counts made since the last pass across a restart', async () => {
    const keyId = (await t.client.send(new CreateKeyCommand({}))).KeyMetadata!.KeyId!;
    for (const text of ['a', 'b', 'c']) await encrypt(keyId, text);
    await t.stop(); // no pass ran since: the counts are saved at shutdown
    expect(storedCounts(keyId)).toEqual([{ version: 1, gcm_encryptions: 3 }]);

    t = await startTestService(env);
    for (const text of ['d', 'e']) await encrypt(keyId, text);
    expect((await t.service.runDueWork()).rotatedForWear).toEqual([keyId]);
    expect(versionOf(await encrypt(keyId, 'f'))).toBe(2);
  });
});
