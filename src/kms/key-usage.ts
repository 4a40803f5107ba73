/**
 * The last successful cryptographic operation per key, for GetKeyLastUsage. Every process keeps
 * the latest use of each key in memory (one Map write per request) and hands them to the store at
 * each lifecycle pass and at shutdown, where the later of stored and new wins; GetKeyLastUsage
 * reads the store and this process's unsaved uses. Another process's uses therefore show up after
 * its next pass: the eventual consistency AWS documents for this operation.
 */
import type { KeyUseRecord } from '../store/types.js';
import type { RequestContext, Services } from './context.js';
import { PendingWrites } from './pending-writes.js';
import { storeKeyId } from './regional-store.js';

/** The operations AWS tracks (the model's KeyLastUsageTrackingOperation). */
export const TRACKED_OPERATIONS: ReadonlySet<string> = new Set([
  'Decrypt',
  'DeriveSharedSecret',
  'Encrypt',
  'GenerateDataKey',
  'GenerateDataKeyPair',
  'GenerateDataKeyPairWithoutPlaintext',
  'GenerateDataKeyWithoutPlaintext',
  'GenerateMac',
  'ReEncrypt',
  'Sign',
  'Verify',
  'VerifyMac',
]);

/** Later uses replace earlier ones, also when a failed save puts older ones back. */
const later = (pending: KeyUseRecord, next: KeyUseRecord) => (next.at.getTime() >= pending.at.getTime() ? next : pending);

export class KeyUseTracker extends PendingWrites<KeyUseRecord> {
  /** @param cloudTrail whether requests have audit records whose eventID a use may name */
  constructor(private readonly cloudTrail: boolean) {
    super(later);
  }

  /** After a tracked operation succeeded: every key ARN in its output was used (ReEncrypt: two). */
  noteSuccess(ctx: RequestContext, at: Date, output: Record<string, unknown> | undefined): void {
    for (const member of ['KeyId', 'SourceKeyId']) {
      const arn = output?.[member];
      if (typeof arn !== 'string') continue;
      // Each Region's key of a multi-Region key has its own last use: the Region's store row.
      const region = arn.split(':')[3] ?? '';
      const keyId = storeKeyId({ keyId: arn.slice(arn.lastIndexOf(':key/') + 5), region });
      this.put(keyId, {
        keyId,
        operation: ctx.operation,
        at,
        requestId: ctx.requestId,
        ...(this.cloudTrail ? { eventId: ctx.eventId } : {}),
      });
    }
  }

  unsavedUseOf(keyId: string): KeyUseRecord | undefined {
    return this.pendingFor(keyId);
  }
}

export async function saveKeyUses(svc: Services): Promise<void> {
  await svc.keyUses?.flush((uses) => svc.store.recordKeyUses(uses));
}

/** The later of the stored use and this process's unsaved one. */
export async function lastUseOf(svc: Services, keyId: string): Promise<KeyUseRecord | undefined> {
  const stored = await svc.store.getKeyUse(keyId);
  const unsaved = svc.keyUses?.unsavedUseOf(storeKeyId({ keyId, region: svc.account.region }));
  if (!stored) return unsaved;
  return unsaved ? later(stored, unsaved) : stored;
}
