/**
 * The view of an open token that sibling modules of src/hsm get from Pkcs11Hsm (asymmetric.ts,
 * key-import.ts; obtained with tokenAccessOf in pkcs11-token.ts), and the log callback openHsm
 * takes.
 */
import type * as P11 from 'pkcs11js';
import type { SlowCall } from './slow-lane.js';
import type { BackingKeyRef } from './types.js';

type Handle = P11.Handle;
export type HsmLog = (level: 'info' | 'warn', msg: string) => void;

/** Raw token access for sibling modules of src/hsm that add token features (key-import.ts);
 *  never used outside src/hsm. */
export interface TokenAccess {
  readonly p: P11.PKCS11;
  readonly label: string;
  readonly log: HsmLog;
  withSession<T>(op: (session: Handle) => T | Promise<T>): Promise<T>;
  /** Runs `work` in the slow lane (slow-lane.ts: key generation, private-key operations): a
   *  lane thread first, then a pooled session (inside tokenWrite when `write`). */
  slowSession<T>(work: (session: Handle, call: SlowCall) => Promise<T>, write?: boolean): Promise<T>;
  /** Set inside a slowSession (key import passes it down): the lane thread's calls. */
  readonly slowCall?: SlowCall;
  /** Wraps every creation or destruction of token objects (cross-process object-index rule). */
  tokenWrite<T>(write: () => Promise<T>): Promise<T>;
  /** Drops the cached handle of `ref` (its object was replaced or destroyed). */
  forget(ref: BackingKeyRef): void;
  /** Whether the token accepts CKA_MODIFIABLE/CKA_COPYABLE=false on new keys. */
  hardenedTemplate(): boolean;
}
