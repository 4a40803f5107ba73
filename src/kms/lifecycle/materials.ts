/**
 * Key materials (backing-key versions) and rotation: the one place that decides which key specs
 * rotate, which material is current, and how a rotation adds the next version. A rotation creates
 * (or, for imported keys, promotes) version n+1 under the same key ID and makes it current; the
 * ciphertext blob names its version, so every older ciphertext still decrypts.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { KmsError } from '../errors.js';
import type { Claim, ClaimKind, MaterialRecord, RotationType } from '../../store/lifecycle.js';
import type { KeyRecord, KeyState } from '../../store/types.js';
import { keyEventScope } from '../arn.js';
import type { Services } from '../context.js';
import { apiKeyId } from '../regional-store.js';
import { isMultiRegion } from '../multi-region.js';

export const DAY_MS = 86_400_000;
export const DEFAULT_ROTATION_PERIOD_DAYS = 365;
/** AWS: at most 25 on-demand rotations per key. */
export const MAX_ON_DEMAND_ROTATIONS = 25;
/** AWS refuses an on-demand rotation when an automatic one is due this soon. */
export const AUTOMATIC_ROTATION_GUARD_MS = 20 * 60_000;
/** How long a claim on a key lasts if its holder dies without releasing it. */
export const CLAIM_LEASE_MS = 5 * 60_000;

export type RotationSupport = 'automatic-and-on-demand' | 'on-demand-only' | 'none';

/** AWS: only symmetric encryption keys rotate; imported (EXTERNAL) ones on demand only. */
export function rotationSupport(key: KeyRecord): RotationSupport {
  if (key.keySpec !== 'SYMMETRIC_DEFAULT') return 'none';
  if (key.origin === 'AWS_KMS') return 'automatic-and-on-demand';
  if (key.origin === 'EXTERNAL') return 'on-demand-only';
  return 'none';
}

export type KeyMaterialState = 'CURRENT' | 'NON_CURRENT' | 'PENDING_ROTATION';

export function materialState(key: KeyRecord, material: MaterialRecord): KeyMaterialState {
  if (material.version === key.currentVersion) return 'CURRENT';
  return material.version > key.currentVersion ? 'PENDING_ROTATION' : 'NON_CURRENT';
}

/** Imported material whose ValidTo has passed no longer works, even before the sweeper ran. */
export function isExpired(material: MaterialRecord, now: Date): boolean {
  return material.importState === 'IMPORTED' && material.validTo !== null && material.validTo.getTime() <= now.getTime();
}

/** Whether the material can be used right now: generated in the token, or imported and valid. */
export function isUsable(material: MaterialRecord, now: Date): boolean {
  return material.importState === null || (material.importState === 'IMPORTED' && !isExpired(material, now));
}

/**
 * An imported key is usable only while every material it has rotated through is in the token
 * (AWS: deleting or letting any of them expire puts the key in PendingImport).
 */
export function effectiveKeyState(key: KeyRecord, materials: MaterialRecord[], now: Date): KeyState {
  if (key.origin !== 'EXTERNAL' || key.keyState === 'PendingDeletion' || key.keyState === 'PendingImport') return key.keyState;
  const missing = materials.some((m) => m.version <= key.currentVersion && !isUsable(m, now));
  return missing ? 'PendingImport' : key.keyState;
}

export function newClaim(svc: Services): Claim {
  const now = svc.now();
  return { id: randomUUID(), now, until: new Date(now.getTime() + CLAIM_LEASE_MS) };
}

export function newKeyMaterialId(): string {
  return randomBytes(32).toString('hex');
}

export class RotationConflict extends Error {}

/**
 * Rotates `key` under a claim the caller already holds (kind `claimKind`): for generated keys a
 * new AES key is generated in the token as version n+1; for imported keys the material pending
 * rotation becomes current. `nextRotationDate` advances the automatic schedule (automatic
 * rotations only; on-demand rotations leave it alone, as AWS does).
 */
export async function rotateUnderClaim(
  svc: Services,
  key: KeyRecord,
  claim: Claim,
  rotationType: RotationType,
  nextRotationDate?: Date,
): Promise<MaterialRecord> {
  const materials = await svc.store.lifecycle.listMaterials(key.keyId);
  const now = svc.now();
  if (key.origin === 'EXTERNAL') {
    const pending = materials.find((m) => m.version > key.currentVersion && m.importState === 'IMPORTED');
    if (!pending) throw new RotationConflict('no imported key material is pending rotation');
    const promoted: MaterialRecord = { ...pending, rotationType, rotatedAt: now };
    if (!(await svc.store.lifecycle.commitRotation(key.keyId, claim.id, key.currentVersion, promoted, nextRotationDate))) {
      throw new RotationConflict('the key changed during rotation');
    }
    return promoted;
  }
  const version = Math.max(key.currentVersion, ...materials.map((m) => m.version)) + 1;
  const ref = { keyId: key.keyId, version };
  // An object under this ref can only be the leftover of a rotation that crashed before its
  // commit: it was never current, so nothing was sealed under it.
  await svc.hsm.destroyKey(ref);
  // A multi-Region key's new version travels to its peer-site replicas like the first one.
  await svc.hsm.generateAesKey(ref, isMultiRegion(key) ? 'trusted-wrap' : 'token-only');
  const material: MaterialRecord = {
    keyId: key.keyId,
    version,
    createdAt: now,
    keyMaterialId: newKeyMaterialId(),
    rotationType,
    rotatedAt: now,
    importState: null,
    expirationModel: null,
    validTo: null,
    description: null,
    checkValue: null,
    custody: null,
  };
  if (!(await svc.store.lifecycle.commitRotation(key.keyId, claim.id, key.currentVersion, material, nextRotationDate))) {
    await svc.hsm.destroyKey(ref).catch(() => undefined);
    throw new RotationConflict('the key changed during rotation');
  }
  // Replicas at peer sites get the new version now, or at a later lifecycle pass (never throws).
  await svc.sites?.afterRotation(svc, { ...key, currentVersion: version });
  return material;
}

/**
 * The automatic rotation of `key` under `claim`, if it is due: one rotation, with the next date
 * one period after now, so after downtime the key rotates once, not once per missed period.
 * Undefined when the key is not (or no longer) due.
 */
export async function rotateAutomatically(svc: Services, key: KeyRecord, claim: Claim): Promise<MaterialRecord | undefined> {
  const schedule = await svc.store.lifecycle.rotationSchedule(key.keyId, claim.now);
  const state = await rotationGoverningState(svc, key);
  if (!isRotationDue(key, state, schedule?.periodInDays ?? null, schedule?.nextRotationDate ?? null, claim.now)) return undefined;
  const next = new Date(claim.now.getTime() + schedule!.periodInDays! * DAY_MS);
  const material = await rotateUnderClaim(svc, key, claim, 'AUTOMATIC', next);
  await svc.audit
    ?.recordServiceEvent({ eventName: 'RotateKey', ...keyEventScope(svc.account, key, true), additionalEventData: { keyMaterialId: material.keyMaterialId } })
    .catch(() => undefined);
  return material;
}

/**
 * The key state that decides whether the key rotates: its own, or for a multi-Region key (a
 * Region's key, or the material row the scheduler finds due) that of its primary, whose rotation
 * every replica shares.
 */
async function rotationGoverningState(svc: Services, key: KeyRecord): Promise<KeyState> {
  if (key.primaryRegion === undefined) return key.keyState;
  const primary = (await svc.store.multiRegionKeys(apiKeyId(key.keyId))).find((k) => k.region === key.primaryRegion);
  return primary?.keyState ?? 'PendingDeletion';
}

/** Disabled keys and keys pending deletion are not rotated; they become due again when enabled. */
function isRotationDue(key: KeyRecord, state: KeyState, periodInDays: number | null, nextRotationDate: Date | null, now: Date): boolean {
  return (
    rotationSupport(key) === 'automatic-and-on-demand' &&
    state === 'Enabled' &&
    periodInDays !== null &&
    nextRotationDate !== null &&
    nextRotationDate.getTime() <= now.getTime()
  );
}

/**
 * For reads of rotation state (DescribeKey, GetKeyRotationStatus, ListKeyRotations): a due
 * rotation happens now rather than at the next lifecycle pass, unless another process is at it.
 * Returns the key as it is afterwards.
 */
export async function rotateIfDue(svc: Services, key: KeyRecord): Promise<KeyRecord> {
  const now = svc.now();
  const schedule = await svc.store.lifecycle.rotationSchedule(key.keyId, now);
  if (!isRotationDue(key, await rotationGoverningState(svc, key), schedule?.periodInDays ?? null, schedule?.nextRotationDate ?? null, now) || schedule?.claim) return key;
  const claim = newClaim(svc);
  if (!(await svc.store.lifecycle.claimKey(key.keyId, 'rotation', claim))) return key;
  try {
    await rotateAutomatically(svc, key, claim);
  } catch {
    return key; // the lifecycle pass retries and logs
  } finally {
    await svc.store.lifecycle.releaseClaim(key.keyId, claim.id);
  }
  return (await svc.store.getKey(key.keyId)) ?? key;
}

/** Claims `key` for `kind`, runs `work`, and releases the claim whatever happens (a committed
 *  rotation has released it already; releasing again is a no-op). */
export async function withKeyClaim<T>(svc: Services, key: KeyRecord, kind: ClaimKind, work: (claim: Claim) => Promise<T>): Promise<T> {
  const claim = newClaim(svc);
  if (!(await svc.store.lifecycle.claimKey(key.keyId, kind, claim))) {
    throw new KmsError('ConflictException', `A rotation or other key-material change of ${key.keyId} is already in progress.`);
  }
  try {
    return await work(claim);
  } finally {
    await svc.store.lifecycle.releaseClaim(key.keyId, claim.id);
  }
}
