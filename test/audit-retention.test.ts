/**
 * Rolling audit files and the retention setting: files roll at P11KMS_AUDIT_FILE_MAX_MB with a
 * signed digest at each boundary, expired files are deleted oldest first, and what remains still
 * verifies (the first remaining record's predecessor is vouched for by a digest). Deleting a file
 * that retention did not expire is a finding. Service events recorded through
 * `audit.recordServiceEvent` take CloudTrail's AwsServiceEvent shape.
 */
import fs from 'node:fs';
import path from 'node:path';
import { CreateKeyCommand, EncryptCommand, KMSClient } from '@aws-sdk/client-kms';
import { describe, expect, it } from 'vitest';
import { startService } from '../src/service.js';
import { runCli } from './helpers/process.js';
import { ACCOUNT_ID, REGION, ROOT, tempDir, testConfig } from './helpers/service.js';

const DAY = 86400_000;

const verify = (dataDir: string, env: Record<string, string> = {}) => runCli(['audit', 'verify'], dataDir, env);

const recordFiles = (dataDir: string) =>
  fs
    .readdirSync(path.join(dataDir, 'audit'))
    .filter((f) => f.endsWith('.jsonl'))
    .sort();

describe('audit file rolling and retention', () => {
  it('rolls files, expires old ones, and the remainder still verifies', async () => {
    const dataDir = tempDir('p11kms-audit-retention-');
    // An old chain: the service clock is 10 days back, files roll at 1 MiB.
    const past = new Date(Date.now() - 10 * DAY);
    const old = await startService(testConfig(dataDir, { P11KMS_AUDIT_FILE_MAX_MB: '1' }), { now: () => new Date(past) });
    const client = new KMSClient({ endpoint: old.url, region: REGION, credentials: ROOT, maxAttempts: 1, systemClockOffset: -10 * DAY });
    const keyId = (await client.send(new CreateKeyCommand({}))).KeyMetadata!.KeyId!;
    // ~3 KB records (a large encryption context), so that 1 MiB rolls after ~350 of them.
    const context = { pad: 'p'.repeat(3000) };
    let sent = 0;
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        while (sent < 500) {
          sent++;
          await client.send(new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from('r'), EncryptionContext: context }));
        }
      }),
    );
    await old.services.audit!.recordServiceEvent({
      eventName: 'RotateKey',
      keyArns: [`arn:aws:kms:${REGION}:${ACCOUNT_ID}:key/1234abcd-12ab-34cd-56ef-1234567890ab`],
      additionalEventData: { keyMaterialId: 'ab'.repeat(32) },
    });
    client.destroy();
    await old.close();
    const files = recordFiles(dataDir);
    expect(files.length).toBeGreaterThanOrEqual(2);
    expect((await verify(dataDir)).code).toBe(0);

    // The service event, as CloudTrail shows internal actions.
    const lastFile = path.join(dataDir, 'audit', files.at(-1)!);
    const lines = fs.readFileSync(lastFile, 'utf8').trim().split('\n');
    expect(JSON.parse(lines.at(-1)!)).toMatchObject({
      eventName: 'RotateKey',
      eventType: 'AwsServiceEvent',
      userIdentity: { accountId: ACCOUNT_ID, invokedBy: 'AWS Internal' },
      sourceIPAddress: 'AWS Internal',
      requestParameters: null,
      responseElements: null,
      additionalEventData: { keyMaterialId: 'ab'.repeat(32) },
      readOnly: false,
      managementEvent: true,
      eventCategory: 'Management',
      resources: [{ accountId: ACCOUNT_ID, type: 'AWS::KMS::Key', ARN: `arn:aws:kms:${REGION}:${ACCOUNT_ID}:key/1234abcd-12ab-34cd-56ef-1234567890ab` }],
    });

    // Deleting the first file by hand (no retention configured) is a finding.
    const tampered = tempDir('p11kms-audit-retention-tamper-');
    fs.cpSync(path.join(dataDir, 'audit'), path.join(tampered, 'audit'), { recursive: true });
    fs.rmSync(path.join(tampered, 'audit', files[0]!));
    const noRetention = await verify(tampered);
    expect(noRetention.code).toBe(1);
    expect(noRetention.stderr).toMatch(/missing|removed/);

    // Every file but the last is 10 days old; a service with 7 days' retention deletes them.
    const oldTime = new Date(Date.now() - 10 * DAY);
    for (const f of files.slice(0, -1)) fs.utimesSync(path.join(dataDir, 'audit', f), oldTime, oldTime);
    const fresh = await startService(testConfig(dataDir, { P11KMS_AUDIT_RETENTION_DAYS: '7' }));
    await fresh.close();
    const remaining = recordFiles(dataDir);
    for (const f of files.slice(0, -1)) expect(remaining).not.toContain(f);
    expect(remaining).toContain(files.at(-1));
    const after = await verify(dataDir, { P11KMS_AUDIT_RETENTION_DAYS: '7' });
    expect(after.stderr).toBe('');
    expect(after.code).toBe(0);
    expect(after.stdout).toMatch(/expired \(retention\)/);
  });
});
