/**
 * Key lifecycle operations: CreateKey, DescribeKey, ListKeys, UpdateKeyDescription, EnableKey,
 * DisableKey, ScheduleKeyDeletion, CancelKeyDeletion.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { KmsError, constraintViolation, invalidState, unsupported, validation } from '../errors.js';
import type { BackingKeyVersionRecord, KeyRecord, TagRecord } from '../../store/types.js';
import { keyArn } from '../arn.js';
import type { OperationHandler, Services } from '../context.js';
import { checkKeySpecAndUsage, generateBackingKey } from '../key-generation.js';
import { arnOfKey, authorize, renderKeyMetadata, requireNotPendingDeletion, resolveAuthorizedKey } from '../keys.js';
import { markAwaitingImport, requireImportableSpec } from '../lifecycle/key-import.js';
import { newClaim, rotateIfDue } from '../lifecycle/materials.js';
import { paginate } from '../pagination.js';
import { checkKeyPolicy } from './policies.js';
import { defaultKeyPolicy } from '../policy-defaults.js';
import { checkTagCount, checkTagKeys } from './tags.js';
import { isMultiRegion, isReplica, regionalKeysOf } from '../multi-region.js';

const DAY_MS = 86_400_000;
const createKey: OperationHandler = async (input, ctx, svc) => {
  await authorize(svc, ctx, 'CreateKey', '*');
  if (input.KeySpec !== undefined && input.CustomerMasterKeySpec !== undefined) {
    throw validation('You cannot specify KeySpec and CustomerMasterKeySpec in the same request. CustomerMasterKeySpec is deprecated.');
  }
  const keySpec: string = input.KeySpec ?? input.CustomerMasterKeySpec ?? 'SYMMETRIC_DEFAULT';
  const keyUsage = checkKeySpecAndUsage(svc, keySpec, input.KeyUsage);
  const origin: string = input.Origin ?? 'AWS_KMS';
  if (origin !== 'AWS_KMS' && origin !== 'EXTERNAL') throw unsupported(`Origin ${origin} is not supported by this service.`);
  if (origin === 'EXTERNAL') requireImportableSpec(keySpec, keyUsage);
  if (input.CustomKeyStoreId !== undefined || input.XksKeyId !== undefined) {
    throw new KmsError('CustomKeyStoreNotFoundException', 'Custom key stores are not supported by this service.');
  }
  const multiRegion = input.MultiRegion === true;
  const tags = (input.Tags ?? []) as TagRecord[];
  checkTagKeys(tags.map((t) => t.TagKey));
  checkTagCount(tags.length);
  // AWS: tagging a key as it is created also takes kms:TagResource (an identity-policy decision).
  if (tags.length > 0) await authorize(svc, ctx, 'TagResource', '*');
  const policy: string = input.Policy ?? defaultKeyPolicy(svc.account.partition, svc.account.accountId);

  const now = svc.now();
  const key: KeyRecord = {
    keyId: multiRegion ? `mrk-${randomBytes(16).toString('hex')}` : randomUUID(),
    accountId: svc.account.accountId,
    region: svc.account.region,
    createdAt: now,
    description: input.Description ?? '',
    // EXTERNAL: no key material until ImportKeyMaterial.
    keyState: origin === 'EXTERNAL' ? 'PendingImport' : 'Enabled',
    keySpec,
    keyUsage,
    origin,
    policy,
    currentVersion: 1,
    deletionDate: null,
    pendingWindowInDays: null,
    ...(multiRegion ? { primaryRegion: svc.account.region } : {}),
  };
  if (input.Policy !== undefined) await checkKeyPolicy(svc, ctx, key, policy, input.BypassPolicyLockoutSafetyCheck === true);
  const version = { keyId: key.keyId, version: 1, createdAt: now, keyMaterialId: randomBytes(32).toString('hex') };
  // Token object first, then the row: a failed insert destroys the object, so neither side is
  // left with an orphan. A crash in between leaves a token object that the start-up check reports.
  if (origin === 'AWS_KMS') await generateBackingKey(svc, { keyId: key.keyId, version: 1 }, keySpec, keyUsage, multiRegion);
  const keyTags = tags.map((t) => ({ TagKey: t.TagKey, TagValue: t.TagValue }));
  try {
    if (multiRegion) await createMultiRegionKey(svc, key, version, keyTags);
    else await svc.store.createKey(key, version, keyTags);
  } catch (e) {
    await svc.hsm.destroyKey({ keyId: key.keyId, version: 1 }).catch(() => undefined);
    throw e;
  }
  if (origin === 'EXTERNAL') await markAwaitingImport(svc, key.keyId);
  return { KeyMetadata: await renderKeyMetadata(svc, key) };
};

/**
 * A multi-Region key's material row (the bare key ID, no Region's: src/kms/regional-store.ts)
 * and the primary's row in this Region. A failed second insert removes the material row; a crash
 * between the two leaves a material row (and its token object) that no Region sees.
 */
async function createMultiRegionKey(svc: Services, key: KeyRecord, version: BackingKeyVersionRecord, tags: TagRecord[]): Promise<void> {
  const material: KeyRecord = { ...key, region: '', description: '', policy: '{}', keyState: 'Enabled' };
  await svc.store.createKey(material, version, []);
  try {
    await svc.store.createRegionalKey(key, tags);
  } catch (e) {
    // The lifecycle store addresses the material row itself (the regional view maps deleteKey).
    const claim = newClaim(svc);
    if (await svc.store.lifecycle.claimKey(key.keyId, 'deletion', claim).catch(() => false)) {
      await svc.store.lifecycle.deleteKeyUnderClaim(key.keyId, claim.id).catch(() => undefined);
    }
    throw e;
  }
}

const describeKey: OperationHandler = async (input, ctx, svc) => {
  // A due automatic rotation shows at once, not only after the next lifecycle pass.
  const key = await rotateIfDue(svc, await resolveAuthorizedKey(svc, ctx, input.KeyId, 'DescribeKey', { allowAlias: true }));
  return { KeyMetadata: await renderKeyMetadata(svc, key) };
};

const listKeys: OperationHandler = async (input, ctx, svc) => {
  await authorize(svc, ctx, 'ListKeys', '*');
  const page = await paginate('key', input, 100, 1000, (after, limit) => svc.store.listKeys(after, limit), (k) => k.keyId);
  return {
    Keys: page.items.map((k) => ({ KeyId: k.keyId, KeyArn: keyArn(svc.account, k.keyId) })),
    Truncated: page.Truncated,
    NextMarker: page.NextMarker,
  };
};

const updateKeyDescription: OperationHandler = async (input, ctx, svc) => {
  const key = await resolveAuthorizedKey(svc, ctx, input.KeyId, 'UpdateKeyDescription', { allowAlias: false });
  requireNotPendingDeletion(svc, key);
  await svc.store.updateKey(key.keyId, { description: input.Description });
  return undefined;
};

function requireEnableable(svc: Parameters<OperationHandler>[2], key: KeyRecord): void {
  requireNotPendingDeletion(svc, key);
  if (key.keyState === 'PendingImport') throw invalidState(`${arnOfKey(svc, key)} is pending import.`);
}

const enableKey: OperationHandler = async (input, ctx, svc) => {
  const key = await resolveAuthorizedKey(svc, ctx, input.KeyId, 'EnableKey', { allowAlias: false });
  requireEnableable(svc, key);
  await svc.store.updateKey(key.keyId, { keyState: 'Enabled' });
  return undefined;
};

const disableKey: OperationHandler = async (input, ctx, svc) => {
  const key = await resolveAuthorizedKey(svc, ctx, input.KeyId, 'DisableKey', { allowAlias: false });
  requireEnableable(svc, key);
  await svc.store.updateKey(key.keyId, { keyState: 'Disabled' });
  return undefined;
};

const scheduleKeyDeletion: OperationHandler = async (input, ctx, svc) => {
  const key = await resolveAuthorizedKey(svc, ctx, input.KeyId, 'ScheduleKeyDeletion', { allowAlias: false });
  const days: number = input.PendingWindowInDays ?? 30;
  if (days < 7) throw constraintViolation(days, 'pendingWindowInDays', 'Member must have value greater than or equal to 7');
  if (days > 30) throw constraintViolation(days, 'pendingWindowInDays', 'Member must have value less than or equal to 30');
  requireNotPendingDeletion(svc, key);
  // AWS: a primary key with replicas waits in PendingReplicaDeletion, with no deletion date,
  // until its last replica is deleted; then its own waiting period begins (lifecycle/deletion.ts).
  if (isMultiRegion(key) && !isReplica(key) && (await regionalKeysOf(svc, key)).some((k) => k.region !== key.region)) {
    await svc.store.updateKey(key.keyId, { keyState: 'PendingReplicaDeletion', deletionDate: null, pendingWindowInDays: days });
    return { KeyId: arnOfKey(svc, key), KeyState: 'PendingReplicaDeletion', PendingWindowInDays: days };
  }
  const deletionDate = new Date(svc.now().getTime() + days * DAY_MS);
  await svc.store.updateKey(key.keyId, { keyState: 'PendingDeletion', deletionDate, pendingWindowInDays: days });
  return { KeyId: arnOfKey(svc, key), DeletionDate: deletionDate, KeyState: 'PendingDeletion', PendingWindowInDays: days };
};

const cancelKeyDeletion: OperationHandler = async (input, ctx, svc) => {
  const key = await resolveAuthorizedKey(svc, ctx, input.KeyId, 'CancelKeyDeletion', { allowAlias: false });
  if (key.keyState !== 'PendingDeletion' && key.keyState !== 'PendingReplicaDeletion') throw invalidState(`${arnOfKey(svc, key)} is not pending deletion.`);
  await svc.store.updateKey(key.keyId, { keyState: 'Disabled', deletionDate: null, pendingWindowInDays: null });
  return { KeyId: arnOfKey(svc, key) };
};

export const keyOperations = {
  CreateKey: createKey,
  DescribeKey: describeKey,
  ListKeys: listKeys,
  UpdateKeyDescription: updateKeyDescription,
  EnableKey: enableKey,
  DisableKey: disableKey,
  ScheduleKeyDeletion: scheduleKeyDeletion,
  CancelKeyDeletion: cancelKeyDeletion,
};
