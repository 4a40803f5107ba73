/**
 * The token's identity object: a private CKO_DATA object (CKA_APPLICATION and CKA_LABEL
 * `p11kms-token-id`, CKA_VALUE 16 bytes from the token's RNG) made the first time a metadata
 * store binds itself to the token (src/kms/token-binding.ts). Token info (serial, label) says
 * which device answers; this object says whether it still holds what it held when the store began:
 * a re-initialised token, or a different one with the same label, lacks it. It is not a secret,
 * only an identifier, and lies outside the `p11kms:` backing-key namespace.
 */
import pkcs11js from 'pkcs11js';
import type * as P11 from 'pkcs11js';
import { toHsmError } from './errors.js';
import { tokenAccessOf } from './pkcs11-token.js';
import type { Hsm } from './types.js';

export const TOKEN_ID_LABEL = 'p11kms-token-id';
const VALUE_BYTES = 16;

/**
 * The hex value of the token's identity object, or undefined when it has none. With `create`, an
 * absent object is made first (under the token-write lock, looking again there, so processes
 * starting together settle on one object).
 */
export async function tokenIdentity(hsm: Hsm, create: boolean): Promise<string | undefined> {
  const access = tokenAccessOf(hsm);
  const find = () => access.withSession((s) => findIdentity(access.p, s));
  const found = await find();
  if (found !== undefined || !create) return found;
  return access.tokenWrite(async () => {
    const again = await find();
    if (again !== undefined) return again;
    const value = hsm.generateRandom(VALUE_BYTES);
    await access.withSession((s) => {
      try {
        access.p.C_CreateObject(s, [
          { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_DATA },
          { type: pkcs11js.CKA_TOKEN, value: true },
          { type: pkcs11js.CKA_PRIVATE, value: true },
          { type: pkcs11js.CKA_MODIFIABLE, value: false },
          { type: pkcs11js.CKA_APPLICATION, value: TOKEN_ID_LABEL },
          { type: pkcs11js.CKA_LABEL, value: TOKEN_ID_LABEL },
          { type: pkcs11js.CKA_VALUE, value },
        ]);
      } catch (err) {
        throw toHsmError(err, 'C_CreateObject', 'creating the token identity object');
      }
    });
    return value.toString('hex');
  });
}

/** The lowest value among identity objects (a surplus from a race compares the same everywhere). */
function findIdentity(p: P11.PKCS11, session: P11.Handle): string | undefined {
  let fn = 'C_FindObjectsInit';
  try {
    p.C_FindObjectsInit(session, [
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_DATA },
      { type: pkcs11js.CKA_LABEL, value: TOKEN_ID_LABEL },
    ]);
    fn = 'C_FindObjects';
    const handles = p.C_FindObjects(session, 16);
    fn = 'C_FindObjectsFinal';
    p.C_FindObjectsFinal(session);
    fn = 'C_GetAttributeValue';
    const values = handles.map((h) => p.C_GetAttributeValue(session, h, [{ type: pkcs11js.CKA_VALUE }])[0]!.value.toString('hex')).sort();
    return values[0];
  } catch (err) {
    throw toHsmError(err, fn, 'looking for the token identity object');
  }
}
