/**
 * Secret material (an AES key or an HMAC secret) unwrapped into the token: the RSAES_OAEP_* and
 * RSA_AES_KEY_WRAP_* paths, the software OAEP unpadding that may stand in for a missing
 * mechanism, and the check value of the new object. KeyImporter.unwrap (key-import.ts) picks the
 * path, the session and the object-write lock; the RSA_AES_KEY_WRAP_* helpers (splitRsaAes,
 * ephemeralKeyOf) also serve private keys (key-import-keypair.ts).
 *
 * Mechanism gaps and how they are bridged (SoftHSM2 2.6.1):
 *  - no CKM_RSA_AES_KEY_WRAP: the RSA part unwraps the ephemeral AES key into a session object,
 *    then CKM_AES_KEY_WRAP_PAD unwraps the material with it. The material stays in the token.
 *  - no OAEP with SHA-256: only where the probe shows it missing, CKM_RSA_X_509 decrypts in the
 *    token and the OAEP padding is removed in the service (oaep-decode.ts); the secret (the material, or for
 *    RSA_AES_KEY_WRAP only the ephemeral key) then enters the token with C_CreateObject and the
 *    buffers are wiped. The caller may forbid this (strict key custody); results say which path ran.
 *  - CKA_VALUE_LEN stays 0 on unwrapped keys, so an RSAES_OAEP_* ciphertext does not tell how long
 *    the secret is: unwrappedLength measures it inside the token (AES-KWP output size).
 */
import { createHash } from 'node:crypto';
import pkcs11js from 'pkcs11js';
import type * as P11 from 'pkcs11js';
import { readUlong } from './bytes.js';
import { toHsmError } from './errors.js';
import { type SecretMaterial, createObject, destroyQuietly, isTokenFault, laneAttribute, laneCalls, laneEncrypt, laneOf, laneSign, oaepMechanism, undecryptable, unwrapKey, wrongLength } from './key-import-common.js';
import { labelFor, objectIdFor } from './object-naming.js';
import { decodeOaep } from './oaep-decode.js';
import type { TokenAccess } from './pkcs11-token.js';
import type { BackingKeyRef, HashName } from './types.js';

type Handle = P11.Handle;

const CHECK_VALUE_AAD = Buffer.from('p11kms:key-check-value', 'ascii');
const CHECK_VALUE_IV = Buffer.alloc(12);

// ---- unwrap paths ---------------------------------------------------------------------------

/** RSAES_OAEP_*: the RSA ciphertext is the material itself. */
export async function rsaUnwrap(
  t: TokenAccess,
  session: Handle,
  privateKey: Handle,
  wrapped: Buffer,
  hash: 'sha1' | 'sha256',
  software: boolean,
  template: P11.Template,
  kind: SecretMaterial,
): Promise<Handle> {
  if (!software) {
    if (!roundedLengthFits(kind, await unwrappedLength(t, session, privateKey, wrapped, hash))) throw wrongLength(kind);
    return unwrapKey(t, session, oaepMechanism(hash), privateKey, wrapped, template);
  }
  const material = await rawRsaOaepDecrypt(t, session, privateKey, wrapped);
  try {
    if (!lengthFits(kind, material.length)) throw wrongLength(kind);
    return await createObject(t, session, [...template, { type: pkcs11js.CKA_VALUE, value: material }]);
  } finally {
    material.fill(0);
  }
}

/**
 * How long the secret inside an RSA-OAEP ciphertext is, rounded up to 8 bytes, without it
 * leaving the token in the clear. The ciphertext alone does not tell, and SoftHSM2 leaves
 * CKA_VALUE_LEN at 0 for unwrapped keys (so a 16-byte "AES-256" import would silently become
 * AES-128). The secret is unwrapped once more as a session object that may only be wrapped,
 * wrapped with AES-KWP under a throwaway session key (output: 8 + the length rounded up to 8),
 * and both objects are destroyed at once.
 */
async function unwrappedLength(t: TokenAccess, session: Handle, privateKey: Handle, wrapped: Buffer, hash: 'sha1' | 'sha256'): Promise<number> {
  const probe = await unwrapKey(t, session, oaepMechanism(hash), privateKey, wrapped, [
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
    { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_GENERIC_SECRET },
    { type: pkcs11js.CKA_TOKEN, value: false },
    { type: pkcs11js.CKA_SENSITIVE, value: true },
    { type: pkcs11js.CKA_EXTRACTABLE, value: true },
    { type: pkcs11js.CKA_SIGN, value: false },
    { type: pkcs11js.CKA_VERIFY, value: false },
    { type: pkcs11js.CKA_DERIVE, value: false },
  ]);
  let kek: Handle | undefined;
  let fn = 'C_GenerateKey';
  try {
    const generated = await laneOf(t)(
      {
        op: 'generate-key',
        session,
        mechanism: { mechanism: pkcs11js.CKM_AES_KEY_GEN },
        template: [
          { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
          { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_AES },
          { type: pkcs11js.CKA_VALUE_LEN, value: 32 },
          { type: pkcs11js.CKA_TOKEN, value: false },
          { type: pkcs11js.CKA_SENSITIVE, value: true },
          { type: pkcs11js.CKA_EXTRACTABLE, value: false },
          { type: pkcs11js.CKA_WRAP, value: true },
          { type: pkcs11js.CKA_UNWRAP, value: false },
          { type: pkcs11js.CKA_ENCRYPT, value: false },
          { type: pkcs11js.CKA_DECRYPT, value: false },
        ],
      },
      'C_GenerateKey',
    );
    kek = Buffer.from(generated.handles![0]!);
    fn = 'C_WrapKey';
    const [sealed] = (await laneCalls(t, session, [{ fn: 'C_WrapKey', args: [{ mechanism: pkcs11js.CKM_AES_KEY_WRAP_PAD }, kek, probe, Buffer.alloc(wrapped.length + 16)] }], 'C_WrapKey')) as [Buffer];
    return sealed.length - 8;
  } catch (err) {
    throw toHsmError(err, fn, 'measuring imported key material');
  } finally {
    await destroyQuietly(t, session, probe);
    if (kek !== undefined) await destroyQuietly(t, session, kek);
  }
}

/** RSA_AES_KEY_WRAP_*: RSA-OAEP(ephemeral AES key) ‖ AES-KWP(material), emulated in two
 *  unwraps because the token has no CKM_RSA_AES_KEY_WRAP. */
export async function rsaAesUnwrap(
  t: TokenAccess,
  session: Handle,
  privateKey: Handle,
  wrapped: Buffer,
  hash: 'sha1' | 'sha256',
  software: boolean,
  template: P11.Template,
  kind: SecretMaterial,
): Promise<Handle> {
  const { rsaPart, kwpPart } = await splitRsaAes(t, session, privateKey, wrapped);
  // AES-KWP output is the input rounded up to 8 bytes plus an 8-byte block.
  if (!roundedLengthFits(kind, kwpPart.length - 8)) throw wrongLength(kind);
  const ephemeral = await ephemeralKeyOf(t, session, privateKey, rsaPart, hash, software);
  try {
    return await unwrapKey(t, session, { mechanism: pkcs11js.CKM_AES_KEY_WRAP_PAD }, ephemeral, kwpPart, template);
  } finally {
    await destroyQuietly(t, session, ephemeral);
  }
}

export async function splitRsaAes(t: TokenAccess, session: Handle, privateKey: Handle, wrapped: Buffer): Promise<{ rsaPart: Buffer; kwpPart: Buffer }> {
  const modulusBytes = (await laneAttribute(t, session, privateKey, pkcs11js.CKA_MODULUS))?.length ?? 0;
  if (modulusBytes === 0 || wrapped.length <= modulusBytes) throw undecryptable();
  return { rsaPart: wrapped.subarray(0, modulusBytes), kwpPart: wrapped.subarray(modulusBytes) };
}

/** The RSA part of RSA_AES_KEY_WRAP_*: the ephemeral AES key as a session object that can only unwrap. */
export async function ephemeralKeyOf(t: TokenAccess, session: Handle, privateKey: Handle, rsaPart: Buffer, hash: 'sha1' | 'sha256', software: boolean): Promise<Handle> {
  const ephemeralTemplate: P11.Template = [
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
    { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_AES },
    { type: pkcs11js.CKA_TOKEN, value: false },
    { type: pkcs11js.CKA_SENSITIVE, value: true },
    { type: pkcs11js.CKA_EXTRACTABLE, value: false },
    { type: pkcs11js.CKA_UNWRAP, value: true },
    { type: pkcs11js.CKA_ENCRYPT, value: false },
    { type: pkcs11js.CKA_DECRYPT, value: false },
  ];
  if (!software) return unwrapKey(t, session, oaepMechanism(hash), privateKey, rsaPart, ephemeralTemplate);
  const key = await rawRsaOaepDecrypt(t, session, privateKey, rsaPart);
  try {
    if (![16, 24, 32].includes(key.length)) throw undecryptable();
    return await createObject(t, session, [...ephemeralTemplate, { type: pkcs11js.CKA_VALUE, value: key }]);
  } finally {
    key.fill(0);
  }
}

/** CKM_RSA_X_509 in the token, then EME-OAEP (SHA-256, MGF1-SHA-256, empty label) decoding
 *  here. The encoded message is wiped; the caller wipes the returned secret. */
async function rawRsaOaepDecrypt(t: TokenAccess, session: Handle, privateKey: Handle, ciphertext: Buffer): Promise<Buffer> {
  const modulusBytes = (await laneAttribute(t, session, privateKey, pkcs11js.CKA_MODULUS))?.length ?? 0;
  if (ciphertext.length !== modulusBytes) throw undecryptable();
  const out = Buffer.alloc(modulusBytes);
  let encoded: Buffer;
  try {
    // The private-key operation on the slow lane's thread (see unwrapKey).
    encoded = Buffer.from((await laneOf(t)({ op: 'decrypt', session, key: privateKey, mechanism: { mechanism: pkcs11js.CKM_RSA_X_509 }, data: ciphertext, outBytes: modulusBytes }, 'C_Decrypt')).out!);
  } catch (err) {
    out.fill(0);
    const e = toHsmError(err, 'C_Decrypt');
    if (isTokenFault(e)) throw e;
    throw undecryptable();
  }
  // Raw RSA may drop leading zero bytes: left-pad to the modulus length.
  const em = Buffer.alloc(modulusBytes);
  encoded.copy(em, modulusBytes - encoded.length);
  out.fill(0);
  const message = decodeOaep(em, 'sha256'); // wipes em
  if (message === undefined) throw undecryptable();
  return message;
}

// ---- template and check value -------------------------------------------------------------------

/** The same attributes as keys generated in the token: AES keys encrypt and decrypt, HMAC
 *  secrets sign and verify, and nothing else. */
export function materialTemplate(t: TokenAccess, target: BackingKeyRef | 'probe', kind: SecretMaterial): P11.Template {
  const aes = kind.kind === 'aes';
  const template: P11.Template = [
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
    { type: pkcs11js.CKA_KEY_TYPE, value: aes ? pkcs11js.CKK_AES : pkcs11js.CKK_GENERIC_SECRET },
    { type: pkcs11js.CKA_TOKEN, value: target !== 'probe' },
    { type: pkcs11js.CKA_PRIVATE, value: true },
    { type: pkcs11js.CKA_SENSITIVE, value: true },
    { type: pkcs11js.CKA_EXTRACTABLE, value: false },
    { type: pkcs11js.CKA_ENCRYPT, value: aes },
    { type: pkcs11js.CKA_DECRYPT, value: aes },
    { type: pkcs11js.CKA_WRAP, value: false },
    { type: pkcs11js.CKA_UNWRAP, value: false },
    { type: pkcs11js.CKA_SIGN, value: !aes },
    { type: pkcs11js.CKA_VERIFY, value: !aes },
    { type: pkcs11js.CKA_DERIVE, value: false },
  ];
  if (target !== 'probe') {
    template.push({ type: pkcs11js.CKA_ID, value: objectIdFor(target) }, { type: pkcs11js.CKA_LABEL, value: labelFor(target) });
    // CKA_COPYABLE=false is not accepted in a C_UnwrapKey template (SoftHSM2: CKR_ATTRIBUTE_READ_ONLY).
    if (t.hardenedTemplate()) template.push({ type: pkcs11js.CKA_MODIFIABLE, value: false });
  }
  return template;
}

/** A known answer under the new object (AES-GCM encryption, or an HMAC), hashed: equal for
 *  equal material, reveals nothing about it. Also proves the object is a usable key of an
 *  accepted size where the token reports CKA_VALUE_LEN (SoftHSM2 reports 0 for unwrapped keys)
 *  or refuses keys that are too short at use. */
export async function checkValueOf(t: TokenAccess, session: Handle, material: Handle, kind: SecretMaterial): Promise<string> {
  const valueLen = await laneAttribute(t, session, material, pkcs11js.CKA_VALUE_LEN);
  const length = valueLen === undefined ? 0 : readUlong(valueLen);
  if (length !== 0 && !lengthFits(kind, length)) throw wrongLength(kind);
  try {
    let answer: Buffer;
    if (kind.kind === 'aes') {
      const parameter: P11.GcmParams = { type: pkcs11js.CK_PARAMS_GCM, iv: CHECK_VALUE_IV, ivBits: 96, aad: CHECK_VALUE_AAD, tagBits: 128 };
      answer = await laneEncrypt(t, session, { mechanism: pkcs11js.CKM_AES_GCM, parameter }, material, Buffer.alloc(kind.bytes), kind.bytes + 16);
    } else {
      answer = await laneSign(t, session, { mechanism: HMAC_MECHANISMS[kind.hash] }, material, CHECK_VALUE_AAD, 64);
    }
    return createHash('sha256').update(answer).digest('hex');
  } catch (err) {
    if (isTokenFault(err)) throw err;
    throw wrongLength(kind);
  }
}

function lengthFits(kind: SecretMaterial, length: number): boolean {
  return kind.kind === 'aes' ? length === kind.bytes : length >= kind.minBytes && length <= kind.maxBytes;
}

/** lengthFits for a length known only rounded up to a multiple of 8 (AES-KWP output sizes). */
function roundedLengthFits(kind: SecretMaterial, roundedLength: number): boolean {
  const [min, max] = kind.kind === 'aes' ? [kind.bytes, kind.bytes] : [kind.minBytes, kind.maxBytes];
  return roundedLength >= Math.ceil(min / 8) * 8 && roundedLength <= Math.ceil(max / 8) * 8;
}

const HMAC_MECHANISMS: Record<HashName, number> = {
  sha1: pkcs11js.CKM_SHA_1_HMAC,
  sha224: pkcs11js.CKM_SHA224_HMAC,
  sha256: pkcs11js.CKM_SHA256_HMAC,
  sha384: pkcs11js.CKM_SHA384_HMAC,
  sha512: pkcs11js.CKM_SHA512_HMAC,
};
