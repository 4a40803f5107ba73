/**
 * Operations that touch more than one resource, end to end through @aws-sdk/client-kms: each
 * resource AWS's "Required permissions" names for the operation is checked, so an explicit Deny on
 * that resource alone (the key policy for keys, an identity policy for alias ARNs) refuses the
 * call, while the same call without that Deny succeeds. Also the alias-redirect attack of issue 9
 * and the audit record's resources for UpdateAlias.
 */
import fs from 'node:fs';
import path from 'node:path';
import {
  CreateAliasCommand,
  CreateGrantCommand,
  CreateKeyCommand,
  DeleteAliasCommand,
  EncryptCommand,
  ListAliasesCommand,
  ReEncryptCommand,
  RetireGrantCommand,
  RevokeGrantCommand,
  UpdateAliasCommand,
} from '@aws-sdk/client-kms';
import { describe, expect, it } from 'vitest';
import { clientsByPrincipal, identityPolicy, testUser, writePrincipalsFile, type TestPrincipal } from './helpers/principals.js';
import { ACCOUNT_ID, REGION, errorOf, useTestService } from './helpers/service.js';

const ROOT_ARN = `arn:aws:iam::${ACCOUNT_ID}:root`;
const aliasArn = (name: string) => `arn:aws:kms:${REGION}:${ACCOUNT_ID}:${name}`;

/** May do everything by its identity policy, except alias actions on aliases named alias/blocked-*. */
const actor = testUser('actor', [
  identityPolicy(
    { Effect: 'Allow', Action: 'kms:*', Resource: '*' },
    { Effect: 'Deny', Action: ['kms:CreateAlias', 'kms:UpdateAlias', 'kms:DeleteAlias'], Resource: aliasArn('alias/blocked-*') },
  ),
]);
/** Named by grants only: no identity policy at all. */
const retirer = testUser('retirer');
const attacker = testUser('attacker', [identityPolicy({ Effect: 'Allow', Action: 'kms:*', Resource: '*' })]);
const victim = testUser('victim', [identityPolicy({ Effect: 'Allow', Action: 'kms:*', Resource: '*' })]);

const t = useTestService(() => ({ P11KMS_PRINCIPALS_FILE: writePrincipalsFile([actor, retirer, attacker, victim]) }));
const as = clientsByPrincipal(t);
const bytes = (s: string) => new TextEncoder().encode(s);
const rootStatement = { Sid: 'Enable IAM User Permissions', Effect: 'Allow', Principal: { AWS: ROOT_ARN }, Action: 'kms:*', Resource: '*' };

/** A key with the default policy, plus a Deny of `actions` to `who` when given. */
async function keyDenying(who?: TestPrincipal, actions?: string | string[]): Promise<{ KeyId: string; Arn: string }> {
  const statements: unknown[] = [rootStatement];
  if (who) statements.push({ Sid: 'Deny', Effect: 'Deny', Principal: { AWS: who.arn }, Action: actions, Resource: '*' });
  const meta = (await t.client.send(new CreateKeyCommand({ Policy: JSON.stringify({ Version: '2012-10-17', Statement: statements }) }))).KeyMetadata!;
  return { KeyId: meta.KeyId!, Arn: meta.Arn! };
}

let aliasCount = 0;
const freshAlias = (prefix = 'alias/ok') => `${prefix}-${++aliasCount}`;

async function targetOf(aliasName: string): Promise<string | undefined> {
  const { Aliases } = await t.client.send(new ListAliasesCommand({ Limit: 100 }));
  return Aliases!.find((a) => a.AliasName === aliasName)?.TargetKeyId;
}

const explicitDeny = (who: TestPrincipal, action: string, resource: string, where: 'resource' | 'identity') =>
  `User: ${who.arn} is not authorized to perform: kms:${action} on resource: ${resource} with an explicit deny in ${where === 'resource' ? 'a resource-based' : 'an identity-based'} policy`;

describe('CreateAlias: kms:CreateAlias on the alias and on the key', () => {
  it('succeeds without a Deny', async () => {
    const key = await keyDenying();
    const name = freshAlias();
    await as(actor).send(new CreateAliasCommand({ AliasName: name, TargetKeyId: key.KeyId }));
    expect(await targetOf(name)).toBe(key.KeyId);
  });

  it('is refused by an identity-policy Deny on the alias ARN', async () => {
    const key = await keyDenying();
    const name = freshAlias('alias/blocked');
    const denied = await errorOf(as(actor).send(new CreateAliasCommand({ AliasName: name, TargetKeyId: key.KeyId })));
    expect(denied).toMatchObject({ name: 'AccessDeniedException', message: explicitDeny(actor, 'CreateAlias', aliasArn(name), 'identity') });
    expect(await targetOf(name)).toBeUndefined();
  });

  it('is refused by a key-policy Deny on the key', async () => {
    const key = await keyDenying(actor, 'kms:CreateAlias');
    const name = freshAlias();
    const denied = await errorOf(as(actor).send(new CreateAliasCommand({ AliasName: name, TargetKeyId: key.KeyId })));
    expect(denied).toMatchObject({ name: 'AccessDeniedException', message: explicitDeny(actor, 'CreateAlias', key.Arn, 'resource') });
    expect(await targetOf(name)).toBeUndefined();
  });
});

describe('DeleteAlias: kms:DeleteAlias on the alias and on its key', () => {
  async function aliasTo(key: { KeyId: string }, prefix?: string): Promise<string> {
    const name = freshAlias(prefix);
    await t.client.send(new CreateAliasCommand({ AliasName: name, TargetKeyId: key.KeyId }));
    return name;
  }

  it('succeeds without a Deny', async () => {
    const name = await aliasTo(await keyDenying());
    await as(actor).send(new DeleteAliasCommand({ AliasName: name }));
    expect(await targetOf(name)).toBeUndefined();
  });

  it('is refused by an identity-policy Deny on the alias ARN', async () => {
    const key = await keyDenying();
    const name = await aliasTo(key, 'alias/blocked');
    const denied = await errorOf(as(actor).send(new DeleteAliasCommand({ AliasName: name })));
    expect(denied).toMatchObject({ name: 'AccessDeniedException', message: explicitDeny(actor, 'DeleteAlias', aliasArn(name), 'identity') });
    expect(await targetOf(name)).toBe(key.KeyId);
  });

  it('is refused by a key-policy Deny on the key', async () => {
    const key = await keyDenying(actor, 'kms:DeleteAlias');
    const name = await aliasTo(key);
    const denied = await errorOf(as(actor).send(new DeleteAliasCommand({ AliasName: name })));
    expect(denied).toMatchObject({ name: 'AccessDeniedException', message: explicitDeny(actor, 'DeleteAlias', key.Arn, 'resource') });
    expect(await targetOf(name)).toBe(key.KeyId);
  });
});

describe('UpdateAlias: kms:UpdateAlias on the alias, its current key and the new key', () => {
  async function aliasTo(key: { KeyId: string }, prefix?: string): Promise<string> {
    const name = freshAlias(prefix);
    await t.client.send(new CreateAliasCommand({ AliasName: name, TargetKeyId: key.KeyId }));
    return name;
  }

  it('succeeds without a Deny', async () => {
    const [current, next] = [await keyDenying(), await keyDenying()];
    const name = await aliasTo(current);
    await as(actor).send(new UpdateAliasCommand({ AliasName: name, TargetKeyId: next.KeyId }));
    expect(await targetOf(name)).toBe(next.KeyId);
  });

  it('is refused by an identity-policy Deny on the alias ARN', async () => {
    const [current, next] = [await keyDenying(), await keyDenying()];
    const name = await aliasTo(current, 'alias/blocked');
    const denied = await errorOf(as(actor).send(new UpdateAliasCommand({ AliasName: name, TargetKeyId: next.KeyId })));
    expect(denied).toMatchObject({ name: 'AccessDeniedException', message: explicitDeny(actor, 'UpdateAlias', aliasArn(name), 'identity') });
    expect(await targetOf(name)).toBe(current.KeyId);
  });

  it('is refused by a key-policy Deny on the current key', async () => {
    const [current, next] = [await keyDenying(actor, 'kms:UpdateAlias'), await keyDenying()];
    const name = await aliasTo(current);
    const denied = await errorOf(as(actor).send(new UpdateAliasCommand({ AliasName: name, TargetKeyId: next.KeyId })));
    expect(denied).toMatchObject({ name: 'AccessDeniedException', message: explicitDeny(actor, 'UpdateAlias', current.Arn, 'resource') });
    expect(await targetOf(name)).toBe(current.KeyId);
  });

  it('is refused by a key-policy Deny on the new key', async () => {
    const [current, next] = [await keyDenying(), await keyDenying(actor, 'kms:UpdateAlias')];
    const name = await aliasTo(current);
    const denied = await errorOf(as(actor).send(new UpdateAliasCommand({ AliasName: name, TargetKeyId: next.KeyId })));
    expect(denied).toMatchObject({ name: 'AccessDeniedException', message: explicitDeny(actor, 'UpdateAlias', next.Arn, 'resource') });
    expect(await targetOf(name)).toBe(current.KeyId);
  });

  it('cannot redirect a victim’s alias to an attacker’s key (issue 9)', async () => {
    // The victim's key policy denies the attacker everything; the attacker's IAM policy allows kms:*.
    const victimKey = await keyDenying(attacker, 'kms:*');
    const name = await aliasTo(victimKey, 'alias/victim');
    const attackerKey = (await as(attacker).send(new CreateKeyCommand({}))).KeyMetadata!;

    const denied = await errorOf(as(attacker).send(new UpdateAliasCommand({ AliasName: name, TargetKeyId: attackerKey.KeyId })));
    expect(denied).toMatchObject({ name: 'AccessDeniedException', message: explicitDeny(attacker, 'UpdateAlias', victimKey.Arn, 'resource') });
    // The victim's next Encrypt through the alias still uses the victim's key.
    const sealed = await as(victim).send(new EncryptCommand({ KeyId: name, Plaintext: bytes('victim data') }));
    expect(sealed.KeyId).toBe(victimKey.Arn);
    // Nor can the attacker take the alias over by deleting it.
    expect((await errorOf(as(attacker).send(new DeleteAliasCommand({ AliasName: name })))).name).toBe('AccessDeniedException');
    expect(await targetOf(name)).toBe(victimKey.KeyId);
  });

  it('names both keys in the audit record’s resources, allowed or refused', async () => {
    const [current, next] = [await keyDenying(), await keyDenying()];
    const name = await aliasTo(current);
    const done = await as(actor).send(new UpdateAliasCommand({ AliasName: name, TargetKeyId: next.KeyId }));
    // Refused on the (now) current key: the record still names both.
    const guarded = await keyDenying(actor, 'kms:UpdateAlias');
    const guardedAlias = await aliasTo(guarded);
    await errorOf(as(actor).send(new UpdateAliasCommand({ AliasName: guardedAlias, TargetKeyId: next.KeyId })));

    const records = auditRecords().filter((r) => r.eventName === 'UpdateAlias');
    const resourcesOf = (r: Record<string, any> | undefined) => r?.resources?.map((x: { ARN: string }) => x.ARN).sort();
    expect(resourcesOf(records.find((r) => r.requestID === done.$metadata.requestId))).toEqual([current.Arn, next.Arn].sort());
    const refused = records.find((r) => r.requestParameters?.aliasName === guardedAlias);
    expect(refused?.errorCode).toBe('AccessDenied');
    expect(resourcesOf(refused)).toEqual([guarded.Arn, next.Arn].sort());
  });
});

describe('ListAliases: kms:ListAliases in an IAM policy only, with or without KeyId', () => {
  it('lists a key’s aliases whatever the key policy says; without an IAM Allow, nothing', async () => {
    const key = await keyDenying(actor, 'kms:*');
    const name = freshAlias();
    await t.client.send(new CreateAliasCommand({ AliasName: name, TargetKeyId: key.KeyId }));
    const listed = await as(actor).send(new ListAliasesCommand({ KeyId: key.KeyId }));
    expect(listed.Aliases!.map((a) => a.AliasName)).toEqual([name]);
    const denied = await errorOf(as(retirer).send(new ListAliasesCommand({ KeyId: key.KeyId })));
    expect(denied).toMatchObject({
      name: 'AccessDeniedException',
      message: `User: ${retirer.arn} is not authorized to perform: kms:ListAliases on resource: * because no identity-based policy allows the kms:ListAliases action`,
    });
  });
});

describe('ReEncrypt: kms:ReEncryptFrom on the source key, kms:ReEncryptTo on the destination key', () => {
  async function sealedUnder(key: { KeyId: string }) {
    return (await t.client.send(new EncryptCommand({ KeyId: key.KeyId, Plaintext: bytes('moving') }))).CiphertextBlob!;
  }

  it('succeeds without a Deny', async () => {
    const [source, destination] = [await keyDenying(), await keyDenying()];
    const out = await as(actor).send(new ReEncryptCommand({ CiphertextBlob: await sealedUnder(source), DestinationKeyId: destination.KeyId }));
    expect(out).toMatchObject({ SourceKeyId: source.Arn, KeyId: destination.Arn });
  });

  it('is refused by a key-policy Deny of kms:ReEncryptFrom on the source key', async () => {
    const [source, destination] = [await keyDenying(actor, 'kms:ReEncryptFrom'), await keyDenying()];
    const blob = await sealedUnder(source);
    const denied = await errorOf(as(actor).send(new ReEncryptCommand({ CiphertextBlob: blob, DestinationKeyId: destination.KeyId })));
    expect(denied.name).toBe('AccessDeniedException');
    expect(denied.message).toContain(`${actor.arn} is not authorized to perform: kms:ReEncryptFrom`);
    // Named explicitly, the source key's denial shows as such.
    const named = await errorOf(as(actor).send(new ReEncryptCommand({ CiphertextBlob: blob, SourceKeyId: source.KeyId, DestinationKeyId: destination.KeyId })));
    expect(named).toMatchObject({ name: 'AccessDeniedException', message: explicitDeny(actor, 'ReEncryptFrom', source.Arn, 'resource') });
  });

  it('is refused by a key-policy Deny of kms:ReEncryptTo on the destination key', async () => {
    const [source, destination] = [await keyDenying(), await keyDenying(actor, 'kms:ReEncryptTo')];
    const denied = await errorOf(as(actor).send(new ReEncryptCommand({ CiphertextBlob: await sealedUnder(source), DestinationKeyId: destination.KeyId })));
    expect(denied).toMatchObject({ name: 'AccessDeniedException', message: explicitDeny(actor, 'ReEncryptTo', destination.Arn, 'resource') });
  });
});

describe('grants: kms:CreateGrant and kms:RevokeGrant on the key; RetireGrant by the grant', () => {
  const grantOn = (key: { KeyId: string }, extra: { RetiringPrincipal?: string; Operations?: Array<'Encrypt' | 'RetireGrant'> } = {}) =>
    t.client.send(new CreateGrantCommand({ KeyId: key.KeyId, GranteePrincipal: retirer.arn, Operations: extra.Operations ?? ['Encrypt'], RetiringPrincipal: extra.RetiringPrincipal }));

  it('CreateGrant succeeds without a Deny and is refused by a key-policy Deny', async () => {
    const open = await keyDenying();
    await as(actor).send(new CreateGrantCommand({ KeyId: open.KeyId, GranteePrincipal: retirer.arn, Operations: ['Encrypt'] }));
    const guarded = await keyDenying(actor, 'kms:CreateGrant');
    const denied = await errorOf(as(actor).send(new CreateGrantCommand({ KeyId: guarded.KeyId, GranteePrincipal: retirer.arn, Operations: ['Encrypt'] })));
    expect(denied).toMatchObject({ name: 'AccessDeniedException', message: explicitDeny(actor, 'CreateGrant', guarded.Arn, 'resource') });
  });

  it('RevokeGrant succeeds without a Deny and is refused by a key-policy Deny', async () => {
    const open = await keyDenying();
    await as(actor).send(new RevokeGrantCommand({ KeyId: open.KeyId, GrantId: (await grantOn(open)).GrantId }));
    const guarded = await keyDenying(actor, 'kms:RevokeGrant');
    const grant = await grantOn(guarded);
    const denied = await errorOf(as(actor).send(new RevokeGrantCommand({ KeyId: guarded.KeyId, GrantId: grant.GrantId })));
    expect(denied).toMatchObject({ name: 'AccessDeniedException', message: explicitDeny(actor, 'RevokeGrant', guarded.Arn, 'resource') });
    // Still there: it can be revoked by the root.
    await t.client.send(new RevokeGrantCommand({ KeyId: guarded.KeyId, GrantId: grant.GrantId }));
  });

  it('RetireGrant by the retiring principal needs no policy, but a key-policy Deny refuses it', async () => {
    const open = await keyDenying();
    await as(retirer).send(new RetireGrantCommand({ GrantToken: (await grantOn(open, { RetiringPrincipal: retirer.arn })).GrantToken }));
    const guarded = await keyDenying(retirer, 'kms:RetireGrant');
    const grant = await grantOn(guarded, { RetiringPrincipal: retirer.arn });
    const denied = await errorOf(as(retirer).send(new RetireGrantCommand({ GrantToken: grant.GrantToken })));
    expect(denied).toMatchObject({ name: 'AccessDeniedException', message: explicitDeny(retirer, 'RetireGrant', guarded.Arn, 'resource') });
  });

  it('RetireGrant by a grantee whose grant includes RetireGrant: the same', async () => {
    const open = await keyDenying();
    const own = await grantOn(open, { Operations: ['Encrypt', 'RetireGrant'] });
    await as(retirer).send(new RetireGrantCommand({ KeyId: open.KeyId, GrantId: own.GrantId }));
    const guarded = await keyDenying(retirer, 'kms:RetireGrant');
    const grant = await grantOn(guarded, { Operations: ['Encrypt', 'RetireGrant'] });
    const denied = await errorOf(as(retirer).send(new RetireGrantCommand({ KeyId: guarded.KeyId, GrantId: grant.GrantId })));
    expect(denied).toMatchObject({ name: 'AccessDeniedException', message: explicitDeny(retirer, 'RetireGrant', guarded.Arn, 'resource') });
  });

  it('RetireGrant by the key’s account (IAM-allowed principal): allowed, and refused by a key-policy Deny', async () => {
    const open = await keyDenying();
    await as(actor).send(new RetireGrantCommand({ KeyId: open.KeyId, GrantId: (await grantOn(open)).GrantId }));
    const guarded = await keyDenying(actor, 'kms:RetireGrant');
    const grant = await grantOn(guarded);
    const denied = await errorOf(as(actor).send(new RetireGrantCommand({ KeyId: guarded.KeyId, GrantId: grant.GrantId })));
    expect(denied).toMatchObject({ name: 'AccessDeniedException', message: explicitDeny(actor, 'RetireGrant', guarded.Arn, 'resource') });
  });

  it('a principal the grant does not name, with no policy, cannot retire it', async () => {
    const key = await keyDenying();
    const grant = await t.client.send(new CreateGrantCommand({ KeyId: key.KeyId, GranteePrincipal: actor.arn, Operations: ['Encrypt'] }));
    const denied = await errorOf(as(retirer).send(new RetireGrantCommand({ KeyId: key.KeyId, GrantId: grant.GrantId })));
    expect(denied.name).toBe('AccessDeniedException');
  });
});

/** Every record of the service's audit trail so far (each is on disk before its response). */
function auditRecords(): Array<Record<string, any>> {
  const dir = path.join(t.dataDir, 'audit');
  return fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.jsonl'))
    .flatMap((f) => fs.readFileSync(path.join(dir, f), 'utf8').split('\n').filter((l) => l.length > 0))
    .map((l) => JSON.parse(l) as Record<string, any>);
}
