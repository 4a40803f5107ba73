/**
 * The PKCS#11 side of key pairs, HMAC keys and ECDH: which mechanisms a key type needs, and the
 * mechanism (with parameters) and input for each operation. asymmetric.ts runs them.
 */
import pkcs11js from 'pkcs11js';
import type * as P11 from 'pkcs11js';
import { asBuffer } from './bytes.js';
import type { EcCurve, HashName, KeyPairType, PrivateKeyUsage, SignatureScheme, TokenKeyType } from './types.js';

/** PKCS#11 3.x constants pkcs11js 2.1.7 does not define. */
const CKM_EC_EDWARDS_KEY_PAIR_GEN = 0x1055;
const CKM_EDDSA = 0x1057;
const CKM_ML_DSA_KEY_PAIR_GEN = 0x1c;
const CKM_ML_DSA = 0x1d;
const CKZ_DATA_SPECIFIED = 1;

interface HashInfo {
  mechanism: number;
  mgf: number;
  hmac: number;
  bytes: number;
  /** DER DigestInfo prefix for RSASSA-PKCS1-v1_5 (RFC 8017 §9.2 note 1). */
  digestInfo: string;
}

export const HASHES: Record<HashName, HashInfo> = {
  sha1: { mechanism: pkcs11js.CKM_SHA_1, mgf: pkcs11js.CKG_MGF1_SHA1, hmac: pkcs11js.CKM_SHA_1_HMAC, bytes: 20, digestInfo: '3021300906052b0e03021a05000414' },
  sha224: { mechanism: pkcs11js.CKM_SHA224, mgf: pkcs11js.CKG_MGF1_SHA224, hmac: pkcs11js.CKM_SHA224_HMAC, bytes: 28, digestInfo: '302d300d06096086480165030402040500041c' },
  sha256: { mechanism: pkcs11js.CKM_SHA256, mgf: pkcs11js.CKG_MGF1_SHA256, hmac: pkcs11js.CKM_SHA256_HMAC, bytes: 32, digestInfo: '3031300d060960864801650304020105000420' },
  sha384: { mechanism: pkcs11js.CKM_SHA384, mgf: pkcs11js.CKG_MGF1_SHA384, hmac: pkcs11js.CKM_SHA384_HMAC, bytes: 48, digestInfo: '3041300d060960864801650304020205000430' },
  sha512: { mechanism: pkcs11js.CKM_SHA512, mgf: pkcs11js.CKG_MGF1_SHA512, hmac: pkcs11js.CKM_SHA512_HMAC, bytes: 64, digestInfo: '3051300d060960864801650304020305000440' },
};

/** CKA_EC_PARAMS (DER OIDs) and field sizes; the names double as JWK `crv`. */
export const CURVES: Record<EcCurve, { params: Buffer; bytes: number }> = {
  'P-256': { params: Buffer.from('06082a8648ce3d030107', 'hex'), bytes: 32 },
  'P-384': { params: Buffer.from('06052b81040022', 'hex'), bytes: 48 },
  'P-521': { params: Buffer.from('06052b81040023', 'hex'), bytes: 66 },
  secp256k1: { params: Buffer.from('06052b8104000a', 'hex'), bytes: 32 },
};
export const ED25519_PARAMS = Buffer.from('06032b6570', 'hex');
export const ED25519_BYTES = 32;

/** A requirement is met by any one of its alternatives. */
type Requirement = ReadonlyArray<readonly [number, string]>;
const need = (...alternatives: Array<readonly [number, string]>): Requirement => alternatives;

const RSA_GEN = need([pkcs11js.CKM_RSA_PKCS_KEY_PAIR_GEN, 'CKM_RSA_PKCS_KEY_PAIR_GEN']);
const EC_GEN = need([pkcs11js.CKM_EC_KEY_PAIR_GEN, 'CKM_EC_KEY_PAIR_GEN']);

/** Mechanisms each (key type, usage) needs: generation first, then every operation it allows. */
function requirements(type: TokenKeyType, usage: PrivateKeyUsage): Requirement[] | undefined {
  switch (type.kind) {
    case 'aes': // SYMMETRIC_DEFAULT: AES-256-GCM inside the token
      return usage === 'decrypt' ? [need([pkcs11js.CKM_AES_KEY_GEN, 'CKM_AES_KEY_GEN']), need([pkcs11js.CKM_AES_GCM, 'CKM_AES_GCM'])] : undefined;
    case 'rsa':
      if (usage === 'sign') return [RSA_GEN, need([pkcs11js.CKM_RSA_PKCS, 'CKM_RSA_PKCS']), need([pkcs11js.CKM_RSA_PKCS_PSS, 'CKM_RSA_PKCS_PSS'])];
      if (usage === 'decrypt') return [RSA_GEN, need([pkcs11js.CKM_RSA_X_509, 'CKM_RSA_X_509'], [pkcs11js.CKM_RSA_PKCS_OAEP, 'CKM_RSA_PKCS_OAEP'])];
      return undefined;
    case 'ec':
      if (usage === 'sign') return [EC_GEN, need([pkcs11js.CKM_ECDSA, 'CKM_ECDSA'])];
      if (usage === 'derive') return [EC_GEN, need([pkcs11js.CKM_ECDH1_DERIVE, 'CKM_ECDH1_DERIVE'])];
      return undefined;
    case 'ed25519':
      return usage === 'sign' ? [need([CKM_EC_EDWARDS_KEY_PAIR_GEN, 'CKM_EC_EDWARDS_KEY_PAIR_GEN']), need([CKM_EDDSA, 'CKM_EDDSA'])] : undefined;
    case 'hmac':
      return usage === 'sign'
        ? [need([pkcs11js.CKM_GENERIC_SECRET_KEY_GEN, 'CKM_GENERIC_SECRET_KEY_GEN']), need([HASHES[type.hash].hmac, `CKM_${type.hash.toUpperCase()}_HMAC`])]
        : undefined;
    case 'ml-dsa':
      return [need([CKM_ML_DSA_KEY_PAIR_GEN, 'CKM_ML_DSA_KEY_PAIR_GEN']), need([CKM_ML_DSA, 'CKM_ML_DSA'])];
    case 'sm2':
      return [need([-1, 'an SM2 mechanism (PKCS#11 defines none; vendor-specific)'])];
  }
}

/** Names of the mechanisms (or alternatives) `mechanisms` lacks for `type` with `usage`. */
export function missingMechanismNames(mechanisms: ReadonlySet<number>, type: TokenKeyType, usage: PrivateKeyUsage): string[] {
  const needed = requirements(type, usage);
  if (needed === undefined) throw new RangeError(`no ${usage} usage for ${type.kind} keys`);
  return needed.filter((alternatives) => !alternatives.some(([m]) => mechanisms.has(m))).map((alternatives) => alternatives.map(([, name]) => name).join(' or '));
}

export function keyPairMechanism(type: KeyPairType): number {
  if (type.kind === 'rsa') return pkcs11js.CKM_RSA_PKCS_KEY_PAIR_GEN;
  if (type.kind === 'ec') return pkcs11js.CKM_EC_KEY_PAIR_GEN;
  return CKM_EC_EDWARDS_KEY_PAIR_GEN;
}

export function publicKeyParameters(type: KeyPairType): P11.Template {
  if (type.kind === 'rsa') {
    return [
      { type: pkcs11js.CKA_MODULUS_BITS, value: type.bits },
      { type: pkcs11js.CKA_PUBLIC_EXPONENT, value: Buffer.from([0x01, 0x00, 0x01]) },
    ];
  }
  return [{ type: pkcs11js.CKA_EC_PARAMS, value: type.kind === 'ec' ? CURVES[type.curve].params : ED25519_PARAMS }];
}

export const isRsa = (scheme: SignatureScheme) => scheme.kind === 'rsa-pkcs1' || scheme.kind === 'rsa-pss';

export function signatureMechanism(scheme: SignatureScheme): P11.Mechanism {
  switch (scheme.kind) {
    case 'rsa-pkcs1':
      return { mechanism: pkcs11js.CKM_RSA_PKCS };
    case 'rsa-pss': {
      const hash = HASHES[scheme.hash];
      const parameter: P11.RsaPSS = { type: pkcs11js.CK_PARAMS_RSA_PSS, hashAlg: hash.mechanism, mgf: hash.mgf, saltLen: hash.bytes };
      return { mechanism: pkcs11js.CKM_RSA_PKCS_PSS, parameter };
    }
    case 'ecdsa':
      return { mechanism: pkcs11js.CKM_ECDSA };
    case 'eddsa':
      return { mechanism: CKM_EDDSA };
  }
}

/** PKCS#1 v1.5 signs DigestInfo‖digest; every other scheme takes its input as is. */
export function signatureInput(scheme: SignatureScheme, input: Uint8Array): Buffer {
  if (scheme.kind === 'rsa-pkcs1') return Buffer.concat([Buffer.from(HASHES[scheme.hash].digestInfo, 'hex'), input]);
  return asBuffer(input);
}

export function oaepMechanism(hash: HashName): P11.Mechanism {
  const info = HASHES[hash];
  const parameter: P11.RsaOAEP = { type: pkcs11js.CK_PARAMS_RSA_OAEP, hashAlg: info.mechanism, mgf: info.mgf, source: CKZ_DATA_SPECIFIED };
  return { mechanism: pkcs11js.CKM_RSA_PKCS_OAEP, parameter };
}
