/**
 * Token calls on worker threads of our own. Two kinds of pools use this class (pkcs11-hsm.ts):
 *  - async mode (P11KMS_SYMMETRIC_CALLS=async, chosen automatically for anything but a local
 *    software token): every request-path call, because pkcs11js offers async variants of the
 *    data calls only (C_EncryptInit, C_DecryptInit, C_SignInit, C_GenerateRandom and
 *    C_GetSessionInfo run on the calling thread), and with 5 ms per call on a network HSM the
 *    event loop would wait for each;
 *  - the slow lane (slow-lane.ts), in both modes: key generation and private-key operations,
 *    which take milliseconds to seconds even on a local token.
 *
 * Each call runs on a worker start to finish (Init and the data call together). A worker loads
 * the same module path with its own pkcs11js instance: dlopen hands back the library the process
 * already loaded, C_GetFunctionList the same function list, and the worker never calls
 * C_Initialize or C_Finalize (PKCS#11 allows one C_Initialize per process; the main thread owns
 * it). Sessions and object handles are process-wide, so the main thread's session pool hands a
 * session to exactly one worker call at a time, as it does for async calls.
 * Own threads instead of libuv's pool (pkcs11js's *Async variants run there): a slow or hung
 * token call blocks its worker, never the file system and DNS work that shares libuv's four
 * threads (the audit trail writes through them). A worker stuck past its deadline is abandoned
 * and replaced.
 *
 * Metrics: every C_* call a worker makes is timed there and reported with its answer; the main
 * thread feeds them to the same observer as its own calls (instrument.ts reportPkcs11Calls).
 */
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import type * as P11 from 'pkcs11js';
import { reportPkcs11Calls, type TimedCall } from './instrument.js';
import type { GcmIvMode } from './profiles.js';
import { toHsmError } from './errors.js';
import { HsmError } from './types.js';

export type WorkerCall =
  | { op: 'gcm-encrypt'; session: Buffer; key: Buffer; iv: Buffer; aad: Buffer; input: Buffer; ivMode: GcmIvMode }
  | { op: 'gcm-decrypt'; session: Buffer; key: Buffer; iv: Buffer; aad: Buffer; input: Buffer }
  | { op: 'random'; session: Buffer; length: number }
  | { op: 'ping'; session: Buffer }
  | { op: 'open-session'; slot: Buffer; pin: string }
  | { op: 'close-session'; session: Buffer }
  | { op: 'find-keys'; session: Buffer; id: Buffer }
  | { op: 'close-all-sessions'; slot: Buffer }
  // The general calls below carry pkcs11js mechanisms and templates as they are (Buffers arrive
  // as Uint8Arrays and are turned back into Buffers on the worker).
  | { op: 'generate-key'; session: Buffer; mechanism: P11.Mechanism; template: P11.Template }
  | { op: 'generate-key-pair'; session: Buffer; mechanism: P11.Mechanism; publicTemplate: P11.Template; privateTemplate: P11.Template }
  | { op: 'sign'; session: Buffer; key: Buffer; mechanism: P11.Mechanism; data: Buffer; outBytes: number }
  | { op: 'verify'; session: Buffer; key: Buffer; mechanism: P11.Mechanism; data: Buffer; signature: Buffer }
  | { op: 'decrypt'; session: Buffer; key: Buffer; mechanism: P11.Mechanism; data: Buffer; outBytes: number }
  /** C_DeriveKey into a readable session object: its CKA_VALUE is read, then it is destroyed. */
  | { op: 'derive-value'; session: Buffer; key: Buffer; mechanism: P11.Mechanism; template: P11.Template }
  | { op: 'unwrap'; session: Buffer; mechanism: P11.Mechanism; key: Buffer; wrapped: Buffer; template: P11.Template }
  | { op: 'find'; session: Buffer; template: P11.Template; max: number }
  | { op: 'attributes'; session: Buffer; handle: Buffer; types: number[] }
  | { op: 'destroy'; session: Buffer; handles: Buffer[] }
  /** Short calls on one session in order, each called with the session first; every result
   *  comes back (key import's object work, key-import-common.ts laneCalls). Only SEQUENCE_FNS. */
  | { op: 'sequence'; session: Buffer; steps: SequenceStep[] };

/** The functions a 'sequence' may call: object lookups, attribute reads, object creation and
 *  destruction, session-key work (C_GenerateKey, C_WrapKey) and single-part encryption. */
export const SEQUENCE_FNS = [
  'C_FindObjectsInit',
  'C_FindObjects',
  'C_FindObjectsFinal',
  'C_GetAttributeValue',
  'C_CreateObject',
  'C_DestroyObject',
  'C_GenerateKey',
  'C_WrapKey',
  'C_EncryptInit',
  'C_Encrypt',
] as const;
export type SequenceFn = (typeof SEQUENCE_FNS)[number];
export interface SequenceStep {
  fn: SequenceFn;
  /** The arguments after the session, as pkcs11js takes them. */
  args: unknown[];
}

export interface WorkerAnswer {
  out?: Uint8Array;
  /** The IV the token chose (token-generated IV modes). */
  iv?: Uint8Array;
  /** Session state (ping). */
  state?: number;
  /** The new session (open-session). */
  session?: Uint8Array;
  /** Secret or private key objects with the CKA_ID asked for (find-keys), objects found (find),
   *  the new key (generate-key) or the new pair, public first (generate-key-pair). */
  handles?: Uint8Array[];
  /** Attribute values in the order asked for (attributes). */
  values?: Uint8Array[];
  /** What each step returned (sequence). */
  results?: unknown[];
  /** Whether the signature verified (verify). */
  verified?: boolean;
  /** The C_* calls the worker made for this answer, timed there (metrics). */
  calls?: TimedCall[];
  /** A failed call: the pkcs11js message (CKR name) and the function that failed. */
  error?: { message: string; fn: string };
}

/** The answer of a worker call, or its error as HsmError: a missing answer (error.fn 'worker')
 *  is kind 'timeout', anything else what the token said (errors.ts toHsmError). */
export function answerOrThrow(answer: WorkerAnswer, what: string, label: string): WorkerAnswer {
  if (answer.error === undefined) return answer;
  if (answer.error.fn === 'worker') throw new HsmError('timeout', 'CKR_FUNCTION_FAILED', what, `token '${label}': ${answer.error.message}`);
  throw toHsmError(new Error(answer.error.message), answer.error.fn);
}

/** Runs inside each worker (serialised with toString: no imports, only require). */
function workerMain(): void {
  /* eslint-disable @typescript-eslint/no-require-imports */
  const { parentPort, workerData } = require('node:worker_threads');
  const p11 = require(workerData.pkcs11js);
  const p = new p11.PKCS11();
  p.load(workerData.modulePath);
  // Every C_* call is timed (instrument.ts does the same on the main thread) and reported with
  // the answer it belongs to.
  const { performance } = require('node:perf_hooks');
  let timed: Array<[string, number, string?]> = [];
  const target = p as Record<string, any>;
  const names = new Set<string>();
  for (let o = p; o !== null && o !== Object.prototype; o = Object.getPrototypeOf(o)) {
    for (const name of Object.getOwnPropertyNames(o)) if (name.startsWith('C_') && !name.endsWith('Async') && !name.endsWith('Callback')) names.add(name);
  }
  for (const name of names) {
    const original = target[name];
    if (typeof original !== 'function') continue;
    target[name] = (...args: unknown[]) => {
      const started = performance.now();
      try {
        const result = original.apply(p, args);
        timed.push([name, (performance.now() - started) / 1000]);
        return result;
      } catch (err) {
        timed.push([name, (performance.now() - started) / 1000, err instanceof Error ? err.message : String(err)]);
        throw err;
      }
    };
  }
  const post = (answer: Record<string, unknown>) => {
    answer.calls = timed;
    timed = [];
    parentPort.postMessage(answer);
  };
  // Structured cloning turns Buffers into Uint8Arrays; pkcs11js wants Buffers.
  const revive = (value: any): any => {
    if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
    if (Array.isArray(value)) return value.map(revive);
    if (value !== null && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, revive(v)]));
    return value;
  };
  parentPort.postMessage({ id: 0 }); // ready: calls are dispatched (and their deadlines start) only now
  const GCM_TAG_BYTES = 16;
  const IV_BYTES = 12;
  const gcm = (iv: Buffer, ivBits: number, aad: Buffer) => ({ mechanism: p11.CKM_AES_GCM, parameter: { type: p11.CK_PARAMS_GCM, iv, ivBits, aad, tagBits: 128 } });
  parentPort.on('message', (msg: { id: number; call: Record<string, any> }) => {
    const c = revive(msg.call);
    let fn = 'worker';
    try {
      if (c.op === 'open-session') {
        fn = 'C_OpenSession';
        const session = p.C_OpenSession(Buffer.from(c.slot), p11.CKF_SERIAL_SESSION | p11.CKF_RW_SESSION);
        fn = 'C_GetSessionInfo';
        const { state } = p.C_GetSessionInfo(session);
        // Login is per application: only the first session after a lost login logs in.
        if (state !== 1 && state !== 3) {
          fn = 'C_Login';
          try {
            p.C_Login(session, p11.CKU_USER, c.pin);
          } catch (err) {
            if (!(err instanceof Error && err.message.includes('CKR_USER_ALREADY_LOGGED_IN'))) {
              p.C_CloseSession(session);
              throw err;
            }
          }
        }
        post({ id: msg.id, session });
        return;
      }
      if (c.op === 'close-all-sessions') {
        fn = 'C_CloseAllSessions';
        p.C_CloseAllSessions(c.slot);
        post({ id: msg.id });
        return;
      }
      const session = Buffer.from(c.session);
      if (c.op === 'close-session') {
        fn = 'C_CloseSession';
        p.C_CloseSession(session);
        post({ id: msg.id });
      } else if (c.op === 'gcm-encrypt') {
        const appends = c.ivMode === 'token-appends';
        // token-writes-params: the token fills this (zeroed) buffer; pkcs11js passes its memory.
        const iv = appends ? Buffer.alloc(0) : Buffer.from(c.iv);
        fn = 'C_EncryptInit';
        p.C_EncryptInit(session, gcm(iv, IV_BYTES * 8, Buffer.from(c.aad)), Buffer.from(c.key));
        const input = Buffer.from(c.input);
        const out = Buffer.alloc(input.length + GCM_TAG_BYTES + (appends ? IV_BYTES : 0));
        fn = input.length === 0 ? 'C_EncryptFinal' : 'C_Encrypt';
        const sealed: Buffer = input.length === 0 ? p.C_EncryptFinal(session, out) : p.C_Encrypt(session, input, out);
        if (appends) {
          post({ id: msg.id, out: sealed.subarray(0, sealed.length - IV_BYTES), iv: sealed.subarray(sealed.length - IV_BYTES) });
        } else {
          post({ id: msg.id, out: sealed, iv });
        }
      } else if (c.op === 'gcm-decrypt') {
        fn = 'C_DecryptInit';
        p.C_DecryptInit(session, gcm(Buffer.from(c.iv), IV_BYTES * 8, Buffer.from(c.aad)), Buffer.from(c.key));
        fn = 'C_Decrypt';
        const input = Buffer.from(c.input);
        post({ id: msg.id, out: p.C_Decrypt(session, input, Buffer.alloc(input.length)) });
      } else if (c.op === 'random') {
        fn = 'C_GenerateRandom';
        post({ id: msg.id, out: p.C_GenerateRandom(session, Buffer.alloc(c.length)) });
      } else if (c.op === 'find-keys') {
        // key-objects.ts findKeyObjects, on this thread: the objects with the ref's CKA_ID
        // that are keys (not the public half of a pair).
        fn = 'C_FindObjectsInit';
        p.C_FindObjectsInit(session, [{ type: p11.CKA_ID, value: Buffer.from(c.id) }]);
        fn = 'C_FindObjects';
        const candidates: Buffer[] = p.C_FindObjects(session, 16);
        fn = 'C_FindObjectsFinal';
        p.C_FindObjectsFinal(session);
        fn = 'C_GetAttributeValue';
        const handles = candidates.filter((h) => {
          const value: Buffer = p.C_GetAttributeValue(session, h, [{ type: p11.CKA_CLASS }])[0].value;
          const objectClass = value.length >= 8 ? Number(value.readBigUInt64LE(0)) : value.readUInt32LE(0);
          return objectClass === p11.CKO_SECRET_KEY || objectClass === p11.CKO_PRIVATE_KEY;
        });
        post({ id: msg.id, handles });
      } else if (c.op === 'ping') {
        fn = 'C_GetSessionInfo';
        const { state } = p.C_GetSessionInfo(session);
        fn = 'C_GenerateRandom';
        p.C_GenerateRandom(session, Buffer.alloc(1));
        post({ id: msg.id, state });
      } else if (c.op === 'generate-key') {
        fn = 'C_GenerateKey';
        post({ id: msg.id, handles: [p.C_GenerateKey(session, c.mechanism, c.template)] });
      } else if (c.op === 'generate-key-pair') {
        fn = 'C_GenerateKeyPair';
        const pair = p.C_GenerateKeyPair(session, c.mechanism, c.publicTemplate, c.privateTemplate);
        post({ id: msg.id, handles: [pair.publicKey, pair.privateKey] });
      } else if (c.op === 'sign') {
        fn = 'C_SignInit';
        p.C_SignInit(session, c.mechanism, c.key);
        fn = 'C_Sign';
        post({ id: msg.id, out: p.C_Sign(session, c.data, Buffer.alloc(c.outBytes)) });
      } else if (c.op === 'verify') {
        fn = 'C_VerifyInit';
        p.C_VerifyInit(session, c.mechanism, c.key);
        fn = 'C_Verify';
        post({ id: msg.id, verified: p.C_Verify(session, c.data, c.signature) });
      } else if (c.op === 'decrypt') {
        fn = 'C_DecryptInit';
        p.C_DecryptInit(session, c.mechanism, c.key);
        fn = 'C_Decrypt';
        post({ id: msg.id, out: p.C_Decrypt(session, c.data, Buffer.alloc(c.outBytes)) });
      } else if (c.op === 'derive-value') {
        fn = 'C_DeriveKey';
        const secret = p.C_DeriveKey(session, c.mechanism, c.key, c.template);
        try {
          fn = 'C_GetAttributeValue';
          post({ id: msg.id, out: p.C_GetAttributeValue(session, secret, [{ type: p11.CKA_VALUE }])[0].value });
        } finally {
          try {
            p.C_DestroyObject(session, secret);
          } catch {
            // a session object dies with its session anyway
          }
        }
      } else if (c.op === 'unwrap') {
        fn = 'C_UnwrapKey';
        post({ id: msg.id, handles: [p.C_UnwrapKey(session, c.mechanism, c.key, c.wrapped, c.template)] });
      } else if (c.op === 'find') {
        fn = 'C_FindObjectsInit';
        p.C_FindObjectsInit(session, c.template);
        fn = 'C_FindObjects';
        const handles = p.C_FindObjects(session, c.max);
        fn = 'C_FindObjectsFinal';
        p.C_FindObjectsFinal(session);
        post({ id: msg.id, handles });
      } else if (c.op === 'attributes') {
        fn = 'C_GetAttributeValue';
        const values = c.types.map((type: number) => p.C_GetAttributeValue(session, c.handle, [{ type }])[0].value);
        post({ id: msg.id, values });
      } else if (c.op === 'destroy') {
        fn = 'C_DestroyObject';
        for (const handle of c.handles) p.C_DestroyObject(session, handle);
        post({ id: msg.id });
      } else if (c.op === 'sequence') {
        const results: unknown[] = [];
        for (const step of c.steps as Array<{ fn: string; args: unknown[] }>) {
          fn = step.fn;
          if (!workerData.sequenceFns.includes(fn)) throw new Error(`${fn} is not allowed in a sequence`);
          results.push(target[fn](session, ...step.args));
        }
        post({ id: msg.id, results });
      }
    } catch (err) {
      post({ id: msg.id, error: { message: err instanceof Error ? err.message : String(err), fn } });
    }
  });
}

interface Slot {
  worker: Worker;
  pending: Map<number, (answer: WorkerAnswer) => void>;
  busy: boolean;
  ready: boolean;
}

export class CallWorkers {
  private readonly slots: Slot[] = [];
  private readonly queue: Array<{ call: WorkerCall; deadlineMs: number; done: (answer: WorkerAnswer) => void }> = [];
  private nextId = 1;
  private closed = false;
  /** Workers abandoned past their deadline, still inside a token call until it returns: the
   *  library must not be finalised under them (they would return into it and crash the process). */
  private readonly abandoned = new Set<import('node:worker_threads').Worker>();
  private readonly pkcs11js = createRequire(import.meta.url).resolve('pkcs11js');

  constructor(
    private readonly modulePath: string,
    size: number,
  ) {
    for (let i = 0; i < size; i++) this.slots.push(this.spawn());
  }

  private spawn(): Slot {
    const worker = new Worker(`(${workerMain.toString()})()`, { eval: true, workerData: { pkcs11js: this.pkcs11js, modulePath: this.modulePath, sequenceFns: SEQUENCE_FNS } });
    const slot: Slot = { worker, pending: new Map(), busy: false, ready: false };
    worker.unref();
    worker.on('message', (answer: WorkerAnswer & { id: number }) => {
      if (answer.calls !== undefined) reportPkcs11Calls(answer.calls);
      if (answer.id === 0) {
        slot.ready = true;
        this.pump();
        return;
      }
      const done = slot.pending.get(answer.id);
      slot.pending.delete(answer.id);
      slot.busy = false;
      done?.(answer);
      this.pump();
    });
    worker.on('error', (err) => {
      for (const done of slot.pending.values()) done({ error: { message: `token worker failed: ${err.message}`, fn: 'worker' } });
      slot.pending.clear();
      this.replace(slot);
    });
    return slot;
  }

  /**
   * Runs `call` on a free worker (queued FIFO when all are busy). Past `deadlineMs` from the
   * moment a worker took it, the call is answered with error.fn 'worker' and the worker, which
   * may be stuck in the token, is replaced (its thread ends when the token finally returns).
   */
  run(call: WorkerCall, deadlineMs: number): Promise<WorkerAnswer> {
    if (this.closed) return Promise.resolve({ error: { message: 'CKR_CRYPTOKI_NOT_INITIALIZED', fn: 'worker' } });
    return new Promise((done) => {
      this.queue.push({ call, deadlineMs, done });
      this.pump();
    });
  }

  private replace(slot: Slot): void {
    const index = this.slots.indexOf(slot);
    if (index < 0) return;
    slot.pending.clear();
    this.abandoned.add(slot.worker);
    slot.worker.once('exit', () => this.abandoned.delete(slot.worker));
    void slot.worker.terminate().catch(() => undefined); // takes effect once the token call returns
    if (this.closed) {
      this.slots.splice(index, 1);
      return;
    }
    this.slots[index] = this.spawn();
    this.pump();
  }

  private pump(): void {
    while (this.queue.length > 0) {
      const slot = this.slots.find((s) => s.ready && !s.busy);
      if (!slot) return;
      const { call, deadlineMs, done } = this.queue.shift()!;
      const id = this.nextId++;
      const timer = setTimeout(() => {
        if (!slot.pending.delete(id)) return;
        done({ error: { message: `no answer within ${deadlineMs} ms`, fn: 'worker' } });
        this.replace(slot);
      }, deadlineMs);
      slot.busy = true;
      slot.pending.set(id, (answer) => {
        clearTimeout(timer);
        done(answer);
      });
      slot.worker.postMessage({ id, call });
    }
  }

  /** Resolves once no call is queued or running, abandoned ones included (or, with `boundMs`,
   *  when that much time has passed). Before C_Finalize: finalising under a running call is
   *  undefined behaviour. */
  async idle(boundMs = Number.POSITIVE_INFINITY): Promise<void> {
    const until = Date.now() + boundMs;
    while ((this.queue.length > 0 || this.slots.some((s) => s.busy) || this.abandoned.size > 0) && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 2));
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const { done } of this.queue.splice(0)) done({ error: { message: 'CKR_CRYPTOKI_NOT_INITIALIZED', fn: 'worker' } });
    // A token that never answers must not hold the shutdown forever.
    await this.idle(10_000);
    await Promise.all(this.slots.splice(0).map((s) => s.worker.terminate().catch(() => undefined)));
  }
}
