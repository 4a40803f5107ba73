/**
 * STS GetCallerIdentity on the KMS port, with the real @aws-sdk/client-sts (query protocol, SigV4
 * service `sts`, XML answers), for the account root and a principal of the principals file.
 */
import fs from 'node:fs';
import path from 'node:path';
import { GetCallerIdentityCommand, GetSessionTokenCommand, STSClient } from '@aws-sdk/client-sts';
import { EncryptCommand, CreateKeyCommand } from '@aws-sdk/client-kms';
import { describe, expect, it } from 'vitest';
import { queryAuditRecords } from '../src/audit/query.js';
import { ACCOUNT_ID, ROOT, errorOf, tempDir, useTestService } from './helpers/service.js';

const ALICE = { arn: 'arn:aws:iam::111122223333:user/alice', accessKeyId: 'AKIASTSTESTALICE0001', secretAccessKey: 'alice-secret-0123456789abcdef' };
const DEPLOYER = { arn: 'arn:aws:iam::444455556666:role/deployer', accessKeyId: 'AKIASTSTESTROLE00001', secretAccessKey: 'role-secret-0123456789abcdef' };

describe('STS GetCallerIdentity', () => {
  const t = useTestService(() => {
    const file = path.join(tempDir('p11kms-sts-'), 'principals.json');
    fs.writeFileSync(file, JSON.stringify({ principals: [ALICE, DEPLOYER] }));
    return { P11KMS_PRINCIPALS_FILE: file };
  });
  const sts = (credentials: { accessKeyId: string; secretAccessKey: string }, region = 'us-east-1') =>
    new STSClient({ endpoint: t.service.url, region, credentials, maxAttempts: 1 });

  it('answers who the caller is: root, an IAM user, a role of another account', async () => {
    expect(await sts(ROOT).send(new GetCallerIdentityCommand({}))).toMatchObject({ Account: ACCOUNT_ID, Arn: `arn:aws:iam::${ACCOUNT_ID}:root`, UserId: ACCOUNT_ID });
    const alice = await sts(ALICE).send(new GetCallerIdentityCommand({}));
    expect(alice).toMatchObject({ Account: ACCOUNT_ID, Arn: ALICE.arn, UserId: expect.stringMatching(/^AIDA[A-Z2-7]{17}$/) });
    expect(alice.$metadata.requestId).toMatch(/^[0-9a-f-]{36}$/);
    // Stable across calls (derived from the ARN).
    expect((await sts(ALICE).send(new GetCallerIdentityCommand({}))).UserId).toBe(alice.UserId);
    expect(await sts(DEPLOYER).send(new GetCallerIdentityCommand({}))).toMatchObject({ Account: '444455556666', Arn: DEPLOYER.arn, UserId: expect.stringMatching(/^AROA/) });
  });

  it('rejects bad credentials with STS error codes in XML', async () => {
    const unknown = await errorOf(sts({ accessKeyId: 'AKIANOBODY0000000000', secretAccessKey: 'x' }).send(new GetCallerIdentityCommand({})));
    expect(unknown).toMatchObject({ name: 'InvalidClientTokenId', status: 403, message: 'The security token included in the request is invalid.' });
    const wrong = await errorOf(sts({ ...ALICE, secretAccessKey: 'wrong' }).send(new GetCallerIdentityCommand({})));
    expect(wrong).toMatchObject({ name: 'SignatureDoesNotMatch', status: 403 });
    const region = await errorOf(sts(ALICE, 'eu-west-1').send(new GetCallerIdentityCommand({})));
    expect(region.name).toBe('SignatureDoesNotMatch');
    expect(region.message).toContain("region 'us-east-1'");
    const other = await errorOf(sts(ALICE).send(new GetSessionTokenCommand({})));
    expect(other).toMatchObject({ name: 'InvalidAction', status: 400 });
    expect(other.message).toContain('only GetCallerIdentity');
  });

  it('records every STS call in the audit trail before answering it, with STS as the event source', async () => {
    const alice = await sts(ALICE).send(new GetCallerIdentityCommand({}));
    await errorOf(sts({ ...ALICE, secretAccessKey: 'wrong' }).send(new GetCallerIdentityCommand({})));
    const records = [];
    for await (const r of queryAuditRecords(t.dataDir, { eventName: 'GetCallerIdentity' })) records.push(r);
    expect(records.find((r) => r.requestID === alice.$metadata.requestId)).toMatchObject({
      eventSource: 'sts.amazonaws.com',
      userIdentity: { type: 'IAMUser', arn: ALICE.arn, principalId: alice.UserId },
    });
    expect(records.some((r) => r.errorCode === 'SignatureDoesNotMatch' && r.userIdentity?.accessKeyId === ALICE.accessKeyId)).toBe(true);
  });

  it('leaves the KMS API on the same port as it was', async () => {
    const keyId = (await t.client.send(new CreateKeyCommand({}))).KeyMetadata!.KeyId!;
    expect((await t.client.send(new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from('x') }))).KeyId).toContain(keyId);
  });
});
