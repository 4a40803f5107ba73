/**
 * Several service processes (P11KMS_WORKERS=3, the built service) on one database and token, each
 * running lifecycle passes every 20 ms: due rotations and deletions happen exactly once. The due
 * dates are moved into the past in the database, since a child process's clock cannot be moved.
 */
import path from 'node:path';
import Database from 'better-sqlite3';
import { CreateKeyCommand, DescribeKeyCommand, EnableKeyRotationCommand, EncryptCommand, DecryptCommand, KMSClient, ListKeyRotationsCommand, ScheduleKeyDeletionCommand } from '@aws-sdk/client-kms';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.js';
import { openHsm } from '../src/hsm/pkcs11-token.js';
import { DATABASE_FILE } from '../src/service.js';
import { freePort, spawnService, waitHealthy } from './helpers/process.js';
import { REGION, ROOT, errorOf, tempDir } from './helpers/service.js';

describe('lifecycle work with several service processes', () => {
  it('rotates each due key once and sweeps each due deletion once', async () => {
    const dataDir = tempDir('p11kms-workers-');
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const proc = spawnService({
      P11KMS_DATA_DIR: dataDir,
      P11KMS_PORT: String(port),
      P11KMS_WORKERS: '3',
      P11KMS_LIFECYCLE_INTERVAL_MS: '20',
      P11KMS_ROOT_ACCESS_KEY_ID: ROOT.accessKeyId,
      P11KMS_ROOT_SECRET_ACCESS_KEY: ROOT.secretAccessKey,
      P11KMS_LOG_LEVEL: 'info',
    });
    const client = new KMSClient({ endpoint: url, region: REGION, credentials: ROOT, maxAttempts: 1 });
    try {
      await waitHealthy(url, proc);
      const rotating: string[] = [];
      for (let i = 0; i < 6; i++) {
        const keyId = (await client.send(new CreateKeyCommand({}))).KeyMetadata!.KeyId!;
        await client.send(new EnableKeyRotationCommand({ KeyId: keyId, RotationPeriodInDays: 90 }));
        rotating.push(keyId);
      }
      const doomed = (await client.send(new CreateKeyCommand({}))).KeyMetadata!.KeyId!;
      await client.send(new ScheduleKeyDeletionCommand({ KeyId: doomed, PendingWindowInDays: 7 }));
      const blob = (await client.send(new EncryptCommand({ KeyId: rotating[0], Plaintext: Buffer.from('before') }))).CiphertextBlob!;

      const db = new Database(path.join(dataDir, DATABASE_FILE), { timeout: 5000 });
      const past = Date.now() - 1000;
      db.prepare(`UPDATE keys SET next_rotation_date = ? WHERE key_id IN (${rotating.map(() => '?').join(', ')})`).run(past, ...rotating);
      db.prepare('UPDATE keys SET deletion_date = ? WHERE key_id = ?').run(past, doomed);
      db.close();

      await new Promise((r) => setTimeout(r, 2_000)); // dozens of passes in each process
      for (const keyId of rotating) {
        const { Rotations } = await client.send(new ListKeyRotationsCommand({ KeyId: keyId }));
        expect(Rotations!.map((r) => r.RotationType)).toEqual(['AUTOMATIC']);
      }
      expect((await errorOf(client.send(new DescribeKeyCommand({ KeyId: doomed })))).name).toBe('NotFoundException');
      expect(Buffer.from((await client.send(new DecryptCommand({ CiphertextBlob: blob }))).Plaintext!).toString()).toBe('before');
      expect(proc.output()).not.toMatch(/rotation failed|deletion failed|lifecycle pass failed/);
      expect(proc.output().match(/"msg":"automatic key rotation"/g)).toHaveLength(rotating.length);
      expect(proc.output().match(/key deleted at the end of its waiting period/g)).toHaveLength(1);
    } finally {
      client.destroy();
      await proc.stop();
    }

    const config = loadConfig({ P11KMS_DATA_DIR: dataDir });
    const hsm = await openHsm(config.token, config.dataDir);
    try {
      const refs = await hsm.listBackingKeys();
      const names = refs.map((r) => `${r.keyId}#${r.version}`);
      expect(new Set(names).size).toBe(names.length);
      expect(refs).toHaveLength(12); // six keys × versions 1 and 2; the deleted key has none
    } finally {
      await hsm.close();
    }
  });
});
