/**
 * The KeyMetadata members that depend on key material: KeyState as the material makes it
 * (imported material that expired makes the key PendingImport at once), CurrentKeyMaterialId,
 * and for imported keys ExpirationModel and ValidTo of the current material.
 */
import type { KeyRecord } from '../../store/types.js';
import type { Services } from '../context.js';
import { effectiveKeyState } from './materials.js';

export async function materialMetadata(svc: Services, key: KeyRecord) {
  const materials = await svc.store.lifecycle.listMaterials(key.keyId);
  const now = svc.now();
  const keyState = effectiveKeyState(key, materials, now);
  const current = materials.find((m) => m.version === key.currentVersion);
  const imported = key.origin === 'EXTERNAL' && current?.importState === 'IMPORTED';
  // AWS keeps naming the current material after it was deleted or expired (the key is then
  // PendingImport); only a key that never had material (no import yet) shows none.
  const hasHadMaterial = current !== undefined && (current.importState === null || current.checkValue !== null);
  return {
    KeyState: keyState,
    Enabled: keyState === 'Enabled',
    CurrentKeyMaterialId: key.keySpec === 'SYMMETRIC_DEFAULT' && hasHadMaterial ? current.keyMaterialId : undefined,
    ExpirationModel: imported ? (current.expirationModel ?? undefined) : undefined,
    ValidTo: imported ? (current.validTo ?? undefined) : undefined,
  };
}
