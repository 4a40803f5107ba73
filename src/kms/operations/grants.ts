/**
 * Grants: CreateGrant, ListGrants, ListRetirableGrants, RetireGrant, RevokeGrant.
 * What a grant permits is decided in src/auth/grants.ts; here they are created, listed and removed.
 */
import { randomBytes } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import { issueGrantToken, parseGrantToken } from '../../auth/grants.js';
import { KmsError, accessDenied, invalidArn, notFound, unsupported, validation } from '../errors.js';
import type { GrantConstraints, GrantRecord, KeyRecord } from '../../store/types.js';
import { keyArn } from '../arn.js';
import type { OperationHandler, RequestContext, Services } from '../context.js';
import { authorize, requireEnabled, resolveAuthorizedKey, resolveKey } from '../keys.js';
import { paginate } from '../pagination.js';

/** AWS's quota of grants per KMS key. */
export const MAX_GRANTS_PER_KEY = 50_000;
const MAX_CONSTRAINT_PAIRS = 8;

const dryRunSucceeded = () => new KmsError('DryRunOperationException', 'The request would have succeeded, but the DryRun option is set.');

const COMMON_OPERATIONS = ['CreateGrant', 'RetireGrant', 'DescribeKey'];

/** The grant operations a key of this spec and usage supports (AWS's "grant operations" table). */
function grantableOperations(key: KeyRecord): ReadonlySet<string> {
  const symmetric = key.keySpec === 'SYMMETRIC_DEFAULT';
  const byUsage: Record<string, string[]> = {
    ENCRYPT_DECRYPT: symmetric
      ? ['Decrypt', 'Encrypt', 'GenerateDataKey', 'GenerateDataKeyWithoutPlaintext', 'ReEncryptFrom', 'ReEncryptTo', 'GenerateDataKeyPair', 'GenerateDataKeyPairWithoutPlaintext']
      : ['Decrypt', 'Encrypt', 'ReEncryptFrom', 'ReEncryptTo', 'GetPublicKey'],
    SIGN_VERIFY: ['Sign', 'Verify', 'GetPublicKey'],
    GENERATE_VERIFY_MAC: ['GenerateMac', 'VerifyMac'],
    KEY_AGREEMENT: ['DeriveSharedSecret', 'GetPublicKey'],
  };
  return new Set([...(byUsage[key.keyUsage] ?? []), ...COMMON_OPERATIONS]);
}

const PRINCIPAL_ARN = /^arn:aws[a-z-]*:(iam|sts)::\d{12}:(root|user\/.+|role\/.+|assumed-role\/.+|federated-user\/.+)$/;

function checkPrincipal(value: unknown, member: string): string | null {
  if (value === undefined) return null;
  if (typeof value !== 'string' || !PRINCIPAL_ARN.test(value)) throw validation(`Invalid ${member}: ${String(value)} is not the ARN of an AWS principal.`);
  return value;
}

function checkConstraints(key: KeyRecord, constraints: GrantConstraints | undefined): GrantConstraints | null {
  if (!constraints) return null;
  const { EncryptionContextEquals: equals, EncryptionContextSubset: subset } = constraints;
  if (!equals && !subset) return null;
  if (key.keySpec !== 'SYMMETRIC_DEFAULT') {
    throw validation('Encryption context grant constraints are valid only for symmetric encryption KMS keys.');
  }
  for (const pairs of [equals, subset]) {
    if (pairs && Object.keys(pairs).length > MAX_CONSTRAINT_PAIRS) {
      throw validation(`A grant constraint can have at most ${MAX_CONSTRAINT_PAIRS} encryption context pairs.`);
    }
  }
  return { ...(equals ? { EncryptionContextEquals: equals } : {}), ...(subset ? { EncryptionContextSubset: subset } : {}) };
}

/** A grant with the same name and the same terms is the same grant (CreateGrant's idempotency). */
function sameTerms(g: GrantRecord, wanted: Omit<GrantRecord, 'grantId' | 'createdAt'>): boolean {
  return (
    g.granteePrincipal === wanted.granteePrincipal &&
    g.retiringPrincipal === wanted.retiringPrincipal &&
    isDeepStrictEqual([...g.operations].sort(), [...wanted.operations].sort()) &&
    isDeepStrictEqual(g.constraints, wanted.constraints)
  );
}

const createGrant: OperationHandler = async (input, ctx, svc) => {
  if (input.GranteeServicePrincipal !== undefined || input.RetiringServicePrincipal !== undefined) {
    throw unsupported('Grants to AWS service principals are not supported by this service.');
  }
  if (input.GranteePrincipal === undefined) throw validation("1 validation error detected: Value null at 'granteePrincipal' failed to satisfy constraint: Member must not be null");
  const key = await resolveAuthorizedKey(svc, ctx, input.KeyId, 'CreateGrant', { allowAlias: false });
  const granteePrincipal = checkPrincipal(input.GranteePrincipal, 'GranteePrincipal')!;
  const retiringPrincipal = checkPrincipal(input.RetiringPrincipal, 'RetiringPrincipal');
  const operations = [...new Set(input.Operations as string[])];
  if (operations.length === 0) throw validation('A grant must include at least one operation.');
  const grantable = grantableOperations(key);
  const invalid = operations.filter((op) => !grantable.has(op));
  if (invalid.length > 0) {
    throw validation(`Grant operations ${invalid.join(', ')} are not valid for a ${key.keySpec} key with key usage ${key.keyUsage}.`);
  }
  const constraints = checkConstraints(key, input.Constraints);
  requireEnabled(svc, key);

  const terms = {
    keyId: key.keyId,
    name: (input.Name as string | undefined) ?? null,
    granteePrincipal,
    retiringPrincipal,
    issuingAccount: `arn:${svc.account.partition}:iam::${key.accountId}:root`,
    operations,
    constraints,
  };
  const existing = terms.name === null ? undefined : (await svc.store.grantsNamed(key.keyId, terms.name)).find((g) => sameTerms(g, terms));
  if (!existing && (await svc.store.countGrants(key.keyId)) >= MAX_GRANTS_PER_KEY) {
    throw new KmsError('LimitExceededException', `A KMS key can have at most ${MAX_GRANTS_PER_KEY} grants.`);
  }
  if (input.DryRun === true) throw dryRunSucceeded();
  const grantId = existing?.grantId ?? randomBytes(32).toString('hex');
  if (!existing) await svc.store.createGrant({ ...terms, grantId, createdAt: svc.now() });
  // Idempotent calls return the same GrantId with a new token, as AWS does.
  return { GrantId: grantId, GrantToken: issueGrantToken(key.keyId, grantId) };
};

function renderGrant(svc: Services, g: GrantRecord): Record<string, unknown> {
  return {
    KeyId: keyArn(svc.account, g.keyId),
    GrantId: g.grantId,
    Name: g.name ?? undefined,
    CreationDate: g.createdAt,
    GranteePrincipal: g.granteePrincipal,
    RetiringPrincipal: g.retiringPrincipal ?? undefined,
    IssuingAccount: g.issuingAccount,
    Operations: g.operations,
    Constraints: g.constraints ?? undefined,
  };
}

function checkGrantId(grantId: string): void {
  if (!/^[0-9a-f]{64}$/.test(grantId)) throw new KmsError('InvalidGrantIdException', `Grant ID ${grantId} is not valid.`);
}

const listGrants: OperationHandler = async (input, ctx, svc) => {
  const key = await resolveAuthorizedKey(svc, ctx, input.KeyId, 'ListGrants', { allowAlias: false });
  if (input.GrantId !== undefined) checkGrantId(input.GrantId);
  const page = await paginate(
    `grant:${key.keyId}`, // a marker from another key's listing is invalid here
    input,
    50,
    100,
    (afterGrantId, limit) => svc.store.listGrants({ keyId: key.keyId, grantId: input.GrantId, granteePrincipal: input.GranteePrincipal, afterGrantId, limit }),
    (g) => g.grantId,
  );
  return { Grants: page.items.map((g) => renderGrant(svc, g)), Truncated: page.Truncated, NextMarker: page.NextMarker };
};

const listRetirableGrants: OperationHandler = async (input, ctx, svc) => {
  if (input.RetiringServicePrincipal !== undefined) throw unsupported('Grants to AWS service principals are not supported by this service.');
  if (input.RetiringPrincipal === undefined) throw validation("1 validation error detected: Value null at 'retiringPrincipal' failed to satisfy constraint: Member must not be null");
  // The model's only ARN member here: one that names no principal is InvalidArnException.
  if (!PRINCIPAL_ARN.test(input.RetiringPrincipal)) throw invalidArn(`${input.RetiringPrincipal} is not the ARN of an AWS principal.`);
  await authorize(svc, ctx, 'ListRetirableGrants', '*');
  // AWS: the retiring principal must be in the caller's account.
  if (String(input.RetiringPrincipal).split(':')[4] !== ctx.caller.principal.accountId) {
    throw accessDenied(
      `User: ${ctx.caller.principal.arn} is not authorized to perform: kms:ListRetirableGrants for retiring principal ${input.RetiringPrincipal}: it is not in the caller's account`,
    );
  }
  const page = await paginate(
    `retirable:${input.RetiringPrincipal}`,
    input,
    50,
    100,
    (afterGrantId, limit) => svc.store.listRetirableGrants({ retiringPrincipal: input.RetiringPrincipal, afterGrantId, limit }),
    (g) => g.grantId,
  );
  return { Grants: page.items.map((g) => renderGrant(svc, g)), Truncated: page.Truncated, NextMarker: page.NextMarker };
};

async function grantOf(svc: Services, key: KeyRecord, grantId: string): Promise<GrantRecord> {
  const grant = await svc.store.getGrant(key.keyId, grantId);
  if (!grant) throw notFound(`Grant ID ${grantId} not found for key ${keyArn(svc.account, key.keyId)}.`);
  return grant;
}

/**
 * Who may retire a grant: its retiring principal, its grantee when the grant includes RetireGrant
 * (both without any policy allowing it, though an explicit Deny on the key refuses them), and the
 * key's account (its root, and principals allowed kms:RetireGrant by the key's policies).
 */
async function authorizeRetirement(svc: Services, ctx: RequestContext, key: KeyRecord, grant: GrantRecord): Promise<void> {
  const caller = ctx.caller.principal.arn;
  const designatedByGrant = caller === grant.retiringPrincipal || (caller === grant.granteePrincipal && grant.operations.includes('RetireGrant'));
  await authorize(svc, ctx, 'RetireGrant', key, { designatedByGrant });
}

const retireGrant: OperationHandler = async (input, ctx, svc) => {
  let keyId: string;
  let grantId: string;
  let key: KeyRecord | undefined;
  if (input.GrantToken !== undefined) {
    ({ keyId, grantId } = parseGrantToken(input.GrantToken));
    key = await svc.store.getKey(keyId);
    if (!key) throw notFound(`Key '${keyArn(svc.account, keyId)}' does not exist`);
  } else {
    if (input.KeyId === undefined || input.GrantId === undefined) {
      throw validation('RetireGrant needs a GrantToken, or a KeyId together with a GrantId.');
    }
    key = await resolveKey(svc, input.KeyId, { allowAlias: false });
    grantId = input.GrantId;
    checkGrantId(grantId);
  }
  const grant = await grantOf(svc, key, grantId);
  await authorizeRetirement(svc, ctx, key, grant);
  if (input.DryRun === true) throw dryRunSucceeded();
  await svc.store.deleteGrant(key.keyId, grant.grantId);
  return undefined;
};

const revokeGrant: OperationHandler = async (input, ctx, svc) => {
  const key = await resolveAuthorizedKey(svc, ctx, input.KeyId, 'RevokeGrant', { allowAlias: false });
  checkGrantId(input.GrantId);
  const grant = await grantOf(svc, key, input.GrantId);
  if (input.DryRun === true) throw dryRunSucceeded();
  await svc.store.deleteGrant(key.keyId, grant.grantId);
  return undefined;
};

export const grantOperations = {
  CreateGrant: createGrant,
  ListGrants: listGrants,
  ListRetirableGrants: listRetirableGrants,
  RetireGrant: retireGrant,
  RevokeGrant: revokeGrant,
};
