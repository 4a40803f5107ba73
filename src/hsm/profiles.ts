/**
 * Vendor profiles: what differs between PKCS#11 token families in ways p11kms must know. One is
 * chosen at open from C_GetInfo/C_GetTokenInfo (manufacturer, library description, model), or
 * named by P11KMS_HSM_PROFILE. Facts and where they come from:
 *
 *  - softhsm2: the caller supplies the GCM IV; a failed GCM tag is CKR_GENERAL_ERROR in 2.6
 *    (measured, shared/notes/pkcs11-softhsm2.md), so that code means "bad ciphertext" only on
 *    C_Decrypt of SoftHSM 2.6. Local, in-process: token calls are cheap enough to run on the
 *    event loop.
 *  - cloudhsm (AWS CloudHSM): "the HSM ignores the IV in the request and uses an IV that it
 *    generates", written to CK_GCM_PARAMS.pIv (AWS CloudHSM user guide, PKCS#11 mechanisms,
 *    quoted in miekg/pkcs11 PR #72); the input IV must be zeros (aws-kms-xks-proxy
 *    settings_cloudhsm.toml: can_generate_iv, is_zero_iv_required); C_Encrypt/C_Decrypt buffers
 *    for CKM_AES_GCM may not exceed 16 KB (CloudHSM known issues for the PKCS#11 library);
 *    CKR_FUNCTION_FAILED is how the client reports a busy or failed-over HSM (issue 14: retry).
 *  - nshield (Entrust): the token generates the IV and requires a zero input IV (xks-proxy
 *    settings_nshield.toml); CKNFAST_ASSUME_SINGLE_PROCESS defaults to 1, so token objects one
 *    process creates stay invisible to another until it restarts: several service processes
 *    need it set to 0 (nShield Security World docs, PKCS#11 library environment variables);
 *    CKR_FUNCTION_FAILED is a failed decryption there, not a fault of the module (issue 14).
 *  - luna (Thales): in FIPS mode the IV is generated in the HSM and appended to the ciphertext
 *    after the tag; from firmware 7.9.3 ulIvLen 0 with ulIvBits 96 asks for a 96-bit IV (Luna 7
 *    SDK reference, CKM_AES_GCM; xks-proxy settings_luna.toml: IV "explicitly omitted" is
 *    generated and appended after the authentication tag). Outside FIPS mode caller IVs are
 *    accepted, so the profile defaults to caller IVs and `luna-fips` asks for the token's.
 *  - yubihsm (YubiHSM 2 PKCS#11 module): 16 sessions in all, and no AES-GCM, so
 *    SYMMETRIC_DEFAULT keys cannot be served (UnsupportedOperationException from mechanism
 *    discovery at open).
 *  - opencryptoki (software token): no AES-GCM and no EC in 3.8 (issue 14), RSA-OAEP with
 *    SHA-256 present.
 * Session limits: the pool never opens more than ulMaxSessionCount less `sessionReserve` (left
 * for the vendor's own tools and for doctor); tokens that say CK_UNAVAILABLE_INFORMATION or
 * CK_EFFECTIVELY_INFINITE impose nothing.
 */
import type { TokenInfo } from './types.js';

/** How AES-GCM encryption gets its IV. */
export type GcmIvMode =
  /** We draw the IV from the token's RNG and pass it (PKCS#11's default). */
  | 'caller'
  /** The token generates it and writes it into CK_GCM_PARAMS.pIv; the input IV must be zeros. */
  | 'token-writes-params'
  /** The token generates it (ulIvLen 0, ulIvBits 96) and appends it after the tag. */
  | 'token-appends';

export interface VendorProfile {
  name: string;
  /** What the profile is for, for logs and doctor. */
  description: string;
  gcmIv: GcmIvMode;
  /** CKR names that mean a failed tag check when C_Decrypt/C_DecryptFinal returns them. */
  tagFailure: ReadonlySet<string>;
  /** CKR names that mean "busy or briefly unreachable, retry the call" on this vendor. */
  transient: ReadonlySet<string>;
  /** CKR_GENERAL_ERROR from a call that processes caller data (unwrap, verify, derive, import)
   *  is the input's fault, not the token's (SoftHSM2 answers bad input so). */
  generalErrorOnInput?: boolean;
  /** Sessions kept free of the token's ulMaxSessionCount. */
  sessionReserve: number;
  /** Hard cap where the token does not report its own limit. */
  maxSessions?: number;
  /** A software token loaded in-process: synchronous calls are the fastest path. */
  localSoftware: boolean;
  /** Environment the vendor library needs; checked at open. */
  requiredEnv?: ReadonlyArray<{ name: string; value: string; when: 'several-processes' | 'always'; why: string }>;
}

/** Failed tags on PKCS#11-conforming tokens; SoftHSM 2.6 adds CKR_GENERAL_ERROR. */
const STANDARD_TAG_FAILURE = ['CKR_ENCRYPTED_DATA_INVALID', 'CKR_ENCRYPTED_DATA_LEN_RANGE'];
/** Conservative default: codes that say nothing about the request, only that the device could
 *  not do it this time. */
const STANDARD_TRANSIENT = ['CKR_DEVICE_ERROR', 'CKR_DEVICE_MEMORY', 'CKR_HOST_MEMORY', 'CKR_SESSION_COUNT'];

const set = (...names: string[]) => new Set(names);

export const PROFILES: Record<string, VendorProfile> = {
  generic: {
    name: 'generic',
    description: 'a PKCS#11 v2.40 token of unknown make: caller IVs, standard codes',
    gcmIv: 'caller',
    tagFailure: set(...STANDARD_TAG_FAILURE),
    transient: set(...STANDARD_TRANSIENT),
    sessionReserve: 2,
    localSoftware: false,
  },
  softhsm2: {
    name: 'softhsm2',
    description: 'SoftHSM2 (software, in-process)',
    gcmIv: 'caller',
    tagFailure: set(...STANDARD_TAG_FAILURE, 'CKR_GENERAL_ERROR'),
    transient: set(...STANDARD_TRANSIENT),
    generalErrorOnInput: true,
    sessionReserve: 0,
    localSoftware: true,
  },
  cloudhsm: {
    name: 'cloudhsm',
    description: 'AWS CloudHSM (token-generated IVs written to the GCM parameters)',
    gcmIv: 'token-writes-params',
    tagFailure: set(...STANDARD_TAG_FAILURE),
    transient: set(...STANDARD_TRANSIENT, 'CKR_FUNCTION_FAILED'),
    sessionReserve: 2,
    maxSessions: 1024,
    localSoftware: false,
  },
  nshield: {
    name: 'nshield',
    description: 'Entrust nShield (token-generated IVs written to the GCM parameters)',
    gcmIv: 'token-writes-params',
    tagFailure: set(...STANDARD_TAG_FAILURE, 'CKR_FUNCTION_FAILED'),
    transient: set(...STANDARD_TRANSIENT),
    sessionReserve: 2,
    localSoftware: false,
    requiredEnv: [
      {
        name: 'CKNFAST_ASSUME_SINGLE_PROCESS',
        value: '0',
        when: 'several-processes',
        why: 'with the default (1) keys created by one service process stay invisible to the others',
      },
    ],
  },
  luna: {
    name: 'luna',
    description: 'Thales Luna, non-FIPS mode (caller IVs)',
    gcmIv: 'caller',
    tagFailure: set(...STANDARD_TAG_FAILURE),
    transient: set(...STANDARD_TRANSIENT),
    sessionReserve: 2,
    localSoftware: false,
  },
  'luna-fips': {
    name: 'luna-fips',
    description: 'Thales Luna in FIPS mode (token-generated IVs appended after the tag)',
    gcmIv: 'token-appends',
    tagFailure: set(...STANDARD_TAG_FAILURE),
    transient: set(...STANDARD_TRANSIENT),
    sessionReserve: 2,
    localSoftware: false,
  },
  yubihsm: {
    name: 'yubihsm',
    description: 'YubiHSM 2 (16 sessions, no AES-GCM)',
    gcmIv: 'caller',
    tagFailure: set(...STANDARD_TAG_FAILURE),
    transient: set(...STANDARD_TRANSIENT),
    sessionReserve: 2,
    maxSessions: 16,
    localSoftware: false,
  },
  opencryptoki: {
    name: 'opencryptoki',
    description: 'openCryptoki (software token behind pkcsslotd)',
    gcmIv: 'caller',
    tagFailure: set(...STANDARD_TAG_FAILURE),
    transient: set(...STANDARD_TRANSIENT),
    sessionReserve: 1,
    localSoftware: true,
  },
};

export const PROFILE_NAMES = Object.keys(PROFILES);

/** The profile for a token, from what it says about itself. */
export function detectProfile(info: Pick<TokenInfo, 'manufacturerId' | 'libraryDescription' | 'model'> & { libraryManufacturer?: string; libraryVersion?: string }): VendorProfile {
  const text = `${info.libraryManufacturer ?? ''} ${info.manufacturerId} ${info.libraryDescription} ${info.model}`.toLowerCase();
  if (text.includes('softhsm')) {
    // CKR_GENERAL_ERROR as the tag failure is SoftHSM 2.6's; other versions use the standard codes.
    if (info.libraryVersion !== undefined && !info.libraryVersion.startsWith('2.6')) return { ...PROFILES.softhsm2!, tagFailure: PROFILES.generic!.tagFailure, generalErrorOnInput: false };
    return PROFILES.softhsm2!;
  }
  if (text.includes('cloudhsm')) return PROFILES.cloudhsm!;
  if (text.includes('nfast') || text.includes('nshield') || text.includes('ncipher') || text.includes('entrust')) return PROFILES.nshield!;
  if (text.includes('safenet') || text.includes('luna') || text.includes('thales')) return PROFILES.luna!;
  if (text.includes('yubi')) return PROFILES.yubihsm!;
  if (text.includes('opencryptoki') || text.includes('ibm')) return PROFILES.opencryptoki!;
  return PROFILES.generic!;
}

/** The session pool size: what was asked for, within the token's limit less the reserve. */
export function sessionLimit(profile: VendorProfile, requested: number, tokenMaxSessions: number | undefined): number {
  let limit = requested;
  const reported = tokenMaxSessions !== undefined && tokenMaxSessions > 0 && tokenMaxSessions < 2 ** 31 ? tokenMaxSessions : profile.maxSessions;
  // One session more is the control session (login holder).
  if (reported !== undefined) limit = Math.min(limit, reported - profile.sessionReserve - 1);
  return Math.max(1, limit);
}

/** Problems with the vendor environment, as messages naming the variable. */
export function environmentProblems(profile: VendorProfile, severalProcesses: boolean, env: NodeJS.ProcessEnv = process.env): string[] {
  const problems: string[] = [];
  for (const need of profile.requiredEnv ?? []) {
    if (need.when === 'several-processes' && !severalProcesses) continue;
    if (env[need.name] !== need.value) problems.push(`${profile.name}: set ${need.name}=${need.value} (${need.why}); it is ${env[need.name] === undefined ? 'unset' : `'${env[need.name]}'`}`);
  }
  return problems;
}
