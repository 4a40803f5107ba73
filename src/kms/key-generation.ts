/**
 * CreateKey's key-spec half: which KeySpec/KeyUsage pairs are valid, whether this token can make
 * them, and generating the backing key in the token.
 */
import { unsupported, validation } from './errors.js';
import type { BackingKeyRef, SecretCustody } from '../hsm/types.js';
import type { Services } from './context.js';
import { HMAC_KEY_BYTES, KEY_SPECS, type KeyUsage, PRIVATE_KEY_USAGE, keySpecInfo } from './key-specs.js';

/**
 * Resolves and checks the key usage for `keySpec`. KeyUsage defaults to ENCRYPT_DECRYPT (the
 * model's default), which is invalid for every spec that cannot encrypt, so HMAC and ECC keys
 * effectively require it.
 */
export function checkKeySpecAndUsage(svc: Pick<Services, 'hsm'>, keySpec: string, requestedUsage: string | undefined): KeyUsage {
  const info = KEY_SPECS[keySpec];
  if (info === undefined) throw unsupported(`KeySpec ${keySpec} is not supported by this service.`);
  const keyUsage = (requestedUsage ?? 'ENCRYPT_DECRYPT') as KeyUsage;
  if (info.usages[keyUsage] === undefined) {
    const allowed = Object.keys(info.usages).join(' or ');
    throw validation(`KeyUsage ${keyUsage} is not compatible with KeySpec ${keySpec}; the valid KeyUsage for ${keySpec} is ${allowed}.`);
  }
  const material = info.material;
  const missing = svc.hsm.missingMechanisms(material, PRIVATE_KEY_USAGE[keyUsage]);
  if (missing.length > 0) {
    throw unsupported(`KeySpec ${keySpec} with KeyUsage ${keyUsage} is not supported: the HSM does not offer ${missing.join(', ')}.`);
  }
  if (material.kind === 'ml-dsa' || material.kind === 'sm2') {
    throw unsupported(`KeySpec ${keySpec} is not supported by this service.`);
  }
  return keyUsage;
}

/**
 * Generates the token object(s) of a new backing key; checkKeySpecAndUsage has vetted the pair.
 * `multiRegion`: symmetric and HMAC material is made so that it can travel to a peer site's token
 * (wrapped under a trusted key only, src/hsm/site-replication.ts); key pairs never travel.
 */
export async function generateBackingKey(svc: Services, ref: BackingKeyRef, keySpec: string, keyUsage: KeyUsage, multiRegion = false): Promise<void> {
  const material = keySpecInfo(keySpec).material;
  const custody: SecretCustody = multiRegion ? 'trusted-wrap' : 'token-only';
  switch (material.kind) {
    case 'aes':
      return svc.hsm.generateAesKey(ref, custody);
    case 'hmac':
      return svc.hsm.generateHmacKey(ref, material.hash, HMAC_KEY_BYTES[material.hash]!, custody);
    case 'rsa':
    case 'ec':
    case 'ed25519':
      return svc.hsm.generateKeyPair(ref, material, PRIVATE_KEY_USAGE[keyUsage]);
    default:
      throw unsupported(`KeySpec ${keySpec} is not supported by this service.`);
  }
}
