/**
 * What the parts of the key import (key-import.ts and its key-import-*.ts siblings) share: the
 * request, result and error types that key-import.ts re-exports, the OAEP mechanism and the
 * probe for OAEP-SHA-256, and the small token calls every import path makes (C_UnwrapKey,
 * C_CreateObject, C_DestroyObject, object lookups, attribute reads).
 *
 * Every token call of the import runs in the slow lane (slow-lane.ts), in both modes: the work
 * of one import request is a few dozen short calls around one or two RSA private-key
 * operations, and on a network HSM (or a hung one) each short call on the event loop would
 * stall every other request. The helpers below take the lane thread's SlowCall from
 * TokenAccess.slowCall (set inside a slowSession, see inLane) and never call the token on this
 * thread. Import is rare; the lane's message round trip per call costs nothing that matters.
 */
import pkcs11js from 'pkcs11js';
import type * as P11 from 'pkcs11js';
import type { SequenceStep } from './call-workers.js';
import { toHsmError } from './errors.js';
import type { TokenAccess } from './pkcs11-token.js';
import type { SlowCall } from './slow-lane.js';
import { type BackingKeyRef, type EcCurve, type HashName, HsmError, type PrivateKeyUsage } from './types.js';

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

/** Runs `work` in the slow lane with a TokenAccess whose calls go to the lane's thread. */
export function inLane<T>(t: TokenAccess, work: (t: TokenAccess, session: Handle) => Promise<T>, write = false): Promise<T> {
  return t.slowSession((session, slowCall) => work({ ...t, slowCall }, session), write);
}

/** The lane thread's calls; only inside inLane or a slowSession that passed them down. */
export function laneOf(t: TokenAccess): SlowCall {
  if (!t.slowCall) throw new Error('key import token calls run in the slow lane');
  return t.slowCall;
}

/** Short calls on `session` in order on the lane's thread (one message); what each returned,
 *  Buffers as Buffers. */
export async function laneCalls(t: TokenAccess, session: Handle, steps: SequenceStep[], what: string): Promise<unknown[]> {
  const answer = await laneOf(t)({ op: 'sequence', session, steps }, what);
  return answer.results!.map(asBuffers);
}

/** Structured cloning hands Buffers back as Uint8Arrays; pkcs11js and its callers want Buffers. */
function asBuffers(value: unknown): unknown {
  if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  if (Array.isArray(value)) return value.map(asBuffers);
  if (value !== null && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, asBuffers(v)]));
  return value;
}

/** Whether an error is the token's (gone, past its deadline, busy) rather than the material's:
 *  those are never answered as bad material. */
export function isTokenFault(err: unknown): err is HsmError {
  return err instanceof HsmError && (err.kind === 'unavailable' || err.kind === 'timeout' || err.kind === 'busy');
}

/** C_UnwrapKey on the lane's thread (RSA unwraps are private-key operations). */
export async function unwrapKey(t: TokenAccess, session: Handle, mechanism: P11.Mechanism, unwrappingKey: Handle, wrapped: Buffer, template: P11.Template): Promise<Handle> {
  try {
    return Buffer.from((await laneOf(t)({ op: 'unwrap', session, mechanism, key: unwrappingKey, wrapped, template }, 'C_UnwrapKey')).handles![0]!);
  } catch (err) {
    const e = toHsmError(err, 'C_UnwrapKey');
    if (isTokenFault(e)) throw e;
    throw undecryptable();
  }
}

export async function createObject(t: TokenAccess, session: Handle, template: P11.Template): Promise<Handle> {
  try {
    const [handle] = await laneCalls(t, session, [{ fn: 'C_CreateObject', args: [template] }], 'C_CreateObject');
    return handle as Handle;
  } catch (err) {
    throw toHsmError(err, 'C_CreateObject', 'creating imported key material');
  }
}

export async function destroyQuietly(t: TokenAccess, session: Handle, handle: Handle): Promise<void> {
  try {
    await laneCalls(t, session, [{ fn: 'C_DestroyObject', args: [handle] }], 'C_DestroyObject');
  } catch {
    // session objects die with their session anyway
  }
}

/** Every object matching `template` (C_FindObjectsInit … C_FindObjectsFinal on the lane). */
export async function laneFindObjects(t: TokenAccess, session: Handle, template: P11.Template): Promise<Handle[]> {
  const BATCH = 100;
  let [, batch] = (await laneCalls(t, session, [{ fn: 'C_FindObjectsInit', args: [template] }, { fn: 'C_FindObjects', args: [BATCH] }], 'C_FindObjects')) as [undefined, Handle[]];
  const found = [...batch];
  while (batch.length === BATCH) {
    [batch] = (await laneCalls(t, session, [{ fn: 'C_FindObjects', args: [BATCH] }], 'C_FindObjects')) as [Handle[]];
    found.push(...batch);
  }
  await laneCalls(t, session, [{ fn: 'C_FindObjectsFinal', args: [] }], 'C_FindObjectsFinal');
  return found;
}

/** One attribute on the lane's thread; undefined when the token will not tell (a token fault
 *  is thrown, not taken for a missing attribute). */
export async function laneAttribute(t: TokenAccess, session: Handle, handle: Handle, type: number): Promise<Buffer | undefined> {
  try {
    const [template] = (await laneCalls(t, session, [{ fn: 'C_GetAttributeValue', args: [handle, [{ type }]] }], 'C_GetAttributeValue')) as [P11.Template];
    return template[0]!.value as Buffer;
  } catch (err) {
    if (isTokenFault(err)) throw err;
    return undefined;
  }
}

/** C_Sign (Init and data call together) on the lane's thread. */
export async function laneSign(t: TokenAccess, session: Handle, mechanism: P11.Mechanism, key: Handle, data: Buffer, outBytes: number): Promise<Buffer> {
  return Buffer.from((await laneOf(t)({ op: 'sign', session, key, mechanism, data, outBytes }, 'C_Sign')).out!);
}

/** Single-part C_Encrypt (Init and data call together) on the lane's thread. */
export async function laneEncrypt(t: TokenAccess, session: Handle, mechanism: P11.Mechanism, key: Handle, data: Buffer, outBytes: number): Promise<Buffer> {
  const [, out] = await laneCalls(t, session, [{ fn: 'C_EncryptInit', args: [mechanism, key] }, { fn: 'C_Encrypt', args: [data, Buffer.alloc(outBytes)] }], 'C_Encrypt');
  return out as Buffer;
}

/** Whether the token does RSA-OAEP with SHA-256 itself, tried with a throwaway session key
 *  pair (KeyImporter.hasOaepSha256 runs this once). */
export async function probeOaepSha256(t: TokenAccess): Promise<boolean> {
  return inLane(t, async (t, session) => {
    const pair = await laneOf(t)(
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
    try {
      await laneEncrypt(t, session, oaepMechanism('sha256'), publicKey, Buffer.alloc(32), 128);
      return true;
    } catch (err) {
      const e = toHsmError(err, 'C_Encrypt');
      if (OAEP_PARAMS_REFUSED.has(e.ckr)) {
        t.log('info', `token '${t.label}' has no RSA-OAEP with SHA-256 (${e.ckr})`);
        return false;
      }
      throw e;
    } finally {
      await destroyQuietly(t, session, publicKey);
      await destroyQuietly(t, session, privateKey);
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

/** On the calling thread: for callers outside the import (site-replication.ts) that run on
 *  their own terms; the import itself uses laneAttribute. */
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
