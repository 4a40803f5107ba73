/**
 * Finding p11kms key objects in the token: the full enumeration behind the handle cache and
 * listBackingKeys, the lookup of one ref, and the object-index refresh that token writes do under
 * the cross-process lock (Pkcs11Hsm.tokenWrite). object-naming.ts says how refs map to CKA_ID and
 * CKA_LABEL. Callers hold a session of their own and, where another process may be writing, the
 * cross-process lock (Pkcs11Hsm.tokenScan).
 */
import pkcs11js from 'pkcs11js';
import type * as P11 from 'pkcs11js';
import { readUlong } from './bytes.js';
import { toHsmError } from './errors.js';
import { LABEL_PREFIX, objectIdFor, refFromAttributes, refKey } from './object-naming.js';
import type { HsmLog } from './token-access.js';
import { type BackingKeyRef, HsmError } from './types.js';

type Handle = P11.Handle;

/**
 * All objects whose label starts with p11kms: and whose CKA_ID decodes, keyed by refKey. The
 * label prefix cannot be matched by C_FindObjects, so this reads class, label and ID of every
 * object: one linear scan plus one C_GetAttributeValue per object.
 */
export function enumerateBackingKeys(p: P11.PKCS11, session: Handle, label: string, log: HsmLog): Map<string, Handle> {
  const all: Handle[] = [];
  let fn = 'C_FindObjectsInit';
  try {
    p.C_FindObjectsInit(session, []);
    fn = 'C_FindObjects';
    for (;;) {
      const batch = p.C_FindObjects(session, 1000);
      if (batch.length === 0) break;
      for (const handle of batch) all.push(handle);
    }
    fn = 'C_FindObjectsFinal';
    p.C_FindObjectsFinal(session);
  } catch (err) {
    throw toHsmError(err, fn, 'enumerating token objects');
  }
  const found = new Map<string, Handle>();
  let duplicates = 0;
  for (const handle of all) {
    let attrs: P11.TemplateResult;
    try {
      attrs = p.C_GetAttributeValue(session, handle, [{ type: pkcs11js.CKA_CLASS }, { type: pkcs11js.CKA_LABEL }, { type: pkcs11js.CKA_ID }]);
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
  if (duplicates > 0) log('warn', `token '${label}' holds ${duplicates} duplicate ${LABEL_PREFIX} key objects; using the first of each`);
  return found;
}

/** Key objects (secret or private) carrying exactly this CKA_ID. Linear in token size. */
export function findKeyObjects(p: P11.PKCS11, session: Handle, ref: BackingKeyRef): Handle[] {
  let fn = 'C_FindObjectsInit';
  try {
    p.C_FindObjectsInit(session, [{ type: pkcs11js.CKA_ID, value: objectIdFor(ref) }]);
    fn = 'C_FindObjects';
    const candidates = p.C_FindObjects(session, 16);
    fn = 'C_FindObjectsFinal';
    p.C_FindObjectsFinal(session);
    fn = 'C_GetAttributeValue';
    return candidates.filter((handle) => {
      const objectClass = readUlong(p.C_GetAttributeValue(session, handle, [{ type: pkcs11js.CKA_CLASS }])[0]!.value);
      return objectClass === pkcs11js.CKO_SECRET_KEY || objectClass === pkcs11js.CKO_PRIVATE_KEY;
    });
  } catch (err) {
    throw toHsmError(err, fn, 'looking up a backing key');
  }
}

/** Any C_FindObjectsInit makes SoftHSM2 re-index when the generation changed. */
export function refreshObjectIndex(p: P11.PKCS11, session: Handle): void {
  try {
    p.C_FindObjectsInit(session, [{ type: pkcs11js.CKA_LABEL, value: 'p11kms:index-refresh' }]);
    p.C_FindObjects(session, 1);
    p.C_FindObjectsFinal(session);
  } catch (err) {
    throw toHsmError(err, 'C_FindObjects', 'refreshing the object index');
  }
}

export function keyNotFound(ref: BackingKeyRef): HsmError {
  return new HsmError('key-not-found', 'CKR_OBJECT_HANDLE_INVALID', 'C_FindObjects', `no token object for backing key ${refKey(ref)}`);
}
