/**
 * Grants end to end through @aws-sdk/client-kms: CreateGrant (operations, constraints, Name
 * idempotency, tokens, DryRun, grants created through a grant), ListGrants, ListRetirableGrants,
 * RetireGrant (by token and by key + grant ID, and who may), RevokeGrant, and cross-account grants.
 */
import {
  CreateGrantCommand,
  CreateKeyCommand,
  DecryptCommand,
  DisableKeyCommand,
  EncryptCommand,
  GenerateDataKeyCommand,
  ListGrantsCommand,
  ListRetirableGrantsCommand,
  RetireGrantCommand,
  RevokeGrantCommand,
  type KeyMetadata,
} from '@aws-sdk/client-kms';
import path from 'node:path';
import Database from 'better-sqlite3';
import { beforeEach, describe, expect, it } from 'vitest';
import { MAX_GRANTS_PER_KEY } from '../src/kms/operations/grants.js';
import { DATABASE_FILE } from '../src/service.js';
import { OTHER_ACCOUNT_ID, clientsByPrincipal, identityPolicy, testUser, writePrincipalsFile } from './helpers/principals.js';
import { ACCOUNT_ID, errorOf, useTestService } from './helpers/service.js';

const ROOT_ARN = `arn:aws:iam::${ACCOUNT_ID}:root`;
const operator = testUser('operator', [identityPolicy({ Effect: 'Allow', Action: 'kms:ListRetirableGrants', Resource: '*' })]);
const worker = testUser('worker');
const helper = testUser('helper');
const foreign = testUser('foreign', [], OTHER_ACCOUNT_ID);

const t = useTestService(() => ({ P11KMS_PRINCIPALS_FILE: writePrincipalsFile([operator, worker, helper, foreign]) }));
const as = clientsByPrincipal(t);
let key: KeyMetadata;
const bytes = (s: string) => new TextEncoder().encode(s);

beforeEach(async () => {
  key = (await t.client.send(new CreateKeyCommand({}))).KeyMetadata!;
});

const grant = (input: Partial<ConstructorParameters<typeof CreateGrantCommand>[0]>) =>
  t.client.send(new CreateGrantCommand({ KeyId: key.KeyId, GranteePrincipal: worker.arn, Operations: ['Encrypt'], ...input }));

describe('CreateGrant and using grants', () => {
  it('gives the grantee exactly the granted operations, at once with a grant token', async () => {
    const denied = await errorOf(as(worker).send(new EncryptCommand({ KeyId: key.KeyId, Plaintext: bytes('x') })));
    expect(denied.name).toBe('AccessDeniedException');

    const created = await grant({ Operations: ['Encrypt', 'Decrypt'] });
    expect(created.GrantId).toMatch(/^[0-9a-f]{64}$/);
    expect(created.GrantToken).toBeTruthy();
    const sealed = await as(worker).send(new EncryptCommand({ KeyId: key.KeyId, Plaintext: bytes('x'), GrantTokens: [created.GrantToken!] }));
    await as(worker).send(new DecryptCommand({ CiphertextBlob: sealed.CiphertextBlob }));
    const notGranted = await errorOf(as(worker).send(new GenerateDataKeyCommand({ KeyId: key.KeyId, KeySpec: 'AES_256' })));
    expect(notGranted.message).toContain('kms:GenerateDataKey');
    expect((await errorOf(as(helper).send(new EncryptCommand({ KeyId: key.KeyId, Plaintext: bytes('x') })))).name).toBe('AccessDeniedException');
  });

  it('refuses grant tokens it did not issue', async () => {
    const err = await errorOf(t.client.send(new EncryptCommand({ KeyId: key.KeyId, Plaintext: bytes('x'), GrantTokens: ['bogus'] })));
    expect(err.name).toBe('InvalidGrantTokenException');
  });

  it('enforces EncryptionContextEquals', async () => {
    await grant({ Constraints: { EncryptionContextEquals: { app: 'a' } } });
    await as(worker).send(new EncryptCommand({ KeyId: key.KeyId, Plaintext: bytes('x'), EncryptionContext: { app: 'a' } }));
    expect((await errorOf(as(worker).send(new EncryptCommand({ KeyId: key.KeyId, Plaintext: bytes('x'), EncryptionContext: { app: 'a', b: '1' } })))).name).toBe(
      'AccessDeniedException',
    );
    expect((await errorOf(as(worker).send(new EncryptCommand({ KeyId: key.KeyId, Plaintext: bytes('x') })))).name).toBe('AccessDeniedException');
  });

  it('enforces EncryptionContextSubset', async () => {
    await grant({ Constraints: { EncryptionContextSubset: { app: 'a' } } });
    await as(worker).send(new EncryptCommand({ KeyId: key.KeyId, Plaintext: bytes('x'), EncryptionContext: { app: 'a', extra: '1' } }));
    expect((await errorOf(as(worker).send(new EncryptCommand({ KeyId: key.KeyId, Plaintext: bytes('x'), EncryptionContext: { app: 'b' } })))).name).toBe(
      'AccessDeniedException',
    );
  });

  it('is idempotent by Name and terms: same GrantId, new token', async () => {
    const first = await grant({ Name: 'worker-encrypt' });
    const again = await grant({ Name: 'worker-encrypt' });
    expect(again.GrantId).toBe(first.GrantId);
    expect(again.GrantToken).not.toBe(first.GrantToken);
    const different = await grant({ Name: 'worker-encrypt', Operations: ['Decrypt'] });
    expect(different.GrantId).not.toBe(first.GrantId);
    expect((await t.client.send(new ListGrantsCommand({ KeyId: key.KeyId }))).Grants).toHaveLength(2);
  });

  it('validates operations against the key and refuses grants on a disabled key', async () => {
    const invalid = await errorOf(grant({ Operations: ['Sign'] }));
    expect(invalid.name).toBe('ValidationException');
    await t.client.send(new DisableKeyCommand({ KeyId: key.KeyId }));
    expect((await errorOf(grant({}))).name).toBe('DisabledException');
  });

  it('refuses more than 50,000 grants on a key', async () => {
    const db = new Database(path.join(t.dataDir, DATABASE_FILE));
    const insert = db.prepare(
      `INSERT INTO grants (grant_id, key_id, name, grantee_principal, retiring_principal, issuing_account, operations, constraints, created_at)
       VALUES (?, ?, NULL, ?, NULL, ?, '["Encrypt"]', NULL, 0)`,
    );
    db.transaction(() => {
      for (let i = 0; i < MAX_GRANTS_PER_KEY; i++) insert.run(i.toString(16).padStart(64, '0'), key.KeyId, helper.arn, ROOT_ARN);
    })();
    db.close();
    expect(await errorOf(grant({}))).toMatchObject({ name: 'LimitExceededException' });
  });

  it('DryRun creates nothing', async () => {
    expect(await errorOf(grant({ DryRun: true }))).toMatchObject({ name: 'DryRunOperationException', status: 400 });
    expect((await t.client.send(new ListGrantsCommand({ KeyId: key.KeyId }))).Grants).toEqual([]);
    expect((await errorOf(as(helper).send(new CreateGrantCommand({ KeyId: key.KeyId, GranteePrincipal: worker.arn, Operations: ['Encrypt'], DryRun: true })))).name).toBe(
      'AccessDeniedException',
    );
  });

  it('lets a grantee with CreateGrant create grants no more permissive than its own', async () => {
    await grant({ Operations: ['Encrypt', 'Decrypt', 'CreateGrant'] });
    await as(worker).send(new CreateGrantCommand({ KeyId: key.KeyId, GranteePrincipal: helper.arn, Operations: ['Encrypt'] }));
    await as(helper).send(new EncryptCommand({ KeyId: key.KeyId, Plaintext: bytes('x') }));
    const wider = await errorOf(as(worker).send(new CreateGrantCommand({ KeyId: key.KeyId, GranteePrincipal: helper.arn, Operations: ['GenerateDataKey'] })));
    expect(wider.name).toBe('AccessDeniedException');
  });

  it('works across accounts with the key ARN, without an identity policy', async () => {
    const denied = await errorOf(as(foreign).send(new EncryptCommand({ KeyId: key.Arn, Plaintext: bytes('x') })));
    expect(denied.name).toBe('AccessDeniedException');
    await t.client.send(new CreateGrantCommand({ KeyId: key.Arn, GranteePrincipal: foreign.arn, Operations: ['Encrypt'] }));
    await as(foreign).send(new EncryptCommand({ KeyId: key.Arn, Plaintext: bytes('x') }));
  });
});

describe('ListGrants and ListRetirableGrants', () => {
  it('lists grants with their terms, filters and pages', async () => {
    const a = await grant({ Name: 'a', RetiringPrincipal: operator.arn, Constraints: { EncryptionContextSubset: { k: 'v' } } });
    const b = await grant({ GranteePrincipal: helper.arn, Operations: ['Decrypt', 'DescribeKey'] });
    const all = (await t.client.send(new ListGrantsCommand({ KeyId: key.Arn }))).Grants!;
    expect(all).toHaveLength(2);
    expect(all.find((g) => g.GrantId === a.GrantId)).toMatchObject({
      KeyId: key.Arn,
      Name: 'a',
      GranteePrincipal: worker.arn,
      RetiringPrincipal: operator.arn,
      IssuingAccount: ROOT_ARN,
      Operations: ['Encrypt'],
      Constraints: { EncryptionContextSubset: { k: 'v' } },
      CreationDate: expect.any(Date),
    });
    expect((await t.client.send(new ListGrantsCommand({ KeyId: key.KeyId, GrantId: b.GrantId }))).Grants!.map((g) => g.GrantId)).toEqual([b.GrantId]);
    expect((await t.client.send(new ListGrantsCommand({ KeyId: key.KeyId, GranteePrincipal: helper.arn }))).Grants!.map((g) => g.GrantId)).toEqual([b.GrantId]);
    const page1 = await t.client.send(new ListGrantsCommand({ KeyId: key.KeyId, Limit: 1 }));
    expect(page1).toMatchObject({ Truncated: true, Grants: [expect.anything()] });
    const page2 = await t.client.send(new ListGrantsCommand({ KeyId: key.KeyId, Limit: 1, Marker: page1.NextMarker }));
    expect(page2.Truncated).toBe(false);
    expect([page1.Grants![0]!.GrantId, page2.Grants![0]!.GrantId].sort()).toEqual([a.GrantId, b.GrantId].sort());
    // A marker belongs to its key's listing.
    const otherKey = (await t.client.send(new CreateKeyCommand({}))).KeyMetadata!;
    expect((await errorOf(t.client.send(new ListGrantsCommand({ KeyId: otherKey.KeyId, Limit: 1, Marker: page1.NextMarker })))).name).toBe('InvalidMarkerException');

    const retirable = await as(operator).send(new ListRetirableGrantsCommand({ RetiringPrincipal: operator.arn }));
    expect(retirable.Grants!.map((g) => g.GrantId)).toContain(a.GrantId);
    expect((await errorOf(as(worker).send(new ListGrantsCommand({ KeyId: key.KeyId })))).name).toBe('AccessDeniedException');
  });
});

describe('RetireGrant and RevokeGrant', () => {
  it('lets the retiring principal retire by token, after which the grant is gone', async () => {
    const g = await grant({ RetiringPrincipal: operator.arn });
    await as(worker).send(new EncryptCommand({ KeyId: key.KeyId, Plaintext: bytes('x') }));
    expect(await errorOf(as(operator).send(new RetireGrantCommand({ GrantToken: g.GrantToken, DryRun: true })))).toMatchObject({ name: 'DryRunOperationException' });
    await as(operator).send(new RetireGrantCommand({ GrantToken: g.GrantToken }));
    expect((await errorOf(as(worker).send(new EncryptCommand({ KeyId: key.KeyId, Plaintext: bytes('x') })))).name).toBe('AccessDeniedException');
    expect((await errorOf(as(operator).send(new RetireGrantCommand({ GrantToken: g.GrantToken })))).name).toBe('NotFoundException');
  });

  it('lets the grantee retire a grant that includes RetireGrant, by key ARN and grant ID', async () => {
    const g = await grant({ Operations: ['Encrypt', 'RetireGrant'] });
    await as(worker).send(new RetireGrantCommand({ KeyId: key.Arn, GrantId: g.GrantId }));
    expect((await t.client.send(new ListGrantsCommand({ KeyId: key.KeyId }))).Grants).toEqual([]);
  });

  it('refuses others', async () => {
    const g = await grant({ RetiringPrincipal: operator.arn });
    expect((await errorOf(as(worker).send(new RetireGrantCommand({ GrantToken: g.GrantToken })))).name).toBe('AccessDeniedException');
    expect((await errorOf(as(helper).send(new RetireGrantCommand({ KeyId: key.Arn, GrantId: g.GrantId })))).name).toBe('AccessDeniedException');
    expect((await errorOf(t.client.send(new RetireGrantCommand({ GrantToken: 'not-a-token' })))).name).toBe('InvalidGrantTokenException');
    // The key's account may retire any of its grants.
    await t.client.send(new RetireGrantCommand({ KeyId: key.Arn, GrantId: g.GrantId }));
  });

  it('revokes with RevokeGrant (DryRun first)', async () => {
    const g = await grant({});
    expect(await errorOf(t.client.send(new RevokeGrantCommand({ KeyId: key.KeyId, GrantId: g.GrantId, DryRun: true })))).toMatchObject({ name: 'DryRunOperationException', status: 400 });
    await as(worker).send(new EncryptCommand({ KeyId: key.KeyId, Plaintext: bytes('x') }));
    expect((await errorOf(as(worker).send(new RevokeGrantCommand({ KeyId: key.KeyId, GrantId: g.GrantId })))).name).toBe('AccessDeniedException');
    await t.client.send(new RevokeGrantCommand({ KeyId: key.KeyId, GrantId: g.GrantId }));
    expect((await errorOf(as(worker).send(new EncryptCommand({ KeyId: key.KeyId, Plaintext: bytes('x') })))).name).toBe('AccessDeniedException');
    expect((await errorOf(t.client.send(new RevokeGrantCommand({ KeyId: key.KeyId, GrantId: g.GrantId })))).name).toBe('NotFoundException');
    expect((await errorOf(t.client.send(new RevokeGrantCommand({ KeyId: key.KeyId, GrantId: 'nope' })))).name).toBe('InvalidGrantIdException');
  });
});
