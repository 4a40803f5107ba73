/**
 * The one place where PKCS#11 failures become HsmError. pkcs11js throws two shapes:
 *  - `Pkcs11Error`: message `CKR_PIN_INCORRECT`, numeric `.code` (most functions);
 *  - a plain `Error('CKR_TEMPLATE_INCOMPLETE:208')` from the JS-overridden C_CreateObject,
 *    C_CopyObject, C_SetAttributeValue and C_FindObjects, which bypass pkcs11js' wrapper.
 * Codes pkcs11js has no name for come out as `CKR_VENDOR_DEFINED:<rv>`; we name them from our table.
 * Messages are built from the CKR name and the function name only: never data, never PINs.
 */
// pkcs11js is CommonJS with a spread export: under Node ESM only the default import carries the
// constants (a namespace import sees just PKCS11). Types come through the namespace.
import pkcs11js from 'pkcs11js';
import { PROFILES, type VendorProfile } from './profiles.js';
import { HsmError, type HsmFailureKind } from './types.js';

/** rv → name, from pkcs11js' constants plus v2.40+ codes it lacks. */
const CKR_NAMES = new Map<number, string>([[0x1b, 'CKR_ACTION_PROHIBITED']]);
for (const [name, value] of Object.entries(pkcs11js)) {
  if (name.startsWith('CKR_') && typeof value === 'number' && !CKR_NAMES.has(value)) CKR_NAMES.set(value, name);
}

const CKR_VENDOR_DEFINED = 0x80000000;

/** Reads the CKR name and rv out of anything pkcs11js throws; undefined for non-PKCS#11 errors. */
export function parseCkr(err: unknown): { name: string; rv: number } | undefined {
  if (!(err instanceof Error)) return undefined;
  const match = /\b(CKR_\w+?)(?::(\d+))?$/m.exec(err.message);
  if (!match) return undefined;
  const codeProp = (err as { code?: unknown }).code;
  const rv = match[2] !== undefined ? Number(match[2]) : typeof codeProp === 'number' ? codeProp : NaN;
  let name = match[1]!;
  if (name === 'CKR_VENDOR_DEFINED' && Number.isFinite(rv)) {
    name = CKR_NAMES.get(rv) ?? (rv >= CKR_VENDOR_DEFINED ? `CKR_VENDOR_DEFINED_0x${rv.toString(16)}` : `CKR_0x${rv.toString(16)}`);
  }
  return { name, rv };
}

/** Token, session or login gone: the caller may retry later; health checks go red. */
const UNAVAILABLE = new Set([
  'CKR_DEVICE_ERROR',
  'CKR_DEVICE_MEMORY',
  'CKR_DEVICE_REMOVED',
  'CKR_TOKEN_NOT_PRESENT',
  'CKR_TOKEN_NOT_RECOGNIZED',
  'CKR_SESSION_CLOSED',
  'CKR_SESSION_HANDLE_INVALID',
  'CKR_SESSION_COUNT',
  'CKR_CRYPTOKI_NOT_INITIALIZED',
  'CKR_USER_NOT_LOGGED_IN',
  'CKR_PIN_EXPIRED',
  'CKR_PIN_LOCKED',
  'CKR_HOST_MEMORY',
  'CKR_FUNCTION_FAILED', // Luna/nShield report lost HA members and network timeouts this way
  'CKR_GENERAL_ERROR', // fatal on most tokens; a bad tag only where the dialect says so (checked first)
  'CKR_LIBRARY_LOAD_FAILED',
]);

const UNSUPPORTED = new Set(['CKR_MECHANISM_INVALID', 'CKR_MECHANISM_PARAM_INVALID', 'CKR_FUNCTION_NOT_SUPPORTED']);

/** The object behind a (cached) handle no longer exists. */
const STALE_HANDLE = new Set(['CKR_OBJECT_HANDLE_INVALID', 'CKR_KEY_HANDLE_INVALID']);

/** The vendor's reading of the codes that differ between token families (profiles.ts). A process
 *  loads one PKCS#11 module (C_Initialize once), so one dialect serves the whole process; openHsm
 *  sets it. Until then the conservative default: only the standard tag-failure codes. */
let dialect: Pick<VendorProfile, 'tagFailure' | 'transient' | 'generalErrorOnInput'> = PROFILES.generic!;

export function setErrorDialect(profile: Pick<VendorProfile, 'tagFailure' | 'transient' | 'generalErrorOnInput'>): void {
  dialect = profile;
}

/** Only the decrypt calls that verify the tag can report a bad ciphertext. */
const TAG_CHECKING_CALLS = new Set(['C_Decrypt', 'C_DecryptFinal', 'C_DecryptUpdate']);

/** Calls that process caller-supplied material, where a dialect may blame the input. */
const INPUT_CALLS = new Set(['C_UnwrapKey', 'C_Verify', 'C_VerifyFinal', 'C_DeriveKey', 'C_CreateObject', 'C_SetAttributeValue']);

function kindOf(ckr: string, fn: string): HsmFailureKind {
  if (TAG_CHECKING_CALLS.has(fn) && dialect.tagFailure.has(ckr)) return 'invalid-ciphertext';
  if (ckr === 'CKR_GENERAL_ERROR' && dialect.generalErrorOnInput && INPUT_CALLS.has(fn)) return 'other';
  if (STALE_HANDLE.has(ckr)) return 'key-not-found';
  if (UNAVAILABLE.has(ckr) || dialect.transient.has(ckr)) return 'unavailable';
  if (UNSUPPORTED.has(ckr)) return 'unsupported';
  return 'other';
}

/** The session (or every session) is gone: the token rebooted, failed over or was removed. */
const SESSION_LOST = new Set(['CKR_SESSION_HANDLE_INVALID', 'CKR_SESSION_CLOSED', 'CKR_DEVICE_REMOVED', 'CKR_TOKEN_NOT_PRESENT', 'CKR_CRYPTOKI_NOT_INITIALIZED']);
/** The token as a whole needs recovery (fresh sessions, login, handles), not just a retry. */
const TOKEN_LOST = new Set([...SESSION_LOST, 'CKR_USER_NOT_LOGGED_IN', 'CKR_TOKEN_NOT_RECOGNIZED', 'CKR_LIBRARY_LOAD_FAILED', 'CKR_GENERAL_ERROR']);
/** Calls whose failure ends the operation they belong to (PKCS#11 v2.40 §5.8-5.13: a call that
 *  fails, other than CKR_BUFFER_TOO_SMALL, terminates the active operation; a failed *Init
 *  starts none), so the session is clean afterwards and can be reused. */
const ENDS_OPERATION = new Set([
  'C_EncryptInit', 'C_Encrypt', 'C_EncryptFinal', 'C_DecryptInit', 'C_Decrypt', 'C_DecryptFinal',
  'C_SignInit', 'C_Sign', 'C_SignFinal', 'C_VerifyInit', 'C_Verify', 'C_VerifyFinal', 'C_DigestInit', 'C_Digest',
  'C_GenerateRandom', 'C_GenerateKey', 'C_GenerateKeyPair', 'C_GetAttributeValue', 'C_GetSessionInfo',
]);

/** A retry of the same call may well succeed (transient device trouble, per the profile). */
export function isTransient(err: HsmError): boolean {
  return err.kind === 'unavailable' && !TOKEN_LOST.has(err.ckr);
}

/** The token needs recovery: sessions, login or the library itself are gone. A CKR_GENERAL_ERROR
 *  that the dialect reads as a bad tag (SoftHSM 2.6 on C_Decrypt) is the request's fault. */
export function isTokenLost(err: HsmError): boolean {
  return err.kind === 'timeout' || (err.kind === 'unavailable' && TOKEN_LOST.has(err.ckr));
}

/** Whether the session that saw `err` must be closed rather than reused. */
export function spoilsSession(err: unknown): boolean {
  if (!(err instanceof HsmError)) return true;
  if (err.kind === 'timeout' || SESSION_LOST.has(err.ckr) || err.ckr === 'CKR_OPERATION_ACTIVE') return true;
  return !ENDS_OPERATION.has(err.fn);
}

/**
 * Translates anything thrown by a PKCS#11 call into an HsmError. `fn` is the PKCS#11 function
 * that was running; `what` optionally says what we were doing (e.g. "login to token 'x'"), and
 * must never contain secrets.
 */
export function toHsmError(err: unknown, fn: string, what?: string): HsmError {
  if (err instanceof HsmError) return err;
  const parsed = parseCkr(err);
  if (parsed) {
    const prefix = what ? `${what}: ` : '';
    return new HsmError(kindOf(parsed.name, fn), parsed.name, fn, `${prefix}${fn} failed: ${parsed.name}`);
  }
  // Not a PKCS#11 return value: a pkcs11js argument check (TypeError) or a native loader error.
  // Those messages come from pkcs11js/dlerror and carry no data.
  const detail = err instanceof Error ? err.message.split('\n')[0]!.slice(0, 300) : String(err).slice(0, 300);
  return new HsmError('other', 'CKR_GENERAL_ERROR', fn, `${what ? `${what}: ` : ''}${fn} failed: ${detail}`);
}

export function isStaleHandle(err: HsmError): boolean {
  return STALE_HANDLE.has(err.ckr);
}

export function ckrName(err: unknown): string | undefined {
  return parseCkr(err)?.name;
}
