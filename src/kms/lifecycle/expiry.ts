/**
 * Imported key material leaving the token: when its ValidTo passes (the scheduler, or the first
 * use after that moment) or on DeleteImportedKeyMaterial. The token object is destroyed, the
 * material is marked PENDING_IMPORT, and a key missing a material it rotated through goes to
 * PendingImport until the same material is imported again.
 */
import { invalidState } from '../errors.js';
import type { MaterialRecord } from '../../store/lifecycle.js';
import type { KeyRecord } from '../../store/types.js';
import { keyArn, keyEventScope } from '../arn.js';
import type { Services } from '../context.js';
import { effectiveKeyState, isExpired, newClaim } from './materials.js';

export async function removeImportedMaterial(svc: Services, key: KeyRecord, material: MaterialRecord): Promise<void> {
  await svc.hsm.destroyKey({ keyId: key.keyId, version: material.version });
  await svc.store.lifecycle.updateMaterial(key.keyId, material.version, { importState: 'PENDING_IMPORT' });
  // Material pending rotation was never used: losing it leaves the key as it is.
  const inUse = material.version <= key.currentVersion;
  if (inUse && key.keyState !== 'PendingDeletion') await svc.store.updateKey(key.keyId, { keyState: 'PendingImport' });
}

/** Removes one expired material and tells the audit trail, as AWS's DeleteExpiredKeyMaterial. */
async function expireMaterial(svc: Services, key: KeyRecord, material: MaterialRecord): Promise<void> {
  await removeImportedMaterial(svc, key, material);
  await svc.audit
    ?.recordServiceEvent({
      eventName: 'DeleteExpiredKeyMaterial',
      ...keyEventScope(svc.account, key, true),
      additionalEventData: { keyMaterialId: material.keyMaterialId },
    })
    .catch(() => undefined);
}

/** Removes every imported material whose ValidTo has passed; returns how many. */
export async function expireDueMaterials(svc: Services, limit = 100): Promise<number> {
  const expired = await svc.store.lifecycle.expiredMaterials(svc.now(), limit);
  for (const material of expired) {
    // Every node's pass sees the same expired material: the one that claims the key expires it
    // (once: one DeleteExpiredKeyMaterial event), the others leave it.
    const claim = newClaim(svc);
    if (!(await svc.store.lifecycle.claimKey(material.keyId, 'material-import', claim))) continue;
    try {
      const key = await svc.store.getKey(material.keyId);
      const still = (await svc.store.lifecycle.listMaterials(material.keyId)).find((m) => m.version === material.version);
      if (key && still?.importState === 'IMPORTED') await expireMaterial(svc, key, still);
    } finally {
      await svc.store.lifecycle.releaseClaim(material.keyId, claim.id);
    }
  }
  return expired.length;
}

/**
 * Imported keys can seal and open data only while their materials are in the token and valid.
 * Material found expired here is removed at once (the scheduler may not have run yet).
 */
export async function requireUsableMaterial(svc: Services, key: KeyRecord): Promise<void> {
  if (key.origin !== 'EXTERNAL') return;
  const now = svc.now();
  const materials = await svc.store.lifecycle.listMaterials(key.keyId);
  for (const material of materials) {
    if (isExpired(material, now)) await expireMaterial(svc, key, material);
  }
  if (effectiveKeyState(key, materials, now) === 'PendingImport') throw invalidState(`${keyArn(svc.account, key.keyId)} is pending import.`);
}
