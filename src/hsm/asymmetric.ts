/**
 * Key pairs, HMAC keys and ECDH in the token. Pkcs11Hsm delegates here; mechanisms.ts says which
 * PKCS#11 mechanism each operation uses, key-encoding.ts turns token objects into SPKI/PKCS#8.
 *
 * Objects: the private (or secret) key carries the ref's CKA_ID and CKA_LABEL exactly as AES keys
 * do, so the handle cache, enumeration and destroyKey treat it alike. The public key object gets
 * the same CKA_ID: GetPublicKey reads it, Verify uses it, and nothing about it is secret.
 *
 * Private keys are CKA_TOKEN, CKA_PRIVATE, CKA_SENSITIVE, !CKA_EXTRACTABLE, and may do exactly one
 * thing (CKA_SIGN, CKA_DECRYPT or CKA_DERIVE): a SIGN_VERIFY key cannot decrypt, a KEY_AGREEMENT
 * key cannot sign. RSA decryption keys need CKA_DECRYPT for both OAEP and the raw CKM_RSA_X_509
 * fallback, so "decrypt" is all they get.
 *
 * Sign and Verify always feed the token the digest (the service hashes RAW messages; hashing is
 * not secret): one code path for RAW and DIGEST, and it needs only CKM_RSA_PKCS, CKM_RSA_PKCS_PSS
 * and CKM_ECDSA, which tokens offer far more widely than the CKM_SHA*_ECDSA family (SoftHSM2 2.6.1
 * has none of those). EdDSA signs the message itself, as pure Ed25519 requires.
 *
 * Threads: generation of every kind and private-key operations (sign, decrypt, derive) run in
 * the slow lane (slow-lane.ts) in both modes; verification, HMAC and public-key reads run on the
 * call workers in async mode and on the event loop in sync mode (a local token answers them in
 * microseconds).
 *
 * Verify runs in the token with the public key object, with the same mechanisms as Sign: a DIGEST
 * verification needs a pre-hashed PSS/ECDSA verify, which node:crypto does not offer, and one
 * mechanism table for both directions keeps Sign and Verify from ever disagreeing.
 */
import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import pkcs11js from 'pkcs11js';
import { custodyAttributes } from './key-custody.js';
import type * as P11 from 'pkcs11js';
import { asBuffer } from './bytes.js';
import { toHsmError } from './errors.js';
import type { WorkerAnswer, WorkerCall } from './call-workers.js';
import { readUlong } from './bytes.js';
import { type AttributeReader, keyShapeOf, leftPad, privateJwkOf, publicJwkOf, spkiOf } from './key-encoding.js';
import {
  HASHES,
  keyPairMechanism,
  missingMechanismNames,
  oaepMechanism,
  publicKeyParameters,
  signatureInput,
  signatureMechanism,
} from './mechanisms.js';
import { labelFor, objectIdFor, refKey } from './object-naming.js';
import { decodeOaep } from './oaep-decode.js';
import type { SlowCall } from './slow-lane.js';
import type { TokenAccess } from './token-access.js';
import {
  type BackingKeyRef,
  type ExportedKeyPair,
  type HashName,
  type SecretCustody,
  HsmError,
  type KeyPairType,
  type PrivateKeyUsage,
  type SignatureScheme,
  type TokenKeyType,
} from './types.js';

type Handle = P11.Handle;

/** What this module needs from Pkcs11Hsm beyond the common TokenAccess: the mechanism list and
 *  the key-handle cache. */
export interface KeyPairAccess extends TokenAccess {
  readonly mechanisms: ReadonlySet<number>;
  /** true: cheap operations (HMAC, verification, public-key reads) run synchronously. */
  readonly syncCalls: boolean;
  /** Runs `op` with the private/secret key of `ref` (cached handle, re-found once when stale). */
  withKey<T>(ref: BackingKeyRef, op: (session: Handle, key: Handle) => T | Promise<T>): Promise<T>;
  /** As withKey, synchronously on an idle session when the handle is cached. */
  withKeySync<T>(ref: BackingKeyRef, op: (session: Handle, key: Handle) => T): Promise<T>;
  /** As withKey, in the slow lane: admitted to a lane thread first, `call` runs on it. */
  slowWithKey<T>(ref: BackingKeyRef, work: (session: Handle, key: Handle, call: SlowCall) => Promise<T>): Promise<T>;
  /** Async mode: runs a call on the call workers (throws HsmError); undefined in sync mode. */
  onWorker?: (call: WorkerCall, what: string) => Promise<WorkerAnswer>;
  rememberHandle(ref: BackingKeyRef, handle: Handle): void;
}

/** Attributes read from a new data key pair, per key kind (key-encoding.ts reads these). */
const RSA_PUBLIC = [pkcs11js.CKA_MODULUS, pkcs11js.CKA_PUBLIC_EXPONENT];
const RSA_PRIVATE = [pkcs11js.CKA_PRIVATE_EXPONENT, pkcs11js.CKA_PRIME_1, pkcs11js.CKA_PRIME_2, pkcs11js.CKA_EXPONENT_1, pkcs11js.CKA_EXPONENT_2, pkcs11js.CKA_COEFFICIENT];

/** An AttributeReader over values read beforehand (in one worker call). */
function readerOf(types: readonly number[], values: readonly Uint8Array[]): AttributeReader {
  const byType = new Map(types.map((type, i) => [type, Buffer.from(values[i]!)]));
  return (type) => {
    const value = byType.get(type);
    if (value === undefined) throw new HsmError('other', 'CKR_ATTRIBUTE_TYPE_INVALID', 'C_GetAttributeValue', `attribute 0x${type.toString(16)} was not read`);
    return value;
  };
}

/** Signature sizes never exceed this (RSA-4096: 512 B; P-521 r‖s: 132 B). */
const MAX_SIGNATURE_BYTES = 1024;
/** C_Verify's ways of saying "does not verify". */
const NOT_VERIFIED = new Set(['CKR_SIGNATURE_INVALID', 'CKR_SIGNATURE_LEN_RANGE']);
/** Answers to an OAEP hash the token's CKM_RSA_PKCS_OAEP does not implement. */
const OAEP_PARAMS_REFUSED = new Set(['CKR_ARGUMENTS_BAD', 'CKR_MECHANISM_PARAM_INVALID', 'CKR_MECHANISM_INVALID']);

interface PublicKeyEntry {
  handle: Handle;
  spki: Buffer;
  key: KeyObject;
}

export class TokenKeyPairs {
  /** refKey → public key object and its SPKI; public, so caching it is harmless. */
  private readonly publicKeys = new Map<string, PublicKeyEntry>();
  /** OAEP hashes the token refused for CKM_RSA_PKCS_OAEP: those go through CKM_RSA_X_509. */
  private readonly oaepFallback = new Set<HashName>();

  constructor(private readonly t: KeyPairAccess) {}

  missingMechanisms(type: TokenKeyType, usage: PrivateKeyUsage): string[] {
    return missingMechanismNames(this.t.mechanisms, type, usage);
  }

  // ---- generation ------------------------------------------------------------------------------

  async generateKeyPair(ref: BackingKeyRef, type: KeyPairType, usage: PrivateKeyUsage): Promise<void> {
    const identity: P11.Template = [
      { type: pkcs11js.CKA_ID, value: objectIdFor(ref) },
      { type: pkcs11js.CKA_LABEL, value: labelFor(ref) },
      { type: pkcs11js.CKA_TOKEN, value: true },
      ...this.lockedDown(),
    ];
    const publicTemplate: P11.Template = [
      ...publicKeyParameters(type),
      ...identity,
      { type: pkcs11js.CKA_PRIVATE, value: false },
      { type: pkcs11js.CKA_VERIFY, value: usage === 'sign' },
      { type: pkcs11js.CKA_ENCRYPT, value: usage === 'decrypt' },
      { type: pkcs11js.CKA_WRAP, value: false },
    ];
    const privateTemplate: P11.Template = [
      ...identity,
      { type: pkcs11js.CKA_PRIVATE, value: true },
      { type: pkcs11js.CKA_SENSITIVE, value: true },
      { type: pkcs11js.CKA_EXTRACTABLE, value: false },
      { type: pkcs11js.CKA_SIGN, value: usage === 'sign' },
      { type: pkcs11js.CKA_DECRYPT, value: usage === 'decrypt' },
      { type: pkcs11js.CKA_DERIVE, value: usage === 'derive' },
      { type: pkcs11js.CKA_UNWRAP, value: false },
      ...(type.kind === 'rsa' ? [{ type: pkcs11js.CKA_SIGN_RECOVER, value: false }] : []),
    ];
    const privateKey = await this.t.slowSession(async (session, call) => {
      try {
        const answer = await call({ op: 'generate-key-pair', session, mechanism: { mechanism: keyPairMechanism(type) }, publicTemplate, privateTemplate }, 'C_GenerateKeyPair');
        return Buffer.from(answer.handles![1]!);
      } catch (err) {
        throw keyPairGenerationError(err);
      }
    }, true);
    this.t.rememberHandle(ref, privateKey);
  }

  async generateHmacKey(ref: BackingKeyRef, hash: HashName, bytes: number, custody: SecretCustody): Promise<void> {
    if (HASHES[hash].bytes > bytes) throw new RangeError('an HMAC key must be at least as long as the hash');
    const template: P11.Template = [
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
      { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_GENERIC_SECRET },
      { type: pkcs11js.CKA_VALUE_LEN, value: bytes },
      { type: pkcs11js.CKA_ID, value: objectIdFor(ref) },
      { type: pkcs11js.CKA_LABEL, value: labelFor(ref) },
      { type: pkcs11js.CKA_TOKEN, value: true },
      { type: pkcs11js.CKA_PRIVATE, value: true },
      ...custodyAttributes(custody),
      { type: pkcs11js.CKA_SIGN, value: true },
      { type: pkcs11js.CKA_VERIFY, value: true },
      { type: pkcs11js.CKA_ENCRYPT, value: false },
      { type: pkcs11js.CKA_DECRYPT, value: false },
      { type: pkcs11js.CKA_WRAP, value: false },
      { type: pkcs11js.CKA_UNWRAP, value: false },
      { type: pkcs11js.CKA_DERIVE, value: false },
      ...this.lockedDown(),
    ];
    const handle = await this.t.slowSession(async (session, call) => {
      const answer = await call({ op: 'generate-key', session, mechanism: { mechanism: pkcs11js.CKM_GENERIC_SECRET_KEY_GEN }, template }, 'C_GenerateKey');
      return Buffer.from(answer.handles![0]!);
    }, true);
    this.t.rememberHandle(ref, handle);
  }

  /** Nobody, not even we, may relabel, re-purpose or copy a key later. */
  private lockedDown(): P11.Template {
    if (!this.t.hardenedTemplate()) return [];
    return [
      { type: pkcs11js.CKA_MODIFIABLE, value: false },
      { type: pkcs11js.CKA_COPYABLE, value: false },
    ];
  }

  /**
   * Data key pairs are generated by the token (its RNG and key generation, the same as for KMS
   * keys) as session objects that may be read, because the private key is handed to the caller
   * anyway: no token object outlives the call, and both objects are destroyed before returning.
   */
  async generateExportableKeyPair(type: KeyPairType): Promise<ExportedKeyPair> {
    const common: P11.Template = [
      { type: pkcs11js.CKA_TOKEN, value: false },
      { type: pkcs11js.CKA_LABEL, value: 'p11kms-data-key-pair' },
    ];
    const privateTemplate: P11.Template = [
      ...common,
      { type: pkcs11js.CKA_PRIVATE, value: true },
      { type: pkcs11js.CKA_SENSITIVE, value: false },
      { type: pkcs11js.CKA_EXTRACTABLE, value: true },
      { type: pkcs11js.CKA_SIGN, value: false },
      { type: pkcs11js.CKA_DECRYPT, value: false },
      { type: pkcs11js.CKA_DERIVE, value: false },
    ];
    const [publicTypes, privateTypes] = type.kind === 'rsa' ? [RSA_PUBLIC, RSA_PRIVATE] : [[pkcs11js.CKA_EC_POINT], [pkcs11js.CKA_VALUE]];
    // The whole call (generation, reading both halves, destroying them) on one slow-lane thread.
    return this.t.slowSession(async (session, call) => {
      let publicKey: Buffer;
      let privateKey: Buffer;
      try {
        const answer = await call({ op: 'generate-key-pair', session, mechanism: { mechanism: keyPairMechanism(type) }, publicTemplate: [...publicKeyParameters(type), ...common], privateTemplate }, 'C_GenerateKeyPair');
        [publicKey, privateKey] = answer.handles!.map((h) => Buffer.from(h)) as [Buffer, Buffer];
      } catch (err) {
        throw keyPairGenerationError(err);
      }
      try {
        const publicValues = (await call({ op: 'attributes', session, handle: publicKey, types: publicTypes }, 'C_GetAttributeValue')).values!;
        const privateValues = (await call({ op: 'attributes', session, handle: privateKey, types: privateTypes }, 'C_GetAttributeValue')).values!;
        const publicJwk = publicJwkOf(readerOf(publicTypes, publicValues), type);
        const privateJwk = privateJwkOf(readerOf(privateTypes, privateValues), type, publicJwk);
        for (const value of privateValues) value.fill(0);
        const exported = createPrivateKey({ key: privateJwk, format: 'jwk' }).export({ type: 'pkcs8', format: 'der' });
        return { privateKey: exported, publicKey: spkiOf(publicJwk) };
      } finally {
        // a session object dies with its session anyway: a failure here loses nothing
        await call({ op: 'destroy', session, handles: [privateKey, publicKey] }, 'C_DestroyObject').catch(() => undefined);
      }
    });
  }

  // ---- public keys -----------------------------------------------------------------------------

  async publicKey(ref: BackingKeyRef): Promise<Buffer> {
    return (await this.publicKeyEntry(ref)).spki;
  }

  private async publicKeyEntry(ref: BackingKeyRef): Promise<PublicKeyEntry> {
    const cached = this.publicKeys.get(refKey(ref));
    if (cached !== undefined) return cached;
    const onWorker = this.t.onWorker;
    const entry = await this.t.withSession(async (session) => {
      let handle: Handle | undefined;
      let read: AttributeReader;
      if (onWorker) {
        // Async mode: the lookup and reads on a call worker, the reads in two calls (which
        // attributes exist depends on the key type).
        const found = await onWorker({ op: 'find', session, template: this.publicKeyTemplate(ref), max: 1 }, 'C_FindObjects');
        handle = found.handles![0] && Buffer.from(found.handles![0]);
        if (handle === undefined) throw new HsmError('key-not-found', 'CKR_OBJECT_HANDLE_INVALID', 'C_FindObjects', `no public key object for backing key ${refKey(ref)}`);
        const [keyType] = (await onWorker({ op: 'attributes', session, handle, types: [pkcs11js.CKA_KEY_TYPE] }, 'C_GetAttributeValue')).values!;
        const types = readUlong(Buffer.from(keyType!)) === pkcs11js.CKK_RSA ? RSA_PUBLIC : [pkcs11js.CKA_EC_PARAMS, pkcs11js.CKA_EC_POINT];
        const values = (await onWorker({ op: 'attributes', session, handle, types }, 'C_GetAttributeValue')).values!;
        read = readerOf([pkcs11js.CKA_KEY_TYPE, ...types], [keyType!, ...values]);
      } else {
        handle = this.findPublicKeyObject(session, ref);
        if (handle === undefined) throw new HsmError('key-not-found', 'CKR_OBJECT_HANDLE_INVALID', 'C_FindObjects', `no public key object for backing key ${refKey(ref)}`);
        read = this.reader(session, handle);
      }
      const spki = spkiOf(publicJwkOf(read, keyShapeOf(read)));
      return { handle, spki, key: createPublicKey({ key: spki, format: 'der', type: 'spki' }) };
    });
    this.publicKeys.set(refKey(ref), entry);
    return entry;
  }

  /** Finds the public key object of `ref` (C_FindObjects). */
  publicKeyTemplate(ref: BackingKeyRef): P11.Template {
    return [
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PUBLIC_KEY },
      { type: pkcs11js.CKA_ID, value: objectIdFor(ref) },
    ];
  }

  private findPublicKeyObject(session: Handle, ref: BackingKeyRef): Handle | undefined {
    let fn = 'C_FindObjectsInit';
    try {
      this.t.p.C_FindObjectsInit(session, this.publicKeyTemplate(ref));
      fn = 'C_FindObjects';
      const [handle] = this.t.p.C_FindObjects(session, 1);
      fn = 'C_FindObjectsFinal';
      this.t.p.C_FindObjectsFinal(session);
      return handle;
    } catch (err) {
      throw toHsmError(err, fn, 'looking up a public key');
    }
  }

  /** Drops the cached public key of `ref` (destroyKey destroys its object with the private one). */
  forgetPublicKey(ref: BackingKeyRef): void {
    this.publicKeys.delete(refKey(ref));
  }

  private reader(session: Handle, handle: Handle): AttributeReader {
    return (type) => this.attribute(session, handle, type);
  }

  private attribute(session: Handle, handle: Handle, type: number): Buffer {
    try {
      return this.t.p.C_GetAttributeValue(session, handle, [{ type }])[0]!.value;
    } catch (err) {
      throw toHsmError(err, 'C_GetAttributeValue');
    }
  }

  // ---- signatures ----------------------------------------------------------------------------

  sign(ref: BackingKeyRef, scheme: SignatureScheme, input: Uint8Array): Promise<Buffer> {
    const mechanism = signatureMechanism(scheme);
    const data = signatureInput(scheme, input);
    // A private-key operation: in the slow lane (RSA takes milliseconds, more on big keys).
    return this.t.slowWithKey(ref, async (session, key, call) => {
      const answer = await call({ op: 'sign', session, key, mechanism, data, outBytes: MAX_SIGNATURE_BYTES }, 'C_Sign');
      return Buffer.from(answer.out!);
    });
  }

  private signSync(session: Handle, key: Handle, mechanism: P11.Mechanism, data: Buffer, outBytes: number): Buffer {
    let fn = 'C_SignInit';
    try {
      this.t.p.C_SignInit(session, mechanism, key);
      fn = 'C_Sign';
      return this.t.p.C_Sign(session, data, Buffer.allocUnsafe(outBytes));
    } catch (err) {
      throw toHsmError(err, fn);
    }
  }


  async verify(ref: BackingKeyRef, scheme: SignatureScheme, input: Uint8Array, signature: Uint8Array): Promise<boolean> {
    const mechanism = signatureMechanism(scheme);
    const data = signatureInput(scheme, input);
    const attempt = async (): Promise<boolean> => {
      const { handle } = await this.publicKeyEntry(ref);
      return this.t.withSession((session) => this.verifyOn(session, handle, mechanism, data, asBuffer(signature)));
    };
    try {
      return await attempt();
    } catch (err) {
      if (!(err instanceof HsmError) || err.kind !== 'key-not-found' || !this.publicKeys.has(refKey(ref))) throw err;
      // The cached handle went stale (object re-created, maybe by another process): find it again once.
      this.publicKeys.delete(refKey(ref));
      return attempt();
    }
  }

  /** C_VerifyInit + C_Verify (on a call worker in async mode): true when it verifies, false when
   *  the token says it does not. */
  private verifyOn(session: Handle, key: Handle, mechanism: P11.Mechanism, data: Buffer, signature: Buffer): boolean | Promise<boolean> {
    const notVerified = (err: unknown): false => {
      const e = toHsmError(err, 'C_Verify');
      if (e.fn === 'C_Verify' && NOT_VERIFIED.has(e.ckr)) return false;
      throw e;
    };
    const onWorker = this.t.onWorker;
    if (onWorker) return onWorker({ op: 'verify', session, key, mechanism, data, signature }, 'C_Verify').then((answer) => answer.verified!, notVerified);
    try {
      this.t.p.C_VerifyInit(session, mechanism, key);
    } catch (err) {
      throw toHsmError(err, 'C_VerifyInit');
    }
    try {
      return this.t.p.C_Verify(session, data, signature);
    } catch (err) {
      return notVerified(err);
    }
  }

  // ---- HMAC ----------------------------------------------------------------------------------

  generateMac(ref: BackingKeyRef, hash: HashName, message: Uint8Array): Promise<Buffer> {
    const mechanism = { mechanism: HASHES[hash].hmac };
    const data = asBuffer(message);
    const bytes = HASHES[hash].bytes;
    const onWorker = this.t.onWorker;
    if (onWorker) return this.t.withKey(ref, async (session, key) => Buffer.from((await onWorker({ op: 'sign', session, key, mechanism, data, outBytes: bytes }, 'C_Sign')).out!));
    return this.t.withKeySync(ref, (session, key) => this.signSync(session, key, mechanism, data, bytes));
  }

  /** The comparison happens in the token (C_Verify), never in the service. */
  verifyMac(ref: BackingKeyRef, hash: HashName, message: Uint8Array, mac: Uint8Array): Promise<boolean> {
    const mechanism = { mechanism: HASHES[hash].hmac };
    if (this.t.onWorker) return this.t.withKey(ref, (session, key) => this.verifyOn(session, key, mechanism, asBuffer(message), asBuffer(mac)));
    return this.t.withKeySync(ref, (session, key) => this.verifyOn(session, key, mechanism, asBuffer(message), asBuffer(mac)) as boolean);
  }

  // ---- RSA decryption ------------------------------------------------------------------------

  async decryptRsaOaep(ref: BackingKeyRef, hash: HashName, ciphertext: Uint8Array): Promise<Buffer> {
    const { key: publicKey } = await this.publicKeyEntry(ref);
    const k = Math.ceil((publicKey.asymmetricKeyDetails?.modulusLength ?? 0) / 8);
    if (ciphertext.length !== k) throw new HsmError('invalid-ciphertext', 'CKR_ENCRYPTED_DATA_LEN_RANGE', 'C_Decrypt', 'ciphertext length differs from the modulus length');
    const input = asBuffer(ciphertext);
    if (this.t.mechanisms.has(pkcs11js.CKM_RSA_PKCS_OAEP) && !this.oaepFallback.has(hash)) {
      try {
        return await this.decrypt(ref, oaepMechanism(hash), input, k);
      } catch (err) {
        if (!(err instanceof HsmError) || err.fn !== 'C_DecryptInit' || !OAEP_PARAMS_REFUSED.has(err.ckr)) throw err;
        this.oaepFallback.add(hash); // e.g. SoftHSM2 2.6.1: OAEP with SHA-1 only
      }
    }
    if (!this.t.mechanisms.has(pkcs11js.CKM_RSA_X_509)) {
      throw new HsmError('unsupported', 'CKR_MECHANISM_INVALID', 'C_DecryptInit', `the token offers neither CKM_RSA_PKCS_OAEP with ${hash} nor CKM_RSA_X_509`);
    }
    const block = leftPad(await this.decrypt(ref, { mechanism: pkcs11js.CKM_RSA_X_509 }, input, k), k);
    const message = decodeOaep(block, hash);
    if (message === undefined) throw new HsmError('invalid-ciphertext', 'CKR_ENCRYPTED_DATA_INVALID', 'C_Decrypt', 'OAEP decoding failed');
    return message;
  }

  private decrypt(ref: BackingKeyRef, mechanism: P11.Mechanism, input: Buffer, k: number): Promise<Buffer> {
    // A private-key operation: in the slow lane, Init and C_Decrypt together.
    return this.t.slowWithKey(ref, async (session, key, call) => {
      try {
        return Buffer.from((await call({ op: 'decrypt', session, key, mechanism, data: input, outBytes: k }, 'C_Decrypt')).out!);
      } catch (err) {
        const e = toHsmError(err, 'C_Decrypt');
        // Tokens report bad OAEP padding variously; none of it is anything but a bad ciphertext.
        if (e.fn === 'C_Decrypt' && e.kind === 'other' && ['CKR_DATA_LEN_RANGE', 'CKR_ENCRYPTED_DATA_INVALID', 'CKR_DATA_INVALID'].includes(e.ckr)) {
          throw new HsmError('invalid-ciphertext', e.ckr, e.fn);
        }
        throw e;
      }
    });
  }

  // ---- key agreement -------------------------------------------------------------------------

  /** ECDH into a throwaway, readable session secret: read once, then destroyed. */
  deriveSharedSecret(ref: BackingKeyRef, peerPoint: Uint8Array): Promise<Buffer> {
    const fieldBytes = (peerPoint.length - 1) / 2;
    const mechanism: P11.Mechanism = {
      mechanism: pkcs11js.CKM_ECDH1_DERIVE,
      parameter: { type: pkcs11js.CK_PARAMS_EC_DH, kdf: pkcs11js.CKD_NULL, publicData: asBuffer(peerPoint) } as P11.ECDH1,
    };
    const template: P11.Template = [
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
      { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_GENERIC_SECRET },
      { type: pkcs11js.CKA_VALUE_LEN, value: fieldBytes },
      { type: pkcs11js.CKA_TOKEN, value: false },
      { type: pkcs11js.CKA_SENSITIVE, value: false },
      { type: pkcs11js.CKA_EXTRACTABLE, value: true },
    ];
    // A private-key operation: in the slow lane; the worker reads the secret and destroys it.
    return this.t.slowWithKey(ref, async (session, key, call) => Buffer.from((await call({ op: 'derive-value', session, key, mechanism, template }, 'C_DeriveKey')).out!));
  }
}

/** A mechanism the token has, but not for this curve or modulus size: the same as not having it. */
const SIZE_OR_CURVE_REFUSED = new Set(['CKR_DOMAIN_PARAMS_INVALID', 'CKR_CURVE_NOT_SUPPORTED', 'CKR_KEY_SIZE_RANGE', 'CKR_0x140']);

function keyPairGenerationError(err: unknown): HsmError {
  const e = toHsmError(err, 'C_GenerateKeyPair');
  return SIZE_OR_CURVE_REFUSED.has(e.ckr) ? new HsmError('unsupported', e.ckr, e.fn, e.message) : e;
}
