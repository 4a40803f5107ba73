/**
 * `p11kms doctor` on a deliberately broken token/database pair: an orphan token object, a
 * generated and an imported version whose objects are gone, a current version without material,
 * and an import wrapping key without its parameters. Repair without --destroy-orphans destroys
 * nothing.
 */
import { constants, createPublicKey, publicEncrypt, randomBytes } from 'node:crypto';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import Database from 'better-sqlite3';
import { CreateKeyCommand, DescribeKeyCommand, GetParametersForImportCommand, ImportKeyMaterialCommand, RotateKeyOnDemandCommand } from '@aws-sdk/client-kms';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { run as doctor } from '../src/cli/doctor.js';
import { loadConfig } from '../src/config.js';
import { openHsm } from '../src/hsm/pkcs11-token.js';
import { DATABASE_FILE } from '../src/service.js';
import { startTestService, tempDir, type TestService } from './helpers/service.js';

const dataDir = tempDir('p11kms-doctor-');
let t: TestService | undefined;
afterAll(async () => {
  await t?.stop();
});

async function runDoctor(...args: string[]): Promise<{ code: number; result: any }> {
  const saved = { ...process.env };
  process.env.P11KMS_DATA_DIR = dataDir;
  process.env.P11KMS_LOG_LEVEL = 'silent';
  const out: string[] = [];
  const spy = vi.spyOn(console, 'log').mockImplementation((line: string) => void out.push(line));
  try {
    const code = await doctor([...args, '--json']);
    return { code, result: JSON.parse(out.join('\n')) };
  } finally {
    spy.mockRestore();
    process.env = saved;
  }
}

describe('p11kms doctor', () => {
  let rotated: string;
  let generated: string;
  let imported: string;
  const orphan = { keyId: randomUUID(), version: 1 };

  it('finds nothing wrong in a healthy pair', async () => {
    t = await startTestService({ P11KMS_DATA_DIR: dataDir });
    rotated = (await t.client.send(new CreateKeyCommand({}))).KeyMetadata!.KeyId!;
    await t.client.send(new RotateKeyOnDemandCommand({ KeyId: rotated }));
    generated = (await t.client.send(new CreateKeyCommand({}))).KeyMetadata!.KeyId!;
    imported = (await t.client.send(new CreateKeyCommand({ Origin: 'EXTERNAL' }))).KeyMetadata!.KeyId!;
    const params = await t.client.send(new GetParametersForImportCommand({ KeyId: imported, WrappingAlgorithm: 'RSAES_OAEP_SHA_1', WrappingKeySpec: 'RSA_2048' }));
    const publicKey = createPublicKey({ key: Buffer.from(params.PublicKey!), format: 'der', type: 'spki' });
    const wrapped = publicEncrypt({ key: publicKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha1' }, randomBytes(32));
    await t.client.send(new ImportKeyMaterialCommand({ KeyId: imported, ImportToken: params.ImportToken, EncryptedKeyMaterial: wrapped, ExpirationModel: 'KEY_MATERIAL_DOES_NOT_EXPIRE' }));
    await t.stop();
    t = undefined;
    const { code, result } = await runDoctor();
    expect(result.consistent).toBe(true);
    expect(code).toBe(0);
  });

  it('lists every divergence of a broken pair', async () => {
    const config = loadConfig({ P11KMS_DATA_DIR: dataDir });
    const hsm = await openHsm(config.token, config.dataDir);
    try {
      await hsm.generateAesKey(orphan);
      await hsm.destroyKey({ keyId: generated, version: 1 });
      await hsm.destroyKey({ keyId: imported, version: 1 });
    } finally {
      await hsm.close();
    }
    const db = new Database(path.join(dataDir, DATABASE_FILE));
    db.prepare('UPDATE keys SET current_version = 3 WHERE key_id = ?').run(rotated);
    db.prepare('DELETE FROM import_parameters').run();
    db.close();

    const { code, result } = await runDoctor();
    expect(code).toBe(1);
    expect(result.report.orphanObjects).toEqual([orphan]);
    expect(result.report.missingObjects).toEqual(expect.arrayContaining([{ keyId: generated, version: 1 }, { keyId: imported, version: 1 }]));
    expect(result.report.versionProblems).toEqual([{ keyId: rotated, versions: [1, 2], currentVersion: 3 }]);
    expect(result.report.orphanWrappingKeys).toHaveLength(1);
  });

  it('repairs what it can without destroying anything, and destroys orphans only when told to', async () => {
    const repaired = await runDoctor('--repair');
    expect(repaired.code).toBe(1);
    expect(repaired.result.report.orphanObjects).toEqual([orphan]); // kept
    expect(repaired.result.report.orphanWrappingKeys).toHaveLength(1); // kept
    expect(repaired.result.report.versionProblems).toEqual([]);
    expect(repaired.result.report.missingObjects).toEqual([{ keyId: generated, version: 1 }]); // cannot be restored

    const destroyed = await runDoctor('--repair', '--destroy-orphans');
    expect(destroyed.result.report.orphanObjects).toEqual([]);
    expect(destroyed.result.report.orphanWrappingKeys).toEqual([]);
    expect(destroyed.result.report.missingObjects).toEqual([{ keyId: generated, version: 1 }]);
    expect(destroyed.code).toBe(1);

    t = await startTestService({ P11KMS_DATA_DIR: dataDir });
    // Imported material lost from the token waits for its re-import.
    expect((await t.client.send(new DescribeKeyCommand({ KeyId: imported }))).KeyMetadata!.KeyState).toBe('PendingImport');
  });

  it('refuses --destroy-orphans without --repair', async () => {
    const spy = vi.spyOn(console, 'error').mockImplementation(() => undefined);
    try {
      expect(await doctor(['--destroy-orphans'])).toBe(2);
    } finally {
      spy.mockRestore();
    }
  });
});
