/**
 * Custom key stores (CloudHSM clusters, external key store proxies) are how AWS KMS reaches an
 * HSM of the customer's; here every key already lives in the configured PKCS#11 token, so an
 * account has none. DescribeCustomKeyStores answers that truthfully (an empty list, and
 * CustomKeyStoreNotFoundException for a named store) instead of UnsupportedOperationException,
 * so tools that inventory an account work; creating or changing one stays unsupported.
 */
import { KmsError } from '../errors.js';
import type { OperationHandler } from '../context.js';
import { authorize } from '../keys.js';
import { decodeMarker } from '../pagination.js';

const describeCustomKeyStores: OperationHandler = async (input, ctx, svc) => {
  await authorize(svc, ctx, 'DescribeCustomKeyStores', '*');
  const named = input.CustomKeyStoreId ?? input.CustomKeyStoreName;
  if (named !== undefined) throw new KmsError('CustomKeyStoreNotFoundException', `Custom key store ${named} does not exist.`);
  decodeMarker('custom-key-store', input.Marker); // no marker was ever issued: any is invalid
  return { CustomKeyStores: [], Truncated: false };
};

export const customKeyStoreOperations = { DescribeCustomKeyStores: describeCustomKeyStores };
