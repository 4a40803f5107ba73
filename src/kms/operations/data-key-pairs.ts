/**
 * GenerateDataKeyPair and GenerateDataKeyPairWithoutPlaintext. The pair comes from the token (see
 * generateExportableKeyPair in src/hsm/asymmetric.ts: generated as readable session objects that
 * are destroyed before returning); the PKCS#8 private key is sealed under the symmetric KMS key
 * exactly as Encrypt would, so PrivateKeyCiphertextBlob opens with Decrypt.
 *
 * Why the token and not node:crypto's generateKeyPair: every key this service hands out or keeps
 * then comes from one generator, the HSM's (certified RNG and prime generation on a real HSM),
 * which is what operators buy the HSM for. node:crypto would be about twice as fast for RSA, but
 * with OpenSSL's RNG; both run off the event loop, so only throughput differs.
 */
import { unsupported } from '../errors.js';
import type { OperationHandler, RequestContext, Services } from '../context.js';
import { sealSymmetric } from '../envelope.js';
import { DATA_KEY_PAIR_SPECS } from '../key-specs.js';
import { arnOfKey } from '../keys.js';
import { dryRunSucceeded, encryptionKey, materialIdOf, refuseRecipient } from './crypto.js';

async function generateDataKeyPair(input: Record<string, any>, ctx: RequestContext, svc: Services, operation: string) {
  const key = await encryptionKey(svc, ctx, input.KeyId, operation);
  const type = DATA_KEY_PAIR_SPECS[input.KeyPairSpec as string];
  if (type === undefined) throw unsupported(`KeyPairSpec ${input.KeyPairSpec} is not supported by this service.`);
  const missing = svc.hsm.missingMechanisms(type, 'sign');
  if (missing.length > 0) throw unsupported(`KeyPairSpec ${input.KeyPairSpec} is not supported: the HSM does not offer ${missing.join(', ')}.`);
  if (input.DryRun === true) throw dryRunSucceeded();
  const pair = await svc.hsm.generateExportableKeyPair(type);
  try {
    const blob = await sealSymmetric(svc, key, pair.privateKey, input.EncryptionContext);
    return {
      output: {
        PrivateKeyCiphertextBlob: blob,
        PublicKey: pair.publicKey,
        KeyId: arnOfKey(svc, key),
        KeyPairSpec: input.KeyPairSpec,
        KeyMaterialId: await materialIdOf(svc, key.keyId, key.currentVersion),
      },
      privateKey: pair.privateKey,
    };
  } catch (e) {
    pair.privateKey.fill(0);
    throw e;
  }
}

const generateDataKeyPairWithPlaintext: OperationHandler = async (input, ctx, svc) => {
  refuseRecipient(input);
  const { output, privateKey } = await generateDataKeyPair(input, ctx, svc, 'GenerateDataKeyPair');
  return { ...output, PrivateKeyPlaintext: privateKey };
};

const generateDataKeyPairWithoutPlaintext: OperationHandler = async (input, ctx, svc) => {
  const { output, privateKey } = await generateDataKeyPair(input, ctx, svc, 'GenerateDataKeyPairWithoutPlaintext');
  privateKey.fill(0);
  return output;
};

export const dataKeyPairOperations = {
  GenerateDataKeyPair: generateDataKeyPairWithPlaintext,
  GenerateDataKeyPairWithoutPlaintext: generateDataKeyPairWithoutPlaintext,
};
