/**
 * AWS managed keys and integrated services end to end through @aws-sdk/client-kms: principals of
 * the principals file marked as integrated services call on behalf of other principals
 * (X-P11kms-On-Behalf-Of), alias/aws/<service> keys appear on first use with AWS's shape and
 * policy, kms:ViaService and kms:CallerAccount evaluate in customer key policies, and everything
 * AWS refuses on an AWS managed key is refused with AWS's error.
 */
import {
  CreateAliasCommand,
  CreateGrantCommand,
  CreateKeyCommand,
  DecryptCommand,
  DeleteAliasCommand,
  DescribeKeyCommand,
  DisableKeyCommand,
  DisableKeyRotationCommand,
  EnableKeyRotationCommand,
  EncryptCommand,
  GenerateDataKeyCommand,
  GetKeyPolicyCommand,
  GetKeyRotationStatusCommand,
  KMSClient,
  ListAliasesCommand,
  ListKeysCommand,
  PutKeyPolicyCommand,
  RotateKeyOnDemandCommand,
  ScheduleKeyDeletionCommand,
  TagResourceCommand,
  UpdateAliasCommand,
  UpdateKeyDescriptionCommand,
  type AliasListEntry,
} from '@aws-sdk/client-kms';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { OTHER_ACCOUNT_ID, credentials, identityPolicy, testUser, writePrincipalsFile, type TestPrincipal } from './helpers/principals.js';
import { ACCOUNT_ID, REGION, errorOf, tempDir, testConfig, useTestService } from './helpers/service.js';
import { loadPrincipals } from '../src/auth/principals.js';

const ROOT_ARN = `arn:aws:iam::${ACCOUNT_ID}:root`;
const alice = testUser('alice');
const mallory = testUser('mallory', [identityPolicy({ Effect: 'Deny', Action: 'kms:*', Resource: '*' })]);
const partner = testUser('partner', [identityPolicy({ Effect: 'Allow', Action: ['kms:Encrypt', 'kms:DescribeKey'], Resource: '*' })], OTHER_ACCOUNT_ID);
const objectStore = { ...testUser('objectstore'), arn: `arn:aws:iam::${ACCOUNT_ID}:role/object-store`, integratedService: 's3' };
const blockStore = { ...testUser('blockstore'), arn: `arn:aws:iam::${ACCOUNT_ID}:role/block-store`, integratedService: 'ec2' };
const tables = { ...testUser('tables'), arn: `arn:aws:iam::${ACCOUNT_ID}:role/tables`, integratedService: 'dynamodb' };
const functions = { ...testUser('functions'), arn: `arn:aws:iam::${ACCOUNT_ID}:role/functions`, integratedService: 'lambda', onBehalfOfAccounts: [OTHER_ACCOUNT_ID] };

const t = useTestService(() => ({ P11KMS_PRINCIPALS_FILE: writePrincipalsFile([alice, mallory, partner, objectStore, blockStore, functions, tables]) }));
const bytes = (s: string) => new TextEncoder().encode(s);

/** A client signing as `signer` that adds `headers` to every request, signed (build step) or
 *  added after signing (`unsigned`). */
function clientWithHeaders(signer: TestPrincipal, headers: Record<string, string>, unsigned = false): KMSClient {
  const client = t.clientFor(credentials(signer));
  client.middlewareStack.add(
    (next) => async (args) => {
      Object.assign((args.request as { headers: Record<string, string> }).headers, headers);
      return next(args);
    },
    // Build runs before the request is signed; deserialize wraps the signed request.
    { step: unsigned ? 'deserialize' : 'build' },
  );
  return client;
}
const via = (service: TestPrincipal, onBehalfOf: TestPrincipal | string) =>
  clientWithHeaders(service, { 'X-P11kms-On-Behalf-Of': typeof onBehalfOf === 'string' ? onBehalfOf : onBehalfOf.arn });
const direct = (p: TestPrincipal) => t.clientFor(credentials(p));

async function allAliases(): Promise<AliasListEntry[]> {
  const out: AliasListEntry[] = [];
  let marker: string | undefined;
  do {
    const page = await t.client.send(new ListAliasesCommand({ Limit: 2, Marker: marker }));
    out.push(...page.Aliases!);
    marker = page.NextMarker;
  } while (marker);
  return out;
}

describe('predefined aliases', () => {
  it('ListAliases lists alias/aws/* without TargetKeyId before their keys exist, in name order among the others, page by page', async () => {
    const key = (await t.client.send(new CreateKeyCommand({}))).KeyMetadata!;
    await t.client.send(new CreateAliasCommand({ AliasName: 'alias/app', TargetKeyId: key.KeyId }));
    await t.client.send(new CreateAliasCommand({ AliasName: 'alias/zeta', TargetKeyId: key.KeyId }));
    const aliases = await allAliases();
    expect(aliases.map((a) => a.AliasName)).toEqual([
      'alias/app', 'alias/aws/dynamodb', 'alias/aws/ebs', 'alias/aws/lambda', 'alias/aws/rds', 'alias/aws/s3', 'alias/aws/secretsmanager', 'alias/aws/ssm', 'alias/zeta',
    ]);
    const s3 = aliases.find((a) => a.AliasName === 'alias/aws/s3')!;
    expect(s3).toEqual({ AliasName: 'alias/aws/s3', AliasArn: `arn:aws:kms:${REGION}:${ACCOUNT_ID}:alias/aws/s3` });
    expect(aliases.find((a) => a.AliasName === 'alias/app')!.TargetKeyId).toBe(key.KeyId);
  });

  it('a predefined alias without its key is not found, and CreateAlias refuses the alias/aws/ prefix', async () => {
    const key = (await t.client.send(new CreateKeyCommand({}))).KeyMetadata!;
    expect(await errorOf(direct(alice).send(new EncryptCommand({ KeyId: 'alias/aws/lambda', Plaintext: bytes('x') })))).toMatchObject({
      name: 'NotFoundException',
    });
    expect(await errorOf(t.client.send(new CreateAliasCommand({ AliasName: 'alias/aws/lambda', TargetKeyId: key.KeyId })))).toMatchObject({
      name: 'InvalidAliasNameException',
    });
    expect(await errorOf(t.client.send(new UpdateAliasCommand({ AliasName: 'alias/aws/lambda', TargetKeyId: key.KeyId })))).toMatchObject({
      name: 'NotFoundException',
    });
  });
});

describe('an AWS managed key, created by its service on first use', () => {
  let managed: { KeyId: string; Arn: string };

  it('appears when the integrated service first uses alias/aws/s3 on behalf of a principal', async () => {
    const generated = await via(objectStore, alice).send(new GenerateDataKeyCommand({ KeyId: 'alias/aws/s3', KeySpec: 'AES_256' }));
    const metadata = (await t.client.send(new DescribeKeyCommand({ KeyId: 'alias/aws/s3' }))).KeyMetadata!;
    managed = { KeyId: metadata.KeyId!, Arn: metadata.Arn! };
    expect(generated.KeyId).toBe(metadata.Arn);
    expect(metadata).toMatchObject({
      KeyManager: 'AWS',
      Description: 'Default key that protects my S3 objects when no other key is defined',
      KeyState: 'Enabled',
      Enabled: true,
      KeySpec: 'SYMMETRIC_DEFAULT',
      KeyUsage: 'ENCRYPT_DECRYPT',
      Origin: 'AWS_KMS',
      MultiRegion: false,
      AWSAccountId: ACCOUNT_ID,
    });
    // The service decrypts for the same principal.
    const opened = await via(objectStore, alice).send(new DecryptCommand({ CiphertextBlob: generated.CiphertextBlob }));
    expect(opened.Plaintext).toEqual(generated.Plaintext);
  });

  it("carries AWS's policy for the service, rotates every year and is listed", async () => {
    const { Policy } = await t.client.send(new GetKeyPolicyCommand({ KeyId: managed.KeyId, PolicyName: 'default' }));
    // The text as GetKeyPolicy returns AWS's own policies (its layout, its member order).
    expect(Policy).toBe(
      [
        '{',
        '  "Version" : "2012-10-17",',
        '  "Id" : "auto-s3-2",',
        '  "Statement" : [ {',
        '    "Sid" : "Allow access through S3 for all principals in the account that are authorized to use S3",',
        '    "Effect" : "Allow",',
        '    "Principal" : {',
        '      "AWS" : "*"',
        '    },',
        '    "Action" : [ "kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey" ],',
        '    "Resource" : "*",',
        '    "Condition" : {',
        '      "StringEquals" : {',
        `        "kms:CallerAccount" : "${ACCOUNT_ID}",`,
        `        "kms:ViaService" : "s3.${REGION}.amazonaws.com"`,
        '      }',
        '    }',
        '  }, {',
        '    "Sid" : "Allow direct access to key metadata to the account",',
        '    "Effect" : "Allow",',
        '    "Principal" : {',
        `      "AWS" : "${ROOT_ARN}"`,
        '    },',
        '    "Action" : [ "kms:Describe*", "kms:Get*", "kms:List*" ],',
        '    "Resource" : "*"',
        '  } ]',
        '}',
      ].join('\n'),
    );
    expect(JSON.parse(Policy!)).toEqual({
      Version: '2012-10-17',
      Id: 'auto-s3-2',
      Statement: [
        {
          Sid: 'Allow access through S3 for all principals in the account that are authorized to use S3',
          Effect: 'Allow',
          Principal: { AWS: '*' },
          Action: ['kms:Encrypt', 'kms:Decrypt', 'kms:ReEncrypt*', 'kms:GenerateDataKey*', 'kms:DescribeKey'],
          Resource: '*',
          Condition: { StringEquals: { 'kms:CallerAccount': ACCOUNT_ID, 'kms:ViaService': `s3.${REGION}.amazonaws.com` } },
        },
        {
          Sid: 'Allow direct access to key metadata to the account',
          Effect: 'Allow',
          Principal: { AWS: ROOT_ARN },
          Action: ['kms:Describe*', 'kms:Get*', 'kms:List*'],
          Resource: '*',
        },
      ],
    });
    const rotation = await t.client.send(new GetKeyRotationStatusCommand({ KeyId: managed.KeyId }));
    expect(rotation).toMatchObject({ KeyRotationEnabled: true, RotationPeriodInDays: 365 });
    const metadata = (await t.client.send(new DescribeKeyCommand({ KeyId: managed.KeyId }))).KeyMetadata!;
    expect(rotation.NextRotationDate!.getTime() - metadata.CreationDate!.getTime()).toBe(365 * 86_400_000);

    const keys = (await t.client.send(new ListKeysCommand({ Limit: 1000 }))).Keys!;
    expect(keys.map((k) => k.KeyId)).toContain(managed.KeyId);
    const byKey = await t.client.send(new ListAliasesCommand({ KeyId: managed.KeyId }));
    expect(byKey.Aliases!.map((a) => [a.AliasName, a.TargetKeyId])).toEqual([['alias/aws/s3', managed.KeyId]]);
    const s3 = (await allAliases()).find((a) => a.AliasName === 'alias/aws/s3')!;
    expect(s3.TargetKeyId).toBe(managed.KeyId);
    expect(s3.CreationDate).toBeInstanceOf(Date);
  });

  it('is usable only through its service: direct use by the account is AccessDeniedException', async () => {
    const sealed = await via(objectStore, alice).send(new EncryptCommand({ KeyId: 'alias/aws/s3', Plaintext: bytes('object') }));
    for (const client of [direct(alice), t.client]) {
      const encrypt = await errorOf(client.send(new EncryptCommand({ KeyId: 'alias/aws/s3', Plaintext: bytes('x') })));
      expect(encrypt.name).toBe('AccessDeniedException');
      const decrypt = await errorOf(client.send(new DecryptCommand({ CiphertextBlob: sealed.CiphertextBlob })));
      expect(decrypt.name).toBe('AccessDeniedException');
    }
    // Another service is not the key's service; the service acting as itself is not "via" itself.
    expect((await errorOf(via(blockStore, alice).send(new EncryptCommand({ KeyId: managed.KeyId, Plaintext: bytes('x') })))).name).toBe(
      'AccessDeniedException',
    );
    expect((await errorOf(direct(objectStore).send(new EncryptCommand({ KeyId: 'alias/aws/s3', Plaintext: bytes('x') })))).name).toBe(
      'AccessDeniedException',
    );
    // The principal's own identity policies still apply through the service.
    const denied = await errorOf(via(objectStore, mallory).send(new EncryptCommand({ KeyId: 'alias/aws/s3', Plaintext: bytes('x') })));
    expect(denied).toMatchObject({ name: 'AccessDeniedException' });
    expect(denied.message).toContain(`User: ${mallory.arn} is not authorized to perform: kms:Encrypt`);
    expect(denied.message).toContain('explicit deny in an identity-based policy');
  });

  it('cannot be deleted, disabled, re-described, tagged, re-policied, re-aliased or have its rotation changed', async () => {
    const { KeyId, Arn } = managed;
    const policy = JSON.stringify({ Version: '2012-10-17', Statement: [{ Effect: 'Allow', Principal: { AWS: ROOT_ARN }, Action: 'kms:*', Resource: '*' }] });
    const other = (await t.client.send(new CreateKeyCommand({}))).KeyMetadata!;
    const refusals: Array<[string, Promise<unknown>]> = [
      ['kms:ScheduleKeyDeletion', t.client.send(new ScheduleKeyDeletionCommand({ KeyId, PendingWindowInDays: 7 }))],
      ['kms:DisableKey', t.client.send(new DisableKeyCommand({ KeyId }))],
      ['kms:UpdateKeyDescription', t.client.send(new UpdateKeyDescriptionCommand({ KeyId, Description: 'mine now' }))],
      ['kms:TagResource', t.client.send(new TagResourceCommand({ KeyId, Tags: [{ TagKey: 'owner', TagValue: 'me' }] }))],
      ['kms:PutKeyPolicy', t.client.send(new PutKeyPolicyCommand({ KeyId, PolicyName: 'default', Policy: policy }))],
      ['kms:DisableKeyRotation', t.client.send(new DisableKeyRotationCommand({ KeyId }))],
      ['kms:EnableKeyRotation', t.client.send(new EnableKeyRotationCommand({ KeyId, RotationPeriodInDays: 90 }))],
      ['kms:RotateKeyOnDemand', t.client.send(new RotateKeyOnDemandCommand({ KeyId }))],
      ['kms:DeleteAlias', t.client.send(new DeleteAliasCommand({ AliasName: 'alias/aws/s3' }))],
      ['kms:UpdateAlias', t.client.send(new UpdateAliasCommand({ AliasName: 'alias/aws/s3', TargetKeyId: other.KeyId }))],
      ['kms:CreateAlias', t.client.send(new CreateAliasCommand({ AliasName: 'alias/s3-too', TargetKeyId: KeyId }))],
      // Through the service too: its policy allows use, nothing else.
      ['kms:ScheduleKeyDeletion', via(objectStore, alice).send(new ScheduleKeyDeletionCommand({ KeyId }))],
    ];
    for (const [action, refused] of refusals) {
      const error = await errorOf(refused);
      expect(error.name, action).toBe('AccessDeniedException');
      expect(error.message, action).toContain(`not authorized to perform: ${action} on resource: ${Arn} because no resource-based policy allows the ${action} action`);
    }
    const after = (await t.client.send(new DescribeKeyCommand({ KeyId }))).KeyMetadata!;
    expect(after).toMatchObject({ KeyState: 'Enabled', KeyManager: 'AWS', Description: 'Default key that protects my S3 objects when no other key is defined' });
    expect((await t.client.send(new GetKeyRotationStatusCommand({ KeyId }))).RotationPeriodInDays).toBe(365);
    expect((await t.client.send(new DescribeKeyCommand({ KeyId: 'alias/aws/s3' }))).KeyMetadata!.KeyId).toBe(KeyId);
  });

  it('concurrent first uses through the service create exactly one key', async () => {
    const before = (await t.client.send(new ListKeysCommand({ Limit: 1000 }))).Keys!.length;
    const results = await Promise.all(
      Array.from({ length: 8 }, () => via(blockStore, alice).send(new GenerateDataKeyCommand({ KeyId: 'alias/aws/ebs', KeySpec: 'AES_256' }))),
    );
    expect(new Set(results.map((r) => r.KeyId)).size).toBe(1);
    const keys = (await t.client.send(new ListKeysCommand({ Limit: 1000 }))).Keys!;
    expect(keys.length).toBe(before + 1);
    const ebs = (await allAliases()).filter((a) => a.AliasName === 'alias/aws/ebs');
    expect(ebs).toHaveLength(1);
    expect(results[0]!.KeyId).toBe(`arn:aws:kms:${REGION}:${ACCOUNT_ID}:key/${ebs[0]!.TargetKeyId}`);
    const metadata = (await t.client.send(new DescribeKeyCommand({ KeyId: 'alias/aws/ebs' }))).KeyMetadata!;
    expect(metadata).toMatchObject({ KeyManager: 'AWS', Description: 'Default key that protects my EBS volumes when no other key is defined' });
    // EBS's policy: EC2 is the service that calls KMS, and it may make grants.
    const policy = JSON.parse((await t.client.send(new GetKeyPolicyCommand({ KeyId: metadata.KeyId, PolicyName: 'default' }))).Policy!);
    expect(policy.Statement[0].Condition.StringEquals['kms:ViaService']).toBe(`ec2.${REGION}.amazonaws.com`);
    expect(policy.Statement[0].Action).toContain('kms:CreateGrant');
    expect(policy.Statement[1].Action).toContain('kms:RevokeGrant');
  });

  it("DynamoDB's key: usable through dynamodb in any Region (StringLike), readable by DynamoDB's service principal", async () => {
    const sealed = await via(tables, alice).send(new EncryptCommand({ KeyId: 'alias/aws/dynamodb', Plaintext: bytes('item') }));
    const metadata = (await t.client.send(new DescribeKeyCommand({ KeyId: 'alias/aws/dynamodb' }))).KeyMetadata!;
    expect(sealed.KeyId).toBe(metadata.Arn);
    expect(metadata).toMatchObject({ KeyManager: 'AWS', Description: 'Default key that protects my DynamoDB data when no other key is defined' });
    const policy = JSON.parse((await t.client.send(new GetKeyPolicyCommand({ KeyId: metadata.KeyId, PolicyName: 'default' }))).Policy!);
    expect(policy.Id).toBe('auto-dynamodb-3');
    expect(policy.Statement[0].Condition).toEqual({ StringEquals: { 'kms:CallerAccount': ACCOUNT_ID }, StringLike: { 'kms:ViaService': 'dynamodb.*.amazonaws.com' } });
    expect(policy.Statement[2]).toMatchObject({ Principal: { Service: 'dynamodb.amazonaws.com' }, Action: ['kms:Describe*', 'kms:Get*', 'kms:List*'] });
    expect((await errorOf(direct(alice).send(new DecryptCommand({ CiphertextBlob: sealed.CiphertextBlob })))).name).toBe('AccessDeniedException');
  });

  it('a DescribeKey of a predefined alias by the account creates its key, as in AWS', async () => {
    const metadata = (await t.client.send(new DescribeKeyCommand({ KeyId: 'alias/aws/ssm' }))).KeyMetadata!;
    expect(metadata).toMatchObject({ KeyManager: 'AWS', Description: 'Default key that protects my SSM parameters when no other key is defined' });
    // Another account's principal never makes one (nor sees this account's).
    const partnerView = await errorOf(direct(partner).send(new DescribeKeyCommand({ KeyId: `arn:aws:kms:${REGION}:${ACCOUNT_ID}:alias/aws/rds` })));
    expect(partnerView.name).toBe('NotFoundException');
    expect((await allAliases()).find((a) => a.AliasName === 'alias/aws/rds')!.TargetKeyId).toBeUndefined();
  });
});

describe('kms:ViaService and kms:CallerAccount in a customer key policy', () => {
  it('allow the principal through the named service in its account and deny it directly', async () => {
    const policy = JSON.stringify({
      Version: '2012-10-17',
      Statement: [
        { Sid: 'Enable IAM User Permissions', Effect: 'Allow', Principal: { AWS: ROOT_ARN }, Action: 'kms:*', Resource: '*' },
        {
          Sid: 'Through S3 only',
          Effect: 'Allow',
          Principal: { AWS: '*' },
          Action: ['kms:Encrypt', 'kms:Decrypt', 'kms:GenerateDataKey*'],
          Resource: '*',
          Condition: { StringEquals: { 'kms:ViaService': `s3.${REGION}.amazonaws.com`, 'kms:CallerAccount': ACCOUNT_ID } },
        },
        { Sid: 'Never through EC2', Effect: 'Deny', Principal: { AWS: '*' }, Action: 'kms:*', Resource: '*', Condition: { StringLike: { 'kms:ViaService': 'ec2.*.amazonaws.com' } } },
      ],
    });
    const key = (await t.client.send(new CreateKeyCommand({ Policy: policy }))).KeyMetadata!;
    const sealed = await via(objectStore, alice).send(new EncryptCommand({ KeyId: key.KeyId, Plaintext: bytes('via s3') }));
    expect(new TextDecoder().decode((await via(objectStore, alice).send(new DecryptCommand({ CiphertextBlob: sealed.CiphertextBlob }))).Plaintext)).toBe('via s3');

    const directly = await errorOf(direct(alice).send(new EncryptCommand({ KeyId: key.KeyId, Plaintext: bytes('x') })));
    expect(directly.name).toBe('AccessDeniedException');
    expect(directly.message).toContain(`User: ${alice.arn} is not authorized to perform: kms:Encrypt on resource: ${key.Arn} because no resource-based policy allows`);
    const viaEc2 = await errorOf(via(blockStore, alice).send(new EncryptCommand({ KeyId: key.KeyId, Plaintext: bytes('x') })));
    expect(viaEc2).toMatchObject({ name: 'AccessDeniedException' });
    expect(viaEc2.message).toContain('explicit deny in a resource-based policy');
  });

  it('kms:GrantIsForAWSResource holds for grants the service makes on the principal\'s behalf', async () => {
    const policy = JSON.stringify({
      Version: '2012-10-17',
      Statement: [
        { Effect: 'Allow', Principal: { AWS: ROOT_ARN }, Action: 'kms:*', Resource: '*' },
        { Effect: 'Allow', Principal: { AWS: alice.arn }, Action: 'kms:CreateGrant', Resource: '*', Condition: { Bool: { 'kms:GrantIsForAWSResource': 'true' } } },
      ],
    });
    const key = (await t.client.send(new CreateKeyCommand({ Policy: policy }))).KeyMetadata!;
    const grant = { KeyId: key.KeyId, GranteePrincipal: blockStore.arn, Operations: ['Decrypt' as const] };
    expect((await via(blockStore, alice).send(new CreateGrantCommand(grant))).GrantId).toMatch(/^[0-9a-f]{64}$/);
    expect((await errorOf(direct(alice).send(new CreateGrantCommand(grant)))).name).toBe('AccessDeniedException');
  });

  it('kms:CallerAccount is the account of the principal the service calls for', async () => {
    const policy = JSON.stringify({
      Version: '2012-10-17',
      Statement: [
        { Effect: 'Allow', Principal: { AWS: ROOT_ARN }, Action: 'kms:*', Resource: '*' },
        { Effect: 'Allow', Principal: { AWS: '*' }, Action: 'kms:Encrypt', Resource: '*', Condition: { StringEquals: { 'kms:CallerAccount': OTHER_ACCOUNT_ID } } },
      ],
    });
    const key = (await t.client.send(new CreateKeyCommand({ Policy: policy }))).KeyMetadata!;
    // alice's account is not the one the policy names, even though the service is of the key's account.
    expect((await errorOf(via(objectStore, alice).send(new EncryptCommand({ KeyId: key.KeyId, Plaintext: bytes('x') })))).name).toBe('AccessDeniedException');
    // A service that may call for the other account's principals: that account is the caller's.
    expect((await via(functions, partner).send(new EncryptCommand({ KeyId: key.Arn, Plaintext: bytes('x') }))).KeyId).toBe(key.Arn);
    // ...but never makes or uses this account's AWS managed key for it.
    const managed = await errorOf(via(functions, partner).send(new EncryptCommand({ KeyId: `arn:aws:kms:${REGION}:${ACCOUNT_ID}:alias/aws/lambda`, Plaintext: bytes('x') })));
    expect(managed.name).toBe('NotFoundException');
    expect((await allAliases()).find((a) => a.AliasName === 'alias/aws/lambda')!.TargetKeyId).toBeUndefined();
  });
});

describe('the audit trail', () => {
  it('names the principal called for and the service it came through, and the creation of a managed key', async () => {
    const dir = path.join(t.dataDir, 'audit');
    const records = fs
      .readdirSync(dir)
      .filter((f) => f.endsWith('.jsonl'))
      .flatMap((f) => fs.readFileSync(path.join(dir, f), 'utf8').split('\n').filter((l) => l.length > 0).map((l) => JSON.parse(l) as Record<string, any>));
    const viaS3 = records.find((r) => r.eventName === 'GenerateDataKey' && r.userIdentity?.arn === alice.arn && r.userIdentity?.invokedBy === 's3.amazonaws.com');
    expect(viaS3?.userIdentity).toMatchObject({ type: 'IAMUser', accountId: ACCOUNT_ID, accessKeyId: objectStore.accessKeyId });
    const created = records.filter((r) => r.eventName === 'CreateKey' && r.eventType === 'AwsServiceEvent');
    expect(created).toHaveLength(4); // s3, ebs (once, however many requests raced), dynamodb, ssm
    expect(new Set(created.map((r) => r.resources?.[0]?.ARN)).size).toBe(created.length);
  });
});

describe('who may claim to call through a service', () => {
  it('the principals file names a known service, not for an account root, and onBehalfOfAccounts only with one', () => {
    const load = (entry: Record<string, unknown>) => () =>
      loadPrincipals(testConfig(tempDir('p11kms-managed-principals-'), { P11KMS_PRINCIPALS_FILE: writePrincipalsFile([{ ...alice, ...entry }]) }), () => undefined);
    expect(load({ integratedService: 'ebs' })).toThrow(/integratedService/);
    expect(load({ arn: ROOT_ARN, integratedService: 's3' })).toThrow(/an account root cannot be an integrated service/);
    expect(load({ onBehalfOfAccounts: [OTHER_ACCOUNT_ID] })).toThrow(/onBehalfOfAccounts needs integratedService/);
    expect(load({ integratedService: 's3', onBehalfOfAccounts: ['12'] })).toThrow(/12-digit account ID/);
    const registry = load({ integratedService: 'rds', onBehalfOfAccounts: [OTHER_ACCOUNT_ID] })();
    expect(registry.all().find((p) => p.arn === alice.arn)).toMatchObject({ integratedService: 'rds', onBehalfOfAccounts: [OTHER_ACCOUNT_ID] });
  });

  it('a principal that is not an integrated service cannot, and a service only for known principals of its account', async () => {
    const key = (await t.client.send(new CreateKeyCommand({}))).KeyMetadata!;
    const notService = await errorOf(clientWithHeaders(alice, { 'X-P11kms-On-Behalf-Of': ROOT_ARN }).send(new DescribeKeyCommand({ KeyId: key.KeyId })));
    expect(notService).toMatchObject({ name: 'AccessDeniedException', status: 400 });
    expect(notService.message).toContain(`User: ${alice.arn} is not an integrated service principal`);
    for (const target of [partner.arn, `arn:aws:iam::${ACCOUNT_ID}:user/nobody-like-this`, blockStore.arn, '']) {
      const refused = await errorOf(via(objectStore, target).send(new DescribeKeyCommand({ KeyId: key.KeyId })));
      expect(refused.name, target).toBe('AccessDeniedException');
    }
    // On behalf of the account root, through the service: the root's own rights.
    expect((await via(objectStore, ROOT_ARN).send(new DescribeKeyCommand({ KeyId: key.KeyId }))).KeyMetadata!.KeyId).toBe(key.KeyId);
  });

  it('the claim must be signed', async () => {
    const unsigned = clientWithHeaders(objectStore, { 'X-P11kms-On-Behalf-Of': alice.arn }, true);
    const error = await errorOf(unsigned.send(new EncryptCommand({ KeyId: 'alias/aws/s3', Plaintext: bytes('x') })));
    expect(error).toMatchObject({ name: 'IncompleteSignatureException' });
    expect(error.message).toContain("'X-P11kms-On-Behalf-Of' must be a 'SignedHeader'");
  });
});
