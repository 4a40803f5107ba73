/**
 * The contract between KMS semantics and the token. Only src/hsm/ imports pkcs11js; everything
 * else sees this interface. Key material never crosses it, only handles-by-name (BackingKeyRef).
 */

/** One backing key object in the token: a KMS key ID plus the backing-key version (1 = the
 *  material created with the key, each rotation adds the next). Maps to CKA_ID and CKA_LABEL. */
export interface BackingKeyRef {
  keyId: string;
  version: number;
}

/** Why a token call failed, in terms the KMS layer can translate into an API error. */
export type HsmFailureKind =
  | 'invalid-ciphertext' // tag check / padding failed (SoftHSM2 reports CKR_GENERAL_ERROR)
  | 'key-not-found' // no token object for the ref
  | 'unavailable' // token not present, session/login lost, device error
  | 'unsupported' // mechanism missing on this token
  | 'busy' // every session busy and the queue for one full (back-pressure)
  | 'timeout' // the token did not answer within the per-call deadline
  | 'other';

export class HsmError extends Error {
  constructor(
    readonly kind: HsmFailureKind,
    /** CKR_* name, e.g. CKR_GENERAL_ERROR; never contains data. */
    readonly ckr: string,
    /** The PKCS#11 function that failed, e.g. C_Decrypt. */
    readonly fn: string,
    message?: string,
  ) {
    super(message ?? `${fn} failed: ${ckr}`);
    this.name = 'HsmError';
  }
}

export interface TokenInfo {
  libraryDescription: string;
  manufacturerId: string;
  model: string;
  label: string;
  serialNumber: string;
  mechanismCount: number;
}

export interface Hsm {
  readonly info: TokenInfo;
  /** Mechanism numbers reported by C_GetMechanismList for the slot. */
  readonly mechanisms: ReadonlySet<number>;

  /** Generates a sensitive AES-256 token key for `ref` (C_GenerateKey), non-extractable unless
   *  `custody` is 'trusted-wrap' (multi-Region keys, site-replication.ts). */
  generateAesKey(ref: BackingKeyRef, custody?: SecretCustody): Promise<void>;
  /** AES-256-GCM inside the token with a 12-byte IV and 128-bit tag. Returns ciphertext‖tag.
   *  A token that chooses the IV itself (CloudHSM, nShield, Luna FIPS: profiles.ts) overwrites
   *  `iv` with the IV it used, so the caller always stores what is in `iv` after the call. */
  encryptAesGcm(ref: BackingKeyRef, iv: Uint8Array, aad: Uint8Array, plaintext: Uint8Array): Promise<Buffer>;
  /** Inverse of encryptAesGcm; a failed tag check throws HsmError kind 'invalid-ciphertext'. */
  decryptAesGcm(ref: BackingKeyRef, iv: Uint8Array, aad: Uint8Array, ciphertextAndTag: Uint8Array): Promise<Buffer>;
  /** Bytes from the token's RNG (C_GenerateRandom), synchronously: start-up and tools. In
   *  async mode it may call the token on the event loop; the request path uses
   *  generateRandomAsync. */
  generateRandom(length: number): Buffer;
  /** The same, never calling the token on the event loop in async mode (GenerateRandom, data
   *  keys, IVs). */
  generateRandomAsync(length: number): Promise<Buffer>;
  /** Destroys the token object(s) of `ref`; no error when already absent. */
  destroyKey(ref: BackingKeyRef): Promise<void>;
  /** Every p11kms backing-key object present in the token (for consistency checks). */
  listBackingKeys(): Promise<BackingKeyRef[]>;
  /** A real round trip to the token (health checks). Throws HsmError when unreachable. */
  ping(): Promise<void>;
  /** Why the token is unusable right now, naming it (a fault seen by any call, recovery under
   *  way); undefined while it is up. Makes no token call. */
  problem?(): string | undefined;
  close(): Promise<void>;
  /** The audit trail's EC P-256 signing key in the token (audit-signing-key.ts); with `create`
   *  it is generated on first use, otherwise undefined when absent. */
  auditSigningKey?(create: boolean): Promise<import('./audit-signing-key.js').AuditSigningKey | undefined>;
  /** Session-pool use for metrics. */
  poolStats?(): { open: number; busy: number; waiting: number; max: number };
  /** Slow-lane threads (key generation, private-key operations), calls running and queued. */
  slowLaneStats?(): { threads: number; running: number; queued: number };

  // ---- asymmetric, HMAC and key-agreement keys (implemented in asymmetric.ts) ----------------

  /** PKCS#11 mechanism names this token lacks to create and use such a key; [] when it has all. */
  missingMechanisms(type: TokenKeyType, usage: PrivateKeyUsage): string[];
  /** Generates a key pair in the token: a sensitive, non-extractable private key for `ref` that can
   *  do `usage` and nothing else, plus its public key object under the same CKA_ID. */
  generateKeyPair(ref: BackingKeyRef, type: KeyPairType, usage: PrivateKeyUsage): Promise<void>;
  /** Generates a sensitive generic secret of `bytes` bytes for HMAC-`hash`, non-extractable
   *  unless `custody` is 'trusted-wrap'. */
  generateHmacKey(ref: BackingKeyRef, hash: HashName, bytes: number, custody?: SecretCustody): Promise<void>;
  /** The DER SubjectPublicKeyInfo of the key pair behind `ref`, read from its public key object. */
  publicKey(ref: BackingKeyRef): Promise<Buffer>;
  /** Signs in the token. RSA and ECDSA schemes take the digest, EdDSA the message; ECDSA returns
   *  raw r‖s. */
  sign(ref: BackingKeyRef, scheme: SignatureScheme, input: Uint8Array): Promise<Buffer>;
  /** Verifies with the public key object; false for a signature that does not verify. */
  verify(ref: BackingKeyRef, scheme: SignatureScheme, input: Uint8Array, signature: Uint8Array): Promise<boolean>;
  /** RSAES-OAEP decryption (MGF1 with the same hash, empty label); a bad ciphertext throws HsmError
   *  kind 'invalid-ciphertext'. */
  decryptRsaOaep(ref: BackingKeyRef, hash: HashName, ciphertext: Uint8Array): Promise<Buffer>;
  /** HMAC in the token. */
  generateMac(ref: BackingKeyRef, hash: HashName, message: Uint8Array): Promise<Buffer>;
  /** HMAC check in the token; false when the MAC does not match. */
  verifyMac(ref: BackingKeyRef, hash: HashName, message: Uint8Array, mac: Uint8Array): Promise<boolean>;
  /** Raw ECDH shared secret (CKD_NULL) of the private key and the peer's uncompressed point. */
  deriveSharedSecret(ref: BackingKeyRef, peerPoint: Uint8Array): Promise<Buffer>;
  /** A key pair generated in the token as session objects and handed out (for data key pairs). */
  generateExportableKeyPair(type: KeyPairType): Promise<ExportedKeyPair>;
}

/** How a new secret key may leave its token: never ('token-only', every key but multi-Region
 *  ones), or only wrapped under a key the security officer marked trusted ('trusted-wrap':
 *  CKA_EXTRACTABLE and CKA_WRAP_WITH_TRUSTED, so a multi-Region key can reach a peer site). */
export type SecretCustody = 'token-only' | 'trusted-wrap';

export type HashName = 'sha1' | 'sha224' | 'sha256' | 'sha384' | 'sha512';
export type EcCurve = 'P-256' | 'P-384' | 'P-521' | 'secp256k1';

/** Key pairs the token can generate. */
export type KeyPairType = { kind: 'rsa'; bits: number } | { kind: 'ec'; curve: EcCurve } | { kind: 'ed25519' };
/** Every kind of key whose mechanisms can be checked, including ones this service cannot make. */
export type TokenKeyType = KeyPairType | { kind: 'aes' } | { kind: 'hmac'; hash: HashName } | { kind: 'ml-dsa' } | { kind: 'sm2' };

/** The single capability a private or secret key gets: CKA_SIGN (signatures and MACs),
 *  CKA_DECRYPT or CKA_DERIVE. */
export type PrivateKeyUsage = 'sign' | 'decrypt' | 'derive';

/** How Sign and Verify use a key pair. RSA PSS salt length is the hash length. */
export type SignatureScheme =
  | { kind: 'rsa-pkcs1'; hash: HashName }
  | { kind: 'rsa-pss'; hash: HashName }
  | { kind: 'ecdsa' }
  | { kind: 'eddsa' };

export interface ExportedKeyPair {
  /** DER PKCS#8 (RFC 5958). The caller zeroes it when done. */
  privateKey: Buffer;
  /** DER SubjectPublicKeyInfo. */
  publicKey: Buffer;
}

/** The function name a slow-lane refusal ('busy') carries: the front door names its throttling family by it. */
export const SLOW_LANE_FN = 'slow lane';
