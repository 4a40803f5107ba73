/**
 * The files in examples/ are what README points new users at: the seed file applies (dry run and
 * start) and a principal of the principals file can use a seeded key through the real SDK.
 */
import path from 'node:path';
import { DecryptCommand, DescribeKeyCommand, EncryptCommand, ScheduleKeyDeletionCommand } from '@aws-sdk/client-kms';
import { describe, expect, it } from 'vitest';
import { runCli } from './helpers/process.js';
import { errorOf, startTestService, tempDir } from './helpers/service.js';

const EXAMPLES = path.resolve(import.meta.dirname, '../examples');
const SEED = path.join(EXAMPLES, 'seed.yaml');
const PRINCIPALS = path.join(EXAMPLES, 'principals.json');

describe('examples/', () => {
  it('seed.yaml passes the dry run, applies, and principals.json lets alice use its key', async () => {
    const dataDir = tempDir('p11kms-examples-');
    const check = await runCli(['seed', '--check', SEED], dataDir);
    expect(check.stderr).toBe('');
    expect(check.stdout).toContain('would CreateKey key 0b1a2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d (SYMMETRIC_DEFAULT, AWS_KMS)');
    expect(check.stdout).toContain('would ImportKeyMaterial material of key 2d3c4b5a-6f7e-4c8b-a0d9-1e2f3a4b5c6d');

    const t = await startTestService({ P11KMS_DATA_DIR: dataDir, P11KMS_SEED_FILE: SEED, P11KMS_PRINCIPALS_FILE: PRINCIPALS });
    try {
      const alice = t.clientFor({ accessKeyId: 'AKIAEXAMPLEALICE0001', secretAccessKey: 'replace-me-with-a-long-random-secret-for-alice' });
      const { CiphertextBlob } = await alice.send(new EncryptCommand({ KeyId: 'alias/app-data', Plaintext: Buffer.from('hello') }));
      expect(Buffer.from((await alice.send(new DecryptCommand({ CiphertextBlob }))).Plaintext!).toString()).toBe('hello');
      // Her identity policy allows Encrypt/Decrypt/GenerateDataKey*/DescribeKey, not key management.
      expect((await alice.send(new DescribeKeyCommand({ KeyId: 'alias/fixtures' }))).KeyMetadata!.KeyState).toBe('Enabled');
      const ci = t.clientFor({ accessKeyId: 'AKIAEXAMPLECI0000002', secretAccessKey: 'replace-me-next-ci-secret' });
      expect((await ci.send(new DescribeKeyCommand({ KeyId: 'alias/app-current' }))).KeyMetadata!.KeyId).toBe('0b1a2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d');
      expect((await errorOf(alice.send(new ScheduleKeyDeletionCommand({ KeyId: '0b1a2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d' })))).name).toBe('AccessDeniedException');
      alice.destroy();
      ci.destroy();
    } finally {
      await t.stop();
    }
  });
});
