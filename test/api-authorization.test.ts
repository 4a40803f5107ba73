/**
 * Authorization end to end through @aws-sdk/client-kms with several principals: the default key
 * policy with identity policies, key policies without account delegation, PutKeyPolicy and its
 * lockout safety check, conditions, DryRun, cross-account access and Decrypt without a
 * key-existence oracle.
 */
import {
  CreateAliasCommand,
  CreateKeyCommand,
  DecryptCommand,
  DescribeKeyCommand,
  EncryptCommand,
  GenerateDataKeyCommand,
  GetKeyPolicyCommand,
  ListKeyPoliciesCommand,
  ListKeysCommand,
  PutKeyPolicyCommand,
  ScheduleKeyDeletionCommand,
} from '@aws-sdk/client-kms';
import { describe, expect, it } from 'vitest';
import { assembleBlob, encodeHeader } from '../src/kms/ciphertext.js';
import { OTHER_ACCOUNT_ID, clientsByPrincipal, identityPolicy, testUser, writePrincipalsFile } from './helpers/principals.js';
import { ACCOUNT_ID, errorOf, useTestService } from './helpers/service.js';

const ROOT_ARN = `arn:aws:iam::${ACCOUNT_ID}:root`;
const admin = testUser('admin', [identityPolicy({ Effect: 'Allow', Action: 'kms:*', Resource: '*' })]);
const app = testUser('app', [
  identityPolicy(
    { Effect: 'Allow', Action: ['kms:Encrypt', 'kms:Decrypt', 'kms:DescribeKey'], Resource: `arn:aws:kms:*:${ACCOUNT_ID}:key/*` },
    { Effect: 'Deny', Action: 'kms:Decrypt', Resource: '*', Condition: { StringEquals: { 'kms:EncryptionContext:tier': 'secret' } } },
  ),
]);
const nobody = testUser('nobody');
const partner = testUser('partner', [identityPolicy({ Effect: 'Allow', Action: ['kms:Encrypt', 'kms:Decrypt', 'kms:DescribeKey', 'kms:ScheduleKeyDeletion'], Resource: '*' })], OTHER_ACCOUNT_ID);
const outsider = testUser('outsider', [], OTHER_ACCOUNT_ID);

const t = useTestService(() => ({ P11KMS_PRINCIPALS_FILE: writePrincipalsFile([admin, app, nobody, partner, outsider]) }));
const as = clientsByPrincipal(t);
const bytes = (s: string) => new TextEncoder().encode(s);
const policyText = (...statements: Array<Record<string, unknown>>) => JSON.stringify({ Version: '2012-10-17', Statement: statements });
const rootStatement = { Sid: 'Enable IAM User Permissions', Effect: 'Allow', Principal: { AWS: ROOT_ARN }, Action: 'kms:*', Resource: '*' };

describe('default key policy with identity policies', () => {
  it('lets the root and principals whose IAM policy allows the action use the key', async () => {
    const key = (await t.client.send(new CreateKeyCommand({}))).KeyMetadata!;
    const policy = await t.client.send(new GetKeyPolicyCommand({ KeyId: key.KeyId, PolicyName: 'default' }));
    expect(JSON.parse(policy.Policy!)).toMatchObject({ Statement: [{ Principal: { AWS: ROOT_ARN }, Action: 'kms:*' }] });
    const sealed = await as(app).send(new EncryptCommand({ KeyId: key.KeyId, Plaintext: bytes('hi') }));
    const opened = await as(app).send(new DecryptCommand({ CiphertextBlob: sealed.CiphertextBlob }));
    expect(new TextDecoder().decode(opened.Plaintext)).toBe('hi');

    const denied = await errorOf(as(app).send(new GenerateDataKeyCommand({ KeyId: key.KeyId, KeySpec: 'AES_256' })));
    expect(denied).toMatchObject({ name: 'AccessDeniedException', status: 400 });
    expect(denied.message).toBe(
      `User: ${app.arn} is not authorized to perform: kms:GenerateDataKey on resource: ${key.Arn} because no identity-based policy allows the kms:GenerateDataKey action`,
    );
    const stranger = await errorOf(as(nobody).send(new EncryptCommand({ KeyId: key.KeyId, Plaintext: bytes('x') })));
    expect(stranger.message).toContain(`User: ${nobody.arn} is not authorized to perform: kms:Encrypt on resource: ${key.Arn}`);
  });

  it('decides actions without a key by identity policies alone', async () => {
    await as(admin).send(new CreateKeyCommand({ Description: 'by admin' }));
    await as(admin).send(new ListKeysCommand({}));
    const denied = await errorOf(as(app).send(new CreateKeyCommand({})));
    expect(denied.message).toBe(`User: ${app.arn} is not authorized to perform: kms:CreateKey on resource: * because no identity-based policy allows the kms:CreateKey action`);
  });

  it('applies an explicit deny with a condition in an identity policy', async () => {
    const key = (await t.client.send(new CreateKeyCommand({}))).KeyMetadata!;
    const context = { tier: 'secret' };
    const sealed = await as(app).send(new EncryptCommand({ KeyId: key.KeyId, Plaintext: bytes('s'), EncryptionContext: context }));
    const denied = await errorOf(as(app).send(new DecryptCommand({ KeyId: key.KeyId, CiphertextBlob: sealed.CiphertextBlob, EncryptionContext: context })));
    expect(denied.message).toBe(`User: ${app.arn} is not authorized to perform: kms:Decrypt on resource: ${key.Arn} with an explicit deny in an identity-based policy`);
  });
});

describe('key policies without account delegation', () => {
  it('ignores identity policies and can lock out even the root', async () => {
    const onlyNobody = policyText({ Effect: 'Allow', Principal: { AWS: nobody.arn }, Action: ['kms:Encrypt', 'kms:DescribeKey'], Resource: '*' });
    const lockout = await errorOf(t.client.send(new CreateKeyCommand({ Policy: onlyNobody })));
    expect(lockout).toMatchObject({ name: 'MalformedPolicyDocumentException', message: 'The new key policy will not allow you to update the key policy in the future.' });

    const key = (await t.client.send(new CreateKeyCommand({ Policy: onlyNobody, BypassPolicyLockoutSafetyCheck: true }))).KeyMetadata!;
    await as(nobody).send(new EncryptCommand({ KeyId: key.KeyId, Plaintext: bytes('x') }));
    const app403 = await errorOf(as(app).send(new EncryptCommand({ KeyId: key.KeyId, Plaintext: bytes('x') })));
    expect(app403.message).toBe(`User: ${app.arn} is not authorized to perform: kms:Encrypt on resource: ${key.Arn} because no resource-based policy allows the kms:Encrypt action`);
    const root403 = await errorOf(t.client.send(new DescribeKeyCommand({ KeyId: key.KeyId })));
    expect(root403.message).toContain(`User: ${ROOT_ARN} is not authorized to perform: kms:DescribeKey`);
  });

  it('honours an explicit deny in the key policy over IAM allows', async () => {
    const key = (
      await t.client.send(
        new CreateKeyCommand({ Policy: policyText(rootStatement, { Effect: 'Deny', Principal: { AWS: admin.arn }, Action: 'kms:Encrypt', Resource: '*' }) }),
      )
    ).KeyMetadata!;
    const denied = await errorOf(as(admin).send(new EncryptCommand({ KeyId: key.KeyId, Plaintext: bytes('x') })));
    expect(denied.message).toBe(`User: ${admin.arn} is not authorized to perform: kms:Encrypt on resource: ${key.Arn} with an explicit deny in a resource-based policy`);
    await as(admin).send(new DescribeKeyCommand({ KeyId: key.KeyId }));
  });
});

describe('PutKeyPolicy', () => {
  it('replaces the policy, validates it and keeps the lockout check meaningful', async () => {
    const key = (await t.client.send(new CreateKeyCommand({}))).KeyMetadata!;
    const allowNobody = policyText(rootStatement, { Effect: 'Allow', Principal: { AWS: nobody.arn }, Action: 'kms:Encrypt', Resource: '*' });
    await t.client.send(new PutKeyPolicyCommand({ KeyId: key.KeyId, Policy: allowNobody }));
    expect((await t.client.send(new GetKeyPolicyCommand({ KeyId: key.Arn }))).Policy).toBe(allowNobody);
    expect((await t.client.send(new ListKeyPoliciesCommand({ KeyId: key.KeyId }))).PolicyNames).toEqual(['default']);
    await as(nobody).send(new EncryptCommand({ KeyId: key.KeyId, Plaintext: bytes('x') }));

    const malformed = await errorOf(t.client.send(new PutKeyPolicyCommand({ KeyId: key.KeyId, Policy: '{"Statement":[{"Effect":"Maybe"}]}' })));
    expect(malformed.name).toBe('MalformedPolicyDocumentException');
    const unknownPrincipal = policyText(rootStatement, { Effect: 'Allow', Principal: { AWS: `arn:aws:iam::${ACCOUNT_ID}:user/ghost` }, Action: 'kms:*', Resource: '*' });
    expect((await errorOf(t.client.send(new PutKeyPolicyCommand({ KeyId: key.KeyId, Policy: unknownPrincipal })))).name).toBe('MalformedPolicyDocumentException');
    const tooLong = policyText({ ...rootStatement, Sid: 'x'.repeat(33_000) });
    expect((await errorOf(t.client.send(new PutKeyPolicyCommand({ KeyId: key.KeyId, Policy: tooLong })))).name).toBe('LimitExceededException');
    const lockout = await errorOf(t.client.send(new PutKeyPolicyCommand({ KeyId: key.KeyId, Policy: policyText({ ...rootStatement, Principal: { AWS: nobody.arn } }) })));
    expect(lockout.message).toBe('The new key policy will not allow you to update the key policy in the future.');

    const denied = await errorOf(as(nobody).send(new PutKeyPolicyCommand({ KeyId: key.KeyId, Policy: allowNobody })));
    expect(denied.message).toContain('kms:PutKeyPolicy');
    expect((await t.client.send(new GetKeyPolicyCommand({ KeyId: key.KeyId }))).Policy).toBe(allowNobody);
  });
});

describe('conditions end to end', () => {
  it('evaluates encryption context, alias and source IP conditions from the request', async () => {
    const key = (
      await t.client.send(
        new CreateKeyCommand({
          Policy: policyText(rootStatement, {
            Effect: 'Allow',
            Principal: { AWS: nobody.arn },
            Action: 'kms:Encrypt',
            Resource: '*',
            Condition: { StringEquals: { 'kms:EncryptionContext:app': 'billing', 'kms:RequestAlias': 'alias/billing' }, IpAddress: { 'aws:SourceIp': '127.0.0.0/8' } },
          }),
        }),
      )
    ).KeyMetadata!;
    await t.client.send(new CreateAliasCommand({ AliasName: 'alias/billing', TargetKeyId: key.KeyId }));
    await as(nobody).send(new EncryptCommand({ KeyId: 'alias/billing', Plaintext: bytes('x'), EncryptionContext: { app: 'billing' } }));
    const wrongContext = await errorOf(as(nobody).send(new EncryptCommand({ KeyId: 'alias/billing', Plaintext: bytes('x'), EncryptionContext: { app: 'hr' } })));
    expect(wrongContext.name).toBe('AccessDeniedException');
    const byId = await errorOf(as(nobody).send(new EncryptCommand({ KeyId: key.KeyId, Plaintext: bytes('x'), EncryptionContext: { app: 'billing' } })));
    expect(byId.name).toBe('AccessDeniedException');
  });
});

describe('DryRun', () => {
  it('answers DryRunOperationException when allowed and the denial otherwise', async () => {
    const key = (await t.client.send(new CreateKeyCommand({}))).KeyMetadata!;
    expect(await errorOf(as(app).send(new EncryptCommand({ KeyId: key.KeyId, Plaintext: bytes('x'), DryRun: true })))).toMatchObject({
      name: 'DryRunOperationException',
      status: 400,
    });
    expect((await errorOf(as(nobody).send(new EncryptCommand({ KeyId: key.KeyId, Plaintext: bytes('x'), DryRun: true })))).name).toBe('AccessDeniedException');
  });
});

describe('Decrypt without a key-existence oracle', () => {
  it('answers a ciphertext of an inaccessible key exactly like one of a missing key', async () => {
    const key = (await t.client.send(new CreateKeyCommand({}))).KeyMetadata!;
    const sealed = await t.client.send(new EncryptCommand({ KeyId: key.KeyId, Plaintext: bytes('x') }));
    const inaccessible = await errorOf(as(nobody).send(new DecryptCommand({ CiphertextBlob: sealed.CiphertextBlob })));
    const forged = assembleBlob(encodeHeader({ keyId: '00000000-0000-4000-8000-000000000000', version: 1 }), new Uint8Array(12), new Uint8Array(32));
    const missing = await errorOf(as(nobody).send(new DecryptCommand({ CiphertextBlob: forged })));
    expect(inaccessible.name).toBe('AccessDeniedException');
    expect(missing).toEqual(inaccessible);
    expect(inaccessible.message).toBe(
      `User: ${nobody.arn} is not authorized to perform: kms:Decrypt on the resource associated with this ciphertext because the resource does not exist in this Region, no resource-based policies allow access, or a resource-based policy explicitly denies access`,
    );
  });
});

describe('cross-account access', () => {
  it('needs both the key policy and the external principal’s identity policy', async () => {
    const key = (await t.client.send(new CreateKeyCommand({}))).KeyMetadata!;
    const before = await errorOf(as(partner).send(new EncryptCommand({ KeyId: key.Arn, Plaintext: bytes('x') })));
    expect(before.message).toBe(`User: ${partner.arn} is not authorized to perform: kms:Encrypt on resource: ${key.Arn} because no resource-based policy allows the kms:Encrypt action`);

    const external = { Effect: 'Allow', Principal: { AWS: `arn:aws:iam::${OTHER_ACCOUNT_ID}:root` }, Action: 'kms:*', Resource: '*' };
    await t.client.send(new PutKeyPolicyCommand({ KeyId: key.KeyId, Policy: policyText(rootStatement, external) }));
    const sealed = await as(partner).send(new EncryptCommand({ KeyId: key.Arn, Plaintext: bytes('x') }));
    expect(sealed.KeyId).toBe(key.Arn);
    await as(partner).send(new DecryptCommand({ CiphertextBlob: sealed.CiphertextBlob }));
    expect((await as(partner).send(new DescribeKeyCommand({ KeyId: key.Arn }))).KeyMetadata!.AWSAccountId).toBe(ACCOUNT_ID);

    // A key ID names a key of the caller's own account.
    const byId = await errorOf(as(partner).send(new EncryptCommand({ KeyId: key.KeyId, Plaintext: bytes('x') })));
    expect(byId).toMatchObject({ name: 'NotFoundException', message: `Key 'arn:aws:kms:us-east-1:${OTHER_ACCOUNT_ID}:key/${key.KeyId}' does not exist` });
    // Management operations never cross accounts; principals without an IAM policy get nothing.
    expect((await errorOf(as(partner).send(new ScheduleKeyDeletionCommand({ KeyId: key.Arn })))).name).toBe('AccessDeniedException');
    const outsiderDenied = await errorOf(as(outsider).send(new EncryptCommand({ KeyId: key.Arn, Plaintext: bytes('x') })));
    expect(outsiderDenied.message).toContain('because no identity-based policy allows the kms:Encrypt action');
  });
});
