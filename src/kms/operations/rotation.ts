/**
 * Rotation operations: EnableKeyRotation, DisableKeyRotation, GetKeyRotationStatus,
 * RotateKeyOnDemand, ListKeyRotations. What rotates and how lives in ../lifecycle/materials.ts.
 */
import { KmsError, disabled, invalidState, unsupported } from '../errors.js';
import type { MaterialRecord } from '../../store/lifecycle.js';
import type { KeyRecord } from '../../store/types.js';
import type { OperationHandler, Services } from '../context.js';
import { arnOfKey, resolveAuthorizedKey } from '../keys.js';
import { requireUsableMaterial } from '../lifecycle/expiry.js';
import {
  AUTOMATIC_ROTATION_GUARD_MS,
  DAY_MS,
  DEFAULT_ROTATION_PERIOD_DAYS,
  MAX_ON_DEMAND_ROTATIONS,
  RotationConflict,
  materialState,
  rotateIfDue,
  rotateUnderClaim,
  rotationSupport,
  withKeyClaim,
} from '../lifecycle/materials.js';
import { paginate } from '../pagination.js';
import { isReplica } from '../multi-region.js';

function unsupportedForRotation(svc: Services, key: KeyRecord): KmsError {
  const arn = arnOfKey(svc, key);
  if (key.origin !== 'AWS_KMS' && key.keySpec === 'SYMMETRIC_DEFAULT') return unsupported(`${arn} origin is ${key.origin} which is not valid for this operation.`);
  return unsupported(`${arn} key spec is ${key.keySpec} which is not valid for this operation.`);
}

/** AWS's key-state table for rotation changes: Disabled → DisabledException, pending deletion
 *  or import → KMSInvalidStateException. */
function requireRotatableState(svc: Services, key: KeyRecord): void {
  const arn = arnOfKey(svc, key);
  if (key.keyState === 'Disabled') throw disabled(`${arn} is disabled.`);
  if (key.keyState === 'PendingDeletion') throw invalidState(`${arn} is pending deletion.`);
  if (key.keyState === 'PendingImport') throw invalidState(`${arn} is pending import.`);
  if (key.keyState === 'PendingReplicaDeletion') throw invalidState(`${arn} is pending replica deletion.`);
  if (key.keyState !== 'Enabled') throw invalidState(`${arn} is ${key.keyState.toLowerCase()}.`);
}

/** AWS: a multi-Region key's rotation is a shared property, managed on the primary key only. */
function requireNotReplica(svc: Services, key: KeyRecord): void {
  if (isReplica(key)) {
    throw unsupported(`${arnOfKey(svc, key)} is a multi-Region replica key. Manage its rotation on the primary key in ${key.primaryRegion}.`);
  }
}

const enableKeyRotation: OperationHandler = async (input, ctx, svc) => {
  const key = await resolveAuthorizedKey(svc, ctx, input.KeyId, 'EnableKeyRotation', { allowAlias: false });
  requireNotReplica(svc, key);
  if (rotationSupport(key) !== 'automatic-and-on-demand') throw unsupportedForRotation(svc, key);
  requireRotatableState(svc, key);
  const period: number = input.RotationPeriodInDays ?? DEFAULT_ROTATION_PERIOD_DAYS;
  const schedule = await svc.store.lifecycle.rotationSchedule(key.keyId, svc.now());
  // Already enabled: a new period counts from the same starting point (the last rotation, or
  // when rotation was enabled). Otherwise the first rotation is one period from now.
  const start =
    schedule?.periodInDays && schedule.nextRotationDate
      ? schedule.nextRotationDate.getTime() - schedule.periodInDays * DAY_MS
      : svc.now().getTime();
  await svc.store.lifecycle.setRotationSchedule(key.keyId, period, new Date(start + period * DAY_MS));
  return undefined;
};

const disableKeyRotation: OperationHandler = async (input, ctx, svc) => {
  const key = await resolveAuthorizedKey(svc, ctx, input.KeyId, 'DisableKeyRotation', { allowAlias: false });
  requireNotReplica(svc, key);
  if (rotationSupport(key) !== 'automatic-and-on-demand') throw unsupportedForRotation(svc, key);
  requireRotatableState(svc, key);
  await svc.store.lifecycle.setRotationSchedule(key.keyId, null, null);
  return undefined;
};

const getKeyRotationStatus: OperationHandler = async (input, ctx, svc) => {
  const key = await rotateIfDue(svc, await resolveAuthorizedKey(svc, ctx, input.KeyId, 'GetKeyRotationStatus', { allowAlias: false }));
  const support = rotationSupport(key);
  if (support === 'none') throw unsupportedForRotation(svc, key);
  const arn = arnOfKey(svc, key);
  const schedule = await svc.store.lifecycle.rotationSchedule(key.keyId, svc.now());
  const onDemandStart = schedule?.claim?.kind === 'on-demand-rotation' ? schedule.claim.startedAt : undefined;
  // Imported keys never rotate automatically; a key pending deletion reads false, and its
  // setting comes back if the deletion is cancelled.
  const enabled = support === 'automatic-and-on-demand' && key.keyState !== 'PendingDeletion' && !!schedule?.periodInDays;
  if (!enabled) return { KeyRotationEnabled: false, KeyId: arn, OnDemandRotationStartDate: onDemandStart };
  return {
    KeyRotationEnabled: true,
    KeyId: arn,
    RotationPeriodInDays: schedule!.periodInDays,
    NextRotationDate: schedule!.nextRotationDate ?? undefined,
    OnDemandRotationStartDate: onDemandStart,
  };
};

const rotateKeyOnDemand: OperationHandler = async (input, ctx, svc) => {
  const key = await resolveAuthorizedKey(svc, ctx, input.KeyId, 'RotateKeyOnDemand', { allowAlias: false });
  requireNotReplica(svc, key);
  if (rotationSupport(key) === 'none') throw unsupportedForRotation(svc, key);
  requireRotatableState(svc, key);
  await requireUsableMaterial(svc, key);
  const arn = arnOfKey(svc, key);
  const materials = await svc.store.lifecycle.listMaterials(key.keyId);
  if (materials.filter((m) => m.rotationType === 'ON_DEMAND').length >= MAX_ON_DEMAND_ROTATIONS) {
    throw new KmsError('LimitExceededException', `${arn} has reached the limit of ${MAX_ON_DEMAND_ROTATIONS} on-demand rotations.`);
  }
  if (key.origin === 'EXTERNAL' && !materials.some((m) => materialState(key, m) === 'PENDING_ROTATION' && m.importState === 'IMPORTED')) {
    throw invalidState(`${arn} has no imported key material in PENDING_ROTATION state. Import new key material first.`);
  }
  const schedule = await svc.store.lifecycle.rotationSchedule(key.keyId, svc.now());
  if (schedule?.periodInDays && schedule.nextRotationDate && schedule.nextRotationDate.getTime() - svc.now().getTime() < AUTOMATIC_ROTATION_GUARD_MS) {
    throw new KmsError('ConflictException', `An automatic rotation of ${arn} is in progress or due within 20 minutes.`);
  }
  try {
    await withKeyClaim(svc, key, 'on-demand-rotation', (claim) => rotateUnderClaim(svc, key, claim, 'ON_DEMAND'));
  } catch (err) {
    if (err instanceof RotationConflict) throw new KmsError('ConflictException', `A rotation of ${arn} is already in progress.`);
    throw err;
  }
  return { KeyId: arn };
};

const listKeyRotations: OperationHandler = async (input, ctx, svc) => {
  const key = await rotateIfDue(svc, await resolveAuthorizedKey(svc, ctx, input.KeyId, 'ListKeyRotations', { allowAlias: false }));
  if (rotationSupport(key) === 'none') throw unsupportedForRotation(svc, key);
  const includeAll = input.IncludeKeyMaterial === 'ALL_KEY_MATERIAL';
  const materials = (await svc.store.lifecycle.listMaterials(key.keyId)).filter((m) => includeAll || m.rotatedAt !== null);
  const page = await paginate(
    `rotation:${key.keyId}`,
    input,
    100,
    1000,
    async (after, limit) => {
      if (after !== undefined && !/^[1-9]\d*$/.test(after)) throw new KmsError('InvalidMarkerException', 'The marker that specifies where pagination should next begin is not valid.');
      return materials.filter((m) => after === undefined || m.version > Number(after)).slice(0, limit);
    },
    (m) => String(m.version),
  );
  return { Rotations: page.items.map((m) => rotationEntry(svc, key, m)), Truncated: page.Truncated, NextMarker: page.NextMarker };
};

function rotationEntry(svc: Services, key: KeyRecord, m: MaterialRecord): Record<string, unknown> {
  const imported = key.origin === 'EXTERNAL';
  return {
    KeyId: arnOfKey(svc, key),
    KeyMaterialId: m.keyMaterialId,
    KeyMaterialDescription: imported ? (m.description ?? undefined) : undefined,
    ImportState: imported ? (m.importState ?? undefined) : undefined,
    KeyMaterialState: materialState(key, m),
    ExpirationModel: imported ? (m.expirationModel ?? undefined) : undefined,
    ValidTo: imported ? (m.validTo ?? undefined) : undefined,
    RotationDate: m.rotatedAt ?? undefined,
    RotationType: m.rotationType ?? undefined,
  };
}

export const rotationOperations = {
  EnableKeyRotation: enableKeyRotation,
  DisableKeyRotation: disableKeyRotation,
  GetKeyRotationStatus: getKeyRotationStatus,
  RotateKeyOnDemand: rotateKeyOnDemand,
  ListKeyRotations: listKeyRotations,
};
