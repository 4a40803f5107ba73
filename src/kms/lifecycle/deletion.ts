/**
 * The end of ScheduleKeyDeletion's waiting period: every token object of the key (all backing
 * versions, and any import wrapping keys) is destroyed, then its metadata. Destroying is
 * idempotent, so a sweep cut short by a crash is simply done again after its claim lapses.
 */
import { keyImporterOf } from '../../hsm/key-import.js';
import type { Claim } from '../../store/lifecycle.js';
import type { KeyRecord } from '../../store/types.js';
import type { Services } from '../context.js';
import { apiKeyId } from '../regional-store.js';
import { isReplica } from '../multi-region.js';
import { DAY_MS, newClaim } from './materials.js';

/** A key whose deletion date has passed is gone for the API, even before the sweep ran. */
export function isPastDeletionDate(key: KeyRecord, now: Date): boolean {
  return key.keyState === 'PendingDeletion' && key.deletionDate !== null && key.deletionDate.getTime() <= now.getTime();
}

/** Destroys the key under `claim` (taken by the scheduler). False if the claim was lost.
 *  `keyId` is a store row: one Region's row of a multi-Region key holds no material. */
export async function sweepDeletedKey(svc: Services, keyId: string, claim: Claim): Promise<boolean> {
  for (const material of await svc.store.lifecycle.listMaterials(keyId)) {
    await svc.hsm.destroyKey({ keyId, version: material.version });
  }
  if (keyId !== apiKeyId(keyId) && svc.sites) await tellPrimarySite(svc, keyId);
  await destroyImportParametersOf(svc, keyId);
  if (!(await svc.store.lifecycle.deleteKeyUnderClaim(keyId, claim.id))) return false;
  if (keyId !== apiKeyId(keyId)) await afterRegionalKeyDeleted(svc, apiKeyId(keyId));
  return true;
}

/**
 * One Region's key of a multi-Region key is gone. AWS: a primary in PendingReplicaDeletion whose
 * last replica is deleted now begins its own waiting period; when no Region's key is left, the
 * shared material (its token objects and the material row) goes too.
 */
export async function afterRegionalKeyDeleted(svc: Services, keyId: string): Promise<void> {
  const remaining = await svc.store.multiRegionKeys(keyId);
  if (remaining.length === 0) {
    const claim = newClaim(svc);
    if (!(await svc.store.lifecycle.claimKey(keyId, 'deletion', claim))) return; // another process is at it
    await sweepDeletedKey(svc, keyId, claim);
    return;
  }
  const [primary] = remaining;
  if (remaining.length === 1 && primary!.keyState === 'PendingReplicaDeletion') {
    const days = primary!.pendingWindowInDays ?? 30;
    await svc.store.updateKey(primary!.keyId, { keyState: 'PendingDeletion', deletionDate: new Date(svc.now().getTime() + days * DAY_MS) });
  }
}

/**
 * A replica whose primary is at a peer site: its token objects go now when no other Region here
 * shares them, then the primary's site is told (src/kms/site-replication.ts). That throws when
 * the site cannot be reached: the row then stays (gone for the API) and a later pass retries.
 */
async function tellPrimarySite(svc: Services, rowId: string): Promise<void> {
  const row = await svc.store.getKey(rowId);
  if (!row || !isReplica(row) || !svc.sites!.peerOf(row.primaryRegion!)) return;
  const keyId = apiKeyId(rowId);
  if ((await svc.store.multiRegionKeys(keyId)).every((k) => k.keyId === rowId)) {
    for (const material of await svc.store.lifecycle.listMaterials(keyId)) await svc.hsm.destroyKey({ keyId, version: material.version });
  }
  await svc.sites!.beforeReplicaDeleted(row);
}

async function destroyImportParametersOf(svc: Services, keyId: string): Promise<void> {
  for (const parameters of await svc.store.lifecycle.listImportParameters()) {
    if (parameters.keyId !== keyId) continue;
    await keyImporterOf(svc.hsm).destroyWrappingKey(parameters.importId);
    await svc.store.lifecycle.deleteImportParameters(parameters.importId);
  }
}
