/**
 * What a multi-Region key is, as every operation sees it: primary or replica, its Regions' keys,
 * and DescribeKey's MultiRegionConfiguration. Storage: src/kms/regional-store.ts; ReplicateKey and
 * UpdatePrimaryRegion: operations/multi-region.ts.
 */
import type { KeyRecord } from '../store/types.js';
import { keyArn } from './arn.js';
import type { Services } from './context.js';
import { isPastDeletionDate } from './lifecycle/deletion.js';

export const isMultiRegion = (key: KeyRecord): boolean => key.primaryRegion !== undefined;
export const isReplica = (key: KeyRecord): boolean => key.primaryRegion !== undefined && key.primaryRegion !== key.region;

/** The Regions' keys of a multi-Region key that exist for the API (not past their deletion date). */
export async function regionalKeysOf(svc: Services, key: KeyRecord): Promise<KeyRecord[]> {
  return (await svc.store.multiRegionKeys(key.keyId)).filter((k) => !isPastDeletionDate(k, svc.now()));
}

/** KeyMetadata.MultiRegionConfiguration: the primary and every replica, this key included. */
export async function multiRegionConfiguration(svc: Services, key: KeyRecord): Promise<Record<string, unknown> | undefined> {
  if (!isMultiRegion(key)) return undefined;
  const entry = (region: string) => ({ Arn: keyArn({ ...svc.account, region }, key.keyId), Region: region });
  const replicas = (await regionalKeysOf(svc, key)).filter((k) => k.region !== key.primaryRegion);
  return {
    MultiRegionKeyType: isReplica(key) ? 'REPLICA' : 'PRIMARY',
    PrimaryKey: entry(key.primaryRegion!),
    ReplicaKeys: replicas.map((k) => entry(k.region)),
  };
}
