/**
 * HMAC keys: GenerateMac and VerifyMac. Both run in the token; the MAC comparison too (C_Verify),
 * so the service never compares MACs itself.
 */
import { KmsError } from '../errors.js';
import type { KeyRecord } from '../../store/types.js';
import type { OperationHandler, RequestContext, Services } from '../context.js';
import { MAC_ALGORITHMS, algorithmsOf } from '../key-specs.js';
import { arnOfKey, usableKey } from '../keys.js';
import { dryRunSucceeded } from './crypto.js';

/** The HMAC key for the request, checked against its MacAlgorithm. */
async function macKey(svc: Services, ctx: RequestContext, input: Record<string, any>, operation: string): Promise<KeyRecord> {
  const key = await usableKey(svc, ctx, input.KeyId, operation, 'GENERATE_VERIFY_MAC');
  if (!algorithmsOf(key.keySpec, key.keyUsage).includes(input.MacAlgorithm)) {
    throw new KmsError('InvalidKeyUsageException', `Algorithm ${input.MacAlgorithm} is incompatible with key spec ${key.keySpec}.`);
  }
  if (input.DryRun === true) throw dryRunSucceeded();
  return key;
}

const generateMac: OperationHandler = async (input, ctx, svc) => {
  const key = await macKey(svc, ctx, input, 'GenerateMac');
  const mac = await svc.hsm.generateMac({ keyId: key.keyId, version: key.currentVersion }, MAC_ALGORITHMS[input.MacAlgorithm]!, input.Message);
  return { Mac: mac, MacAlgorithm: input.MacAlgorithm, KeyId: arnOfKey(svc, key) };
};

const verifyMac: OperationHandler = async (input, ctx, svc) => {
  const key = await macKey(svc, ctx, input, 'VerifyMac');
  const valid = await svc.hsm.verifyMac({ keyId: key.keyId, version: key.currentVersion }, MAC_ALGORITHMS[input.MacAlgorithm]!, input.Message, input.Mac);
  if (!valid) throw new KmsError('KMSInvalidMacException', 'The MAC is not valid for this message, key and algorithm.');
  return { KeyId: arnOfKey(svc, key), MacValid: true, MacAlgorithm: input.MacAlgorithm };
};

export const macOperations = {
  GenerateMac: generateMac,
  VerifyMac: verifyMac,
};
