/**
 * What the parts of the key import (key-import.ts and its key-import-*.ts siblings) share: the
 * request, result and error types that key-import.ts re-exports, the OAEP mechanism and the
 * probe for OAEP-SHA-256, and the small token calls every unwrap path makes (C_UnwrapKey,
 * C_CreateObject, C_DestroyObject of session objects, attribute reads).
 */
import pkcs11js from 'pkcs11js';
import type * as P11 from 'pkcs11js';
import { toHsmError } from './errors.js';
import type { TokenAccess } from './pkcs11-token.js';
import type { BackingKeyRef, EcCurve, HashName, PrivateKeyUsage } from './types.js';

type Handle = P11.Handle;

export type WrappingAlgorithm = 'RSAES_OAEP_SHA_1' | 'RSAES_OAEP_SHA_256' | 'RSA_AES_KEY_WRAP_SHA_1' | 'RSA_AES_KEY_WRAP_SHA_256';
export type WrappingKeySpec = 'RSA_2048' | 'RSA_3072' | 'RSA_4096';
/** How material entered the token: through C_UnwrapKey only, or via service memory. */
export type MaterialCustody = 'token-unwrap' | 'software-oaep-unpadding';

export const WRAPPING_KEY_BITS: Record<WrappingKeySpec, number> = { RSA_2048: 2048, RSA_3072: 3072, RSA_4096: 4096 };

export interface UnwrapRequest {
  importId: string;
  algorithm: WrappingAlgorithm;
  wrapped: Uint8Array;
  /** A backing-key object to create, or 'probe': a session object that only yields its check
   *  value (to compare a re-import with material already in the token) and is destroyed. */
  target: BackingKeyRef | 'probe';
  /** Whether raw RSA plus OAEP unpadding in the service may stand in for a missing mechanism. */
  allowSoftwareUnpadding: boolean;
  /** What the material is: it decides the object's type and usage and the lengths accepted. */
  material: MaterialKind;
}

/** Imported material: a 256-bit AES key (SYMMETRIC_DEFAULT), an HMAC secret (HMAC_*), or a
 *  PKCS#8 private key of an RSA or EC key pair with its one private-key usage. */
export type MaterialKind =
  | { kind: 'aes'; bytes: number }
  | { kind: 'hmac'; hash: HashName; minBytes: number; maxBytes: number }
  | KeyPairMaterial;
export type KeyPairMaterial = { kind: 'rsa'; bits: number; usage: PrivateKeyUsage } | { kind: 'ec'; curve: EcCurve; usage: PrivateKeyUsage };
export type SecretMaterial = Exclude<MaterialKind, KeyPairMaterial>;

/** One more C_UnwrapKey of the same wrapped material, with another template. */
export type UnwrapAs = (template: P11.Template) => Promise<Handle>;

export const isKeyPair = (kind: MaterialKind): kind is KeyPairMaterial => kind.kind === 'rsa' || kind.kind === 'ec';

export interface UnwrapResult {
  /** SHA-256 hex of a known-answer AES-GCM encryption under the material, computed in the token. */
  checkValue: string;
  custody: MaterialCustody;
}

export type KeyImportFailure =
  | 'undecryptable' // the wrapped material does not open under the wrapping key
  | 'wrong-length' // it opens, but is not a key of the expected kind and length (or curve)
  | 'custody-refused'; // only the software fallback could open it, and that is forbidden

export class KeyImportError extends Error {
  constructor(
    readonly failure: KeyImportFailure,
    message: string,
  ) {
    super(message);
    this.name = 'KeyImportError';
  }
}

const CKM_SHA256 = pkcs11js.CKM_SHA256;
const CKZ_DATA_SPECIFIED = 1;
/** Errors with which tokens refuse OAEP parameters they do not implement. */
const OAEP_PARAMS_REFUSED = new Set(['CKR_ARGUMENTS_BAD', 'CKR_MECHANISM_PARAM_INVALID', 'CKR_MECHANISM_INVALID']);

/** C_UnwrapKey, on the slow lane's thread inside a slowSession (RSA unwraps are private-key
 *  operations), else on libuv's pool. */
export async function unwrapKey(t: TokenAccess, session: Handle, mechanism: P11.Mechanism, unwrappingKey: Handle, wrapped: Buffer, template: P11.Template): Promise<Handle> {
  try {
    if (t.slowCall) return Buffer.from((await t.slowCall({ op: 'unwrap', session, mechanism, key: unwrappingKey, wrapped, template }, 'C_UnwrapKey')).handles![0]!);
    return await t.p.C_UnwrapKeyAsync(session, mechanism, unwrappingKey, wrapped, template);
  } catch (err) {
    const e = toHsmError(err, 'C_UnwrapKey');
    if (e.kind === 'unavailable') throw e;
    throw undecryptable();
  }
}

export function createObject(t: TokenAccess, session: Handle, template: P11.Template): Handle {
  try {
    return t.p.C_CreateObject(session, template);
  } catch (err) {
    throw toHsmError(err, 'C_CreateObject', 'creating imported key material');
  }
}

export function destroyQuietly(t: TokenAccess, session: Handle, handle: Handle): void {
  try {
    t.p.C_DestroyObject(session, handle);
  } catch {
    // session objects die with their session anyway
  }
}

/** Whether the token does RSA-OAEP with SHA-256 itself, tried with a throwaway session key
 *  pair (KeyImporter.hasOaepSha256 runs this once). */
export async function probeOaepSha256(t: TokenAccess): Promise<boolean> {
  return t.slowSession(async (session, call) => {
    const pair = await call(
      {
        op: 'generate-key-pair',
        session,
        mechanism: { mechanism: pkcs11js.CKM_RSA_PKCS_KEY_PAIR_GEN },
        publicTemplate: [
          { type: pkcs11js.CKA_TOKEN, value: false },
          { type: pkcs11js.CKA_MODULUS_BITS, value: 1024 },
          { type: pkcs11js.CKA_PUBLIC_EXPONENT, value: Buffer.from([1, 0, 1]) },
          { type: pkcs11js.CKA_ENCRYPT, value: true },
        ],
        privateTemplate: [
          { type: pkcs11js.CKA_TOKEN, value: false },
          { type: pkcs11js.CKA_DECRYPT, value: true },
        ],
      },
      'C_GenerateKeyPair',
    );
    const [publicKey, privateKey] = pair.handles!.map((h) => Buffer.from(h)) as [Buffer, Buffer];
    // Once per process, with a throwaway public key: the encryption stays on this thread.
    try {
      t.p.C_EncryptInit(session, oaepMechanism('sha256'), publicKey);
      t.p.C_Encrypt(session, Buffer.alloc(32), Buffer.alloc(128));
      return true;
    } catch (err) {
      const e = toHsmError(err, 'C_Encrypt');
      if (OAEP_PARAMS_REFUSED.has(e.ckr)) {
        t.log('info', `token '${t.label}' has no RSA-OAEP with SHA-256 (${e.ckr})`);
        return false;
      }
      throw e;
    } finally {
      destroyQuietly(t, session, publicKey);
      destroyQuietly(t, session, privateKey);
    }
  });
}

export function oaepMechanism(hash: 'sha1' | 'sha256'): P11.Mechanism {
  const parameter: P11.RsaOAEP = {
    type: pkcs11js.CK_PARAMS_RSA_OAEP,
    hashAlg: hash === 'sha1' ? pkcs11js.CKM_SHA_1 : CKM_SHA256,
    mgf: hash === 'sha1' ? pkcs11js.CKG_MGF1_SHA1 : pkcs11js.CKG_MGF1_SHA256,
    source: CKZ_DATA_SPECIFIED,
  };
  return { mechanism: pkcs11js.CKM_RSA_PKCS_OAEP, parameter };
}

export function readAttribute(t: TokenAccess, session: Handle, handle: Handle, type: number): Buffer | undefined {
  try {
    return t.p.C_GetAttributeValue(session, handle, [{ type }])[0]!.value;
  } catch {
    return undefined;
  }
}

export const undecryptable = () => new KeyImportError('undecryptable', 'the encrypted key material could not be unwrapped with the wrapping key of this import token');
export const wrongLength = (kind: MaterialKind) =>
  new KeyImportError(
    'wrong-length',
    kind.kind === 'aes'
      ? `the imported key material is not a ${kind.bytes * 8}-bit AES key`
      : kind.kind === 'hmac'
        ? `the imported HMAC key must be ${kind.minBytes} to ${kind.maxBytes} bytes long`
        : kind.kind === 'rsa'
          ? `the imported private key is not a ${kind.bits}-bit RSA key`
          : `the imported private key is not an EC key on ${kind.curve}`,
  );
