/** GetKeyLastUsage: the last successful cryptographic operation with a key (see ../key-usage.ts). */
import type { OperationHandler } from '../context.js';
import { lastUseOf } from '../key-usage.js';
import { resolveAuthorizedKey } from '../keys.js';

const getKeyLastUsage: OperationHandler = async (input, ctx, svc) => {
  // AWS: key ID or key ARN only, and no cross-account use (resolveAuthorizedKey enforces both).
  const key = await resolveAuthorizedKey(svc, ctx, input.KeyId, 'GetKeyLastUsage', { allowAlias: false });
  const use = await lastUseOf(svc, key.keyId);
  const trackingStart = await svc.store.keyUseTrackingStart();
  return {
    KeyId: key.keyId,
    KeyLastUsage: use ? { Operation: use.operation, Timestamp: use.at, CloudTrailEventId: use.eventId, KmsRequestId: use.requestId } : {},
    TrackingStartDate: trackingStart.getTime() > key.createdAt.getTime() ? trackingStart : key.createdAt,
    KeyCreationDate: key.createdAt,
  };
};

export const keyUsageOperations = { GetKeyLastUsage: getKeyLastUsage };
