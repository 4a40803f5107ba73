/**
 * GetKeyLastUsage through the real AWS SDK: the last successful cryptographic operation per key,
 * with the KMS request ID and the audit record's eventID; failures and dry runs do not count;
 * uses survive a restart.
 */
import fs from 'node:fs';
import path from 'node:path';
import {
  CreateAliasCommand,
  CreateKeyCommand,
  DecryptCommand,
  EncryptCommand,
  GetKeyLastUsageCommand,
  ReEncryptCommand,
  SignCommand,
} from '@aws-sdk/client-kms';
import { afterAll, describe, expect, it } from 'vitest';
import { errorOf, startTestService, tempDir, type TestService } from './helpers/service.js';

const dataDir = tempDir('p11kms-key-usage-');
let t: TestService;

afterAll(async () => {
  await t?.stop();
});

/** The audit record of one request (records are JSON lines under <dataDir>/audit). */
function auditRecordOf(requestId: string): { eventID: string; eventName: string } | undefined {
  const dir = path.join(dataDir, 'audit');
  for (const file of fs.readdirSync(dir).filter((f) => f.endsWith('.jsonl'))) {
    for (const line of fs.readFileSync(path.join(dir, file), 'utf8').split('\n')) {
      if (!line.includes(requestId)) continue;
      const parsed = JSON.parse(line) as { record?: { requestID: string; eventID: string; eventName: string }; requestID?: string; eventID?: string; eventName?: string };
      const record = parsed.record ?? (parsed as { requestID: string; eventID: string; eventName: string });
      if (record.requestID === requestId) return record;
    }
  }
  return undefined;
}

describe('GetKeyLastUsage', () => {
  let keyId: string;
  let createdAt: Date;

  it('reports no use for a new key, tracked since its creation', async () => {
    t = await startTestService({ P11KMS_DATA_DIR: dataDir });
    const { KeyMetadata } = await t.client.send(new CreateKeyCommand({}));
    keyId = KeyMetadata!.KeyId!;
    createdAt = KeyMetadata!.CreationDate!;
    const usage = await t.client.send(new GetKeyLastUsageCommand({ KeyId: keyId }));
    expect(usage.KeyId).toBe(keyId);
    expect(usage.KeyLastUsage ?? {}).toEqual({});
    expect(usage.KeyCreationDate).toEqual(createdAt);
    expect(usage.TrackingStartDate).toEqual(createdAt); // created after tracking began
  });

  it('names the last successful operation, its request ID and its audit eventID', async () => {
    const encrypted = await t.client.send(new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from('x'), EncryptionContext: { a: 'b' } }));
    let usage = await t.client.send(new GetKeyLastUsageCommand({ KeyId: keyId }));
    expect(usage.KeyLastUsage).toMatchObject({ Operation: 'Encrypt', KmsRequestId: encrypted.$metadata.requestId });
    const record = auditRecordOf(encrypted.$metadata.requestId!);
    expect(record?.eventName).toBe('Encrypt');
    expect(usage.KeyLastUsage!.CloudTrailEventId).toBe(record!.eventID);
    expect(Math.abs(usage.KeyLastUsage!.Timestamp!.getTime() - Date.now())).toBeLessThan(60_000);

    // A failed Decrypt (wrong encryption context) and a dry run are not uses.
    expect((await errorOf(t.client.send(new DecryptCommand({ CiphertextBlob: encrypted.CiphertextBlob, EncryptionContext: { a: 'c' } })))).name).toBe('InvalidCiphertextException');
    expect((await errorOf(t.client.send(new DecryptCommand({ CiphertextBlob: encrypted.CiphertextBlob, EncryptionContext: { a: 'b' }, DryRun: true })))).name).toBe('DryRunOperationException');
    usage = await t.client.send(new GetKeyLastUsageCommand({ KeyId: keyId }));
    expect(usage.KeyLastUsage!.Operation).toBe('Encrypt');

    const decrypted = await t.client.send(new DecryptCommand({ CiphertextBlob: encrypted.CiphertextBlob, EncryptionContext: { a: 'b' } }));
    usage = await t.client.send(new GetKeyLastUsageCommand({ KeyId: keyId }));
    expect(usage.KeyLastUsage).toMatchObject({ Operation: 'Decrypt', KmsRequestId: decrypted.$metadata.requestId });

    // ReEncrypt uses both keys.
    const other = (await t.client.send(new CreateKeyCommand({}))).KeyMetadata!.KeyId!;
    const reencrypted = await t.client.send(
      new ReEncryptCommand({ CiphertextBlob: encrypted.CiphertextBlob, SourceEncryptionContext: { a: 'b' }, DestinationKeyId: other }),
    );
    for (const id of [keyId, other]) {
      expect((await t.client.send(new GetKeyLastUsageCommand({ KeyId: id }))).KeyLastUsage).toMatchObject({ Operation: 'ReEncrypt', KmsRequestId: reencrypted.$metadata.requestId });
    }
  });

  it('tracks asymmetric operations, refuses aliases, and survives a restart', async () => {
    const signer = (await t.client.send(new CreateKeyCommand({ KeySpec: 'ECC_NIST_P256', KeyUsage: 'SIGN_VERIFY' }))).KeyMetadata!.KeyId!;
    const signed = await t.client.send(new SignCommand({ KeyId: signer, Message: Buffer.from('m'), SigningAlgorithm: 'ECDSA_SHA_256' }));
    await t.client.send(new CreateAliasCommand({ AliasName: 'alias/usage', TargetKeyId: signer }));
    expect((await errorOf(t.client.send(new GetKeyLastUsageCommand({ KeyId: 'alias/usage' })))).name).toBe('NotFoundException');

    await t.stop(); // uses since the last lifecycle pass are saved at shutdown
    t = await startTestService({ P11KMS_DATA_DIR: dataDir });
    expect((await t.client.send(new GetKeyLastUsageCommand({ KeyId: signer }))).KeyLastUsage).toMatchObject({ Operation: 'Sign', KmsRequestId: signed.$metadata.requestId });
    expect((await t.client.send(new GetKeyLastUsageCommand({ KeyId: keyId }))).KeyLastUsage!.Operation).toBe('ReEncrypt');
  });
});
