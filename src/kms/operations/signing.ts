/**
 * Asymmetric signing keys: Sign, Verify, and GetPublicKey (for every asymmetric key).
 *
 * RAW messages are hashed here and the token signs the digest (see src/hsm/asymmetric.ts for
 * why); DIGEST input must have the algorithm's digest length. ECDSA signatures travel as DER.
 */
import { createHash } from 'node:crypto';
import { KmsError, unsupported, validation } from '../errors.js';
import type { KeyRecord } from '../../store/types.js';
import type { OperationHandler } from '../context.js';
import { ecdsaDerToRaw, ecdsaRawToDer } from '../ecdsa-signature.js';
import { EC_FIELD_BYTES, SIGNING_ALGORITHMS, type SigningAlgorithm, algorithmsOf, isAsymmetric, keySpecInfo, legacyKeySpecName } from '../key-specs.js';
import { algorithmListsOf, arnOfKey, requireEnabled, resolveAuthorizedKey, usableKey } from '../keys.js';
import { dryRunSucceeded } from './crypto.js';

const invalidSignature = () => new KmsError('KMSInvalidSignatureException', 'The signature is not valid for this message and key.');

/** The algorithm the request names, which must be one the key lists and this service runs. */
function signingAlgorithmFor(key: KeyRecord, name: string): SigningAlgorithm {
  if (!algorithmsOf(key.keySpec, key.keyUsage).includes(name)) {
    throw new KmsError('InvalidKeyUsageException', `Algorithm ${name} is incompatible with key spec ${key.keySpec}.`);
  }
  const algorithm = SIGNING_ALGORITHMS[name];
  if (algorithm === undefined) {
    // ED25519_PH_SHA_512: SoftHSM2 accepts CKM_EDDSA's phFlag and silently signs pure Ed25519,
    // so pre-hashed EdDSA cannot be trusted to a token without proof; ML-DSA keys never exist here.
    throw unsupported(`Signing algorithm ${name} is not supported by this service.`);
  }
  return algorithm;
}

/** What the token signs: the digest (hashing RAW messages here) or, for EdDSA, the message. */
function tokenInput(name: string, algorithm: SigningAlgorithm, message: Buffer, messageType: string): Buffer {
  if (messageType === 'EXTERNAL_MU') throw validation(`MessageType EXTERNAL_MU is valid only with ML-DSA keys.`);
  if (algorithm.hash === undefined) {
    if (messageType !== 'RAW') throw validation(`Signing algorithm ${name} supports MessageType RAW only.`);
    return message;
  }
  if (messageType === 'RAW') return createHash(algorithm.hash).update(message).digest();
  const expected = createHash(algorithm.hash).digest().length;
  if (message.length !== expected) throw validation(`Digest is invalid length for algorithm ${name}: expected ${expected} bytes.`);
  return message;
}

const sign: OperationHandler = async (input, ctx, svc) => {
  const key = await usableKey(svc, ctx, input.KeyId, 'Sign', 'SIGN_VERIFY');
  const algorithm = signingAlgorithmFor(key, input.SigningAlgorithm);
  const data = tokenInput(input.SigningAlgorithm, algorithm, input.Message, input.MessageType ?? 'RAW');
  if (input.DryRun === true) throw dryRunSucceeded();
  const raw = await svc.hsm.sign({ keyId: key.keyId, version: key.currentVersion }, algorithm.scheme, data);
  return {
    KeyId: arnOfKey(svc, key),
    Signature: algorithm.scheme.kind === 'ecdsa' ? ecdsaRawToDer(raw) : raw,
    SigningAlgorithm: input.SigningAlgorithm,
  };
};

const verify: OperationHandler = async (input, ctx, svc) => {
  const key = await usableKey(svc, ctx, input.KeyId, 'Verify', 'SIGN_VERIFY');
  const algorithm = signingAlgorithmFor(key, input.SigningAlgorithm);
  const data = tokenInput(input.SigningAlgorithm, algorithm, input.Message, input.MessageType ?? 'RAW');
  if (input.DryRun === true) throw dryRunSucceeded();
  let signature: Buffer | undefined = input.Signature;
  if (algorithm.scheme.kind === 'ecdsa') {
    const material = keySpecInfo(key.keySpec).material;
    signature = material.kind === 'ec' ? ecdsaDerToRaw(input.Signature, EC_FIELD_BYTES[material.curve]) : undefined;
  }
  if (signature === undefined || !(await svc.hsm.verify({ keyId: key.keyId, version: key.currentVersion }, algorithm.scheme, data, signature))) {
    throw invalidSignature();
  }
  return { KeyId: arnOfKey(svc, key), SignatureValid: true, SigningAlgorithm: input.SigningAlgorithm };
};

const getPublicKey: OperationHandler = async (input, ctx, svc) => {
  const key = await resolveAuthorizedKey(svc, ctx, input.KeyId, 'GetPublicKey', { allowAlias: true });
  requireEnabled(svc, key);
  if (!isAsymmetric(key.keySpec)) throw unsupported(`${arnOfKey(svc, key)} is not an asymmetric KMS key; GetPublicKey needs one.`);
  const { MacAlgorithms: _none, ...lists } = algorithmListsOf(key);
  return {
    KeyId: arnOfKey(svc, key),
    PublicKey: await svc.hsm.publicKey({ keyId: key.keyId, version: key.currentVersion }),
    CustomerMasterKeySpec: legacyKeySpecName(key.keySpec),
    KeySpec: key.keySpec,
    KeyUsage: key.keyUsage,
    ...lists,
  };
};

export const signingOperations = {
  Sign: sign,
  Verify: verify,
  GetPublicKey: getPublicKey,
};
