/**
 * Loading, initialising and finalising the PKCS#11 module, and logging in to the token. A process
 * may C_Initialize a module once: openHsm (pkcs11-token.ts) connects here exactly once per open
 * Hsm, and Pkcs11Hsm.close shuts the module down again.
 */
// pkcs11js is CommonJS with a spread export: under Node ESM only the default import carries the
// constants (a namespace import sees just PKCS11). Types come through the namespace.
import pkcs11js from 'pkcs11js';
import type * as P11 from 'pkcs11js';
import type { TokenConfig } from '../config.js';
import { toHsmError } from './errors.js';
import { instrumentPkcs11 } from './instrument.js';
import { readPinFile } from './provision.js';
import type { HsmLog } from './token-access.js';
import { HsmError } from './types.js';

type Handle = P11.Handle;

/** Session states from PKCS#11 (missing from pkcs11js). */
export const CKS_RO_USER_FUNCTIONS = 1;
export const CKS_RW_USER_FUNCTIONS = 3;

export interface Connection {
  p: P11.PKCS11;
  slot: Handle;
  pin: string;
  modulePath: string;
}

/** Loads and initialises the module, then resolves slot and PIN; finalises again on failure. */
export function connect(modulePath: string, log: HsmLog, resolve: (p: P11.PKCS11) => { slot: Handle; pin: string }): Connection {
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
    return { p, modulePath, ...resolve(p) };
  } catch (err) {
    shutDownModule(p, undefined);
    throw err instanceof HsmError ? err : toHsmError(err, 'C_GetSlotList', 'finding the token');
  }
}

/** C_Initialize with OS locking (falling back to none where the module cannot lock). */
export function initialize(p: P11.PKCS11, modulePath: string, log: HsmLog): void {
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

export function configuredPin(token: TokenConfig): string {
  if (token.pin !== undefined) return token.pin;
  if (token.pinFile !== undefined) return readPinFile(token.pinFile);
  throw new HsmError('other', 'CKR_PIN_INCORRECT', 'openHsm', 'no PIN configured: set P11KMS_PIN or P11KMS_PIN_FILE');
}

export function shutDownModule(p: P11.PKCS11, slot: Handle | undefined): void {
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

// ---- sessions and login -----------------------------------------------------------------------

/** A read-write session in the user-logged-in state. Login is per application, so only the
 *  first session (or the first after the token lost our login) actually logs in. */
export function openLoggedInSession(p: P11.PKCS11, slot: Handle, pin: string, label: string): Handle {
  let session: Handle;
  try {
    session = p.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
  } catch (err) {
    throw toHsmError(err, 'C_OpenSession', `opening a session on token '${label}'`);
  }
  try {
    const { state } = p.C_GetSessionInfo(session);
    if (state !== CKS_RW_USER_FUNCTIONS && state !== CKS_RO_USER_FUNCTIONS) login(p, session, pin, label);
    return session;
  } catch (err) {
    try {
      p.C_CloseSession(session);
    } catch {
      // already unusable
    }
    throw toHsmError(err, 'C_GetSessionInfo');
  }
}

function login(p: P11.PKCS11, session: Handle, pin: string, label: string): void {
  try {
    p.C_Login(session, pkcs11js.CKU_USER, pin);
  } catch (err) {
    const e = toHsmError(err, 'C_Login', `login to token '${label}'`);
    if (e.ckr === 'CKR_USER_ALREADY_LOGGED_IN') return;
    if (e.ckr === 'CKR_PIN_INCORRECT') {
      throw new HsmError('other', e.ckr, 'C_Login', `login to token '${label}' failed: wrong PIN (CKR_PIN_INCORRECT)`);
    }
    throw e;
  }
}
