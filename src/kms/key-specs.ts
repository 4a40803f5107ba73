/**
 * The one table of AWS KMS key specs: which key usages each spec allows, the algorithms each
 * usage lists (DescribeKey, GetPublicKey), what the token must generate, and how every algorithm
 * maps onto a token operation. The token's own mechanism needs live in src/hsm/asymmetric.ts.
 *
 * Source: the AWS KMS developer guide's key spec reference (see shared/notes/aws-kms-api.md §4.1).
 */
import type { EcCurve, HashName, KeyPairType, PrivateKeyUsage, SignatureScheme, TokenKeyType } from '../hsm/types.js';

export type KeyUsage = 'ENCRYPT_DECRYPT' | 'SIGN_VERIFY' | 'GENERATE_VERIFY_MAC' | 'KEY_AGREEMENT';

export interface KeySpecInfo {
  /** What the token holds for a key of this spec. */
  material: TokenKeyType | { kind: 'aes' };
  /** Usage → the algorithms AWS lists for it. The first usage is not a default: non-symmetric
   *  specs need KeyUsage. */
  usages: Partial<Record<KeyUsage, readonly string[]>>;
}

/** In the order AWS lists them. */
const RSA_SIGNING = ['RSASSA_PKCS1_V1_5_SHA_256', 'RSASSA_PKCS1_V1_5_SHA_384', 'RSASSA_PKCS1_V1_5_SHA_512', 'RSASSA_PSS_SHA_256', 'RSASSA_PSS_SHA_384', 'RSASSA_PSS_SHA_512'];
const RSA_ENCRYPTION = ['RSAES_OAEP_SHA_1', 'RSAES_OAEP_SHA_256'];

const rsa = (bits: number): KeySpecInfo => ({ material: { kind: 'rsa', bits }, usages: { ENCRYPT_DECRYPT: RSA_ENCRYPTION, SIGN_VERIFY: RSA_SIGNING } });
const hmac = (hash: HashName, algorithm: string): KeySpecInfo => ({ material: { kind: 'hmac', hash }, usages: { GENERATE_VERIFY_MAC: [algorithm] } });

export const KEY_SPECS: Readonly<Record<string, KeySpecInfo>> = {
  SYMMETRIC_DEFAULT: { material: { kind: 'aes' }, usages: { ENCRYPT_DECRYPT: ['SYMMETRIC_DEFAULT'] } },
  RSA_2048: rsa(2048),
  RSA_3072: rsa(3072),
  RSA_4096: rsa(4096),
  ECC_NIST_P256: { material: { kind: 'ec', curve: 'P-256' }, usages: { SIGN_VERIFY: ['ECDSA_SHA_256'], KEY_AGREEMENT: ['ECDH'] } },
  ECC_NIST_P384: { material: { kind: 'ec', curve: 'P-384' }, usages: { SIGN_VERIFY: ['ECDSA_SHA_384'], KEY_AGREEMENT: ['ECDH'] } },
  ECC_NIST_P521: { material: { kind: 'ec', curve: 'P-521' }, usages: { SIGN_VERIFY: ['ECDSA_SHA_512'], KEY_AGREEMENT: ['ECDH'] } },
  ECC_SECG_P256K1: { material: { kind: 'ec', curve: 'secp256k1' }, usages: { SIGN_VERIFY: ['ECDSA_SHA_256'] } },
  ECC_NIST_EDWARDS25519: { material: { kind: 'ed25519' }, usages: { SIGN_VERIFY: ['ED25519_SHA_512', 'ED25519_PH_SHA_512'] } },
  HMAC_224: hmac('sha224', 'HMAC_SHA_224'),
  HMAC_256: hmac('sha256', 'HMAC_SHA_256'),
  HMAC_384: hmac('sha384', 'HMAC_SHA_384'),
  HMAC_512: hmac('sha512', 'HMAC_SHA_512'),
  ML_DSA_44: { material: { kind: 'ml-dsa' }, usages: { SIGN_VERIFY: ['ML_DSA_SHAKE_256'] } },
  ML_DSA_65: { material: { kind: 'ml-dsa' }, usages: { SIGN_VERIFY: ['ML_DSA_SHAKE_256'] } },
  ML_DSA_87: { material: { kind: 'ml-dsa' }, usages: { SIGN_VERIFY: ['ML_DSA_SHAKE_256'] } },
  SM2: { material: { kind: 'sm2' }, usages: { ENCRYPT_DECRYPT: ['SM2PKE'], SIGN_VERIFY: ['SM2DSA'], KEY_AGREEMENT: ['ECDH'] } },
};

/** The deprecated CustomerMasterKeySpec has no name for specs added after it (ML-DSA, Ed25519). */
export const legacyKeySpecName = (keySpec: string): string | undefined =>
  keySpec.startsWith('ML_DSA_') || keySpec === 'ECC_NIST_EDWARDS25519' ? undefined : keySpec;

/** HMAC keys are as long as the hash output, as AWS's HMAC key specs are. */
export const HMAC_KEY_BYTES: Record<string, number> = { sha224: 28, sha256: 32, sha384: 48, sha512: 64 };

/** The token capability a KMS key usage becomes. */
export const PRIVATE_KEY_USAGE: Record<KeyUsage, PrivateKeyUsage> = {
  SIGN_VERIFY: 'sign',
  GENERATE_VERIFY_MAC: 'sign',
  ENCRYPT_DECRYPT: 'decrypt',
  KEY_AGREEMENT: 'derive',
};

export function keySpecInfo(keySpec: string): KeySpecInfo {
  const info = KEY_SPECS[keySpec];
  if (info === undefined) throw new RangeError(`unknown key spec ${keySpec}`);
  return info;
}

/** Algorithms a key of this spec and usage lists (and accepts). */
export function algorithmsOf(keySpec: string, keyUsage: string): readonly string[] {
  return KEY_SPECS[keySpec]?.usages[keyUsage as KeyUsage] ?? [];
}

export const isAsymmetric = (keySpec: string): boolean => {
  const kind = KEY_SPECS[keySpec]?.material.kind;
  return kind !== undefined && kind !== 'aes' && kind !== 'hmac';
};

/** The key pair type of an asymmetric spec this service can generate. */
export function keyPairTypeOf(keySpec: string): KeyPairType | undefined {
  const material = KEY_SPECS[keySpec]?.material;
  return material?.kind === 'rsa' || material?.kind === 'ec' || material?.kind === 'ed25519' ? material : undefined;
}

// ---- algorithms --------------------------------------------------------------------------------

export interface SigningAlgorithm {
  scheme: SignatureScheme;
  /** Hash applied to RAW messages (and the DIGEST length); undefined: the scheme signs the message. */
  hash: HashName | undefined;
}

export const SIGNING_ALGORITHMS: Readonly<Record<string, SigningAlgorithm>> = {
  RSASSA_PSS_SHA_256: { scheme: { kind: 'rsa-pss', hash: 'sha256' }, hash: 'sha256' },
  RSASSA_PSS_SHA_384: { scheme: { kind: 'rsa-pss', hash: 'sha384' }, hash: 'sha384' },
  RSASSA_PSS_SHA_512: { scheme: { kind: 'rsa-pss', hash: 'sha512' }, hash: 'sha512' },
  RSASSA_PKCS1_V1_5_SHA_256: { scheme: { kind: 'rsa-pkcs1', hash: 'sha256' }, hash: 'sha256' },
  RSASSA_PKCS1_V1_5_SHA_384: { scheme: { kind: 'rsa-pkcs1', hash: 'sha384' }, hash: 'sha384' },
  RSASSA_PKCS1_V1_5_SHA_512: { scheme: { kind: 'rsa-pkcs1', hash: 'sha512' }, hash: 'sha512' },
  ECDSA_SHA_256: { scheme: { kind: 'ecdsa' }, hash: 'sha256' },
  ECDSA_SHA_384: { scheme: { kind: 'ecdsa' }, hash: 'sha384' },
  ECDSA_SHA_512: { scheme: { kind: 'ecdsa' }, hash: 'sha512' },
  ED25519_SHA_512: { scheme: { kind: 'eddsa' }, hash: undefined },
};

/** RSAES-OAEP: hash (MGF1 uses the same) and its output length for the plaintext limit. */
export const ENCRYPTION_ALGORITHMS: Readonly<Record<string, { hash: HashName; hashBytes: number }>> = {
  RSAES_OAEP_SHA_1: { hash: 'sha1', hashBytes: 20 },
  RSAES_OAEP_SHA_256: { hash: 'sha256', hashBytes: 32 },
};

/** Longest OAEP plaintext for a modulus of `bits` (RFC 8017 §7.1.1: k − 2·hLen − 2). */
export function maxOaepPlaintext(bits: number, algorithm: string): number {
  return bits / 8 - 2 * ENCRYPTION_ALGORITHMS[algorithm]!.hashBytes - 2;
}

/** Bytes of a field element: the length of each of ECDSA's r and s. */
export const EC_FIELD_BYTES: Readonly<Record<EcCurve, number>> = { 'P-256': 32, 'P-384': 48, 'P-521': 66, secp256k1: 32 };

export const MAC_ALGORITHMS: Readonly<Record<string, HashName>> = {
  HMAC_SHA_224: 'sha224',
  HMAC_SHA_256: 'sha256',
  HMAC_SHA_384: 'sha384',
  HMAC_SHA_512: 'sha512',
};

/** DataKeyPairSpec → what the token generates (SM2 has no standard PKCS#11 mechanism). */
export const DATA_KEY_PAIR_SPECS: Readonly<Record<string, KeyPairType | undefined>> = {
  RSA_2048: { kind: 'rsa', bits: 2048 },
  RSA_3072: { kind: 'rsa', bits: 3072 },
  RSA_4096: { kind: 'rsa', bits: 4096 },
  ECC_NIST_P256: { kind: 'ec', curve: 'P-256' },
  ECC_NIST_P384: { kind: 'ec', curve: 'P-384' },
  ECC_NIST_P521: { kind: 'ec', curve: 'P-521' },
  ECC_SECG_P256K1: { kind: 'ec', curve: 'secp256k1' },
  ECC_NIST_EDWARDS25519: { kind: 'ed25519' },
  SM2: undefined,
};
