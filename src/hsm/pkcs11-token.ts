/**
 * The Hsm implementation over a PKCS#11 token (pkcs11js). This folder is the only code that talks
 * PKCS#11; see object-naming.ts for how keys are addressed, session-pool.ts for session rules,
 * provision.ts for the embedded SoftHSM2 token and errors.ts for error translation.
 *
 * Why pkcs11js only, not graphene-pk11: a process may C_Initialize a module once, so graphene
 * could only wrap this same pkcs11js instance (`new graphene.Module(lib)`), and its inventory
 * API then saves three calls while bringing callback-only async and a second error and type
 * vocabulary; the hot path needs raw pkcs11js anyway.
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
import { performance } from 'node:perf_hooks';
// pkcs11js is CommonJS with a spread export: under Node ESM only the default import carries the
// constants (a namespace import sees just PKCS11). Types come through the namespace.
import pkcs11js from 'pkcs11js';
import type * as P11 from 'pkcs11js';
import type { TokenConfig } from '../config.js';
import { TokenKeyPairs } from './asymmetric.js';
import { asBuffer, readUlong } from './bytes.js';
import { isStaleHandle, toHsmError } from './errors.js';
import { type AuditSigningKey, openAuditSigningKey } from './audit-signing-key.js';
import { instrumentPkcs11 } from './instrument.js';
import { LABEL_PREFIX, labelFor, objectIdFor, refFromAttributes, refKey } from './object-naming.js';
import {
  ensureSoftHsmToken,
  findTokenSlot,
  locateSoftHsmModule,
  prepareSoftHsmDir,
  readPinFile,
  softHsmPaths,
  tokenLabels,
  trimPadded,
  withProvisionLock,
} from './provision.js';
import { NO_IDLE_SESSION, SessionPool } from './session-pool.js';
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
export type HsmLog = (level: 'info' | 'warn', msg: string) => void;

const GCM_IV_BYTES = 12;
const GCM_TAG_BYTES = 16;
const AES_KEY_BYTES = 32;
/** Session states from PKCS#11 (missing from pkcs11js). */
const CKS_RO_USER_FUNCTIONS = 1;
const CKS_RW_USER_FUNCTIONS = 3;
/** Mechanisms the service cannot run without. */
const REQUIRED_MECHANISMS: ReadonlyArray<[number, string]> = [
  [pkcs11js.CKM_AES_KEY_GEN, 'CKM_AES_KEY_GEN'],
  [pkcs11js.CKM_AES_GCM, 'CKM_AES_GCM'],
];
/** Template errors that mean "this token does not accept one of the hardening attributes". */
const TEMPLATE_REJECTED = new Set(['CKR_ATTRIBUTE_TYPE_INVALID', 'CKR_ATTRIBUTE_VALUE_INVALID', 'CKR_TEMPLATE_INCONSISTENT', 'CKR_ATTRIBUTE_READ_ONLY']);

const noLog: HsmLog = () => {};

/**
 * Opens the token named by `token` (self-provisioning SoftHSM2 under <dataDir>/softhsm when
 * `token.module` is absent), logs in, checks mechanisms and primes the key-handle cache.
 * One open Hsm per process and module: PKCS#11 allows a single C_Initialize per process.
 */
export async function openHsm(token: TokenConfig, dataDir: string, log: HsmLog = noLog): Promise<Hsm> {
  const started = performance.now();
  if (Buffer.byteLength(token.label, 'utf8') > 32 || token.label.length === 0) {
    throw new HsmError('other', 'CKR_ARGUMENTS_BAD', 'openHsm', 'token label must be 1-32 bytes of UTF-8');
  }
  let connection: Connection;
  if (token.module === undefined) {
    const paths = softHsmPaths(dataDir);
    prepareSoftHsmDir(paths);
    const modulePath = locateSoftHsmModule();
    connection = await withProvisionLock(paths.lockPath, () =>
      connect(modulePath, log, (p) => {
        const { slot, userPin } = ensureSoftHsmToken(p, token.label, paths, log);
        return { slot, pin: userPin };
      }),
    );
  } else {
    const modulePath = token.module;
    connection = connect(modulePath, log, (p) => {
      const slot = findTokenSlot(p, token.label);
      if (slot === undefined) {
        const labels = tokenLabels(p).map((l) => `'${l}'`);
        throw new HsmError(
          'unavailable',
          'CKR_TOKEN_NOT_PRESENT',
          'C_GetTokenInfo',
          `no token labelled '${token.label}' in PKCS#11 module ${modulePath} (tokens present: ${labels.join(', ') || 'none'})`,
        );
      }
      return { slot, pin: configuredPin(token) };
    });
  }
  try {
    const hsm = new Pkcs11Hsm(connection, token, log);
    if (token.module === undefined && token.sharedAcrossProcesses) hsm.objectWriteLockPath = softHsmPaths(dataDir).objectWriteLockPath;
    const keys = await hsm.primeHandleCache();
    log('info', `PKCS#11 token '${token.label}' (${hsm.info.libraryDescription}) open: ${keys} backing keys, ${Math.round(performance.now() - started)} ms`);
    return hsm;
  } catch (err) {
    shutDownModule(connection.p, connection.slot);
    throw err;
  }
}

interface Connection {
  p: P11.PKCS11;
  slot: Handle;
  pin: string;
}

/** Loads and initialises the module, then resolves slot and PIN; finalises again on failure. */
function connect(modulePath: string, log: HsmLog, resolve: (p: P11.PKCS11) => { slot: Handle; pin: string }): Connection {
  const p = new pkcs11js.PKCS11();
  instrumentPkcs11(p); // call latency and errors per function, for the metrics
  try {
    p.load(modulePath);
  } catch (err) {
    const reason = err instanceof Error ? err.message.split('\n')[0] : String(err);
    throw new HsmError('unavailable', 'CKR_LIBRARY_LOAD_FAILED', 'load', `cannot load PKCS#11 module ${modulePath}: ${reason}`);
  }
  try {
    initialize(p, modulePath, log);
  } catch (err) {
    closeLibrary(p);
    throw err;
  }
  try {
    return { p, ...resolve(p) };
  } catch (err) {
    shutDownModule(p, undefined);
    throw err instanceof HsmError ? err : toHsmError(err, 'C_GetSlotList', 'finding the token');
  }
}

function initialize(p: P11.PKCS11, modulePath: string, log: HsmLog): void {
  try {
    // Async calls run on libuv worker threads, so the module must do its own locking.
    p.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
    return;
  } catch (err) {
    const e = toHsmError(err, 'C_Initialize');
    if (e.ckr === 'CKR_CRYPTOKI_ALREADY_INITIALIZED') {
      throw new HsmError(
        'unavailable',
        e.ckr,
        'C_Initialize',
        `PKCS#11 module ${modulePath} is already initialised in this process; open one Hsm per process and close it before opening another`,
      );
    }
    if (e.ckr !== 'CKR_CANT_LOCK') throw toHsmError(err, 'C_Initialize', `initialising PKCS#11 module ${modulePath}`);
  }
  log('warn', `PKCS#11 module ${modulePath} cannot use OS locking; continuing without it`);
  try {
    p.C_Initialize();
  } catch (err) {
    throw toHsmError(err, 'C_Initialize', `initialising PKCS#11 module ${modulePath}`);
  }
}

function configuredPin(token: TokenConfig): string {
  if (token.pin !== undefined) return token.pin;
  if (token.pinFile !== undefined) return readPinFile(token.pinFile);
  throw new HsmError('other', 'CKR_PIN_INCORRECT', 'openHsm', 'no PIN configured: set P11KMS_PIN or P11KMS_PIN_FILE');
}

function shutDownModule(p: P11.PKCS11, slot: Handle | undefined): void {
  if (slot !== undefined) {
    try {
      p.C_CloseAllSessions(slot);
    } catch {
      // best effort
    }
  }
  try {
    p.C_Finalize();
  } catch {
    // best effort
  }
  closeLibrary(p);
}

function closeLibrary(p: P11.PKCS11): void {
  try {
    p.close();
  } catch {
    // best effort
  }
}

/** Diagnostic view of one backing key (operator tooling, `doctor`, tests). */
export interface BackingKeyInspection {
  ref: BackingKeyRef;
  /** Token objects carrying this ref's CKA_ID (1 is healthy). */
  objectCount: number;
  label: string | undefined;
  /** Attribute values; undefined where the token would not say. */
  attributes: {
    token?: boolean;
    private?: boolean;
    sensitive?: boolean;
    alwaysSensitive?: boolean;
    extractable?: boolean;
    neverExtractable?: boolean;
    local?: boolean;
    modifiable?: boolean;
    copyable?: boolean;
    encrypt?: boolean;
    decrypt?: boolean;
    wrap?: boolean;
    unwrap?: boolean;
    sign?: boolean;
    verify?: boolean;
    derive?: boolean;
    valueLen?: number;
  };
  /** Outcome of C_GetAttributeValue(CKA_VALUE): 'CKR_ATTRIBUTE_SENSITIVE' is the healthy answer. */
  readValueResult: string;
  /** Outcome of reading the attribute that holds the secret: CKA_PRIVATE_EXPONENT for RSA private
   *  keys, CKA_VALUE otherwise. 'CKR_ATTRIBUTE_SENSITIVE' is healthy. */
  secretReadResult: string;
  /** Outcome of C_WrapKey under a throwaway session wrapping key: 'CKR_KEY_UNEXTRACTABLE' is
   *  healthy; 'not-tried' when the token has no AES key-wrap mechanism. */
  wrapResult: string;
}

/** Inspects the token object behind `ref` on a separate session; never returns key material. */
export function inspectBackingKey(hsm: Hsm, ref: BackingKeyRef): Promise<BackingKeyInspection> {
  if (!(hsm instanceof Pkcs11Hsm)) throw new TypeError('inspectBackingKey needs an Hsm from openHsm');
  return hsm.inspect(ref);
}

/** Raw token access for sibling modules of src/hsm that add token features (key-import.ts);
 *  never used outside src/hsm. */
export interface TokenAccess {
  readonly p: P11.PKCS11;
  readonly label: string;
  readonly log: HsmLog;
  withSession<T>(op: (session: Handle) => T | Promise<T>): Promise<T>;
  /** Wraps every creation or destruction of token objects (cross-process object-index rule). */
  tokenWrite<T>(write: () => Promise<T>): Promise<T>;
  /** Drops the cached handle of `ref` (its object was replaced or destroyed). */
  forget(ref: BackingKeyRef): void;
  /** Whether the token accepts CKA_MODIFIABLE/CKA_COPYABLE=false on new keys. */
  hardenedTemplate(): boolean;
}

export function tokenAccessOf(hsm: Hsm): TokenAccess {
  if (!(hsm instanceof Pkcs11Hsm)) throw new TypeError('tokenAccessOf needs an Hsm from openHsm');
  return hsm.tokenAccess();
}

class Pkcs11Hsm implements Hsm {
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
  /** refKey → object handle; handles are process-local and never persisted. */
  private readonly handles = new Map<string, Handle>();
  /** In-flight C_FindObjects per refKey, so a burst on an uncached key searches once. */
  private readonly lookups = new Map<string, Promise<Handle>>();
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
    this.keyPairs = new TokenKeyPairs({
      ...this.tokenAccess(),
      mechanisms: this.mechanisms,
      syncCalls: this.syncCalls,
      withKey: (ref, op) => this.withKey(ref, op),
      withKeySync: (ref, op) => this.withKeySync(ref, op),
      rememberHandle: (ref, handle) => this.handles.set(refKey(ref), handle),
    });
  }

  // ---- sessions and login -------------------------------------------------------------------

  /** A read-write session in the user-logged-in state. Login is per application, so only the
   *  first session (or the first after the token lost our login) actually logs in. */
  private openSession(): Handle {
    let session: Handle;
    try {
      session = this.p.C_OpenSession(this.slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
    } catch (err) {
      throw toHsmError(err, 'C_OpenSession', `opening a session on token '${this.label}'`);
    }
    try {
      const { state } = this.p.C_GetSessionInfo(session);
      if (state !== CKS_RW_USER_FUNCTIONS && state !== CKS_RO_USER_FUNCTIONS) this.login(session);
      return session;
    } catch (err) {
      try {
        this.p.C_CloseSession(session);
      } catch {
        // already unusable
      }
      throw toHsmError(err, 'C_GetSessionInfo');
    }
  }

  private login(session: Handle): void {
    try {
      this.p.C_Login(session, pkcs11js.CKU_USER, this.pin);
    } catch (err) {
      const e = toHsmError(err, 'C_Login', `login to token '${this.label}'`);
      if (e.ckr === 'CKR_USER_ALREADY_LOGGED_IN') return;
      if (e.ckr === 'CKR_PIN_INCORRECT') {
        throw new HsmError('other', e.ckr, 'C_Login', `login to token '${this.label}' failed: wrong PIN (CKR_PIN_INCORRECT)`);
      }
      throw e;
    }
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
        const found = this.enumerateBackingKeys(session);
        for (const [key, handle] of found) this.handles.set(key, handle);
        return found.size;
      } finally {
        this.p.C_CloseSession(session);
      }
    });
  }

  /**
   * All objects whose label starts with p11kms: and whose CKA_ID decodes, keyed by refKey. The
   * label prefix cannot be matched by C_FindObjects, so this reads class, label and ID of every
   * object: one linear scan plus one C_GetAttributeValue per object.
   */
  private enumerateBackingKeys(session: Handle): Map<string, Handle> {
    const all: Handle[] = [];
    let fn = 'C_FindObjectsInit';
    try {
      this.p.C_FindObjectsInit(session, []);
      fn = 'C_FindObjects';
      for (;;) {
        const batch = this.p.C_FindObjects(session, 1000);
        if (batch.length === 0) break;
        for (const handle of batch) all.push(handle);
      }
      fn = 'C_FindObjectsFinal';
      this.p.C_FindObjectsFinal(session);
    } catch (err) {
      throw toHsmError(err, fn, 'enumerating token objects');
    }
    const found = new Map<string, Handle>();
    let duplicates = 0;
    for (const handle of all) {
      let attrs: P11.TemplateResult;
      try {
        attrs = this.p.C_GetAttributeValue(session, handle, [{ type: pkcs11js.CKA_CLASS }, { type: pkcs11js.CKA_LABEL }, { type: pkcs11js.CKA_ID }]);
      } catch {
        continue; // not a key (no CKA_ID), or destroyed by another process since the scan
      }
      const objectClass = readUlong(attrs[0]!.value);
      if (objectClass !== pkcs11js.CKO_SECRET_KEY && objectClass !== pkcs11js.CKO_PRIVATE_KEY) continue;
      const ref = refFromAttributes(attrs[1]!.value, attrs[2]!.value);
      if (ref === undefined) continue;
      const key = refKey(ref);
      if (found.has(key)) duplicates++;
      else found.set(key, handle);
    }
    if (duplicates > 0) this.log('warn', `token '${this.label}' holds ${duplicates} duplicate ${LABEL_PREFIX} key objects; using the first of each`);
    return found;
  }

  /** Key objects (secret or private) carrying exactly this CKA_ID. Linear in token size. */
  private findKeyObjects(session: Handle, ref: BackingKeyRef): Handle[] {
    let fn = 'C_FindObjectsInit';
    try {
      this.p.C_FindObjectsInit(session, [{ type: pkcs11js.CKA_ID, value: objectIdFor(ref) }]);
      fn = 'C_FindObjects';
      const candidates = this.p.C_FindObjects(session, 16);
      fn = 'C_FindObjectsFinal';
      this.p.C_FindObjectsFinal(session);
      fn = 'C_GetAttributeValue';
      return candidates.filter((handle) => {
        const objectClass = readUlong(this.p.C_GetAttributeValue(session, handle, [{ type: pkcs11js.CKA_CLASS }])[0]!.value);
        return objectClass === pkcs11js.CKO_SECRET_KEY || objectClass === pkcs11js.CKO_PRIVATE_KEY;
      });
    } catch (err) {
      throw toHsmError(err, fn, 'looking up a backing key');
    }
  }

  /**
   * C_FindObjects on a fresh session, retried a few times: SoftHSM2 answers
   * CKR_OBJECT_HANDLE_INVALID when another process adds or removes objects during the scan
   * (seen with several service processes creating keys at once).
   */
  private async findWithRetry(ref: BackingKeyRef): Promise<Handle[]> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.pool.withSession((session) => this.findKeyObjects(session, ref));
      } catch (err) {
        if (attempt >= 4 || !(err instanceof HsmError) || !isStaleHandle(err)) throw err;
      }
    }
  }

  private lookUp(ref: BackingKeyRef, key: string): Promise<Handle> {
    let pending = this.lookups.get(key);
    if (pending === undefined) {
      pending = this.findWithRetry(ref)
        .then((handles) => {
          const handle = handles[0];
          if (handle === undefined) throw keyNotFound(ref);
          if (handles.length > 1) this.log('warn', `token '${this.label}' holds ${handles.length} objects for ${key}; using the first`);
          this.handles.set(key, handle);
          return handle;
        })
        .finally(() => this.lookups.delete(key));
      this.lookups.set(key, pending);
    }
    return pending;
  }

  /**
   * Runs `op` with the key's handle on a pooled session. A cached handle whose object vanished
   * (destroyed, possibly by another process, and maybe recreated) is looked up again once.
   */
  private async withKey<T>(ref: BackingKeyRef, op: (session: Handle, key: Handle) => T | Promise<T>): Promise<T> {
    const cacheKey = refKey(ref);
    const cached = this.handles.get(cacheKey);
    const handle = cached ?? (await this.lookUp(ref, cacheKey));
    try {
      return await this.pool.withSession((session) => op(session, handle));
    } catch (err) {
      if (!(err instanceof HsmError) || !isStaleHandle(err)) throw err;
      if (this.handles.get(cacheKey) === handle) this.handles.delete(cacheKey);
      if (cached === undefined) throw keyNotFound(ref);
      const fresh = await this.lookUp(ref, cacheKey);
      return this.pool.withSession((session) => op(session, fresh)).catch((retryErr: unknown) => {
        throw retryErr instanceof HsmError && isStaleHandle(retryErr) ? keyNotFound(ref) : retryErr;
      });
    }
  }

  /**
   * withKey for synchronous ops: when the handle is cached and a session is idle (the normal case
   * in sync mode, where ops never overlap) the op runs right away with no promise hops; anything
   * else (uncached key, busy pool, stale handle) takes the general path.
   */
  private withKeySync<T>(ref: BackingKeyRef, op: (session: Handle, key: Handle) => T): Promise<T> {
    const cacheKey = refKey(ref);
    const handle = this.handles.get(cacheKey);
    if (handle !== undefined) {
      try {
        const result = this.pool.runIfIdle((session) => op(session, handle));
        if (result !== NO_IDLE_SESSION) return Promise.resolve(result);
      } catch (err) {
        if (!(err instanceof HsmError) || !isStaleHandle(err)) return Promise.reject(err);
        if (this.handles.get(cacheKey) === handle) this.handles.delete(cacheKey); // look it up again below
      }
    }
    return this.withKey(ref, op);
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
   * Set for the self-provisioned SoftHSM2 token when several service processes share it
   * (P11KMS_WORKERS > 1). SoftHSM2 2.6.1 re-reads its object directory only when the token's
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
      await this.pool.withSession((session) => this.refreshObjectIndex(session));
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

  /** Any C_FindObjectsInit makes SoftHSM2 re-index when the generation changed. */
  private refreshObjectIndex(session: Handle): void {
    try {
      this.p.C_FindObjectsInit(session, [{ type: pkcs11js.CKA_LABEL, value: 'p11kms:index-refresh' }]);
      this.p.C_FindObjects(session, 1);
      this.p.C_FindObjectsFinal(session);
    } catch (err) {
      throw toHsmError(err, 'C_FindObjects', 'refreshing the object index');
    }
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
    if (this.syncCalls) return this.withKeySync(ref, (s, k) => this.encryptSync(s, k, mechanism, input));
    return this.withKey(ref, (s, k) => this.encryptAsync(s, k, mechanism, input));
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
    if (this.syncCalls) return this.withKeySync(ref, (s, k) => this.decryptSync(s, k, mechanism, input));
    return this.withKey(ref, (s, k) => this.decryptAsync(s, k, mechanism, input));
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
      for (const handle of this.findKeyObjects(session, ref)) {
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
    const found = await this.tokenScan(() => this.pool.withSession((session) => this.enumerateBackingKeys(session)));
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

  /** See inspectBackingKey. Runs on a session of its own, outside the pool. */
  async inspect(ref: BackingKeyRef): Promise<BackingKeyInspection> {
    if (this.closing) throw closedError('inspect');
    const session = this.openSession();
    try {
      const handles = this.findKeyObjects(session, ref);
      const handle = handles[0];
      if (handle === undefined) throw keyNotFound(ref);
      const flag = (type: number): boolean | undefined => {
        const value = this.readAttribute(session, handle, type);
        return value === undefined ? undefined : value.length > 0 && value[0] !== 0;
      };
      const labelValue = this.readAttribute(session, handle, pkcs11js.CKA_LABEL);
      const valueLen = this.readAttribute(session, handle, pkcs11js.CKA_VALUE_LEN);
      return {
        ref,
        objectCount: handles.length,
        label: labelValue?.toString('utf8'),
        attributes: {
          token: flag(pkcs11js.CKA_TOKEN),
          private: flag(pkcs11js.CKA_PRIVATE),
          sensitive: flag(pkcs11js.CKA_SENSITIVE),
          alwaysSensitive: flag(pkcs11js.CKA_ALWAYS_SENSITIVE),
          extractable: flag(pkcs11js.CKA_EXTRACTABLE),
          neverExtractable: flag(pkcs11js.CKA_NEVER_EXTRACTABLE),
          local: flag(pkcs11js.CKA_LOCAL),
          modifiable: flag(pkcs11js.CKA_MODIFIABLE),
          copyable: flag(pkcs11js.CKA_COPYABLE),
          encrypt: flag(pkcs11js.CKA_ENCRYPT),
          decrypt: flag(pkcs11js.CKA_DECRYPT),
          wrap: flag(pkcs11js.CKA_WRAP),
          unwrap: flag(pkcs11js.CKA_UNWRAP),
          sign: flag(pkcs11js.CKA_SIGN),
          verify: flag(pkcs11js.CKA_VERIFY),
          derive: flag(pkcs11js.CKA_DERIVE),
          valueLen: valueLen === undefined ? undefined : readUlong(valueLen),
        },
        readValueResult: this.tryReadValue(session, handle),
        secretReadResult: this.tryReadValue(session, handle, this.isRsaKey(session, handle) ? pkcs11js.CKA_PRIVATE_EXPONENT : pkcs11js.CKA_VALUE),
        wrapResult: await this.tryWrap(session, handle),
      };
    } finally {
      try {
        this.p.C_CloseSession(session);
      } catch {
        // already gone
      }
    }
  }

  private readAttribute(session: Handle, handle: Handle, type: number): Buffer | undefined {
    try {
      return this.p.C_GetAttributeValue(session, handle, [{ type }])[0]!.value;
    } catch {
      return undefined;
    }
  }

  private isRsaKey(session: Handle, handle: Handle): boolean {
    const keyType = this.readAttribute(session, handle, pkcs11js.CKA_KEY_TYPE);
    return keyType !== undefined && readUlong(keyType) === pkcs11js.CKK_RSA;
  }

  private tryReadValue(session: Handle, handle: Handle, type: number = pkcs11js.CKA_VALUE): string {
    try {
      const [attr] = this.p.C_GetAttributeValue(session, handle, [{ type }]);
      attr?.value.fill(0); // readable key material is the finding; the bytes are not reported
      return 'CKR_OK';
    } catch (err) {
      return toHsmError(err, 'C_GetAttributeValue').ckr;
    }
  }

  private async tryWrap(session: Handle, handle: Handle): Promise<string> {
    const mechanism = [pkcs11js.CKM_AES_KEY_WRAP_PAD, pkcs11js.CKM_AES_KEY_WRAP].find((m) => this.mechanisms.has(m));
    if (mechanism === undefined) return 'not-tried';
    const wrappingKey = await this.p.C_GenerateKeyAsync(session, { mechanism: pkcs11js.CKM_AES_KEY_GEN }, [
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
      { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_AES },
      { type: pkcs11js.CKA_VALUE_LEN, value: AES_KEY_BYTES },
      { type: pkcs11js.CKA_TOKEN, value: false },
      { type: pkcs11js.CKA_SENSITIVE, value: true },
      { type: pkcs11js.CKA_EXTRACTABLE, value: false },
      { type: pkcs11js.CKA_WRAP, value: true },
    ]);
    try {
      const wrapped = await this.p.C_WrapKeyAsync(session, { mechanism }, wrappingKey, handle, Buffer.alloc(AES_KEY_BYTES + 64));
      wrapped.fill(0);
      return 'CKR_OK';
    } catch (err) {
      return toHsmError(err, 'C_WrapKey').ckr;
    } finally {
      try {
        this.p.C_DestroyObject(session, wrappingKey);
      } catch {
        // a session object dies with its session anyway
      }
    }
  }
}

function gcmMechanism(iv: Uint8Array, aad: Uint8Array): P11.Mechanism {
  // CK_PARAMS_GCM (not CK_PARAMS_AES_GCM: pkcs11js leaves ulIvBits uninitialised for that one).
  const parameter: P11.GcmParams = { type: pkcs11js.CK_PARAMS_GCM, iv: asBuffer(iv), ivBits: GCM_IV_BYTES * 8, aad: asBuffer(aad), tagBits: GCM_TAG_BYTES * 8 };
  return { mechanism: pkcs11js.CKM_AES_GCM, parameter };
}

function keyNotFound(ref: BackingKeyRef): HsmError {
  return new HsmError('key-not-found', 'CKR_OBJECT_HANDLE_INVALID', 'C_FindObjects', `no token object for backing key ${refKey(ref)}`);
}

function closedError(fn: string): HsmError {
  return new HsmError('unavailable', 'CKR_CRYPTOKI_NOT_INITIALIZED', fn, 'the HSM connection is closed');
}
