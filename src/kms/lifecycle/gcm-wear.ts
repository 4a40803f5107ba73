/**
 * AES-GCM with random 96-bit IVs stays within its security bound only for a limited number of
 * encryptions under one key: NIST SP 800-38D allows at most 2^32. Every symmetric backing version
 * counts its encryptions (per process in memory, added to the database by each lifecycle pass and
 * at shutdown, so several processes add up), and a generated key whose current version reaches the
 * threshold (P11KMS_GCM_ROTATE_AFTER, default 2^31: half the bound, so counts lost in a crash
 * cannot carry a version past it) is rotated like an automatic rotation: a new token object under
 * the same key ID, every older ciphertext still decrypting. Imported keys cannot get new material
 * from us: they are reported in the log on every pass until the owner rotates them on demand.
 */
import type { Logger } from '../../log.js';
import type { GcmEncryptionCount } from '../../store/lifecycle.js';
import { keyEventScope } from '../arn.js';
import type { Services } from '../context.js';
import { PendingWrites } from '../pending-writes.js';
import { newClaim, RotationConflict, rotateUnderClaim, rotationSupport } from './materials.js';

/** This process's encryptions per backing version since the last flush. */
export class GcmEncryptionMeter extends PendingWrites<GcmEncryptionCount> {
  constructor() {
    super((pending, next) => {
      pending.count += next.count;
      return pending;
    });
  }

  note(keyId: string, version: number): void {
    this.put(`${keyId}#${version}`, { keyId, version, count: 1 });
  }
}

/** Adds this process's counts to the database; returns the versions' totals. */
export async function flushGcmEncryptions(svc: Services): Promise<GcmEncryptionCount[]> {
  const totals = await svc.gcmWear?.meter.flush((counts) => svc.store.lifecycle.addGcmEncryptions(counts));
  return totals ?? [];
}

/**
 * Flushes the counts and rotates every generated key whose current version reached the threshold.
 * Returns the IDs of the keys rotated. Several processes may run this at once: the rotation claim
 * and the expected current version let only one of them rotate a key.
 */
export async function rotateWornKeys(svc: Services, log: Logger): Promise<string[]> {
  const rotateAfter = svc.gcmWear?.rotateAfter;
  const totals = await flushGcmEncryptions(svc);
  if (rotateAfter === undefined) return [];
  const rotated: string[] = [];
  for (const { keyId, version, count } of totals) {
    if (count < rotateAfter) continue;
    const key = await svc.store.getKey(keyId);
    // Already rotated, or not rotating now (AWS rotates Enabled keys only; a key re-enabled at the
    // threshold is caught at the pass after its next encryption).
    if (!key || key.currentVersion !== version || key.keyState !== 'Enabled') continue;
    if (rotationSupport(key) !== 'automatic-and-on-demand') {
      log.warn({ keyId, version, encryptions: count }, 'key material reached the AES-GCM encryption threshold; import new material and rotate on demand');
      continue;
    }
    const claim = newClaim(svc);
    if (!(await svc.store.lifecycle.claimKey(keyId, 'rotation', claim))) continue; // another process is at it
    try {
      const material = await rotateUnderClaim(svc, key, claim, 'AUTOMATIC');
      rotated.push(keyId);
      log.info({ keyId, version: material.version, encryptions: count }, 'key rotated: AES-GCM encryption threshold reached');
      await svc.audit
        ?.recordServiceEvent({
          eventName: 'RotateKey',
          ...keyEventScope(svc.account, key, true),
          additionalEventData: { keyMaterialId: material.keyMaterialId, reason: 'AES-GCM encryption threshold' },
        })
        .catch(() => undefined);
    } catch (err) {
      if (!(err instanceof RotationConflict)) throw err;
    } finally {
      await svc.store.lifecycle.releaseClaim(keyId, claim.id);
    }
  }
  return rotated;
}
