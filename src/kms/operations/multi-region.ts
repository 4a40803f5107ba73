/**
 * Multi-Region keys within one deployment: ReplicateKey and UpdatePrimaryRegion. A replica is
 * the same key ID and key material (the same token objects) in another served Region, with its
 * own description, policy, state, tags, aliases and grants (src/kms/regional-store.ts).
 */
import { KmsError, notFound, unsupported, validation } from '../errors.js';
import type { KeyRecord, TagRecord } from '../../store/types.js';
import { StoreConflictError } from '../../store/types.js';
import { keyArn, keyEventScope } from '../arn.js';
import type { OperationHandler, Services } from '../context.js';
import { arnOfKey, authorize, renderKeyMetadata, requireEnabled, resolveAuthorizedKey } from '../keys.js';
import { isPastDeletionDate } from '../lifecycle/deletion.js';
import { isMultiRegion, isReplica } from '../multi-region.js';
import { defaultKeyPolicy } from '../policy-defaults.js';
import { checkKeyPolicy } from './policies.js';
import { checkTagCount, checkTagKeys } from './tags.js';

/** The Services of another Region this deployment serves (a Region of a peer deployment,
 *  P11KMS_PEERS_FILE, is handled before: ReplicateKey; other operations refuse it here). */
function servicesOfRegion(svc: Services, region: string): Services {
  const other = svc.regionServices?.(region);
  if (!other) {
    throw unsupported(
      `The Region ${region} is not served by this deployment (P11KMS_REGIONS); multi-Region keys replicate only between the Regions one deployment serves and those of the peer deployments named in P11KMS_PEERS_FILE.`,
    );
  }
  return other;
}

/** Refuses what is not a multi-Region primary key (ReplicateKey, UpdatePrimaryRegion). */
function requirePrimary(svc: Services, key: KeyRecord): void {
  const arn = arnOfKey(svc, key);
  if (!isMultiRegion(key)) throw unsupported(`${arn} is not a multi-Region key.`);
  if (isReplica(key)) throw unsupported(`${arn} is a multi-Region replica key. Use the primary key in ${key.primaryRegion}.`);
}

const replicateKey: OperationHandler = async (input, ctx, svc) => {
  const primary = await resolveAuthorizedKey(svc, ctx, input.KeyId, 'ReplicateKey', { allowAlias: false });
  requirePrimary(svc, primary);
  const arn = arnOfKey(svc, primary);
  // AWS: a primary pending (replica) deletion cannot be replicated; one with imported material
  // may still wait for it (each key imports the material on its own).
  if (!(primary.origin === 'EXTERNAL' && primary.keyState === 'PendingImport')) requireEnabled(svc, primary);
  const region: string = input.ReplicaRegion;
  if (region === primary.region) throw validation(`The replica Region ${region} is the Region of the primary key ${arn}.`);
  const tags = ((input.Tags ?? []) as TagRecord[]).map((t) => ({ TagKey: t.TagKey, TagValue: t.TagValue }));
  checkTagKeys(tags.map((t) => t.TagKey));
  checkTagCount(tags.length);
  // A Region another deployment (site) serves: the material travels to its HSM (site-replication.ts).
  const peer = svc.regionServices?.(region) ? undefined : svc.sites?.peerOf(region);
  if (peer) {
    const policy: string = input.Policy ?? defaultKeyPolicy(svc.account.partition, svc.account.accountId);
    // The policy (and its lockout check) is judged here, with this request's caller; the peer
    // judges kms:CreateKey (and kms:TagResource) in its Region for the same caller.
    if (input.Policy !== undefined) await checkKeyPolicy(svc, ctx, { ...primary, region, policy }, policy, input.BypassPolicyLockoutSafetyCheck === true);
    return svc.sites!.replicate(svc, primary, peer, { Description: input.Description, Policy: input.Policy, Tags: tags, policy, callerArn: ctx.caller.principal.arn });
  }
  const target = servicesOfRegion(svc, region);

  // AWS: kms:CreateKey (and kms:TagResource for tags) in an IAM policy in the replica's Region.
  await authorize(target, ctx, 'CreateKey', '*');
  if (tags.length > 0) await authorize(target, ctx, 'TagResource', '*');

  const existing = await target.store.getKey(primary.keyId);
  const alreadyExists = () => new KmsError('AlreadyExistsException', `${keyArn(target.account, primary.keyId)} already exists.`);
  if (existing) throw alreadyExists();
  const policy: string = input.Policy ?? defaultKeyPolicy(svc.account.partition, svc.account.accountId);
  const replica: KeyRecord = {
    ...primary,
    region,
    createdAt: svc.now(),
    description: input.Description ?? '',
    // On-prem the replica shares the primary's token objects: nothing to copy, so it is usable at
    // once (AWS shows Creating for a few seconds while it copies the material between Regions).
    // AWS: a replica of a key with imported material has none until it is imported into it too.
    keyState: primary.origin === 'EXTERNAL' ? 'PendingImport' : 'Enabled',
    policy,
    deletionDate: null,
    pendingWindowInDays: null,
  };
  if (input.Policy !== undefined) await checkKeyPolicy(target, ctx, replica, policy, input.BypassPolicyLockoutSafetyCheck === true);
  try {
    await target.store.createRegionalKey(replica, tags);
  } catch (e) {
    // A replica deleted for the API whose row the sweep has not removed yet, or a concurrent twin.
    if (e instanceof StoreConflictError) throw alreadyExists();
    throw e;
  }
  // AWS: ReplicateKey is recorded in the primary's Region (this request's record), a CreateKey in
  // the replica's.
  const scope = keyEventScope(svc.account, replica);
  await svc.audit?.recordServiceEvent({ eventName: 'CreateKey', ...scope, responseElements: { keyId: scope.keyArns[0]! } }).catch(() => undefined);
  return {
    ReplicaKeyMetadata: await renderKeyMetadata(target, replica),
    ReplicaPolicy: policy,
    // AWS's example answers an empty list when no tags were given.
    ReplicaTags: tags,
  };
};

const updatePrimaryRegion: OperationHandler = async (input, ctx, svc) => {
  const primary = await resolveAuthorizedKey(svc, ctx, input.KeyId, 'UpdatePrimaryRegion', { allowAlias: false });
  requirePrimary(svc, primary);
  const region: string = input.PrimaryRegion;
  if (region === primary.region) throw validation(`${arnOfKey(svc, primary)} is already the primary key in ${region}.`);
  if (!svc.regionServices?.(region) && svc.sites?.peerOf(region)) {
    throw unsupported(
      `${arnOfKey(svc, primary)} cannot move its primary Region to ${region}, a Region served by another deployment (P11KMS_PEERS_FILE): across sites the primary key stays at the site that created it. UpdatePrimaryRegion works between the Regions of this deployment.`,
    );
  }
  const target = servicesOfRegion(svc, region);
  const replica = await target.store.getKey(primary.keyId);
  if (!replica || isPastDeletionDate(replica, svc.now())) throw notFound(`Key '${keyArn(target.account, primary.keyId)}' does not exist`);
  // AWS: kms:UpdatePrimaryRegion on the primary (its Region's policy) and on the replica (its own).
  await authorize(target, ctx, 'UpdatePrimaryRegion', replica);
  // AWS: both keys must be Enabled when the operation starts.
  for (const [key, services] of [[primary, svc], [replica, target]] as const) requireEnabled(services, key);
  await svc.store.setPrimaryRegion(primary.keyId, region);
  return undefined;
};

export const multiRegionOperations = {
  ReplicateKey: replicateKey,
  UpdatePrimaryRegion: updatePrimaryRegion,
};
