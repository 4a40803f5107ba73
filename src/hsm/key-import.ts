/**
 * Imported key material (BYOK) on the token side: the RSA wrapping key pairs of
 * GetParametersForImport, the MAC that makes import tokens unforgeable, and the unwrap of
 * customer material straight into a non-extractable token object with C_UnwrapKey.
 *
 * Per import (GetParametersForImport call) the token holds three objects under
 * CKA_ID "import#<importId>", label "p11kms-import:<importId>": the RSA private key (CKA_UNWRAP),
 * its public key, and an HMAC-SHA-256 secret that authenticates the import token.
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
 *
 * Asymmetric material (a PKCS#8 private key) enters the token solely through C_UnwrapKey
 * (CKM_AES_KEY_WRAP_PAD under the ephemeral key, or CKM_RSA_PKCS_OAEP for ECC keys wrapped with
 * RSAES_OAEP_* where the token has that OAEP hash: the software OAEP fallback would put the private
 * key in service memory, so it is refused) as a sensitive, non-extractable private key whose one
 * usage is the KMS key's; the public key object (same CKA_ID and label) is made with
 * C_CreateObject from what the token tells about the private key:
 *  - RSA: CKA_MODULUS and CKA_PUBLIC_EXPONENT are readable on the private key.
 *  - EC: the token does not expose the public point Q of a private key. The material is unwrapped
 *    a second time (same ephemeral AES key, or the same RSA ciphertext) as a short-lived,
 *    sensitive, non-extractable SESSION object with CKA_DERIVE and CKA_SIGN. CKM_ECDH1_DERIVE (CKD_NULL) against the generator G
 *    gives x(d·G) = x(Q) (public information); of the two points with that x, Q is the one that
 *    verifies an ECDSA signature the session object makes. ECDH alone cannot tell Q from −Q
 *    (x(d·P) = x(−d·P) for every P), so a KEY_AGREEMENT key needs the signature too: that is why
 *    the helper (never the stored key) may sign. It is destroyed before the call returns.
 *  - Ed25519 would need the same trick without an Edwards derive mechanism: not supported.
 * The check value of asymmetric material is a hash of its SPKI (the same private key ⇔ the same
 * public key), so re-imports compare public keys, as AWS does.
 */
import { ECDH, type JsonWebKey, createECDH, createHash, createPublicKey, timingSafeEqual, verify as verifySignature } from 'node:crypto';
import pkcs11js from 'pkcs11js';
import type * as P11 from 'pkcs11js';
import { readUlong } from './bytes.js';
import { toHsmError } from './errors.js';
import { spkiOf as spkiOfJwk } from './key-encoding.js';
import { CURVES } from './mechanisms.js';
import { labelFor, objectIdFor } from './object-naming.js';
import { decodeOaep } from './oaep-decode.js';
import { tokenAccessOf, type TokenAccess } from './pkcs11-token.js';
import { type BackingKeyRef, type EcCurve, type HashName, type Hsm, HsmError, type PrivateKeyUsage } from './types.js';

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
type SecretMaterial = Exclude<MaterialKind, KeyPairMaterial>;

/** One more C_UnwrapKey of the same wrapped material, with another template. */
type UnwrapAs = (template: P11.Template) => Promise<Handle>;

const isKeyPair = (kind: MaterialKind): kind is KeyPairMaterial => kind.kind === 'rsa' || kind.kind === 'ec';

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

const IMPORT_LABEL_PREFIX = 'p11kms-import:';
const CHECK_VALUE_AAD = Buffer.from('p11kms:key-check-value', 'ascii');
const CHECK_VALUE_IV = Buffer.alloc(12);
const CKM_SHA256 = pkcs11js.CKM_SHA256;
const CKZ_DATA_SPECIFIED = 1;
const HMAC_KEY_BYTES = 32;
/** Errors with which tokens refuse OAEP parameters they do not implement. */
const OAEP_PARAMS_REFUSED = new Set(['CKR_ARGUMENTS_BAD', 'CKR_MECHANISM_PARAM_INVALID', 'CKR_MECHANISM_INVALID']);

const importers = new WeakMap<Hsm, KeyImporter>();

/** The key-import side of an Hsm opened with openHsm (one per Hsm, so probes are cached). */
export function keyImporterOf(hsm: Hsm): KeyImporter {
  let importer = importers.get(hsm);
  if (!importer) {
    importer = new KeyImporter(tokenAccessOf(hsm));
    importers.set(hsm, importer);
  }
  return importer;
}

export class KeyImporter {
  private oaepSha256: Promise<boolean> | undefined;

  constructor(private readonly t: TokenAccess) {}

  /** Whether the token does RSA-OAEP with SHA-256 itself (probed once with a throwaway key). */
  hasOaepSha256(): Promise<boolean> {
    this.oaepSha256 ??= this.probeOaepSha256();
    return this.oaepSha256;
  }

  /** Generates the wrapping key pair and the token-MAC key of one import; returns the DER SPKI. */
  async createWrappingKey(importId: string, spec: WrappingKeySpec, algorithm: WrappingAlgorithm): Promise<Buffer> {
    const needsRawDecrypt = algorithm.endsWith('SHA_256') && !(await this.hasOaepSha256());
    const id = importObjectId(importId);
    const label = `${IMPORT_LABEL_PREFIX}${importId}`;
    const common = (): P11.Template => [
      { type: pkcs11js.CKA_TOKEN, value: true },
      { type: pkcs11js.CKA_ID, value: id },
      { type: pkcs11js.CKA_LABEL, value: label },
    ];
    const publicTemplate: P11.Template = [
      ...common(),
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PUBLIC_KEY },
      { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_RSA },
      { type: pkcs11js.CKA_MODULUS_BITS, value: WRAPPING_KEY_BITS[spec] },
      { type: pkcs11js.CKA_PUBLIC_EXPONENT, value: Buffer.from([1, 0, 1]) },
      { type: pkcs11js.CKA_ENCRYPT, value: true },
      { type: pkcs11js.CKA_WRAP, value: true },
      { type: pkcs11js.CKA_VERIFY, value: false },
    ];
    const privateTemplate: P11.Template = [
      ...common(),
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY },
      { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_RSA },
      { type: pkcs11js.CKA_PRIVATE, value: true },
      { type: pkcs11js.CKA_SENSITIVE, value: true },
      { type: pkcs11js.CKA_EXTRACTABLE, value: false },
      { type: pkcs11js.CKA_UNWRAP, value: true },
      // Raw RSA decryption is only allowed where OAEP-SHA-256 has to be emulated.
      { type: pkcs11js.CKA_DECRYPT, value: needsRawDecrypt },
      { type: pkcs11js.CKA_SIGN, value: false },
    ];
    const macTemplate: P11.Template = [
      ...common(),
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
      { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_GENERIC_SECRET },
      { type: pkcs11js.CKA_VALUE_LEN, value: HMAC_KEY_BYTES },
      { type: pkcs11js.CKA_PRIVATE, value: true },
      { type: pkcs11js.CKA_SENSITIVE, value: true },
      { type: pkcs11js.CKA_EXTRACTABLE, value: false },
      { type: pkcs11js.CKA_SIGN, value: true },
      { type: pkcs11js.CKA_VERIFY, value: true },
    ];
    const publicKey = await this.t.tokenWrite(() =>
      this.t.withSession(async (session) => {
        let fn = 'C_GenerateKeyPair';
        try {
          const pair = await this.t.p.C_GenerateKeyPairAsync(session, { mechanism: pkcs11js.CKM_RSA_PKCS_KEY_PAIR_GEN }, publicTemplate, privateTemplate);
          fn = 'C_GenerateKey';
          await this.t.p.C_GenerateKeyAsync(session, { mechanism: pkcs11js.CKM_GENERIC_SECRET_KEY_GEN }, macTemplate);
          return pair.publicKey;
        } catch (err) {
          throw toHsmError(err, fn, 'creating an import wrapping key');
        }
      }),
    );
    return this.t.withSession((session) => this.spkiOf(session, publicKey));
  }

  /** HMAC-SHA-256 of `data` under the import's token-held MAC key. */
  macImportToken(importId: string, data: Uint8Array): Promise<Buffer> {
    return this.t.withSession((session) => {
      const key = this.findImportObject(session, importId, pkcs11js.CKO_SECRET_KEY);
      try {
        this.t.p.C_SignInit(session, { mechanism: pkcs11js.CKM_SHA256_HMAC }, key);
        return Buffer.from(this.t.p.C_Sign(session, Buffer.from(data), Buffer.alloc(32)));
      } catch (err) {
        throw toHsmError(err, 'C_Sign', 'authenticating an import token');
      }
    });
  }

  /** Whether `mac` is the import's MAC of `data`; false also when the import's objects are gone. */
  async verifyImportToken(importId: string, data: Uint8Array, mac: Uint8Array): Promise<boolean> {
    let expected: Buffer;
    try {
      expected = await this.macImportToken(importId, data);
    } catch (err) {
      if (err instanceof HsmError && err.kind === 'key-not-found') return false;
      throw err;
    }
    return mac.length === expected.length && timingSafeEqual(expected, mac);
  }

  /** Destroys the three objects of an import; no error when already gone. */
  destroyWrappingKey(importId: string): Promise<void> {
    return this.t.tokenWrite(() =>
      this.t.withSession((session) => {
        for (const handle of this.findObjects(session, [{ type: pkcs11js.CKA_ID, value: importObjectId(importId) }])) {
          try {
            this.t.p.C_DestroyObject(session, handle);
          } catch (err) {
            const e = toHsmError(err, 'C_DestroyObject');
            if (e.kind !== 'key-not-found') throw e;
          }
        }
      }),
    );
  }

  /** Import IDs whose wrapping private key is in the token (consistency checks). */
  listWrappingKeyIds(): Promise<string[]> {
    return this.t.withSession((session) => {
      const ids: string[] = [];
      for (const handle of this.findObjects(session, [{ type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY }])) {
        const label = readAttribute(this.t, session, handle, pkcs11js.CKA_LABEL)?.toString('utf8');
        if (label?.startsWith(IMPORT_LABEL_PREFIX)) ids.push(label.slice(IMPORT_LABEL_PREFIX.length));
      }
      return ids.sort();
    });
  }

  /** Unwraps customer material into the token (see the file comment for the paths). */
  async unwrap(request: UnwrapRequest): Promise<UnwrapResult> {
    const hash = request.algorithm.endsWith('SHA_256') ? 'sha256' : 'sha1';
    const softwareUnpadding = hash === 'sha256' && !(await this.hasOaepSha256());
    if (softwareUnpadding && !request.allowSoftwareUnpadding) {
      throw new KeyImportError(
        'custody-refused',
        'this token has no CKM_RSA_PKCS_OAEP with SHA-256, and strict key custody (P11KMS_STRICT_KEY_CUSTODY=true) forbids removing the OAEP padding outside the token',
      );
    }
    const custody: MaterialCustody = softwareUnpadding ? 'software-oaep-unpadding' : 'token-unwrap';
    if (softwareUnpadding) this.t.log('warn', `import ${request.importId}: ${request.algorithm} emulated with CKM_RSA_X_509 and OAEP unpadding in the service (token lacks OAEP-SHA-256)`);
    const persistent = request.target !== 'probe';
    const write = <T>(fn: () => Promise<T>) => (persistent ? this.t.tokenWrite(fn) : fn());
    return write(() =>
      this.t.withSession(async (session) => {
        const privateKey = this.findImportObject(session, request.importId, pkcs11js.CKO_PRIVATE_KEY);
        const kind = request.material;
        if (isKeyPair(kind)) {
          const checkValue = await this.unwrapKeyPair(session, privateKey, Buffer.from(request.wrapped), request.algorithm, hash, softwareUnpadding, request.target, kind);
          if (persistent) this.t.forget(request.target as BackingKeyRef);
          return { checkValue, custody };
        }
        const template = this.materialTemplate(request.target, kind);
        const wrapped = Buffer.from(request.wrapped);
        let material: Handle;
        if (request.algorithm.startsWith('RSAES_OAEP')) {
          material = await this.rsaUnwrap(session, privateKey, wrapped, hash, softwareUnpadding, template, kind);
        } else {
          material = await this.rsaAesUnwrap(session, privateKey, wrapped, hash, softwareUnpadding, template, kind);
        }
        try {
          const checkValue = this.checkValueOf(session, material, kind);
          if (!persistent) this.destroyQuietly(session, material);
          else this.t.forget(request.target as BackingKeyRef);
          return { checkValue, custody };
        } catch (err) {
          this.destroyQuietly(session, material);
          throw err;
        }
      }),
    );
  }

  // ---- unwrap paths ---------------------------------------------------------------------------

  /** RSAES_OAEP_*: the RSA ciphertext is the material itself. */
  private async rsaUnwrap(session: Handle, privateKey: Handle, wrapped: Buffer, hash: 'sha1' | 'sha256', software: boolean, template: P11.Template, kind: SecretMaterial): Promise<Handle> {
    if (!software) {
      if (!roundedLengthFits(kind, await this.unwrappedLength(session, privateKey, wrapped, hash))) throw wrongLength(kind);
      return this.unwrapKey(session, oaepMechanism(hash), privateKey, wrapped, template);
    }
    const material = this.rawRsaOaepDecrypt(session, privateKey, wrapped);
    try {
      if (!lengthFits(kind, material.length)) throw wrongLength(kind);
      return this.createObject(session, [...template, { type: pkcs11js.CKA_VALUE, value: material }]);
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
  private async unwrappedLength(session: Handle, privateKey: Handle, wrapped: Buffer, hash: 'sha1' | 'sha256'): Promise<number> {
    const probe = await this.unwrapKey(session, oaepMechanism(hash), privateKey, wrapped, [
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
      kek = this.t.p.C_GenerateKey(session, { mechanism: pkcs11js.CKM_AES_KEY_GEN }, [
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
      ]);
      fn = 'C_WrapKey';
      const sealed = this.t.p.C_WrapKey(session, { mechanism: pkcs11js.CKM_AES_KEY_WRAP_PAD }, kek, probe, Buffer.alloc(wrapped.length + 16));
      return sealed.length - 8;
    } catch (err) {
      throw toHsmError(err, fn, 'measuring imported key material');
    } finally {
      this.destroyQuietly(session, probe);
      if (kek !== undefined) this.destroyQuietly(session, kek);
    }
  }

  /** RSA_AES_KEY_WRAP_*: RSA-OAEP(ephemeral AES key) ‖ AES-KWP(material), emulated in two
   *  unwraps because the token has no CKM_RSA_AES_KEY_WRAP. */
  private async rsaAesUnwrap(session: Handle, privateKey: Handle, wrapped: Buffer, hash: 'sha1' | 'sha256', software: boolean, template: P11.Template, kind: SecretMaterial): Promise<Handle> {
    const { rsaPart, kwpPart } = this.splitRsaAes(session, privateKey, wrapped);
    // AES-KWP output is the input rounded up to 8 bytes plus an 8-byte block.
    if (!roundedLengthFits(kind, kwpPart.length - 8)) throw wrongLength(kind);
    const ephemeral = await this.ephemeralKeyOf(session, privateKey, rsaPart, hash, software);
    try {
      return await this.unwrapKey(session, { mechanism: pkcs11js.CKM_AES_KEY_WRAP_PAD }, ephemeral, kwpPart, template);
    } finally {
      this.destroyQuietly(session, ephemeral);
    }
  }

  private splitRsaAes(session: Handle, privateKey: Handle, wrapped: Buffer): { rsaPart: Buffer; kwpPart: Buffer } {
    const modulusBytes = readAttribute(this.t, session, privateKey, pkcs11js.CKA_MODULUS)?.length ?? 0;
    if (modulusBytes === 0 || wrapped.length <= modulusBytes) throw undecryptable();
    return { rsaPart: wrapped.subarray(0, modulusBytes), kwpPart: wrapped.subarray(modulusBytes) };
  }

  /** The RSA part of RSA_AES_KEY_WRAP_*: the ephemeral AES key as a session object that can only unwrap. */
  private async ephemeralKeyOf(session: Handle, privateKey: Handle, rsaPart: Buffer, hash: 'sha1' | 'sha256', software: boolean): Promise<Handle> {
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
    if (!software) return this.unwrapKey(session, oaepMechanism(hash), privateKey, rsaPart, ephemeralTemplate);
    const key = this.rawRsaOaepDecrypt(session, privateKey, rsaPart);
    try {
      if (![16, 24, 32].includes(key.length)) throw undecryptable();
      return this.createObject(session, [...ephemeralTemplate, { type: pkcs11js.CKA_VALUE, value: key }]);
    } finally {
      key.fill(0);
    }
  }

  // ---- asymmetric material ----------------------------------------------------------------------

  /** A wrapped PKCS#8 private key: the private key object (token or probe), its public key object
   *  (token only), and the check value (a hash of the SPKI). */
  private async unwrapKeyPair(
    session: Handle,
    privateKey: Handle,
    wrapped: Buffer,
    algorithm: WrappingAlgorithm,
    hash: 'sha1' | 'sha256',
    software: boolean,
    target: BackingKeyRef | 'probe',
    kind: KeyPairMaterial,
  ): Promise<string> {
    let ephemeral: Handle | undefined;
    let unwrapAs: UnwrapAs;
    if (algorithm.startsWith('RSAES_OAEP')) {
      if (kind.kind === 'rsa' || software) {
        throw new KeyImportError('custody-refused', `${algorithm} cannot bring this private key into the token without the service seeing it`);
      }
      unwrapAs = (template) => this.unwrapKey(session, oaepMechanism(hash), privateKey, wrapped, template);
    } else {
      const { rsaPart, kwpPart } = this.splitRsaAes(session, privateKey, wrapped);
      const aesKey = await this.ephemeralKeyOf(session, privateKey, rsaPart, hash, software);
      ephemeral = aesKey;
      unwrapAs = (template) => this.unwrapKey(session, { mechanism: pkcs11js.CKM_AES_KEY_WRAP_PAD }, aesKey, kwpPart, template);
    }
    const created: Handle[] = [];
    try {
      const key = await this.unwrapPrivateKey(unwrapAs, this.keyPairTemplate(target, kind, false), kind, session);
      created.push(key);
      const jwk = kind.kind === 'rsa' ? this.rsaPublicJwk(session, key, kind) : await this.ecPublicJwk(session, key, unwrapAs, kind);
      const spki = spkiOfJwk(jwk);
      if (target !== 'probe') created.push(this.createObject(session, this.publicKeyTemplate(target, kind, jwk)));
      const checkValue = createHash('sha256').update('p11kms:public-key:').update(spki).digest('hex');
      if (target === 'probe') this.destroyQuietly(session, key);
      return checkValue;
    } catch (err) {
      for (const handle of created) this.destroyQuietly(session, handle);
      throw err;
    } finally {
      if (ephemeral !== undefined) this.destroyQuietly(session, ephemeral);
    }
  }

  private async unwrapPrivateKey(unwrapAs: UnwrapAs, template: P11.Template, kind: KeyPairMaterial, session: Handle): Promise<Handle> {
    try {
      return await unwrapAs(template);
    } catch (err) {
      if (!(err instanceof HsmError) || err.kind !== 'unavailable') throw err;
      // SoftHSM2 answers CKR_FUNCTION_FAILED when the unwrapped bytes are not a PKCS#8 key of the
      // template's type: the code some HSMs use for a lost connection. Unwrapping the same bytes
      // as a bare session secret with no usage tells the two apart without the service seeing them.
      let opaque: Handle;
      try {
        opaque = await unwrapAs([
          { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
          { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_GENERIC_SECRET },
          { type: pkcs11js.CKA_TOKEN, value: false },
          { type: pkcs11js.CKA_SENSITIVE, value: true },
          { type: pkcs11js.CKA_EXTRACTABLE, value: false },
          { type: pkcs11js.CKA_SIGN, value: false },
          { type: pkcs11js.CKA_VERIFY, value: false },
          { type: pkcs11js.CKA_ENCRYPT, value: false },
          { type: pkcs11js.CKA_DECRYPT, value: false },
          { type: pkcs11js.CKA_DERIVE, value: false },
        ]);
      } catch {
        throw err;
      }
      this.destroyQuietly(session, opaque);
      throw wrongLength(kind);
    }
  }

  /** The same attributes as generated key pairs (asymmetric.ts): one usage, nothing else. A
   *  helper is the EC session object that finds the public point (see the file comment). */
  private keyPairTemplate(target: BackingKeyRef | 'probe', kind: KeyPairMaterial, helper: boolean): P11.Template {
    const usage = helper ? undefined : kind.usage;
    const template: P11.Template = [
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY },
      { type: pkcs11js.CKA_KEY_TYPE, value: kind.kind === 'rsa' ? pkcs11js.CKK_RSA : pkcs11js.CKK_EC },
      { type: pkcs11js.CKA_TOKEN, value: !helper && target !== 'probe' },
      { type: pkcs11js.CKA_PRIVATE, value: true },
      { type: pkcs11js.CKA_SENSITIVE, value: true },
      { type: pkcs11js.CKA_EXTRACTABLE, value: false },
      { type: pkcs11js.CKA_SIGN, value: helper || usage === 'sign' },
      { type: pkcs11js.CKA_DECRYPT, value: usage === 'decrypt' },
      { type: pkcs11js.CKA_DERIVE, value: helper || usage === 'derive' },
      { type: pkcs11js.CKA_UNWRAP, value: false },
    ];
    if (kind.kind === 'rsa') template.push({ type: pkcs11js.CKA_SIGN_RECOVER, value: false });
    if (!helper && target !== 'probe') {
      template.push({ type: pkcs11js.CKA_ID, value: objectIdFor(target) }, { type: pkcs11js.CKA_LABEL, value: labelFor(target) });
      if (this.t.hardenedTemplate()) template.push({ type: pkcs11js.CKA_MODIFIABLE, value: false });
    }
    return template;
  }

  private publicKeyTemplate(target: BackingKeyRef, kind: KeyPairMaterial, jwk: JsonWebKey): P11.Template {
    const template: P11.Template = [
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PUBLIC_KEY },
      { type: pkcs11js.CKA_KEY_TYPE, value: kind.kind === 'rsa' ? pkcs11js.CKK_RSA : pkcs11js.CKK_EC },
      { type: pkcs11js.CKA_TOKEN, value: true },
      { type: pkcs11js.CKA_PRIVATE, value: false },
      { type: pkcs11js.CKA_ID, value: objectIdFor(target) },
      { type: pkcs11js.CKA_LABEL, value: labelFor(target) },
      { type: pkcs11js.CKA_VERIFY, value: kind.usage === 'sign' },
      { type: pkcs11js.CKA_ENCRYPT, value: kind.usage === 'decrypt' },
      { type: pkcs11js.CKA_WRAP, value: false },
    ];
    if (kind.kind === 'rsa') {
      template.push({ type: pkcs11js.CKA_MODULUS, value: Buffer.from(jwk.n!, 'base64url') }, { type: pkcs11js.CKA_PUBLIC_EXPONENT, value: Buffer.from(jwk.e!, 'base64url') });
    } else {
      const point = Buffer.concat([Buffer.from([4]), Buffer.from(jwk.x!, 'base64url'), Buffer.from(jwk.y!, 'base64url')]);
      template.push({ type: pkcs11js.CKA_EC_PARAMS, value: CURVES[kind.curve].params }, { type: pkcs11js.CKA_EC_POINT, value: derOctetString(point) });
    }
    if (this.t.hardenedTemplate()) template.push({ type: pkcs11js.CKA_MODIFIABLE, value: false });
    return template;
  }

  /** RSA: the public half is readable on the private key; the modulus must fit the key spec. */
  private rsaPublicJwk(session: Handle, key: Handle, kind: Extract<KeyPairMaterial, { kind: 'rsa' }>): JsonWebKey {
    const n = readAttribute(this.t, session, key, pkcs11js.CKA_MODULUS);
    const e = readAttribute(this.t, session, key, pkcs11js.CKA_PUBLIC_EXPONENT);
    if (!n || !e) throw wrongLength(kind);
    const jwk: JsonWebKey = { kty: 'RSA', n: stripZeros(n).toString('base64url'), e: stripZeros(e).toString('base64url') };
    const bits = createPublicKey({ key: jwk, format: 'jwk' }).asymmetricKeyDetails?.modulusLength;
    if (bits !== kind.bits) throw wrongLength(kind);
    return jwk;
  }

  /** EC: x(Q) by ECDH with G, the sign of y by a test signature (see the file comment). */
  private async ecPublicJwk(session: Handle, key: Handle, unwrapAs: UnwrapAs, kind: Extract<KeyPairMaterial, { kind: 'ec' }>): Promise<JsonWebKey> {
    const params = readAttribute(this.t, session, key, pkcs11js.CKA_EC_PARAMS);
    const curve = CURVES[kind.curve];
    if (!params?.equals(curve.params)) throw wrongLength(kind);
    const helper = await unwrapAs(this.keyPairTemplate('probe', kind, true));
    try {
      const curveName = NODE_CURVE_NAMES[kind.curve];
      const x = this.deriveX(session, helper, generatorOf(curveName, curve.bytes), curve.bytes);
      const digest = createHash('sha256').update(POINT_PROBE_MESSAGE).digest();
      let signature: Buffer;
      try {
        this.t.p.C_SignInit(session, { mechanism: pkcs11js.CKM_ECDSA }, helper);
        signature = Buffer.from(this.t.p.C_Sign(session, digest, Buffer.alloc(2 * curve.bytes + 8)));
      } catch (err) {
        throw toHsmError(err, 'C_Sign', 'finding the public key of imported EC material');
      }
      for (const prefix of [2, 3]) {
        let point: Buffer;
        try {
          point = ECDH.convertKey(Buffer.concat([Buffer.from([prefix]), x]), curveName, undefined, undefined, 'uncompressed') as Buffer;
        } catch {
          throw wrongLength(kind); // x is not on the curve: cannot happen for a real key
        }
        const jwk: JsonWebKey = { kty: 'EC', crv: kind.curve, x: point.subarray(1, 1 + curve.bytes).toString('base64url'), y: point.subarray(1 + curve.bytes).toString('base64url') };
        const candidate = createPublicKey({ key: jwk, format: 'jwk' });
        if (verifySignature('sha256', POINT_PROBE_MESSAGE, { key: candidate, dsaEncoding: 'ieee-p1363' }, signature)) return jwk;
      }
      throw wrongLength(kind);
    } finally {
      this.destroyQuietly(session, helper);
    }
  }

  /** x(d·P) through CKM_ECDH1_DERIVE into a readable session secret, destroyed at once. */
  private deriveX(session: Handle, key: Handle, point: Buffer, bytes: number): Buffer {
    const mechanism: P11.Mechanism = {
      mechanism: pkcs11js.CKM_ECDH1_DERIVE,
      parameter: { type: pkcs11js.CK_PARAMS_EC_DH, kdf: pkcs11js.CKD_NULL, publicData: point } as P11.ECDH1,
    };
    let secret: Handle;
    try {
      secret = this.t.p.C_DeriveKey(session, mechanism, key, [
        { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
        { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_GENERIC_SECRET },
        { type: pkcs11js.CKA_VALUE_LEN, value: bytes },
        { type: pkcs11js.CKA_TOKEN, value: false },
        { type: pkcs11js.CKA_SENSITIVE, value: false },
        { type: pkcs11js.CKA_EXTRACTABLE, value: true },
      ]);
    } catch (err) {
      throw toHsmError(err, 'C_DeriveKey', 'finding the public key of imported EC material');
    }
    try {
      const value = readAttribute(this.t, session, secret, pkcs11js.CKA_VALUE);
      if (!value) throw new HsmError('other', 'CKR_ATTRIBUTE_SENSITIVE', 'C_GetAttributeValue', 'cannot read x(Q)');
      const x = Buffer.alloc(bytes);
      value.copy(x, bytes - Math.min(bytes, value.length), Math.max(0, value.length - bytes));
      return x;
    } finally {
      this.destroyQuietly(session, secret);
    }
  }

  private async unwrapKey(session: Handle, mechanism: P11.Mechanism, unwrappingKey: Handle, wrapped: Buffer, template: P11.Template): Promise<Handle> {
    try {
      return await this.t.p.C_UnwrapKeyAsync(session, mechanism, unwrappingKey, wrapped, template);
    } catch (err) {
      const e = toHsmError(err, 'C_UnwrapKey');
      if (e.kind === 'unavailable') throw e;
      throw undecryptable();
    }
  }

  private createObject(session: Handle, template: P11.Template): Handle {
    try {
      return this.t.p.C_CreateObject(session, template);
    } catch (err) {
      throw toHsmError(err, 'C_CreateObject', 'creating imported key material');
    }
  }

  /** CKM_RSA_X_509 in the token, then EME-OAEP (SHA-256, MGF1-SHA-256, empty label) decoding
   *  here. The encoded message is wiped; the caller wipes the returned secret. */
  private rawRsaOaepDecrypt(session: Handle, privateKey: Handle, ciphertext: Buffer): Buffer {
    const modulusBytes = readAttribute(this.t, session, privateKey, pkcs11js.CKA_MODULUS)?.length ?? 0;
    if (ciphertext.length !== modulusBytes) throw undecryptable();
    const out = Buffer.alloc(modulusBytes);
    let encoded: Buffer;
    try {
      this.t.p.C_DecryptInit(session, { mechanism: pkcs11js.CKM_RSA_X_509 }, privateKey);
      encoded = this.t.p.C_Decrypt(session, ciphertext, out);
    } catch (err) {
      out.fill(0);
      const e = toHsmError(err, 'C_Decrypt');
      if (e.kind === 'unavailable') throw e;
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

  // ---- helpers ----------------------------------------------------------------------------------

  /** The same attributes as keys generated in the token: AES keys encrypt and decrypt, HMAC
   *  secrets sign and verify, and nothing else. */
  private materialTemplate(target: BackingKeyRef | 'probe', kind: SecretMaterial): P11.Template {
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
      if (this.t.hardenedTemplate()) template.push({ type: pkcs11js.CKA_MODIFIABLE, value: false });
    }
    return template;
  }

  /** A known answer under the new object (AES-GCM encryption, or an HMAC), hashed: equal for
   *  equal material, reveals nothing about it. Also proves the object is a usable key of an
   *  accepted size where the token reports CKA_VALUE_LEN (SoftHSM2 reports 0 for unwrapped keys)
   *  or refuses keys that are too short at use. */
  private checkValueOf(session: Handle, material: Handle, kind: SecretMaterial): string {
    const valueLen = readAttribute(this.t, session, material, pkcs11js.CKA_VALUE_LEN);
    const length = valueLen === undefined ? 0 : readUlong(valueLen);
    if (length !== 0 && !lengthFits(kind, length)) throw wrongLength(kind);
    try {
      let answer: Buffer;
      if (kind.kind === 'aes') {
        const parameter: P11.GcmParams = { type: pkcs11js.CK_PARAMS_GCM, iv: CHECK_VALUE_IV, ivBits: 96, aad: CHECK_VALUE_AAD, tagBits: 128 };
        this.t.p.C_EncryptInit(session, { mechanism: pkcs11js.CKM_AES_GCM, parameter }, material);
        answer = this.t.p.C_Encrypt(session, Buffer.alloc(kind.bytes), Buffer.alloc(kind.bytes + 16));
      } else {
        this.t.p.C_SignInit(session, { mechanism: HMAC_MECHANISMS[kind.hash] }, material);
        answer = this.t.p.C_Sign(session, CHECK_VALUE_AAD, Buffer.alloc(64));
      }
      return createHash('sha256').update(answer).digest('hex');
    } catch {
      throw wrongLength(kind);
    }
  }

  private findImportObject(session: Handle, importId: string, objectClass: number): Handle {
    const [handle] = this.findObjects(session, [
      { type: pkcs11js.CKA_CLASS, value: objectClass },
      { type: pkcs11js.CKA_ID, value: importObjectId(importId) },
    ]);
    if (handle === undefined) throw new HsmError('key-not-found', 'CKR_OBJECT_HANDLE_INVALID', 'C_FindObjects', `no token objects for import ${importId}`);
    return handle;
  }

  private findObjects(session: Handle, template: P11.Template): Handle[] {
    let fn = 'C_FindObjectsInit';
    try {
      this.t.p.C_FindObjectsInit(session, template);
      fn = 'C_FindObjects';
      const found: Handle[] = [];
      for (;;) {
        const batch = this.t.p.C_FindObjects(session, 100);
        if (batch.length === 0) break;
        found.push(...batch);
      }
      fn = 'C_FindObjectsFinal';
      this.t.p.C_FindObjectsFinal(session);
      return found;
    } catch (err) {
      throw toHsmError(err, fn, 'looking up import objects');
    }
  }

  private spkiOf(session: Handle, publicKey: Handle): Buffer {
    const n = readAttribute(this.t, session, publicKey, pkcs11js.CKA_MODULUS);
    const e = readAttribute(this.t, session, publicKey, pkcs11js.CKA_PUBLIC_EXPONENT);
    if (!n || !e) throw new HsmError('other', 'CKR_ATTRIBUTE_TYPE_INVALID', 'C_GetAttributeValue', 'cannot read the wrapping public key');
    const jwk = { kty: 'RSA', n: n.toString('base64url'), e: e.toString('base64url') };
    return createPublicKey({ key: jwk, format: 'jwk' }).export({ type: 'spki', format: 'der' });
  }

  private destroyQuietly(session: Handle, handle: Handle): void {
    try {
      this.t.p.C_DestroyObject(session, handle);
    } catch {
      // session objects die with their session anyway
    }
  }

  private async probeOaepSha256(): Promise<boolean> {
    return this.t.withSession(async (session) => {
      const { publicKey, privateKey } = await this.t.p.C_GenerateKeyPairAsync(
        session,
        { mechanism: pkcs11js.CKM_RSA_PKCS_KEY_PAIR_GEN },
        [
          { type: pkcs11js.CKA_TOKEN, value: false },
          { type: pkcs11js.CKA_MODULUS_BITS, value: 1024 },
          { type: pkcs11js.CKA_PUBLIC_EXPONENT, value: Buffer.from([1, 0, 1]) },
          { type: pkcs11js.CKA_ENCRYPT, value: true },
        ],
        [
          { type: pkcs11js.CKA_TOKEN, value: false },
          { type: pkcs11js.CKA_DECRYPT, value: true },
        ],
      );
      try {
        this.t.p.C_EncryptInit(session, oaepMechanism('sha256'), publicKey);
        this.t.p.C_Encrypt(session, Buffer.alloc(32), Buffer.alloc(128));
        return true;
      } catch (err) {
        const e = toHsmError(err, 'C_Encrypt');
        if (OAEP_PARAMS_REFUSED.has(e.ckr)) {
          this.t.log('info', `token '${this.t.label}' has no RSA-OAEP with SHA-256 (${e.ckr})`);
          return false;
        }
        throw e;
      } finally {
        this.destroyQuietly(session, publicKey);
        this.destroyQuietly(session, privateKey);
      }
    });
  }
}

function importObjectId(importId: string): Buffer {
  return Buffer.from(`import#${importId}`, 'utf8');
}

function oaepMechanism(hash: 'sha1' | 'sha256'): P11.Mechanism {
  const parameter: P11.RsaOAEP = {
    type: pkcs11js.CK_PARAMS_RSA_OAEP,
    hashAlg: hash === 'sha1' ? pkcs11js.CKM_SHA_1 : CKM_SHA256,
    mgf: hash === 'sha1' ? pkcs11js.CKG_MGF1_SHA1 : pkcs11js.CKG_MGF1_SHA256,
    source: CKZ_DATA_SPECIFIED,
  };
  return { mechanism: pkcs11js.CKM_RSA_PKCS_OAEP, parameter };
}

function readAttribute(t: TokenAccess, session: Handle, handle: Handle, type: number): Buffer | undefined {
  try {
    return t.p.C_GetAttributeValue(session, handle, [{ type }])[0]!.value;
  } catch {
    return undefined;
  }
}

const NODE_CURVE_NAMES: Record<EcCurve, string> = { 'P-256': 'prime256v1', 'P-384': 'secp384r1', 'P-521': 'secp521r1', secp256k1: 'secp256k1' };

/** What the EC helper signs to tell Q from −Q (ECDSA over its SHA-256). */
const POINT_PROBE_MESSAGE = Buffer.from('p11kms:public-key-probe', 'ascii');

/** The curve's generator G (uncompressed): the public key of the private scalar 1. */
function generatorOf(curveName: string, scalarBytes: number): Buffer {
  const one = Buffer.alloc(scalarBytes);
  one[scalarBytes - 1] = 1;
  const ecdh = createECDH(curveName);
  ecdh.setPrivateKey(one);
  return ecdh.getPublicKey();
}

function derOctetString(bytes: Buffer): Buffer {
  const length = bytes.length < 0x80 ? Buffer.from([bytes.length]) : bytes.length < 0x100 ? Buffer.from([0x81, bytes.length]) : Buffer.from([0x82, bytes.length >> 8, bytes.length & 0xff]);
  return Buffer.concat([Buffer.from([0x04]), length, bytes]);
}

function stripZeros(value: Buffer): Buffer {
  let i = 0;
  while (i < value.length - 1 && value[i] === 0) i++;
  return value.subarray(i);
}

const undecryptable = () => new KeyImportError('undecryptable', 'the encrypted key material could not be unwrapped with the wrapping key of this import token');
const wrongLength = (kind: MaterialKind) =>
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
