/**
 * Finding KMS keys from a KeyId parameter, enforcing key states, and rendering KeyMetadata.
 */
import { KmsError, disabled, invalidState, notFound } from './errors.js';
import type { KeyRecord } from '../store/types.js';
import { aliasArn, keyArn, parseKeyIdentifier } from './arn.js';
import type { RequestContext, Services } from './context.js';
import { algorithmsOf, legacyKeySpecName } from './key-specs.js';
import { isPastDeletionDate } from './lifecycle/deletion.js';
import { createManagedKeyOnFirstUse } from './managed-keys.js';
import { requireUsableMaterial } from './lifecycle/expiry.js';
import { materialMetadata } from './lifecycle/metadata.js';
import { multiRegionConfiguration } from './multi-region.js';

export interface ResolveOptions {
  /** AWS accepts alias names and alias ARNs for cryptographic operations and DescribeKey only. */
  allowAlias: boolean;
}

export const arnOfKey = (svc: Services, key: KeyRecord) => keyArn(svc.account, key.keyId);

export async function resolveKey(svc: Services, raw: string, { allowAlias }: ResolveOptions): Promise<KeyRecord> {
  const id = parseKeyIdentifier(svc.account, raw, allowAlias);
  let keyId: string;
  if (id.kind === 'alias') {
    const alias = await svc.store.getAlias(svc.account.region, id.aliasName);
    if (!alias) throw notFound(`Alias '${aliasArn(svc.account, id.aliasName)}' is not found.`);
    keyId = alias.targetKeyId;
  } else {
    keyId = id.keyId;
  }
  const key = await svc.store.getKey(keyId);
  // Past its deletion date a key is deleted for the API, even before the sweeper destroyed it.
  if (!key || isPastDeletionDate(key, svc.now())) throw notFound(`Key '${keyArn(svc.account, keyId)}' does not exist`);
  return key;
}

/**
 * Asks the authorizer whether the caller may perform kms:<action> on `target`: a key, or a
 * resource ARN / '*' for actions that have no key. Every key asked about is one of the request's
 * audited resources, allowed or not.
 */
export async function authorize(
  svc: Services,
  ctx: RequestContext,
  action: string,
  target: KeyRecord | string,
  options: { designatedByGrant?: boolean } = {},
): Promise<void> {
  const key = typeof target === 'string' ? undefined : target;
  const resource = key ? arnOfKey(svc, key) : (target as string);
  if (key) ctx.resources?.add(resource);
  await svc.authorizer.authorize({
    caller: ctx.caller,
    action: `kms:${action}`,
    resource,
    key,
    designatedByGrant: options.designatedByGrant,
    operation: ctx.operation,
    input: ctx.input,
    sourceIp: ctx.sourceIp,
    secureTransport: ctx.secureTransport,
    now: svc.now(),
  });
}

/** Resolves the key and checks that the caller may perform `action` on it. */
export async function resolveAuthorizedKey(
  svc: Services,
  ctx: RequestContext,
  raw: string,
  action: string,
  options: ResolveOptions,
): Promise<KeyRecord> {
  // AWS reads a key ID or alias name in the caller's own account: another account's key is named
  // by its ARN (cross-account use).
  const callerAccount = ctx.caller.principal.accountId;
  if (callerAccount !== svc.account.accountId && !raw.startsWith('arn:')) {
    const id = parseKeyIdentifier(svc.account, raw, options.allowAlias);
    const own = { ...svc.account, accountId: callerAccount };
    throw notFound(id.kind === 'alias' ? `Alias '${aliasArn(own, id.aliasName)}' is not found.` : `Key '${keyArn(own, id.keyId)}' does not exist`);
  }
  if (options.allowAlias) await createManagedKeyOnFirstUse(svc, ctx, raw);
  const key = await resolveKey(svc, raw, options);
  await authorize(svc, ctx, action, key);
  return key;
}

/** Cryptographic operations need an Enabled key: AWS's key-state table. */
export function requireEnabled(svc: Services, key: KeyRecord): void {
  const arn = arnOfKey(svc, key);
  switch (key.keyState) {
    case 'Enabled':
      return;
    case 'Disabled':
      throw disabled(`${arn} is disabled.`);
    case 'PendingDeletion':
      throw invalidState(`${arn} is pending deletion.`);
    case 'PendingImport':
      throw invalidState(`${arn} is pending import.`);
    case 'PendingReplicaDeletion':
      throw invalidState(`${arn} is pending replica deletion.`);
    default:
      throw invalidState(`${arn} is ${key.keyState.toLowerCase()}.`);
  }
}

/** Management changes (description, tags, aliases, enable/disable) are refused while the key is
 *  pending deletion. */
export function requireNotPendingDeletion(svc: Services, key: KeyRecord): void {
  if (key.keyState === 'PendingDeletion') throw invalidState(`${arnOfKey(svc, key)} is pending deletion.`);
  if (key.keyState === 'PendingReplicaDeletion') throw invalidState(`${arnOfKey(svc, key)} is pending replica deletion.`);
}

export function requireUsage(svc: Services, key: KeyRecord, usage: string, operation: string): void {
  if (key.keyUsage !== usage) {
    throw new KmsError('InvalidKeyUsageException', `${arnOfKey(svc, key)} key usage is ${key.keyUsage} which is not valid for ${operation}.`);
  }
}

/** Resolves, authorizes and checks a key for a cryptographic operation that needs `usage`. */
export async function usableKey(svc: Services, ctx: RequestContext, raw: string, action: string, usage: string, operation = action): Promise<KeyRecord> {
  const key = await resolveAuthorizedKey(svc, ctx, raw, action, { allowAlias: true });
  requireEnabled(svc, key);
  requireUsage(svc, key, usage, operation);
  await requireUsableMaterial(svc, key); // imported material can expire
  return key;
}

export function encryptionAlgorithmsOf(key: KeyRecord): string[] | undefined {
  return key.keyUsage === 'ENCRYPT_DECRYPT' ? [...algorithmsOf(key.keySpec, key.keyUsage)] : undefined;
}

/** The algorithm list members of KeyMetadata and GetPublicKey: only the key usage's own list. */
export function algorithmListsOf(key: KeyRecord): Record<string, string[] | undefined> {
  const list = (usage: string) => (key.keyUsage === usage ? [...algorithmsOf(key.keySpec, usage)] : undefined);
  return {
    EncryptionAlgorithms: list('ENCRYPT_DECRYPT'),
    SigningAlgorithms: list('SIGN_VERIFY'),
    MacAlgorithms: list('GENERATE_VERIFY_MAC'),
    KeyAgreementAlgorithms: list('KEY_AGREEMENT'),
  };
}

export async function renderKeyMetadata(svc: Services, key: KeyRecord): Promise<Record<string, unknown>> {
  const material = await materialMetadata(svc, key);
  return {
    AWSAccountId: key.accountId,
    KeyId: key.keyId,
    Arn: arnOfKey(svc, key),
    CreationDate: key.createdAt,
    Enabled: material.Enabled,
    Description: key.description,
    KeyUsage: key.keyUsage,
    KeyState: material.KeyState,
    DeletionDate: key.keyState === 'PendingDeletion' ? (key.deletionDate ?? undefined) : undefined,
    PendingDeletionWindowInDays:
      key.keyState === 'PendingDeletion' || key.keyState === 'PendingReplicaDeletion' ? (key.pendingWindowInDays ?? undefined) : undefined,
    Origin: key.origin,
    KeyManager: key.keyManager ?? 'CUSTOMER',
    CustomerMasterKeySpec: legacyKeySpecName(key.keySpec),
    KeySpec: key.keySpec,
    ...algorithmListsOf(key),
    MultiRegion: key.primaryRegion !== undefined,
    MultiRegionConfiguration: await multiRegionConfiguration(svc, key),
    // As the key material makes them (imported material can expire).
    CurrentKeyMaterialId: material.CurrentKeyMaterialId,
    ExpirationModel: material.ExpirationModel,
    ValidTo: material.ValidTo,
  };
}
