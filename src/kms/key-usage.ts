/**
 * The last successful cryptographic operation per key, for GetKeyLastUsage. Every process keeps
 * the latest use of each key in memory (one Map write per request) and hands them to the store at
 * each lifecycle pass and at shutdown, where the later of stored and new wins; GetKeyLastUsage
 * reads the store and this process's unsaved uses. Another process's uses therefore show up after
 * its next pass: the eventual consistency AWS documents for this operation.
 */
import type { KeyUseRecord } from '../store/types.js';
import type { RequestContext, Services } from './context.js';

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

export class KeyUseTracker {
  private unsaved = new Map<string, KeyUseRecord>();

  /** @param cloudTrail whether requests have audit records whose eventID a use may name */
  constructor(private readonly cloudTrail: boolean) {}

  /** After a tracked operation succeeded: every key ARN in its output was used (ReEncrypt: two). */
  noteSuccess(ctx: RequestContext, at: Date, output: Record<string, unknown> | undefined): void {
    for (const member of ['KeyId', 'SourceKeyId']) {
      const arn = output?.[member];
      if (typeof arn !== 'string') continue;
      const keyId = arn.slice(arn.lastIndexOf(':key/') + 5);
      this.unsaved.set(keyId, {
        keyId,
        operation: ctx.operation,
        at,
        requestId: ctx.requestId,
        ...(this.cloudTrail ? { eventId: ctx.eventId } : {}),
      });
    }
  }

  unsavedUseOf(keyId: string): KeyUseRecord | undefined {
    return this.unsaved.get(keyId);
  }

  take(): KeyUseRecord[] {
    const taken = [...this.unsaved.values()];
    this.unsaved = new Map();
    return taken;
  }

  /** Puts uses back after a failed save, unless a newer use of the key came meanwhile. */
  restore(uses: readonly KeyUseRecord[]): void {
    for (const use of uses) if (!this.unsaved.has(use.keyId)) this.unsaved.set(use.keyId, use);
  }
}

export async function saveKeyUses(svc: Services): Promise<void> {
  const tracker = svc.keyUses;
  if (!tracker) return;
  const uses = tracker.take();
  if (uses.length === 0) return;
  try {
    await svc.store.recordKeyUses(uses);
  } catch (err) {
    tracker.restore(uses);
    throw err;
  }
}

/** The later of the stored use and this process's unsaved one. */
export async function lastUseOf(svc: Services, keyId: string): Promise<KeyUseRecord | undefined> {
  const stored = await svc.store.getKeyUse(keyId);
  const unsaved = svc.keyUses?.unsavedUseOf(keyId);
  if (!stored) return unsaved;
  if (!unsaved) return stored;
  return unsaved.at.getTime() >= stored.at.getTime() ? unsaved : stored;
}
