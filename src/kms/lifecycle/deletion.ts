/**
 * The end of ScheduleKeyDeletion's waiting period: every token object of the key (all backing
 * versions, and any import wrapping keys) is destroyed, then its metadata. Destroying is
 * idempotent, so a sweep cut short by a crash is simply done again after its claim lapses.
 */
import { keyImporterOf } from '../../hsm/key-import.js';
import type { Claim } from '../../store/lifecycle.js';
import type { KeyRecord } from '../../store/types.js';
import type { Services } from '../context.js';

/** A key whose deletion date has passed is gone for the API, even before the sweep ran. */
export function isPastDeletionDate(key: KeyRecord, now: Date): boolean {
  return key.keyState === 'PendingDeletion' && key.deletionDate !== null && key.deletionDate.getTime() <= now.getTime();
}

/** Destroys the key under `claim` (taken by the scheduler). False if the claim was lost. */
export async function sweepDeletedKey(svc: Services, keyId: string, claim: Claim): Promise<boolean> {
  for (const material of await svc.store.lifecycle.listMaterials(keyId)) {
    await svc.hsm.destroyKey({ keyId, version: material.version });
  }
  await destroyImportParametersOf(svc, keyId);
  return svc.store.lifecycle.deleteKeyUnderClaim(keyId, claim.id);
}

async function destroyImportParametersOf(svc: Services, keyId: string): Promise<void> {
  for (const parameters of await svc.store.lifecycle.listImportParameters()) {
    if (parameters.keyId !== keyId) continue;
    await keyImporterOf(svc.hsm).destroyWrappingKey(parameters.importId);
    await svc.store.lifecycle.deleteImportParameters(parameters.importId);
  }
}
