/**
 * Encrypt, Decrypt and ReEncrypt with RSA ENCRYPT_DECRYPT keys. The ciphertext is plain
 * RSAES-OAEP (RFC 8017), exactly what AWS returns, so data encrypted offline with the key from
 * GetPublicKey decrypts here and the reverse. Encryption needs only the public key and runs in
 * the service (node:crypto); decryption runs in the token.
 */
import { constants, createPublicKey, publicEncrypt } from 'node:crypto';
import { KmsError, incorrectKey, invalidCiphertext, validation } from './errors.js';
import { symmetricHeaderOf } from './ciphertext.js';
import { HsmError } from '../hsm/types.js';
import type { KeyRecord } from '../store/types.js';
import type { RequestContext, Services } from './context.js';
import { ENCRYPTION_ALGORITHMS, algorithmsOf, keySpecInfo, maxOaepPlaintext } from './key-specs.js';
import { authorize, requireEnabled, requireUsage, resolveKey } from './keys.js';

export const isSymmetricKey = (key: KeyRecord) => key.keySpec === 'SYMMETRIC_DEFAULT';

/** The encryption algorithm for `key`: the request's, which must be one the key lists. */
export function encryptionAlgorithmFor(key: KeyRecord, requested: string | undefined): string {
  const algorithm = requested ?? 'SYMMETRIC_DEFAULT';
  if (!algorithmsOf(key.keySpec, 'ENCRYPT_DECRYPT').includes(algorithm)) {
    throw new KmsError('InvalidKeyUsageException', `Algorithm ${algorithm} is incompatible with key spec ${key.keySpec}.`);
  }
  return algorithm;
}

/** Asymmetric keys take no encryption context (AWS: symmetric encryption keys only). */
export function refuseEncryptionContext(context: Record<string, string> | undefined): void {
  if (context !== undefined && Object.keys(context).length > 0) {
    throw validation('EncryptionContext is supported only with symmetric encryption KMS keys.');
  }
}

/** RSAES-OAEP with the public key; the plaintext limit is AWS's per-spec limit. */
export async function encryptWithPublicKey(svc: Services, key: KeyRecord, algorithm: string, plaintext: Buffer): Promise<Buffer> {
  const material = keySpecInfo(key.keySpec).material;
  if (material.kind !== 'rsa') throw new KmsError('InvalidKeyUsageException', `Algorithm ${algorithm} is incompatible with key spec ${key.keySpec}.`);
  const limit = maxOaepPlaintext(material.bits, algorithm);
  if (plaintext.length > limit) {
    throw validation(`Plaintext is too long: ${key.keySpec} with ${algorithm} encrypts at most ${limit} bytes.`);
  }
  const spki = await svc.hsm.publicKey({ keyId: key.keyId, version: key.currentVersion });
  return publicEncrypt(
    { key: createPublicKey({ key: spki, format: 'der', type: 'spki' }), padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: ENCRYPTION_ALGORITHMS[algorithm]!.hash },
    plaintext,
  );
}

/** RSAES-OAEP decryption in the token; every failure to open the ciphertext is InvalidCiphertext. */
export async function decryptWithPrivateKey(svc: Services, key: KeyRecord, algorithm: string, ciphertext: Buffer): Promise<Buffer> {
  try {
    return await svc.hsm.decryptRsaOaep({ keyId: key.keyId, version: key.currentVersion }, ENCRYPTION_ALGORITHMS[algorithm]!.hash, ciphertext);
  } catch (e) {
    if (e instanceof HsmError && e.kind === 'invalid-ciphertext') throw invalidCiphertext();
    throw e;
  }
}

/**
 * When `keyId` names a key that is not symmetric, Decrypt (or ReEncrypt's source side) is an
 * asymmetric decryption: checks it and returns the key and algorithm. Undefined otherwise, and the
 * symmetric path (which finds its key in the blob) takes over. A symmetric blob names its own key,
 * so naming an RSA, HMAC or ECC key for it is IncorrectKeyException, as AWS answers.
 */
export async function asymmetricSource(
  svc: Services,
  ctx: RequestContext,
  keyId: string | undefined,
  ciphertext: Buffer,
  action: string,
  requestedAlgorithm: string | undefined,
  operation: string,
): Promise<{ key: KeyRecord; algorithm: string } | undefined> {
  if (keyId === undefined) return undefined;
  const key = await resolveKey(svc, keyId, { allowAlias: true });
  if (isSymmetricKey(key)) return undefined;
  await authorize(svc, ctx, action, key);
  if (symmetricHeaderOf(ciphertext) !== undefined) throw incorrectKey();
  requireEnabled(svc, key);
  requireUsage(svc, key, 'ENCRYPT_DECRYPT', operation);
  return { key, algorithm: encryptionAlgorithmFor(key, requestedAlgorithm) };
}
