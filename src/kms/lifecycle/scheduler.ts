/**
 * Lifecycle work that comes due with time, run by every service process: automatic rotations,
 * the end of deletion windows, expired imported material and expired import parameters.
 *
 * Each pass asks the database what is due by the service clock (svc.now, injectable), so work
 * missed while the service was down is caught up by the first pass after start. Rotations and
 * deletions are claimed atomically in the database first, so with several processes on one
 * database a key is rotated once per due date and swept once. The rest is idempotent.
 */
import type { ServiceEvent } from '../../audit/record.js';
import { keyImporterOf } from '../../hsm/key-import.js';
import type { Logger } from '../../log.js';
import { keyEventScope } from '../arn.js';
import type { Services } from '../context.js';
import { sweepDeletedKey } from './deletion.js';
import { expireDueMaterials } from './expiry.js';
import { flushGcmEncryptions, rotateWornKeys } from './gcm-wear.js';
import { saveKeyUses } from '../key-usage.js';
import { newClaim, rotateAutomatically } from './materials.js';

const BATCH = 100;

export interface DueWorkSummary {
  rotated: string[];
  /** Rotated because their current material reached the AES-GCM encryption threshold. */
  rotatedForWear: string[];
  deleted: string[];
  expiredMaterials: number;
  expiredImportParameters: number;
}

/** One pass over everything that is due now. Safe to run concurrently in several processes. */
export async function runDueWork(svc: Services, log: Logger): Promise<DueWorkSummary> {
  const summary: DueWorkSummary = { rotated: [], rotatedForWear: [], deleted: [], expiredMaterials: 0, expiredImportParameters: 0 };
  summary.rotatedForWear = await rotateWornKeys(svc, log);
  await saveKeyUses(svc);
  await rotateDueKeys(svc, log, summary);
  await sweepDueDeletions(svc, log, summary);
  // Rotations not yet pushed to replicas at peer sites (site-replication.ts).
  await svc.sites?.retryPending(svc);
  summary.expiredMaterials = await expireDueMaterials(svc);
  summary.expiredImportParameters = await destroyStaleImportParameters(svc);
  return summary;
}

async function rotateDueKeys(svc: Services, log: Logger, summary: DueWorkSummary): Promise<void> {
  for (;;) {
    const claim = newClaim(svc);
    const due = await svc.store.lifecycle.claimDue('rotation', claim, BATCH);
    let stuck = 0;
    for (const keyId of due) {
      try {
        const key = await svc.store.getKey(keyId);
        const material = key && (await rotateAutomatically(svc, key, claim));
        if (!material) {
          stuck++;
          continue;
        }
        summary.rotated.push(keyId);
        log.info({ keyId, version: material.version, keyMaterialId: material.keyMaterialId }, 'automatic key rotation');
      } catch (err) {
        stuck++;
        log.error({ keyId, err: errorText(err) }, 'automatic key rotation failed; retried on a later pass');
      } finally {
        await svc.store.lifecycle.releaseClaim(keyId, claim.id);
      }
    }
    // A full batch may hide more due keys; keys that made no progress wait for the next pass
    // (asking again would hand them straight back).
    if (due.length < BATCH || stuck > 0) return;
  }
}

async function sweepDueDeletions(svc: Services, log: Logger, summary: DueWorkSummary): Promise<void> {
  for (;;) {
    const claim = newClaim(svc);
    const due = await svc.store.lifecycle.claimDue('deletion', claim, BATCH);
    let stuck = 0;
    for (const keyId of due) {
      try {
        // Read before it goes: the audit event is in the key's Region.
        const scope = keyEventScope(svc.account, (await svc.store.getKey(keyId)) ?? { keyId, region: svc.account.region });
        if (!(await sweepDeletedKey(svc, keyId, claim))) {
          stuck++;
        } else {
          summary.deleted.push(keyId);
          log.info({ keyId }, 'key deleted at the end of its waiting period; token objects destroyed');
          await recordServiceEvent(svc, log, { eventName: 'DeleteKey', ...scope, responseElements: { keyId: scope.keyArns[0]! } });
        }
      } catch (err) {
        stuck++;
        log.error({ keyId, err: errorText(err) }, 'key deletion failed; retried on a later pass');
      } finally {
        await svc.store.lifecycle.releaseClaim(keyId, claim.id);
      }
    }
    // A full batch may hide more due keys; keys that made no progress wait for the next pass
    // (asking again would hand them straight back).
    if (due.length < BATCH || stuck > 0) return;
  }
}

async function destroyStaleImportParameters(svc: Services): Promise<number> {
  const stale = await svc.store.lifecycle.staleImportParameters(svc.now(), BATCH);
  for (const parameters of stale) {
    // Token objects first: a crash in between leaves a row that the next pass finishes.
    await keyImporterOf(svc.hsm).destroyWrappingKey(parameters.importId);
    await svc.store.lifecycle.deleteImportParameters(parameters.importId);
  }
  return stale.length;
}

export interface LifecycleScheduler {
  /** Runs a pass now (after any pass in progress); what tests call after moving the clock. */
  runDueWork(): Promise<DueWorkSummary>;
  stop(): Promise<void>;
}

/**
 * Runs a first pass before returning (so a started service has caught up on work that came due
 * while it was down), then one every `intervalMs`; passes never overlap.
 */
export async function startLifecycleScheduler(svc: Services, log: Logger, intervalMs: number): Promise<LifecycleScheduler> {
  let chain: Promise<unknown> = Promise.resolve();
  let stopped = false;
  const pass = (): Promise<DueWorkSummary> => {
    const run = chain.then(() => runDueWork(svc, log));
    chain = run.catch((err: unknown) => log.error({ err: errorText(err) }, 'lifecycle pass failed'));
    return run;
  };
  const timer = setInterval(() => {
    if (!stopped) void pass().catch(() => undefined);
  }, intervalMs);
  timer.unref();
  const first = await pass().catch(() => undefined);
  if (first && (first.rotated.length > 0 || first.deleted.length > 0)) log.info({ rotated: first.rotated.length, deleted: first.deleted.length }, 'lifecycle work caught up at start');
  return {
    runDueWork: pass,
    stop: async () => {
      stopped = true;
      clearInterval(timer);
      await chain;
      // The counts since the last pass would otherwise be lost.
      await flushGcmEncryptions(svc).catch((err: unknown) => log.error({ err: errorText(err) }, 'saving AES-GCM encryption counts failed'));
      await saveKeyUses(svc).catch((err: unknown) => log.error({ err: errorText(err) }, 'saving key uses failed'));
    },
  };
}

/** CloudTrail-style AwsServiceEvent for what the service did on its own; never fails the pass. */
async function recordServiceEvent(svc: Services, log: Logger, event: ServiceEvent): Promise<void> {
  try {
    await svc.audit?.recordServiceEvent(event);
  } catch (err) {
    log.error({ err: errorText(err), eventName: event.eventName }, 'recording a service event failed');
  }
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
