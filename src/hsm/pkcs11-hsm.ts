/**
 * Pkcs11Hsm: the Hsm over an open PKCS#11 token. openHsm (pkcs11-token.ts) connects and hands the
 * connection over; this class owns the sessions (session-pool.ts), the key-handle cache, the
 * cross-process object lock and the AES-GCM hot path, and delegates key pairs, HMAC and ECDH to
 * asymmetric.ts, the audit key to audit-signing-key.ts and diagnostics to diagnostics.ts.
 *
 * Token differences worth knowing (capabilities):
 *  - GCM IV: we always supply the 12-byte IV (the KMS layer draws it from generateRandom).
 *    SoftHSM2, nShield (non-FIPS) and Luna (non-FIPS) accept caller IVs. Luna in FIPS mode and
 *    AWS CloudHSM generate the IV inside the HSM and write it back into CK_GCM_PARAMS.pIv, which
 *    pkcs11js does not copy back to JS: those tokens need a different encrypt path.
 *  - GCM tag failure: SoftHSM2 says CKR_GENERAL_ERROR, others CKR_ENCRYPTED_DATA_INVALID (errors.ts).
 *  - CKA_MODIFIABLE/CKA_COPYABLE=false on generated keys: accepted by SoftHSM2; a token that rejects
 *    them gets keys without them (logged once).
 */
// pkcs11js is CommonJS with a spread export: under Node ESM only the default import carries the
// constants (a namespace import sees just PKCS11). Types come through the namespace.
import pkcs11js from 'pkcs11js';
import type * as P11 from 'pkcs11js';
import type { TokenConfig } from '../config.js';
import { TokenKeyPairs } from './asymmetric.js';
import { asBuffer } from './bytes.js';
import { isStaleHandle, toHsmError } from './errors.js';
import { type AuditSigningKey, openAuditSigningKey } from './audit-signing-key.js';
import { type BackingKeyInspection, inspectOnSession } from './diagnostics.js';
import { HandleCache } from './handle-cache.js';
import { enumerateBackingKeys, findKeyObjects, refreshObjectIndex } from './key-objects.js';
import { labelFor, objectIdFor, refKey } from './object-naming.js';
import { trimPadded, withProvisionLock } from './provision.js';
import { SessionPool } from './session-pool.js';
import type { HsmLog, TokenAccess } from './token-access.js';
import { CKS_RO_USER_FUNCTIONS, CKS_RW_USER_FUNCTIONS, type Connection, openLoggedInSession, shutDownModule } from './token-module.js';
import {
  type BackingKeyRef,
  type ExportedKeyPair,
  type HashName,
  type Hsm,
  HsmError,
  type KeyPairType,
  type PrivateKeyUsage,
  type SignatureScheme,
  type TokenInfo,
  type TokenKeyType,
} from './types.js';

type Handle = P11.Handle;

const GCM_IV_BYTES = 12;
const GCM_TAG_BYTES = 16;
const AES_KEY_BYTES = 32;
/** Mechanisms the service cannot run without. */
const REQUIRED_MECHANISMS: ReadonlyArray<[number, string]> = [
  [pkcs11js.CKM_AES_KEY_GEN, 'CKM_AES_KEY_GEN'],
  [pkcs11js.CKM_AES_GCM, 'CKM_AES_GCM'],
];
/** Template errors that mean "this token does not accept one of the hardening attributes". */
const TEMPLATE_REJECTED = new Set(['CKR_ATTRIBUTE_TYPE_INVALID', 'CKR_ATTRIBUTE_VALUE_INVALID', 'CKR_TEMPLATE_INCONSISTENT', 'CKR_ATTRIBUTE_READ_ONLY']);

export class Pkcs11Hsm implements Hsm {
  readonly info: TokenInfo;
  readonly mechanisms: ReadonlySet<number>;

  private readonly p: P11.PKCS11;
  private readonly slot: Handle;
  private readonly pin: string;
  private readonly label: string;
  private readonly syncCalls: boolean;
  private readonly pool: SessionPool;
  /** Holds the login for the application's lifetime and serves the synchronous generateRandom. */
  private control: Handle;
  /** Key handles and their lookups (handle-cache.ts). */
  private readonly keyHandles: HandleCache;
  /** keyHandles.handles: refKey → object handle; handles are process-local and never persisted. */
  private readonly handles: Map<string, Handle>;
  /** Whether the token accepts CKA_MODIFIABLE/CKA_COPYABLE=false on generated keys. */
  private hardenedTemplate = true;
  private closing: Promise<void> | undefined;
  /** Key pairs, HMAC keys and ECDH (asymmetric.ts). */
  private readonly keyPairs: TokenKeyPairs;

  constructor(
    connection: Connection,
    token: TokenConfig,
    private readonly log: HsmLog,
  ) {
    this.p = connection.p;
    this.slot = connection.slot;
    this.pin = connection.pin;
    this.label = token.label;
    this.syncCalls = token.symmetricCalls === 'sync';
    this.control = this.openSession();

    let mechanismList: number[];
    try {
      mechanismList = this.p.C_GetMechanismList(this.slot);
    } catch (err) {
      throw toHsmError(err, 'C_GetMechanismList');
    }
    this.mechanisms = new Set(mechanismList);
    for (const [mechanism, name] of REQUIRED_MECHANISMS) {
      if (!this.mechanisms.has(mechanism)) {
        throw new HsmError('unsupported', 'CKR_MECHANISM_INVALID', 'C_GetMechanismList', `token '${this.label}' does not offer ${name}, which p11kms needs`);
      }
    }
    const moduleInfo = this.p.C_GetInfo();
    const tokenInfo = this.p.C_GetTokenInfo(this.slot);
    this.info = {
      libraryDescription: trimPadded(moduleInfo.libraryDescription),
      manufacturerId: trimPadded(tokenInfo.manufacturerID),
      model: trimPadded(tokenInfo.model),
      label: trimPadded(tokenInfo.label),
      serialNumber: trimPadded(tokenInfo.serialNumber),
      mechanismCount: this.mechanisms.size,
    };
    this.pool = new SessionPool(
      () => this.openSession(),
      (session) => this.p.C_CloseSession(session),
      token.poolSize,
    );
    this.keyHandles = new HandleCache(this.p, this.pool, this.label, log);
    this.handles = this.keyHandles.handles;
    this.keyPairs = new TokenKeyPairs({
      ...this.tokenAccess(),
      mechanisms: this.mechanisms,
      syncCalls: this.syncCalls,
      withKey: (ref, op) => this.keyHandles.withKey(ref, op),
      withKeySync: (ref, op) => this.keyHandles.withKeySync(ref, op),
      rememberHandle: (ref, handle) => this.handles.set(refKey(ref), handle),
    });
  }

  // ---- sessions and login -------------------------------------------------------------------

  /** A read-write session in the user-logged-in state (openLoggedInSession, token-module.ts). */
  private openSession(): Handle {
    return openLoggedInSession(this.p, this.slot, this.pin, this.label);
  }

  /** Swaps the control session for a fresh one after an error (opening first keeps the login). */
  private replaceControlSession(): void {
    try {
      const fresh = this.openSession();
      const old = this.control;
      this.control = fresh;
      this.p.C_CloseSession(old);
    } catch {
      // Token unreachable: the next call reports it.
    }
  }

  // ---- handle cache ---------------------------------------------------------------------------

  /** Enumerates every p11kms key object once at open so that no first use needs C_FindObjects. */
  primeHandleCache(): Promise<number> {
    return this.tokenScan(async () => {
      const session = this.openSession();
      try {
        const found = enumerateBackingKeys(this.p, session, this.label, this.log);
        for (const [key, handle] of found) this.handles.set(key, handle);
        return found.size;
      } finally {
        this.p.C_CloseSession(session);
      }
    });
  }

  // ---- Hsm ------------------------------------------------------------------------------------

  async generateAesKey(ref: BackingKeyRef): Promise<void> {
    const id = objectIdFor(ref);
    let handle: Handle;
    try {
      handle = await this.generateKeyObject(ref, id);
    } catch (err) {
      if (!(err instanceof HsmError) || !this.hardenedTemplate || !TEMPLATE_REJECTED.has(err.ckr)) throw err;
      this.hardenedTemplate = false;
      this.log('warn', `token '${this.label}' rejects CKA_MODIFIABLE/CKA_COPYABLE=false (${err.ckr}); generating keys without them`);
      handle = await this.generateKeyObject(ref, id);
    }
    this.handles.set(refKey(ref), handle);
  }

  /**
   * Set for a SoftHSM2 token that several service processes share (P11KMS_WORKERS > 1, or
   * several nodes on one database: see sharedObjectWriteLock). SoftHSM2 2.6.1 re-reads its object directory only when the token's
   * generation counter changed since it last looked, and a process that writes an object adopts
   * the new counter without re-reading: objects another process created just before are then
   * invisible to it until some third write (seen with P11KMS_WORKERS=2: Encrypt on a key created
   * by the other process failed). So token writes take a cross-process lock and refresh the object
   * index first; scans take the same lock (tokenScan). Not for a lone process: serialised writes
   * and the synchronous refresh cut its key generation rate to a fifth (398 -> 84 keys/s) and
   * stall the event loop for milliseconds.
   */
  objectWriteLockPath: string | undefined;
  /** Holders of this process queue here, so only one at a time polls the file lock. */
  private lockQueue: Promise<unknown> = Promise.resolve();

  /** Runs a token object creation or destruction; every such write goes through here. */
  private tokenWrite<T>(write: () => Promise<T>): Promise<T> {
    if (this.objectWriteLockPath === undefined) return write();
    return this.underObjectLock(async () => {
      await this.pool.withSession((session) => refreshObjectIndex(this.p, session));
      return write();
    });
  }

  /**
   * Runs a scan that reads attributes of objects another process may be creating. pkcs11js reads
   * an attribute in two calls (length, then value); when SoftHSM2 shows an object whose
   * attributes are still being written, the length is 0 at the first call and the second copies
   * from a null buffer: SIGSEGV (seen with three processes starting at once). Under the write
   * lock every object the scan sees is complete.
   */
  private tokenScan<T>(scan: () => Promise<T>): Promise<T> {
    return this.objectWriteLockPath === undefined ? scan() : this.underObjectLock(scan);
  }

  private underObjectLock<T>(fn: () => Promise<T>): Promise<T> {
    const turn = this.lockQueue.then(() => withProvisionLock(this.objectWriteLockPath!, fn));
    this.lockQueue = turn.catch(() => undefined);
    return turn;
  }

  private generateKeyObject(ref: BackingKeyRef, id: Buffer): Promise<Handle> {
    const template: P11.Template = [
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
      { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_AES },
      { type: pkcs11js.CKA_VALUE_LEN, value: AES_KEY_BYTES },
      { type: pkcs11js.CKA_TOKEN, value: true },
      { type: pkcs11js.CKA_PRIVATE, value: true },
      { type: pkcs11js.CKA_SENSITIVE, value: true },
      { type: pkcs11js.CKA_EXTRACTABLE, value: false },
      { type: pkcs11js.CKA_ENCRYPT, value: true },
      { type: pkcs11js.CKA_DECRYPT, value: true },
      { type: pkcs11js.CKA_WRAP, value: false },
      { type: pkcs11js.CKA_UNWRAP, value: false },
      { type: pkcs11js.CKA_SIGN, value: false },
      { type: pkcs11js.CKA_VERIFY, value: false },
      { type: pkcs11js.CKA_DERIVE, value: false },
      { type: pkcs11js.CKA_ID, value: id },
      { type: pkcs11js.CKA_LABEL, value: labelFor(ref) },
    ];
    if (this.hardenedTemplate) {
      // Nobody, not even we, may relabel, re-purpose or copy the key later.
      template.push({ type: pkcs11js.CKA_MODIFIABLE, value: false }, { type: pkcs11js.CKA_COPYABLE, value: false });
    }
    // Always async: key generation can take long on a network HSM and must not block the loop.
    return this.tokenWrite(() =>
      this.pool.withSession((session) =>
        this.p.C_GenerateKeyAsync(session, { mechanism: pkcs11js.CKM_AES_KEY_GEN }, template).catch((err: unknown) => {
          throw toHsmError(err, 'C_GenerateKey');
        }),
      ),
    );
  }

  encryptAesGcm(ref: BackingKeyRef, iv: Uint8Array, aad: Uint8Array, plaintext: Uint8Array): Promise<Buffer> {
    if (iv.length !== GCM_IV_BYTES) return Promise.reject(new RangeError(`AES-GCM IV must be ${GCM_IV_BYTES} bytes`));
    const mechanism = gcmMechanism(iv, aad);
    const input = asBuffer(plaintext);
    if (this.syncCalls) return this.keyHandles.withKeySync(ref, (s, k) => this.encryptSync(s, k, mechanism, input));
    return this.keyHandles.withKey(ref, (s, k) => this.encryptAsync(s, k, mechanism, input));
  }

  decryptAesGcm(ref: BackingKeyRef, iv: Uint8Array, aad: Uint8Array, ciphertextAndTag: Uint8Array): Promise<Buffer> {
    if (iv.length !== GCM_IV_BYTES) {
      return Promise.reject(new HsmError('invalid-ciphertext', 'CKR_MECHANISM_PARAM_INVALID', 'C_DecryptInit', `AES-GCM IV must be ${GCM_IV_BYTES} bytes`));
    }
    if (ciphertextAndTag.length < GCM_TAG_BYTES) {
      return Promise.reject(new HsmError('invalid-ciphertext', 'CKR_ENCRYPTED_DATA_LEN_RANGE', 'C_Decrypt', 'ciphertext is shorter than the GCM tag'));
    }
    const mechanism = gcmMechanism(iv, aad);
    const input = asBuffer(ciphertextAndTag);
    if (this.syncCalls) return this.keyHandles.withKeySync(ref, (s, k) => this.decryptSync(s, k, mechanism, input));
    return this.keyHandles.withKey(ref, (s, k) => this.decryptAsync(s, k, mechanism, input));
  }

  // The four GCM bodies below are the hot path. Output goes into a fresh Buffer.allocUnsafe per
  // call (a slice of Node's pool for small sizes, so no per-session buffer plus copy is needed)
  // and the subarray pkcs11js returns is handed out as is.

  private encryptSync(session: Handle, key: Handle, mechanism: P11.Mechanism, plaintext: Buffer): Buffer {
    let fn = 'C_EncryptInit';
    try {
      this.p.C_EncryptInit(session, mechanism, key);
      const out = Buffer.allocUnsafe(plaintext.length + GCM_TAG_BYTES);
      // SoftHSM2 rejects C_Encrypt of an empty buffer (CKR_ARGUMENTS_BAD); C_EncryptFinal alone
      // completes the operation and yields the tag.
      if (plaintext.length === 0) {
        fn = 'C_EncryptFinal';
        return this.p.C_EncryptFinal(session, out);
      }
      fn = 'C_Encrypt';
      return this.p.C_Encrypt(session, plaintext, out);
    } catch (err) {
      throw toHsmError(err, fn);
    }
  }

  private async encryptAsync(session: Handle, key: Handle, mechanism: P11.Mechanism, plaintext: Buffer): Promise<Buffer> {
    let fn = 'C_EncryptInit';
    try {
      this.p.C_EncryptInit(session, mechanism, key);
      const out = Buffer.allocUnsafe(plaintext.length + GCM_TAG_BYTES);
      if (plaintext.length === 0) {
        fn = 'C_EncryptFinal';
        return await this.p.C_EncryptFinalAsync(session, out);
      }
      fn = 'C_Encrypt';
      return await this.p.C_EncryptAsync(session, plaintext, out);
    } catch (err) {
      throw toHsmError(err, fn);
    }
  }

  private decryptSync(session: Handle, key: Handle, mechanism: P11.Mechanism, ciphertext: Buffer): Buffer {
    let fn = 'C_DecryptInit';
    try {
      this.p.C_DecryptInit(session, mechanism, key);
      fn = 'C_Decrypt';
      // The token wants room for the whole input (plaintext + tag), else CKR_BUFFER_TOO_SMALL.
      return this.p.C_Decrypt(session, ciphertext, Buffer.allocUnsafe(ciphertext.length));
    } catch (err) {
      throw toHsmError(err, fn);
    }
  }

  private async decryptAsync(session: Handle, key: Handle, mechanism: P11.Mechanism, ciphertext: Buffer): Promise<Buffer> {
    let fn = 'C_DecryptInit';
    try {
      this.p.C_DecryptInit(session, mechanism, key);
      fn = 'C_Decrypt';
      return await this.p.C_DecryptAsync(session, ciphertext, Buffer.allocUnsafe(ciphertext.length));
    } catch (err) {
      throw toHsmError(err, fn);
    }
  }

  generateRandom(length: number): Buffer {
    if (!Number.isInteger(length) || length < 0) throw new RangeError('random length must be a non-negative integer');
    if (this.closing) throw closedError('C_GenerateRandom');
    if (length === 0) return Buffer.alloc(0);
    try {
      // Sync by contract and stateless, so it runs on the control session, which no async call
      // ever uses; a pooled session might have an async call in flight.
      return this.p.C_GenerateRandom(this.control, Buffer.allocUnsafe(length));
    } catch (err) {
      this.replaceControlSession();
      throw toHsmError(err, 'C_GenerateRandom');
    }
  }

  async destroyKey(ref: BackingKeyRef): Promise<void> {
    const cacheKey = refKey(ref);
    this.handles.delete(cacheKey);
    await this.tokenWrite(() => this.pool.withSession((session) => {
      for (const handle of findKeyObjects(this.p, session, ref)) {
        try {
          this.p.C_DestroyObject(session, handle);
        } catch (err) {
          const e = toHsmError(err, 'C_DestroyObject');
          if (!isStaleHandle(e)) throw e; // already destroyed elsewhere: fine
        }
      }
      this.keyPairs.destroyPublicKey(session, ref);
    }));
    this.handles.delete(cacheKey);
  }

  async listBackingKeys(): Promise<BackingKeyRef[]> {
    const found = await this.tokenScan(() => this.pool.withSession((session) => enumerateBackingKeys(this.p, session, this.label, this.log)));
    const refs: BackingKeyRef[] = [];
    for (const [key, handle] of found) {
      this.handles.set(key, handle);
      const hash = key.lastIndexOf('#');
      refs.push({ keyId: key.slice(0, hash), version: Number(key.slice(hash + 1)) });
    }
    return refs.sort((a, b) => (a.keyId < b.keyId ? -1 : a.keyId > b.keyId ? 1 : a.version - b.version));
  }

  // ---- audit signing key and pool statistics (audit-signing-key.ts) -----------------------------

  private auditKey: AuditSigningKey | undefined;

  async auditSigningKey(create: boolean): Promise<AuditSigningKey | undefined> {
    if (this.closing) throw closedError('auditSigningKey');
    this.auditKey ??= await openAuditSigningKey(this.p, this.mechanisms, (fn) => this.pool.withSession(fn), create, {
      write: (write) => this.tokenWrite(write),
      scan: (scan) => this.tokenScan(scan),
    });
    return this.auditKey;
  }

  poolStats(): { open: number; busy: number; waiting: number; max: number } {
    return { open: this.pool.size, busy: this.pool.busy, waiting: this.pool.waiting, max: this.pool.maxSessions };
  }

  // ---- asymmetric, HMAC and key-agreement keys: see asymmetric.ts ------------------------------

  missingMechanisms(type: TokenKeyType, usage: PrivateKeyUsage): string[] {
    return this.keyPairs.missingMechanisms(type, usage);
  }
  generateKeyPair(ref: BackingKeyRef, type: KeyPairType, usage: PrivateKeyUsage): Promise<void> {
    return this.keyPairs.generateKeyPair(ref, type, usage);
  }
  generateHmacKey(ref: BackingKeyRef, hash: HashName, bytes: number): Promise<void> {
    return this.keyPairs.generateHmacKey(ref, hash, bytes);
  }
  publicKey(ref: BackingKeyRef): Promise<Buffer> {
    return this.keyPairs.publicKey(ref);
  }
  sign(ref: BackingKeyRef, scheme: SignatureScheme, input: Uint8Array): Promise<Buffer> {
    return this.keyPairs.sign(ref, scheme, input);
  }
  verify(ref: BackingKeyRef, scheme: SignatureScheme, input: Uint8Array, signature: Uint8Array): Promise<boolean> {
    return this.keyPairs.verify(ref, scheme, input, signature);
  }
  decryptRsaOaep(ref: BackingKeyRef, hash: HashName, ciphertext: Uint8Array): Promise<Buffer> {
    return this.keyPairs.decryptRsaOaep(ref, hash, ciphertext);
  }
  generateMac(ref: BackingKeyRef, hash: HashName, message: Uint8Array): Promise<Buffer> {
    return this.keyPairs.generateMac(ref, hash, message);
  }
  verifyMac(ref: BackingKeyRef, hash: HashName, message: Uint8Array, mac: Uint8Array): Promise<boolean> {
    return this.keyPairs.verifyMac(ref, hash, message, mac);
  }
  deriveSharedSecret(ref: BackingKeyRef, peerPoint: Uint8Array): Promise<Buffer> {
    return this.keyPairs.deriveSharedSecret(ref, peerPoint);
  }
  generateExportableKeyPair(type: KeyPairType): Promise<ExportedKeyPair> {
    return this.keyPairs.generateExportableKeyPair(type);
  }

  ping(): Promise<void> {
    return this.pool.withSession((session) => {
      let fn = 'C_GetSessionInfo';
      try {
        const { state } = this.p.C_GetSessionInfo(session);
        if (state !== CKS_RW_USER_FUNCTIONS && state !== CKS_RO_USER_FUNCTIONS) {
          throw new HsmError('unavailable', 'CKR_USER_NOT_LOGGED_IN', fn, `token '${this.label}' no longer has our login`);
        }
        fn = 'C_GenerateRandom';
        this.p.C_GenerateRandom(session, Buffer.allocUnsafe(1)); // a real round trip to the device
      } catch (err) {
        throw toHsmError(err, fn);
      }
    });
  }

  close(): Promise<void> {
    this.closing ??= this.shutDown();
    return this.closing;
  }

  private async shutDown(): Promise<void> {
    await this.pool.close();
    this.handles.clear();
    try {
      this.p.C_Logout(this.control);
    } catch {
      // not logged in any more
    }
    try {
      this.p.C_CloseSession(this.control);
    } catch {
      // already gone
    }
    shutDownModule(this.p, this.slot);
  }

  /** See tokenAccessOf. */
  tokenAccess(): TokenAccess {
    return {
      p: this.p,
      label: this.label,
      log: this.log,
      withSession: (op) => this.pool.withSession(op),
      tokenWrite: (write) => this.tokenWrite(write),
      forget: (ref) => this.handles.delete(refKey(ref)),
      hardenedTemplate: () => this.hardenedTemplate,
    };
  }

  // ---- diagnostics ----------------------------------------------------------------------------

  /** See inspectBackingKey. Runs on a session of its own, outside the pool (diagnostics.ts). */
  async inspect(ref: BackingKeyRef): Promise<BackingKeyInspection> {
    if (this.closing) throw closedError('inspect');
    const session = this.openSession();
    try {
      return await inspectOnSession(this.p, this.mechanisms, session, ref);
    } finally {
      try {
        this.p.C_CloseSession(session);
      } catch {
        // already gone
      }
    }
  }
}

function gcmMechanism(iv: Uint8Array, aad: Uint8Array): P11.Mechanism {
  // CK_PARAMS_GCM (not CK_PARAMS_AES_GCM: pkcs11js leaves ulIvBits uninitialised for that one).
  const parameter: P11.GcmParams = { type: pkcs11js.CK_PARAMS_GCM, iv: asBuffer(iv), ivBits: GCM_IV_BYTES * 8, aad: asBuffer(aad), tagBits: GCM_TAG_BYTES * 8 };
  return { mechanism: pkcs11js.CKM_AES_GCM, parameter };
}

function closedError(fn: string): HsmError {
  return new HsmError('unavailable', 'CKR_CRYPTOKI_NOT_INITIALIZED', fn, 'the HSM connection is closed');
}
