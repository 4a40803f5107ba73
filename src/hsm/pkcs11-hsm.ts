/**
 * Pkcs11Hsm: the Hsm over an open PKCS#11 token. openHsm (pkcs11-token.ts) connects and hands the
 * connection over; this class owns the sessions (session-pool.ts), the key-handle cache, the
 * cross-process object lock and the AES-GCM hot path, and delegates key pairs, HMAC and ECDH to
 * asymmetric.ts, the audit key to audit-signing-key.ts and diagnostics to diagnostics.ts.
 *
 * Token differences worth knowing (vendor profiles, profiles.ts):
 *  - GCM IV: the KMS layer draws a 12-byte IV from generateRandom and passes it; tokens that
 *    generate the IV themselves overwrite the caller's `iv` buffer with the one they used.
 *    'token-writes-params' (CloudHSM, nShield) passes a zeroed IV and reads the token's from the
 *    same Buffer afterwards: pkcs11js hands the JS Buffer's own memory to the module as
 *    CK_GCM_PARAMS.pIv (napi_get_buffer_info, no copy), so what the token writes there arrives
 *    in JS. Measured with the fault module (test/fault-module, iv_mode hsm-writes-iv), which
 *    writes the IV during C_EncryptInit, sync and async (test/hsm-faults.test.ts). A token that
 *    wrote it only at C_Encrypt would write into the same Buffer as long as it stays referenced,
 *    which it does until the call returns. 'token-appends' (Luna FIPS mode) passes ulIvLen 0
 *    with ulIvBits 96 and takes the IV from after the tag.
 *  - GCM tag failure: SoftHSM 2.6 says CKR_GENERAL_ERROR, nShield CKR_FUNCTION_FAILED, others
 *    CKR_ENCRYPTED_DATA_INVALID (the profile's dialect, errors.ts).
 *  - Faults: token-guard.ts takes the token down on a lost session, login or device and brings
 *    it back (recover below); async mode runs request-path calls on call-workers.ts.
 *  - Threads: key generation, private-key operations, every call of key import (key-import*.ts)
 *    and key destruction (destroyKey) run in the slow lane (slow-lane.ts) in both modes, never on
 *    libuv's pool or the event loop. In async mode every other call of the request path runs on
 *    the call workers, random bytes included (generateRandomAsync: the reserve, else a worker).
 *    What still runs on the event loop in async mode, and why: start-up and shutdown
 *    (C_Initialize, slot and token info, priming the handle cache, the token identity's
 *    synchronous generateRandom); C_Finalize/C_Initialize in recovery (only after a worker's
 *    probe answered, with no call in flight; the main thread owns the library's
 *    initialisation); the synchronous generateRandom once its reserve ran dry (no request-path
 *    caller left); the audit chain's head objects and the audit key's lookup (audit-signing-key.ts:
 *    registered at start-up, published by the background digest and looked up again after a
 *    recovery, never on a request; the digest's signature is in the slow lane); listBackingKeys
 *    (consistency checks, in the background); the object index refresh under the cross-process
 *    write lock (SoftHSM2 shared by several processes, a local token); operator diagnostics
 *    (inspect, its own session).
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
import { CallWorkers, type WorkerAnswer, type WorkerCall, answerOrThrow } from './call-workers.js';
import { isStaleHandle, isTokenLost, setErrorDialect, toHsmError } from './errors.js';
import { type AuditSigningKey, openAuditSigningKey } from './audit-signing-key.js';
import { type BackingKeyInspection, inspectOnSession } from './diagnostics.js';
import { HandleCache } from './handle-cache.js';
import { enumerateBackingKeys, refreshObjectIndex } from './key-objects.js';
import { labelFor, objectIdFor, refKey } from './object-naming.js';
import { PROFILES, type VendorProfile, detectProfile, environmentProblems, sessionLimit } from './profiles.js';
import { findTokenSlot, trimPadded, withProvisionLock } from './provision.js';
import { SessionPool } from './session-pool.js';
import { custodyAttributes } from './key-custody.js';
import { DEFAULT_SLOW_LANE, type SlowCall, SlowLane } from './slow-lane.js';
import type { HsmLog, TokenAccess } from './token-access.js';
import { TokenGuard } from './token-guard.js';
import { CKS_RO_USER_FUNCTIONS, CKS_RW_USER_FUNCTIONS, type Connection, initialize, openLoggedInSession, shutDownModule } from './token-module.js';
import {
  type BackingKeyRef,
  type ExportedKeyPair,
  type HashName,
  type Hsm,
  HsmError,
  type KeyPairType,
  type PrivateKeyUsage,
  type SecretCustody,
  type SignatureScheme,
  type TokenInfo,
  type TokenKeyType,
} from './types.js';

type Handle = P11.Handle;

const GCM_IV_BYTES = 12;
const GCM_TAG_BYTES = 16;
const AES_KEY_BYTES = 32;
/** Token random bytes kept ready in async mode, so that most draws need no token round trip at
 *  all (and the synchronous generateRandom rarely one on the event loop); served bytes are zeroed. */
const RANDOM_RESERVE_BYTES = 64 * 1024;
/** Template errors that mean "this token does not accept one of the hardening attributes". */
const TEMPLATE_REJECTED = new Set(['CKR_ATTRIBUTE_TYPE_INVALID', 'CKR_ATTRIBUTE_VALUE_INVALID', 'CKR_TEMPLATE_INCONSISTENT', 'CKR_ATTRIBUTE_READ_ONLY']);

export class Pkcs11Hsm implements Hsm {
  readonly info: TokenInfo;
  readonly mechanisms: ReadonlySet<number>;

  /** The vendor dialect in use (profiles.ts). */
  readonly profile: VendorProfile;
  /** Whether request-path calls run on the event loop (local software token) or on workers. */
  readonly syncCalls: boolean;

  private readonly p: P11.PKCS11;
  private slot: Handle;
  private readonly pin: string;
  private readonly label: string;
  private readonly modulePath: string;
  private readonly pool: SessionPool;
  private readonly guard: TokenGuard;
  /** Request-path calls off the event loop (async mode only). */
  private readonly workers: CallWorkers | undefined;
  /** Key generation and private-key operations, both modes (slow-lane.ts). */
  private readonly slowLane: SlowLane;
  private readonly callTimeoutMs: number;
  private randomReserve = { bytes: Buffer.alloc(0), used: 0 };
  private randomRefill: Promise<void> | undefined;
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
    this.modulePath = connection.modulePath;
    this.callTimeoutMs = token.callTimeoutMs ?? 5000;
    this.control = this.openSession();

    let mechanismList: number[];
    try {
      mechanismList = this.p.C_GetMechanismList(this.slot);
    } catch (err) {
      throw toHsmError(err, 'C_GetMechanismList');
    }
    this.mechanisms = new Set(mechanismList);
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
    this.profile =
      token.profile !== undefined
        ? PROFILES[token.profile]!
        : detectProfile({
            ...this.info,
            libraryManufacturer: trimPadded(moduleInfo.manufacturerID),
            libraryVersion: `${moduleInfo.libraryVersion.major}.${moduleInfo.libraryVersion.minor}`,
          });
    setErrorDialect(this.profile);
    // CKA_COPYABLE is PKCS#11 v2.40; an older token (openCryptoki 3.8 says 2.20) rejects the
    // attribute (CKR_ATTRIBUTE_TYPE_INVALID) in every template.
    const { major, minor } = moduleInfo.cryptokiVersion;
    if (major < 2 || (major === 2 && minor < 40)) {
      this.hardenedTemplate = false;
      log('warn', `token '${this.label}' implements PKCS#11 ${major}.${minor}: generating keys without CKA_MODIFIABLE/CKA_COPYABLE=false`);
    }
    const envProblems = environmentProblems(this.profile, token.sharedAcrossProcesses === true);
    if (envProblems.length > 0) throw new HsmError('other', 'CKR_ARGUMENTS_BAD', 'openHsm', `token '${this.label}': ${envProblems.join('; ')}`);
    this.syncCalls = (token.symmetricCalls ?? (this.profile.localSoftware ? 'sync' : 'async')) === 'sync';
    const sessions = sessionLimit(this.profile, token.poolSize, tokenInfo.maxSessionCount);
    if (sessions < token.poolSize) log('warn', `token '${this.label}' allows ${tokenInfo.maxSessionCount} sessions (${this.profile.name}, reserve ${this.profile.sessionReserve}): pool of ${sessions}, not ${token.poolSize}`);
    this.guard = new TokenGuard(this.label, log, (attempt, cause) => this.recover(attempt, cause));
    this.pool = new SessionPool(
      () => this.openPooledSession(),
      (session) => this.closePooledSession(session),
      sessions,
      token.sessionQueueMax,
      (err) => this.noteFailure(err),
    );
    this.workers = this.syncCalls ? undefined : new CallWorkers(this.modulePath, sessions + 1);
    this.slowLane = new SlowLane(this.modulePath, token.slowLane ?? DEFAULT_SLOW_LANE, this.profile.localSoftware, this.label);
    log('info', `token '${this.label}': profile ${this.profile.name} (${this.profile.description}), ${this.syncCalls ? 'sync' : 'async (worker threads)'} calls, ${sessions} sessions, ${this.slowLane.stats().threads} slow-lane thread(s)`);
    this.keyHandles = new HandleCache(this.p, this.pool, this.label, log, {
      assertUp: (fn) => this.guard.assertUp(fn),
      confirmLoggedIn: () => this.confirmLoggedIn(),
      deadlineMs: this.syncCalls ? undefined : this.callTimeoutMs,
      find: this.workers
        ? async (session, ref) => {
            const answer = this.answerOf(await this.onWorker({ op: 'find-keys', session, id: objectIdFor(ref) }, 'C_FindObjects'), 'C_FindObjects');
            return answer.handles!.map((h) => Buffer.from(h));
          }
        : undefined,
    });
    this.handles = this.keyHandles.handles;
    this.keyPairs = new TokenKeyPairs({
      ...this.tokenAccess(),
      mechanisms: this.mechanisms,
      syncCalls: this.syncCalls,
      withKey: (ref, op) => this.keyHandles.withKey(ref, op),
      withKeySync: (ref, op) => this.keyHandles.withKeySync(ref, op),
      slowWithKey: (ref, work) => this.slowLane.run((call) => this.keyHandles.withKey(ref, (session, key) => work(session, key, call))),
      onWorker: this.workers ? async (call, what) => this.answerOf(await this.onWorker(call, what), what) : undefined,
      rememberHandle: (ref, handle) => this.handles.set(refKey(ref), handle),
    });
  }

  // ---- sessions and login -------------------------------------------------------------------

  /** A read-write session in the user-logged-in state (openLoggedInSession, token-module.ts). */
  private openSession(): Handle {
    return openLoggedInSession(this.p, this.slot, this.pin, this.label);
  }

  /** Pool sessions; in async mode opened (and logged in, if the login was lost) on a worker. */
  private openPooledSession(): Handle | Promise<Handle> {
    this.guard.assertUp('C_OpenSession');
    if (!this.workers) return this.openSession();
    return this.onWorker({ op: 'open-session', slot: this.slot, pin: this.pin }, 'C_OpenSession').then((answer) => Buffer.from(this.answerOf(answer, 'C_OpenSession').session!));
  }

  /** While the token is down a close would only wait for it (or hang with it); recovery closes
   *  every session of the old generation at once (C_CloseAllSessions). */
  private closePooledSession(session: Handle): void {
    if (this.guard.isDown) return;
    if (this.workers && !this.closing) void this.onWorker({ op: 'close-session', session }, 'C_CloseSession');
    else this.p.C_CloseSession(session);
  }

  /** Every error a token call threw passes here: a lost token starts recovery. */
  private noteFailure(err: unknown): void {
    if (!(err instanceof HsmError)) return;
    if (isTokenLost(err)) this.guard.lost(err);
  }

  /** Throws when the token no longer has our login (seen as key handles going stale). */
  private async confirmLoggedIn(): Promise<void> {
    this.guard.assertUp('C_GetSessionInfo');
    let state: number;
    try {
      state = this.workers
        ? this.answerOf(await this.onWorker({ op: 'ping', session: this.control }, 'C_GetSessionInfo'), 'C_GetSessionInfo').state!
        : this.p.C_GetSessionInfo(this.control).state;
    } catch (err) {
      const e = toHsmError(err, 'C_GetSessionInfo');
      this.noteFailure(e);
      throw e;
    }
    if (state !== CKS_RW_USER_FUNCTIONS && state !== CKS_RO_USER_FUNCTIONS) {
      const e = new HsmError('unavailable', 'CKR_USER_NOT_LOGGED_IN', 'C_GetSessionInfo', `token '${this.label}' no longer has our login`);
      this.guard.lost(e);
      throw e;
    }
  }

  /**
   * One recovery attempt (token-guard.ts runs them with backoff): retire every session, forget
   * every handle (they may differ after a reboot, the audit key's too), then a fresh control
   * session with a fresh login and a round trip. A library that answers CKR_GENERAL_ERROR or
   * CKR_CRYPTOKI_NOT_INITIALIZED, or that still fails on the third attempt, is finalised and
   * initialised again first (only with no call in flight: finalising under a running call is
   * undefined behaviour), and the slot is found again by label.
   */
  private async recover(attempt: number, cause: HsmError): Promise<void> {
    this.pool.reset();
    this.handles.clear();
    this.auditKeyCurrent = undefined;
    // Off the event loop first: a token that hung (or timed out a slow-lane call, in either mode)
    // may hang again.
    if (this.workers || cause.kind === 'timeout') await this.probeOffThread();
    const wedged = cause.ckr === 'CKR_GENERAL_ERROR' || cause.ckr === 'CKR_CRYPTOKI_NOT_INITIALIZED' || attempt >= 3;
    await Promise.all([this.workers?.idle(), this.slowLane.idle()]);
    if (wedged && this.pool.busy === 0) {
      try {
        this.p.C_Finalize();
      } catch {
        // not initialised any more
      }
      initialize(this.p, this.modulePath, this.log);
      const slot = findTokenSlot(this.p, this.label);
      if (slot === undefined) throw new HsmError('unavailable', 'CKR_TOKEN_NOT_PRESENT', 'C_GetTokenInfo', `no token labelled '${this.label}' after re-initialising the library`);
      this.slot = slot;
    } else if (this.workers) {
      // Async mode: the token answered the probe a moment ago, but may hang again; every call of
      // a plain reconnect runs on a worker with the per-call deadline.
      this.answerOf(await this.onWorker({ op: 'close-all-sessions', slot: this.slot }, 'C_CloseAllSessions'), 'C_CloseAllSessions');
    } else {
      try {
        this.p.C_CloseAllSessions(this.slot);
      } catch (err) {
        throw toHsmError(err, 'C_CloseAllSessions', `reconnecting to token '${this.label}'`);
      }
    }
    if (this.workers) {
      const opened = this.answerOf(await this.onWorker({ op: 'open-session', slot: this.slot, pin: this.pin }, 'C_OpenSession'), 'C_OpenSession');
      this.control = Buffer.from(opened.session!);
      // open-session made its round trip (C_GetSessionInfo, login when lost); one more, as below.
      this.answerOf(await this.onWorker({ op: 'ping', session: this.control }, 'C_GenerateRandom'), 'C_GenerateRandom');
      return;
    }
    this.control = this.openSession();
    try {
      this.p.C_GenerateRandom(this.control, Buffer.allocUnsafe(1));
    } catch (err) {
      throw toHsmError(err, 'C_GenerateRandom', `reconnecting to token '${this.label}'`);
    }
  }

  /**
   * Runs `work` in the slow lane (slow-lane.ts): admitted first, then a pooled session (and the
   * object-write lock first when `write`), so that waiting slow calls never hold sessions.
   */
  private slowSession<T>(work: (session: Handle, call: SlowCall) => Promise<T>, write = false): Promise<T> {
    return this.slowLane.run((call) => {
      this.guard.assertUp('slow lane');
      const inSession = () => this.pool.withSession((session) => work(session, call));
      return write ? this.tokenWrite(inSession) : inSession();
    });
  }

  /** Whether the library answers at all, asked from a worker: a hung token must not hang the
   *  event loop with it. */
  private async probeOffThread(): Promise<void> {
    const ping: WorkerCall = { op: 'ping', session: this.control };
    // Sync mode has no call workers; the slow lane's threads answer the probe.
    const answer = this.workers ? await this.onWorker(ping, 'C_GetSessionInfo') : await this.slowLane.probe(ping, this.callTimeoutMs);
    // The old control session is normally gone after a fault; any PKCS#11 answer means the
    // library is responsive again, only a missing answer (deadline) stops this attempt.
    if (answer.error?.fn === 'worker') throw new HsmError('timeout', 'CKR_FUNCTION_FAILED', 'C_GetSessionInfo', `token '${this.label}' does not answer`);
  }

  /** Runs a call on a worker with the per-call deadline; a missing answer is reported as
   *  error.fn 'worker'. */
  private async onWorker(call: WorkerCall, fn: string): Promise<WorkerAnswer> {
    const answer = await this.workers!.run(call, this.callTimeoutMs);
    if (answer.error?.fn === 'worker') answer.error.message = `${fn} did not answer within ${this.callTimeoutMs} ms`;
    return answer;
  }

  /** The answer of a worker call, or its error as HsmError (timeouts as kind 'timeout'). */
  private answerOf(answer: WorkerAnswer, what: string): WorkerAnswer {
    return answerOrThrow(answer, what, this.label);
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

  async generateAesKey(ref: BackingKeyRef, custody: SecretCustody = 'token-only'): Promise<void> {
    const missing = this.missingMechanisms({ kind: 'aes' }, 'decrypt');
    if (missing.length > 0) {
      throw new HsmError('unsupported', 'CKR_MECHANISM_INVALID', 'C_GetMechanismList', `token '${this.label}' lacks ${missing.join(' and ')}, which SYMMETRIC_DEFAULT keys need`);
    }
    this.guard.assertUp('C_GenerateKey');
    const id = objectIdFor(ref);
    let handle: Handle;
    try {
      handle = await this.generateKeyObject(ref, id, custody);
    } catch (err) {
      if (!(err instanceof HsmError) || !this.hardenedTemplate || !TEMPLATE_REJECTED.has(err.ckr)) throw err;
      this.hardenedTemplate = false;
      this.log('warn', `token '${this.label}' rejects CKA_MODIFIABLE/CKA_COPYABLE=false (${err.ckr}); generating keys without them`);
      handle = await this.generateKeyObject(ref, id, custody);
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

  private generateKeyObject(ref: BackingKeyRef, id: Buffer, custody: SecretCustody): Promise<Handle> {
    const template: P11.Template = [
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
      { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_AES },
      { type: pkcs11js.CKA_VALUE_LEN, value: AES_KEY_BYTES },
      { type: pkcs11js.CKA_TOKEN, value: true },
      { type: pkcs11js.CKA_PRIVATE, value: true },
      ...custodyAttributes(custody),
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
    return this.slowSession(async (session, call) => {
      const answer = await call({ op: 'generate-key', session, mechanism: { mechanism: pkcs11js.CKM_AES_KEY_GEN }, template }, 'C_GenerateKey');
      return Buffer.from(answer.handles![0]!);
    }, true);
  }

  encryptAesGcm(ref: BackingKeyRef, iv: Uint8Array, aad: Uint8Array, plaintext: Uint8Array): Promise<Buffer> {
    if (iv.length !== GCM_IV_BYTES) return Promise.reject(new RangeError(`AES-GCM IV must be ${GCM_IV_BYTES} bytes`));
    const input = asBuffer(plaintext);
    if (this.workers) return this.keyHandles.withKey(ref, (s, k) => this.encryptOnWorker(s, k, iv, asBuffer(aad), input));
    if (this.profile.gcmIv !== 'caller') return this.keyHandles.withKey(ref, (s, k) => this.encryptTokenIv(s, k, iv, asBuffer(aad), input));
    // Sync mode (async mode has call workers, above).
    const mechanism = gcmMechanism(iv, aad);
    return this.keyHandles.withKeySync(ref, (s, k) => this.encryptSync(s, k, mechanism, input));
  }

  decryptAesGcm(ref: BackingKeyRef, iv: Uint8Array, aad: Uint8Array, ciphertextAndTag: Uint8Array): Promise<Buffer> {
    if (iv.length !== GCM_IV_BYTES) {
      return Promise.reject(new HsmError('invalid-ciphertext', 'CKR_MECHANISM_PARAM_INVALID', 'C_DecryptInit', `AES-GCM IV must be ${GCM_IV_BYTES} bytes`));
    }
    if (ciphertextAndTag.length < GCM_TAG_BYTES) {
      return Promise.reject(new HsmError('invalid-ciphertext', 'CKR_ENCRYPTED_DATA_LEN_RANGE', 'C_Decrypt', 'ciphertext is shorter than the GCM tag'));
    }
    const input = asBuffer(ciphertextAndTag);
    if (this.workers) {
      const call = (session: Handle, key: Handle) => this.onWorker({ op: 'gcm-decrypt', session, key, iv: asBuffer(iv), aad: asBuffer(aad), input }, 'C_Decrypt');
      return this.keyHandles.withKey(ref, async (s, k) => Buffer.from(this.answerOf(await call(s, k), 'C_Decrypt').out!));
    }
    const mechanism = gcmMechanism(iv, aad);
    return this.keyHandles.withKeySync(ref, (s, k) => this.decryptSync(s, k, mechanism, input));
  }

  /** Async mode: Init and data call together on a worker; token-chosen IVs land in `iv`. */
  private async encryptOnWorker(session: Handle, key: Handle, iv: Uint8Array, aad: Buffer, input: Buffer): Promise<Buffer> {
    const callerIv = this.profile.gcmIv === 'caller';
    const call: WorkerCall = { op: 'gcm-encrypt', session, key, iv: callerIv ? asBuffer(iv) : Buffer.alloc(GCM_IV_BYTES), aad, input, ivMode: this.profile.gcmIv };
    const answer = this.answerOf(await this.onWorker(call, 'C_Encrypt'), 'C_Encrypt');
    if (!callerIv) iv.set(this.tokenChosenIv(answer.iv));
    return Buffer.from(answer.out!);
  }

  /** Sync mode on a token that chooses the IV (a local emulation, or a profile forced onto a
   *  local token): the same steps as the worker's, on this thread. */
  private encryptTokenIv(session: Handle, key: Handle, iv: Uint8Array, aad: Buffer, input: Buffer): Buffer {
    const appends = this.profile.gcmIv === 'token-appends';
    const ivParam = Buffer.alloc(appends ? 0 : GCM_IV_BYTES); // zeros: the token writes its IV here
    const parameter: P11.GcmParams = { type: pkcs11js.CK_PARAMS_GCM, iv: ivParam, ivBits: GCM_IV_BYTES * 8, aad, tagBits: GCM_TAG_BYTES * 8 };
    let fn = 'C_EncryptInit';
    try {
      this.p.C_EncryptInit(session, { mechanism: pkcs11js.CKM_AES_GCM, parameter }, key);
      const out = Buffer.allocUnsafe(input.length + GCM_TAG_BYTES + (appends ? GCM_IV_BYTES : 0));
      fn = input.length === 0 ? 'C_EncryptFinal' : 'C_Encrypt';
      const sealed = input.length === 0 ? this.p.C_EncryptFinal(session, out) : this.p.C_Encrypt(session, input, out);
      if (!appends) {
        iv.set(this.tokenChosenIv(ivParam));
        return sealed;
      }
      iv.set(this.tokenChosenIv(sealed.subarray(sealed.length - GCM_IV_BYTES)));
      return sealed.subarray(0, sealed.length - GCM_IV_BYTES);
    } catch (err) {
      throw toHsmError(err, fn);
    }
  }

  /** A token-chosen IV must be 12 bytes and not all zeros (zeros: the token did not write one,
   *  and a ciphertext under them would be unrecoverable). */
  private tokenChosenIv(iv: Uint8Array | undefined): Uint8Array {
    if (iv === undefined || iv.length !== GCM_IV_BYTES || iv.every((b) => b === 0)) {
      throw new HsmError('other', 'CKR_MECHANISM_PARAM_INVALID', 'C_EncryptInit', `token '${this.label}' returned no IV (profile ${this.profile.name} expects ${this.profile.gcmIv})`);
    }
    return iv;
  }

  // The two GCM bodies below are the sync-mode hot path. Output goes into a fresh Buffer.allocUnsafe per
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

  generateRandom(length: number): Buffer {
    this.checkRandomRequest(length);
    if (length === 0) return Buffer.alloc(0);
    const served = this.fromRandomReserve(length);
    if (served) return served;
    // Sync mode, or async mode with the reserve exhausted (a burst of large synchronous draws;
    // the request path draws through generateRandomAsync): one call on this thread.
    try {
      // Sync by contract and stateless, so it runs on the control session, which no async call
      // ever uses; a pooled session might have an async call in flight.
      return this.p.C_GenerateRandom(this.control, Buffer.allocUnsafe(length));
    } catch (err) {
      const e = toHsmError(err, 'C_GenerateRandom');
      this.noteFailure(e);
      throw e;
    }
  }

  /** The request path's random bytes (GenerateRandom, data keys, IVs): in async mode from the
   *  reserve, else from a call worker, never a token call on the event loop. */
  async generateRandomAsync(length: number): Promise<Buffer> {
    if (!this.workers) return this.generateRandom(length);
    this.checkRandomRequest(length);
    if (length === 0) return Buffer.alloc(0);
    const served = this.fromRandomReserve(length);
    if (served) return served;
    return this.pool.withSession(async (session) => Buffer.from(this.answerOf(await this.onWorker({ op: 'random', session, length }, 'C_GenerateRandom'), 'C_GenerateRandom').out!));
  }

  private checkRandomRequest(length: number): void {
    if (!Number.isInteger(length) || length < 0) throw new RangeError('random length must be a non-negative integer');
    if (this.closing) throw closedError('C_GenerateRandom');
    if (length > 0) this.guard.assertUp('C_GenerateRandom');
  }

  /** Async mode: `length` bytes from the reserve (zeroed there once served), topping it up from
   *  a worker when it runs low; undefined when it cannot serve them (or in sync mode). */
  private fromRandomReserve(length: number): Buffer | undefined {
    if (!this.workers) return undefined;
    const reserve = this.randomReserve;
    if (reserve.bytes.length - reserve.used < RANDOM_RESERVE_BYTES / 4) void this.refillRandom().catch(() => undefined);
    if (reserve.bytes.length - reserve.used < length) return undefined;
    const served = reserve.bytes.subarray(reserve.used, reserve.used + length);
    reserve.used += length;
    const out = Buffer.from(served);
    served.fill(0);
    return out;
  }

  /** Async mode: tops the random reserve up from a worker (one refill at a time). */
  private refillRandom(): Promise<void> {
    this.randomRefill ??= this.pool
      .withSession(async (session) => Buffer.from(this.answerOf(await this.onWorker({ op: 'random', session, length: RANDOM_RESERVE_BYTES }, 'C_GenerateRandom'), 'C_GenerateRandom').out!))
      .then((fresh) => {
        const old = this.randomReserve;
        old.bytes.subarray(old.used).fill(0);
        this.randomReserve = { bytes: fresh, used: 0 };
      })
      .finally(() => (this.randomRefill = undefined));
    return this.randomRefill;
  }

  /** Fills the random reserve before the first request (async mode). */
  async warmUp(): Promise<void> {
    if (this.workers) await this.refillRandom();
  }

  /** Destroys every object of `ref` (its key, and the public key of a pair). In the slow lane
   *  in both modes: ImportKeyMaterial and DeleteImportedKeyMaterial destroy on the request path. */
  async destroyKey(ref: BackingKeyRef): Promise<void> {
    const cacheKey = refKey(ref);
    this.handles.delete(cacheKey);
    this.keyPairs.forgetPublicKey(ref);
    await this.slowSession(async (session, call) => {
      const keys = await call({ op: 'find-keys', session, id: objectIdFor(ref) }, 'C_FindObjects');
      const publicKeys = await call({ op: 'find', session, template: this.keyPairs.publicKeyTemplate(ref), max: 16 }, 'C_FindObjects');
      for (const handle of [...keys.handles!, ...publicKeys.handles!]) {
        try {
          await call({ op: 'destroy', session, handles: [Buffer.from(handle)] }, 'C_DestroyObject');
        } catch (err) {
          // Already destroyed elsewhere: fine.
          if (!(err instanceof HsmError) || !(isStaleHandle(err) || err.kind === 'key-not-found')) throw err;
        }
      }
    }, true);
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

  /** The audit key as the trail sees it: stable fingerprint, handles looked up again after a
   *  recovery (the private key's handle may differ after an HSM reboot). */
  private auditKey: AuditSigningKey | undefined;
  /** The lookup behind it; cleared by recover and by a stale handle. */
  private auditKeyCurrent: Promise<AuditSigningKey | undefined> | undefined;

  private lookUpAuditKey(create: boolean): Promise<AuditSigningKey | undefined> {
    this.auditKeyCurrent ??= openAuditSigningKey(this.p, this.mechanisms, (fn) => this.pool.withSession(fn), (work, write) => this.slowSession(work, write), create, {
      write: (write) => this.tokenWrite(write),
      scan: (scan) => this.tokenScan(scan),
    }).catch((err: unknown) => {
      this.auditKeyCurrent = undefined;
      throw err;
    });
    return this.auditKeyCurrent;
  }

  async auditSigningKey(create: boolean): Promise<AuditSigningKey | undefined> {
    if (this.closing) throw closedError('auditSigningKey');
    if (this.auditKey) return this.auditKey;
    const found = await this.lookUpAuditKey(create);
    if (found === undefined) return undefined;
    const signDigest = async (digest: Buffer): Promise<Buffer> => {
      this.guard.assertUp('C_SignInit');
      for (let attempt = 1; ; attempt++) {
        const key = await this.lookUpAuditKey(false);
        if (key === undefined || key.fingerprint !== found.fingerprint) {
          throw new HsmError('key-not-found', 'CKR_OBJECT_HANDLE_INVALID', 'C_FindObjects', `the audit signing key ${found.fingerprint.slice(0, 16)}… is no longer in token '${this.label}'`);
        }
        try {
          return await key.signDigest(digest);
        } catch (err) {
          if (!(err instanceof HsmError) || !isStaleHandle(err) || attempt >= 2) throw err;
          this.auditKeyCurrent = undefined; // look the handle up again
        }
      }
    };
    // The head object lives beside the key: after a token reboot it is reached through the key
    // looked up again, as signDigest does.
    const current = async (): Promise<AuditSigningKey> => {
      this.guard.assertUp('C_FindObjects');
      const key = await this.lookUpAuditKey(false);
      if (key === undefined || key.fingerprint !== found.fingerprint) {
        throw new HsmError('key-not-found', 'CKR_OBJECT_HANDLE_INVALID', 'C_FindObjects', `the audit signing key ${found.fingerprint.slice(0, 16)}… is no longer in token '${this.label}'`);
      }
      return key;
    };
    this.auditKey = {
      publicKeySpki: found.publicKeySpki,
      fingerprint: found.fingerprint,
      signDigest,
      publishHead: async (head) => (await current()).publishHead(head),
      readHeads: async () => (await current()).readHeads(),
    };
    return this.auditKey;
  }

  poolStats(): { open: number; busy: number; waiting: number; max: number } {
    return { open: this.pool.size, busy: this.pool.busy, waiting: this.pool.waiting, max: this.pool.maxSessions };
  }

  slowLaneStats(): { threads: number; running: number; queued: number } {
    return this.slowLane.stats();
  }

  // ---- asymmetric, HMAC and key-agreement keys: see asymmetric.ts ------------------------------

  missingMechanisms(type: TokenKeyType, usage: PrivateKeyUsage): string[] {
    return this.keyPairs.missingMechanisms(type, usage);
  }
  generateKeyPair(ref: BackingKeyRef, type: KeyPairType, usage: PrivateKeyUsage): Promise<void> {
    return this.keyPairs.generateKeyPair(ref, type, usage);
  }
  generateHmacKey(ref: BackingKeyRef, hash: HashName, bytes: number, custody: SecretCustody = 'token-only'): Promise<void> {
    return this.keyPairs.generateHmacKey(ref, hash, bytes, custody);
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

  /** Why the token cannot be used right now (naming it), or undefined; no token call. */
  problem(): string | undefined {
    return this.guard.problem();
  }

  /** Health checks: a real round trip; the error names the token. */
  async ping(): Promise<void> {
    try {
      await this.pingOnce();
    } catch (err) {
      if (!(err instanceof HsmError)) throw err;
      throw new HsmError(err.kind, err.ckr, err.fn, this.guard.problem() ?? `PKCS#11 token '${this.label}': ${err.message}`);
    }
  }

  private async pingOnce(): Promise<void> {
    this.guard.assertUp('C_GetSessionInfo');
    const state = this.workers
      ? await this.pool.withSession(async (session) => this.answerOf(await this.onWorker({ op: 'ping', session }, 'C_GetSessionInfo'), 'C_GetSessionInfo').state!)
      : await this.pool.withSession((session) => {
          let fn = 'C_GetSessionInfo';
          try {
            const { state } = this.p.C_GetSessionInfo(session);
            fn = 'C_GenerateRandom';
            this.p.C_GenerateRandom(session, Buffer.allocUnsafe(1)); // a real round trip to the device
            return state;
          } catch (err) {
            throw toHsmError(err, fn);
          }
        });
    if (state !== CKS_RW_USER_FUNCTIONS && state !== CKS_RO_USER_FUNCTIONS) {
      const e = new HsmError('unavailable', 'CKR_USER_NOT_LOGGED_IN', 'C_GetSessionInfo', `token '${this.label}' no longer has our login`);
      this.guard.lost(e);
      throw e;
    }
  }

  close(): Promise<void> {
    this.closing ??= this.shutDown();
    return this.closing;
  }

  private async shutDown(): Promise<void> {
    await this.guard.close();
    await this.pool.close();
    await this.workers?.close();
    await this.slowLane.close();
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
      slowSession: (work, write) => this.slowSession(work, write),
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
