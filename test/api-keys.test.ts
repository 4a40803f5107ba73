/**
 * Key lifecycle through the real AWS SDK: CreateKey, DescribeKey, ListKeys, UpdateKeyDescription,
 * EnableKey, DisableKey, ScheduleKeyDeletion, CancelKeyDeletion, GetKeyPolicy, ListKeyPolicies,
 * and every KeyId form.
 */
import {
  CancelKeyDeletionCommand,
  CreateAliasCommand,
  CreateKeyCommand,
  DescribeCustomKeyStoresCommand,
  DescribeKeyCommand,
  DisableKeyCommand,
  EnableKeyCommand,
  EncryptCommand,
  GetKeyPolicyCommand,
  ListKeyPoliciesCommand,
  ListKeysCommand,
  ScheduleKeyDeletionCommand,
  UpdateKeyDescriptionCommand,
} from '@aws-sdk/client-kms';
import { describe, expect, it } from 'vitest';
import { ACCOUNT_ID, REGION, errorOf, useTestService } from './helpers/service.js';

const t = useTestService();

const arnOf = (keyId: string) => `arn:aws:kms:${REGION}:${ACCOUNT_ID}:key/${keyId}`;

async function createKey(description = 'test key') {
  const { KeyMetadata } = await t.client.send(new CreateKeyCommand({ Description: description }));
  return KeyMetadata!;
}

describe('CreateKey', () => {
  it('creates an enabled symmetric key with AWS metadata', async () => {
    const before = Date.now();
    const m = await createKey('first');
    expect(m.KeyId).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    expect(m.Arn).toBe(arnOf(m.KeyId!));
    expect(m.AWSAccountId).toBe(ACCOUNT_ID);
    expect(m.KeyState).toBe('Enabled');
    expect(m.Enabled).toBe(true);
    expect(m.KeySpec).toBe('SYMMETRIC_DEFAULT');
    expect(m.CustomerMasterKeySpec).toBe('SYMMETRIC_DEFAULT');
    expect(m.KeyUsage).toBe('ENCRYPT_DECRYPT');
    expect(m.Origin).toBe('AWS_KMS');
    expect(m.KeyManager).toBe('CUSTOMER');
    expect(m.EncryptionAlgorithms).toEqual(['SYMMETRIC_DEFAULT']);
    expect(m.MultiRegion).toBe(false);
    expect(m.Description).toBe('first');
    expect(m.CurrentKeyMaterialId).toMatch(/^[0-9a-f]{64}$/);
    expect(m.CreationDate!.getTime()).toBeGreaterThanOrEqual(before - 1000);
    expect(m.CreationDate!.getTime()).toBeLessThanOrEqual(Date.now() + 1000);
  });

  it('stores the documented default key policy', async () => {
    const m = await createKey();
    const { Policy, PolicyName } = await t.client.send(new GetKeyPolicyCommand({ KeyId: m.KeyId }));
    expect(PolicyName).toBe('default');
    expect(JSON.parse(Policy!)).toEqual({
      Version: '2012-10-17',
      Id: 'key-default-1',
      Statement: [
        { Sid: 'Enable IAM User Permissions', Effect: 'Allow', Principal: { AWS: `arn:aws:iam::${ACCOUNT_ID}:root` }, Action: 'kms:*', Resource: '*' },
      ],
    });
    expect(Policy).toContain('"Version" : "2012-10-17"');
    const { PolicyNames } = await t.client.send(new ListKeyPoliciesCommand({ KeyId: m.KeyId }));
    expect(PolicyNames).toEqual(['default']);
    expect((await errorOf(t.client.send(new GetKeyPolicyCommand({ KeyId: m.KeyId, PolicyName: 'other' })))).name).toBe('NotFoundException');
  });

  it('stores a given policy verbatim and rejects malformed ones', async () => {
    const policy = JSON.stringify({ Version: '2012-10-17', Statement: [{ Effect: 'Allow', Principal: { AWS: `arn:aws:iam::${ACCOUNT_ID}:root` }, Action: 'kms:*', Resource: '*' }] });
    const { KeyMetadata } = await t.client.send(new CreateKeyCommand({ Policy: policy }));
    expect((await t.client.send(new GetKeyPolicyCommand({ KeyId: KeyMetadata!.KeyId }))).Policy).toBe(policy);
    expect((await errorOf(t.client.send(new CreateKeyCommand({ Policy: '{not json' })))).name).toBe('MalformedPolicyDocumentException');
    const big = JSON.stringify({ Statement: [], Pad: 'x'.repeat(33_000) });
    expect((await errorOf(t.client.send(new CreateKeyCommand({ Policy: big })))).name).toBe('LimitExceededException');
  });

  it('validates KeySpec, KeyUsage, Origin and tags', async () => {
    expect((await errorOf(t.client.send(new CreateKeyCommand({ KeySpec: 'NOPE' as never })))).name).toBe('ValidationException');
    expect((await errorOf(t.client.send(new CreateKeyCommand({ KeyUsage: 'SIGN_VERIFY' })))).name).toBe('ValidationException');
    expect((await errorOf(t.client.send(new CreateKeyCommand({ KeySpec: 'SYMMETRIC_DEFAULT', CustomerMasterKeySpec: 'SYMMETRIC_DEFAULT' })))).name).toBe('ValidationException');
    expect((await errorOf(t.client.send(new CreateKeyCommand({ Tags: [{ TagKey: 'aws:x', TagValue: 'y' }] })))).name).toBe('TagException');
    const tooMany = Array.from({ length: 51 }, (_, i) => ({ TagKey: `k${i}`, TagValue: 'v' }));
    // AWS (recorded): TagException, not LimitExceededException.
    expect((await errorOf(t.client.send(new CreateKeyCommand({ Tags: tooMany })))).name).toBe('TagException');
  });
});

describe('DescribeKey and KeyId forms', () => {
  it('accepts key ID, key ARN, alias name and alias ARN', async () => {
    const m = await createKey();
    await t.client.send(new CreateAliasCommand({ AliasName: 'alias/describe-me', TargetKeyId: m.KeyId }));
    for (const id of [m.KeyId!, m.Arn!, 'alias/describe-me', `arn:aws:kms:${REGION}:${ACCOUNT_ID}:alias/describe-me`]) {
      const { KeyMetadata } = await t.client.send(new DescribeKeyCommand({ KeyId: id }));
      expect(KeyMetadata!.KeyId).toBe(m.KeyId);
    }
  });

  it('answers NotFound, InvalidArn and ValidationException as AWS does', async () => {
    const missing = '00000000-0000-4000-8000-000000000000';
    const nf = await errorOf(t.client.send(new DescribeKeyCommand({ KeyId: missing })));
    expect(nf).toMatchObject({ name: 'NotFoundException', status: 400 });
    expect(nf.message).toContain(arnOf(missing));
    expect((await errorOf(t.client.send(new DescribeKeyCommand({ KeyId: 'alias/nobody' })))).name).toBe('NotFoundException');
    expect((await errorOf(t.client.send(new DescribeKeyCommand({ KeyId: 'not-a-key' })))).name).toBe('NotFoundException');
    expect((await errorOf(t.client.send(new DescribeKeyCommand({ KeyId: 'arn:aws:kms:bogus' })))).name).toBe('InvalidArnException');
    expect((await errorOf(t.client.send(new DescribeKeyCommand({ KeyId: `arn:aws:kms:eu-west-1:${ACCOUNT_ID}:key/${missing}` })))).name).toBe('NotFoundException');
    const empty = await errorOf(t.client.send(new DescribeKeyCommand({ KeyId: '' })));
    expect(empty.name).toBe('ValidationException');
    expect(empty.message).toContain("at 'keyId'");
  });

  it('refuses aliases where AWS takes only key IDs and ARNs', async () => {
    const m = await createKey();
    await t.client.send(new CreateAliasCommand({ AliasName: 'alias/no-alias-ops', TargetKeyId: m.KeyId }));
    expect((await errorOf(t.client.send(new DisableKeyCommand({ KeyId: 'alias/no-alias-ops' })))).name).toBe('NotFoundException');
    expect((await errorOf(t.client.send(new UpdateKeyDescriptionCommand({ KeyId: 'alias/no-alias-ops', Description: 'x' })))).name).toBe('NotFoundException');
  });
});

describe('ListKeys', () => {
  it('pages with Limit and Marker through every key exactly once', async () => {
    for (let i = 0; i < 5; i++) await createKey(`list ${i}`);
    const all = new Set<string>();
    let marker: string | undefined;
    let pages = 0;
    do {
      const page = await t.client.send(new ListKeysCommand({ Limit: 2, Marker: marker }));
      expect(page.Keys!.length).toBeLessThanOrEqual(2);
      for (const k of page.Keys!) {
        expect(k.KeyArn).toBe(arnOf(k.KeyId!));
        expect(all.has(k.KeyId!)).toBe(false);
        all.add(k.KeyId!);
      }
      expect(page.Truncated).toBe(page.NextMarker !== undefined);
      marker = page.NextMarker;
      pages++;
    } while (marker);
    const unpaged = await t.client.send(new ListKeysCommand({}));
    expect(new Set(unpaged.Keys!.map((k) => k.KeyId))).toEqual(all);
    expect(pages).toBeGreaterThanOrEqual(3);
    expect((await errorOf(t.client.send(new ListKeysCommand({ Marker: 'garbage' })))).name).toBe('InvalidMarkerException');
    expect((await errorOf(t.client.send(new ListKeysCommand({ Limit: 0 })))).name).toBe('ValidationException');
  });
});

describe('key states', () => {
  it('UpdateKeyDescription changes the description', async () => {
    const m = await createKey('old');
    await t.client.send(new UpdateKeyDescriptionCommand({ KeyId: m.Arn, Description: 'new' }));
    expect((await t.client.send(new DescribeKeyCommand({ KeyId: m.KeyId }))).KeyMetadata!.Description).toBe('new');
  });

  it('DisableKey blocks cryptography with DisabledException; EnableKey restores it', async () => {
    const m = await createKey();
    await t.client.send(new DisableKeyCommand({ KeyId: m.KeyId }));
    const d = (await t.client.send(new DescribeKeyCommand({ KeyId: m.KeyId }))).KeyMetadata!;
    expect(d.KeyState).toBe('Disabled');
    expect(d.Enabled).toBe(false);
    const err = await errorOf(t.client.send(new EncryptCommand({ KeyId: m.KeyId, Plaintext: Buffer.from('x') })));
    expect(err).toMatchObject({ name: 'DisabledException', status: 400 });
    await t.client.send(new EnableKeyCommand({ KeyId: m.KeyId }));
    await t.client.send(new EncryptCommand({ KeyId: m.KeyId, Plaintext: Buffer.from('x') }));
  });

  it('ScheduleKeyDeletion enforces 7..30 days, defaults to 30, and CancelKeyDeletion leaves it Disabled', async () => {
    const m = await createKey();
    expect((await errorOf(t.client.send(new ScheduleKeyDeletionCommand({ KeyId: m.KeyId, PendingWindowInDays: 6 })))).name).toBe('ValidationException');
    expect((await errorOf(t.client.send(new ScheduleKeyDeletionCommand({ KeyId: m.KeyId, PendingWindowInDays: 31 })))).name).toBe('ValidationException');
    const before = Date.now();
    const s = await t.client.send(new ScheduleKeyDeletionCommand({ KeyId: m.KeyId }));
    expect(s.KeyId).toBe(m.Arn);
    expect(s.KeyState).toBe('PendingDeletion');
    expect(s.PendingWindowInDays).toBe(30);
    const days = (s.DeletionDate!.getTime() - before) / 86_400_000;
    expect(days).toBeGreaterThan(29.99);
    expect(days).toBeLessThan(30.01);
    const d = (await t.client.send(new DescribeKeyCommand({ KeyId: m.KeyId }))).KeyMetadata!;
    expect(d.KeyState).toBe('PendingDeletion');
    expect(d.DeletionDate!.getTime()).toBe(s.DeletionDate!.getTime());
    expect(d.PendingDeletionWindowInDays).toBe(30);

    for (const call of [
      new EncryptCommand({ KeyId: m.KeyId, Plaintext: Buffer.from('x') }),
      new EnableKeyCommand({ KeyId: m.KeyId }),
      new DisableKeyCommand({ KeyId: m.KeyId }),
      new UpdateKeyDescriptionCommand({ KeyId: m.KeyId, Description: 'x' }),
      new ScheduleKeyDeletionCommand({ KeyId: m.KeyId, PendingWindowInDays: 7 }),
    ]) {
      expect(await errorOf(t.client.send(call as never))).toMatchObject({ name: 'KMSInvalidStateException', status: 400 });
    }
    const c = await t.client.send(new CancelKeyDeletionCommand({ KeyId: m.KeyId }));
    expect(c.KeyId).toBe(m.Arn);
    const after = (await t.client.send(new DescribeKeyCommand({ KeyId: m.KeyId }))).KeyMetadata!;
    expect(after.KeyState).toBe('Disabled');
    expect(after.DeletionDate).toBeUndefined();
    expect((await errorOf(t.client.send(new CancelKeyDeletionCommand({ KeyId: m.KeyId })))).name).toBe('KMSInvalidStateException');
  });

  it('ScheduleKeyDeletion accepts the 7-day minimum', async () => {
    const m = await createKey();
    const s = await t.client.send(new ScheduleKeyDeletionCommand({ KeyId: m.KeyId, PendingWindowInDays: 7 }));
    expect(s.PendingWindowInDays).toBe(7);
  });
});

describe('DescribeCustomKeyStores', () => {
  it('lists none: every key lives in the configured token', async () => {
    expect(await t.client.send(new DescribeCustomKeyStoresCommand({}))).toMatchObject({ CustomKeyStores: [], Truncated: false });
    for (const named of [{ CustomKeyStoreId: 'cks-1234567890abcdef0' }, { CustomKeyStoreName: 'my-store' }]) {
      expect(await errorOf(t.client.send(new DescribeCustomKeyStoresCommand(named)))).toMatchObject({ name: 'CustomKeyStoreNotFoundException', status: 400 });
    }
    expect((await errorOf(t.client.send(new DescribeCustomKeyStoresCommand({ Marker: 'abc' })))).name).toBe('InvalidMarkerException');
  });
});
