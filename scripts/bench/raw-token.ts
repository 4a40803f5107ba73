/**
 * Raw pkcs11js access to a bench child's own token, for the token-level baselines
 * (token-child.ts, asym-token-child.ts): their loops call the module directly, without the
 * project's Hsm wrapper, on keys the wrapper generated.
 */
// pkcs11js is CommonJS: under Node ESM only the default import carries the constants.
import pkcs11js from 'pkcs11js';
import type * as P11 from 'pkcs11js';
import { objectIdFor } from '../../src/hsm/object-naming.js';
import { findTokenSlot, locateSoftHsmModule, readPinFile, softHsmPaths } from '../../src/hsm/provision.js';
import type { BackingKeyRef } from '../../src/hsm/types.js';

export interface RawSession {
  p: P11.PKCS11;
  session: P11.Handle;
  /** The token object of `ref` with class `cls` (a CKO_* constant); throws when there is none. */
  find(cls: number, ref: BackingKeyRef): P11.Handle;
  /** C_Logout + C_CloseSession, once the loops are done. */
  logout(): void;
  /** C_Finalize and unload the module (always, in a finally). */
  finalize(): void;
}

/** Loads the SoftHSM2 module, initialises it and opens a R/W user session on the token `label`
 *  under `dataDir`. openHsm must have run in this process first: it set SOFTHSM2_CONF to this
 *  token's config. */
export function openRawSession(dataDir: string, label: string): RawSession {
  const p = new pkcs11js.PKCS11();
  p.load(locateSoftHsmModule());
  p.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
  const finalize = () => {
    p.C_Finalize();
    p.close();
  };
  try {
    const slot = findTokenSlot(p, label);
    if (slot === undefined) throw new Error('token not found after provisioning');
    const session = p.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
    p.C_Login(session, pkcs11js.CKU_USER, readPinFile(softHsmPaths(dataDir).userPinPath));
    const find = (cls: number, ref: BackingKeyRef): P11.Handle => {
      p.C_FindObjectsInit(session, [
        { type: pkcs11js.CKA_CLASS, value: cls },
        { type: pkcs11js.CKA_ID, value: objectIdFor(ref) },
      ]);
      const [handle] = p.C_FindObjects(session, 1);
      p.C_FindObjectsFinal(session);
      if (handle === undefined) throw new Error(`token object ${ref.keyId} (class ${cls}) not found`);
      return handle;
    };
    const logout = () => {
      p.C_Logout(session);
      p.C_CloseSession(session);
    };
    return { p, session, find, logout, finalize };
  } catch (e) {
    finalize();
    throw e;
  }
}
