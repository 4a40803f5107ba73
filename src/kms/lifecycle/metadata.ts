/**
 * The KeyMetadata members that depend on key material: KeyState as the material makes it
 * (imported material that expired makes the key PendingImport at once), CurrentKeyMaterialId,
 * and for imported keys ExpirationModel and ValidTo of the current material.
 */
import type { KeyRecord } from '../../store/types.js';
import type { Services } from '../context.js';
import { effectiveKeyState, isUsable } from './materials.js';

export async function materialMetadata(svc: Services, key: KeyRecord) {
  const materials = await svc.store.lifecycle.listMaterials(key.keyId);
  const now = svc.now();
  const keyState = effectiveKeyState(key, materials, now);
  const current = materials.find((m) => m.version === key.currentVersion);
  const imported = key.origin === 'EXTERNAL' && current?.importState === 'IMPORTED';
  const hasMaterial = current !== undefined && isUsable(current, now);
  return {
    KeyState: keyState,
    Enabled: keyState === 'Enabled',
    CurrentKeyMaterialId: key.keySpec === 'SYMMETRIC_DEFAULT' && hasMaterial ? current.keyMaterialId : undefined,
    ExpirationModel: imported ? (current.expirationModel ?? undefined) : undefined,
    ValidTo: imported ? (current.validTo ?? undefined) : undefined,
  };
}
