/**
 * Operation name → handler. Operations of the model without an entry here answer
 * UnsupportedOperationException.
 */
import { StoreUnavailableError } from '../../store/types.js';
import type { OperationHandler } from '../context.js';
import { KmsError } from '../errors.js';
import { aliasOperations } from './aliases.js';
import { cryptoOperations } from './crypto.js';
import { customKeyStoreOperations } from './custom-key-stores.js';
import { dataKeyPairOperations } from './data-key-pairs.js';
import { grantOperations } from './grants.js';
import { keyAgreementOperations } from './key-agreement.js';
import { keyOperations } from './keys.js';
import { keyUsageOperations } from './key-usage.js';
import { TRACKED_OPERATIONS } from '../key-usage.js';
import { macOperations } from './mac.js';
import { multiRegionOperations } from './multi-region.js';
import { importOperations } from './import.js';
import { policyOperations } from './policies.js';
import { rotationOperations } from './rotation.js';
import { signingOperations } from './signing.js';
import { tagOperations } from './tags.js';

const handlers: Record<string, OperationHandler> = {
  ...keyOperations,
  ...aliasOperations,
  ...tagOperations,
  ...policyOperations,
  ...grantOperations,
  ...cryptoOperations,
  ...signingOperations,
  ...macOperations,
  ...keyAgreementOperations,
  ...dataKeyPairOperations,
  ...rotationOperations,
  ...importOperations,
  ...customKeyStoreOperations,
  ...keyUsageOperations,
  ...multiRegionOperations,
};

/** A successful cryptographic operation counts as a use of its key(s) (GetKeyLastUsage). */
function trackingUse(handler: OperationHandler): OperationHandler {
  return async (input, ctx, svc) => {
    const output = await handler(input, ctx, svc);
    svc.keyUses?.noteSuccess(ctx, svc.now(), output);
    return output;
  };
}

/** A database that is down or failing over is AWS's DependencyTimeoutException (503): retry. */
function retryableWhenStoreUnavailable(handler: OperationHandler): OperationHandler {
  return async (input, ctx, svc) => {
    try {
      return await handler(input, ctx, svc);
    } catch (err) {
      if (err instanceof StoreUnavailableError) throw new KmsError('DependencyTimeoutException', 'The metadata database is not available. Retry the request.');
      throw err;
    }
  };
}

export const operationHandlers: Readonly<Record<string, OperationHandler>> = Object.fromEntries(
  Object.entries(handlers).map(([name, handler]) => [name, retryableWhenStoreUnavailable(TRACKED_OPERATIONS.has(name) ? trackingUse(handler) : handler)]),
);
