/**
 * DeriveSharedSecret: ECDH between a KEY_AGREEMENT key's private key (in the token) and the
 * peer's public key, returning the raw shared secret (cofactor 1 curves: plain ECDH = cofactor ECDH).
 */
import { type KeyObject, createPublicKey } from 'node:crypto';
import { KmsError, validation } from '../errors.js';
import type { EcCurve } from '../../hsm/types.js';
import type { OperationHandler } from '../context.js';
import { algorithmsOf, keySpecInfo } from '../key-specs.js';
import { arnOfKey, usableKey } from '../keys.js';
import { dryRunSucceeded, refuseRecipient } from './crypto.js';

/** node:crypto's names for the curves. */
const NODE_CURVE: Record<EcCurve, string> = { 'P-256': 'prime256v1', 'P-384': 'secp384r1', 'P-521': 'secp521r1', secp256k1: 'secp256k1' };

/** The peer's uncompressed point from its DER SPKI, which must be on the key's curve. */
function peerPoint(spki: Buffer, curve: EcCurve): Buffer {
  let key: KeyObject;
  try {
    key = createPublicKey({ key: spki, format: 'der', type: 'spki' }); // also checks the point is on its curve
  } catch {
    throw validation('PublicKey is not a valid DER-encoded X.509 SubjectPublicKeyInfo.');
  }
  if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== NODE_CURVE[curve]) {
    throw validation(`PublicKey must be an elliptic curve public key on the same curve as the KMS key (${curve}).`);
  }
  const jwk = key.export({ format: 'jwk' });
  return Buffer.concat([Buffer.from([0x04]), Buffer.from(jwk.x!, 'base64url'), Buffer.from(jwk.y!, 'base64url')]);
}

const deriveSharedSecret: OperationHandler = async (input, ctx, svc) => {
  refuseRecipient(input);
  const key = await usableKey(svc, ctx, input.KeyId, 'DeriveSharedSecret', 'KEY_AGREEMENT');
  if (!algorithmsOf(key.keySpec, key.keyUsage).includes(input.KeyAgreementAlgorithm)) {
    throw new KmsError('InvalidKeyUsageException', `Algorithm ${input.KeyAgreementAlgorithm} is incompatible with key spec ${key.keySpec}.`);
  }
  const material = keySpecInfo(key.keySpec).material;
  if (material.kind !== 'ec') throw new KmsError('InvalidKeyUsageException', `${key.keySpec} keys cannot derive shared secrets here.`);
  const point = peerPoint(input.PublicKey, material.curve);
  if (input.DryRun === true) throw dryRunSucceeded();
  const secret = await svc.hsm.deriveSharedSecret({ keyId: key.keyId, version: key.currentVersion }, point);
  return { KeyId: arnOfKey(svc, key), SharedSecret: secret, KeyAgreementAlgorithm: input.KeyAgreementAlgorithm, KeyOrigin: key.origin };
};

export const keyAgreementOperations = {
  DeriveSharedSecret: deriveSharedSecret,
};
