/**
 * Encryption context keys that differ only in case, end to end through @aws-sdk/client-kms (the
 * JSON body keeps both members, in the order given): grant constraints and key-policy conditions
 * decide the same whatever the order, and as strictly as the worst reading. Also the key policy
 * AWS KMS refuses as overly permissive (ForAllValues on kms:EncryptionContext:<key>).
 */
import { CreateGrantCommand, CreateKeyCommand, EncryptCommand, PutKeyPolicyCommand } from '@aws-sdk/client-kms';
import { describe, expect, it } from 'vitest';
import { clientsByPrincipal, testUser, writePrincipalsFile } from './helpers/principals.js';
import { ACCOUNT_ID, errorOf, useTestService } from './helpers/service.js';

const ROOT_ARN = `arn:aws:iam::${ACCOUNT_ID}:root`;
const tenantUser = testUser('tenant');
const t = useTestService(() => ({ P11KMS_PRINCIPALS_FILE: writePrincipalsFile([tenantUser]) }));
const as = clientsByPrincipal(t);
const bytes = (s: string) => new TextEncoder().encode(s);
const rootStatement = { Sid: 'Enable IAM User Permissions', Effect: 'Allow', Principal: { AWS: ROOT_ARN }, Action: 'kms:*', Resource: '*' };
const policyText = (...statements: unknown[]) => JSON.stringify({ Version: '2012-10-17', Statement: statements });

const forward = { TENANT: 'evil', tenant: 'a' };
const backward = { tenant: 'a', TENANT: 'evil' };

describe('a grant with EncryptionContextEquals {tenant: a}', () => {
  it('refuses {"TENANT":"evil","tenant":"a"} in either order, and allows the pair in any key case', async () => {
    const key = (await t.client.send(new CreateKeyCommand({}))).KeyMetadata!;
    await t.client.send(
      new CreateGrantCommand({ KeyId: key.KeyId, GranteePrincipal: tenantUser.arn, Operations: ['Encrypt'], Constraints: { EncryptionContextEquals: { tenant: 'a' } } }),
    );
    for (const context of [forward, backward]) {
      const denied = await errorOf(as(tenantUser).send(new EncryptCommand({ KeyId: key.KeyId, Plaintext: bytes('x'), EncryptionContext: context })));
      expect(denied.name).toBe('AccessDeniedException');
    }
    await as(tenantUser).send(new EncryptCommand({ KeyId: key.KeyId, Plaintext: bytes('x'), EncryptionContext: { tenant: 'a' } }));
    await as(tenantUser).send(new EncryptCommand({ KeyId: key.KeyId, Plaintext: bytes('x'), EncryptionContext: { Tenant: 'a' } }));
  });
});

describe('a key-policy condition on kms:EncryptionContext:tenant', () => {
  it('gives the same decision in both orders: an Allow needs every value, a Deny any', async () => {
    const allowTenantA = { Effect: 'Allow', Principal: { AWS: tenantUser.arn }, Action: 'kms:Encrypt', Resource: '*', Condition: { StringEquals: { 'kms:EncryptionContext:tenant': 'a' } } };
    const key = (await t.client.send(new CreateKeyCommand({ Policy: policyText(rootStatement, allowTenantA) }))).KeyMetadata!;
    for (const context of [forward, backward]) {
      expect((await errorOf(as(tenantUser).send(new EncryptCommand({ KeyId: key.KeyId, Plaintext: bytes('x'), EncryptionContext: context })))).name).toBe(
        'AccessDeniedException',
      );
    }
    await as(tenantUser).send(new EncryptCommand({ KeyId: key.KeyId, Plaintext: bytes('x'), EncryptionContext: { TENANT: 'a', tenant: 'a' } }));

    const denyEvil = { Effect: 'Deny', Principal: { AWS: tenantUser.arn }, Action: 'kms:Encrypt', Resource: '*', Condition: { StringEquals: { 'kms:EncryptionContext:tenant': 'evil' } } };
    const allowAll = { Effect: 'Allow', Principal: { AWS: tenantUser.arn }, Action: 'kms:Encrypt', Resource: '*' };
    await t.client.send(new PutKeyPolicyCommand({ KeyId: key.KeyId, Policy: policyText(rootStatement, allowAll, denyEvil) }));
    for (const context of [forward, backward]) {
      const denied = await errorOf(as(tenantUser).send(new EncryptCommand({ KeyId: key.KeyId, Plaintext: bytes('x'), EncryptionContext: context })));
      expect(denied.message).toContain('with an explicit deny in a resource-based policy');
    }
  });

  it('may not use ForAllValues (AWS KMS: OverlyPermissiveCondition)', async () => {
    const key = (await t.client.send(new CreateKeyCommand({}))).KeyMetadata!;
    const loose = { Effect: 'Allow', Principal: { AWS: tenantUser.arn }, Action: 'kms:Encrypt', Resource: '*', Condition: { 'ForAllValues:StringEquals': { 'kms:EncryptionContext:tenant': 'a' } } };
    const refused = await errorOf(t.client.send(new PutKeyPolicyCommand({ KeyId: key.KeyId, Policy: policyText(rootStatement, loose) })));
    expect(refused).toMatchObject({ name: 'MalformedPolicyDocumentException', status: 400 });
    expect(refused.message).toMatch(/^OverlyPermissiveCondition:EncryptionContext: /);
    expect((await errorOf(t.client.send(new CreateKeyCommand({ Policy: policyText(rootStatement, loose) })))).name).toBe('MalformedPolicyDocumentException');
  });
});
