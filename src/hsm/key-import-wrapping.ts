/**
 * The per-import token objects of GetParametersForImport (used through KeyImporter in
 * key-import.ts): the RSA wrapping key pair, the HMAC-SHA-256 secret that makes import tokens
 * unforgeable, and finding, listing and destroying these objects.
 *
 * Per import the token holds three objects under CKA_ID "import#<importId>", label
 * "p11kms-import:<importId>": the RSA private key (CKA_UNWRAP), its public key, and an
 * HMAC-SHA-256 secret that authenticates the import token. Creating and destroying them runs
 * under the cross-process object-write lock (TokenAccess.tokenWrite).
 */
import { createPublicKey } from 'node:crypto';
import pkcs11js from 'pkcs11js';
import type * as P11 from 'pkcs11js';
import { toHsmError } from './errors.js';
import { WRAPPING_KEY_BITS, type WrappingKeySpec, readAttribute } from './key-import-common.js';
import type { TokenAccess } from './pkcs11-token.js';
import { HsmError } from './types.js';

type Handle = P11.Handle;

const IMPORT_LABEL_PREFIX = 'p11kms-import:';
const HMAC_KEY_BYTES = 32;

/** Generates the wrapping key pair and the token-MAC key of one import; returns the DER SPKI.
 *  `needsRawDecrypt`: the token lacks OAEP-SHA-256 and the algorithm needs it. */
export async function createWrappingKey(t: TokenAccess, importId: string, spec: WrappingKeySpec, needsRawDecrypt: boolean): Promise<Buffer> {
  const id = importObjectId(importId);
  const label = `${IMPORT_LABEL_PREFIX}${importId}`;
  const common = (): P11.Template => [
    { type: pkcs11js.CKA_TOKEN, value: true },
    { type: pkcs11js.CKA_ID, value: id },
    { type: pkcs11js.CKA_LABEL, value: label },
  ];
  const publicTemplate: P11.Template = [
    ...common(),
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PUBLIC_KEY },
    { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_RSA },
    { type: pkcs11js.CKA_MODULUS_BITS, value: WRAPPING_KEY_BITS[spec] },
    { type: pkcs11js.CKA_PUBLIC_EXPONENT, value: Buffer.from([1, 0, 1]) },
    { type: pkcs11js.CKA_ENCRYPT, value: true },
    { type: pkcs11js.CKA_WRAP, value: true },
    { type: pkcs11js.CKA_VERIFY, value: false },
  ];
  const privateTemplate: P11.Template = [
    ...common(),
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY },
    { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_RSA },
    { type: pkcs11js.CKA_PRIVATE, value: true },
    { type: pkcs11js.CKA_SENSITIVE, value: true },
    { type: pkcs11js.CKA_EXTRACTABLE, value: false },
    { type: pkcs11js.CKA_UNWRAP, value: true },
    // Raw RSA decryption is only allowed where OAEP-SHA-256 has to be emulated.
    { type: pkcs11js.CKA_DECRYPT, value: needsRawDecrypt },
    { type: pkcs11js.CKA_SIGN, value: false },
  ];
  const macTemplate: P11.Template = [
    ...common(),
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
    { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_GENERIC_SECRET },
    { type: pkcs11js.CKA_VALUE_LEN, value: HMAC_KEY_BYTES },
    { type: pkcs11js.CKA_PRIVATE, value: true },
    { type: pkcs11js.CKA_SENSITIVE, value: true },
    { type: pkcs11js.CKA_EXTRACTABLE, value: false },
    { type: pkcs11js.CKA_SIGN, value: true },
    { type: pkcs11js.CKA_VERIFY, value: true },
  ];
  // Both generations in the slow lane (an RSA-4096 wrapping key takes seconds).
  const publicKey = await t.slowSession(async (session, call) => {
    try {
      const pair = await call({ op: 'generate-key-pair', session, mechanism: { mechanism: pkcs11js.CKM_RSA_PKCS_KEY_PAIR_GEN }, publicTemplate, privateTemplate }, 'C_GenerateKeyPair');
      await call({ op: 'generate-key', session, mechanism: { mechanism: pkcs11js.CKM_GENERIC_SECRET_KEY_GEN }, template: macTemplate }, 'C_GenerateKey');
      return Buffer.from(pair.handles![0]!);
    } catch (err) {
      const e = toHsmError(err, 'C_GenerateKeyPair');
      throw new HsmError(e.kind, e.ckr, e.fn, `creating an import wrapping key: ${e.message}`);
    }
  }, true);
  return t.withSession((session) => spkiOf(t, session, publicKey));
}

/** HMAC-SHA-256 of `data` under the import's token-held MAC key. */
export function macImportToken(t: TokenAccess, importId: string, data: Uint8Array): Promise<Buffer> {
  return t.withSession((session) => {
    const key = findImportObject(t, session, importId, pkcs11js.CKO_SECRET_KEY);
    try {
      t.p.C_SignInit(session, { mechanism: pkcs11js.CKM_SHA256_HMAC }, key);
      return Buffer.from(t.p.C_Sign(session, Buffer.from(data), Buffer.alloc(32)));
    } catch (err) {
      throw toHsmError(err, 'C_Sign', 'authenticating an import token');
    }
  });
}

/** Destroys the three objects of an import; no error when already gone. */
export function destroyWrappingKey(t: TokenAccess, importId: string): Promise<void> {
  return t.tokenWrite(() =>
    t.withSession((session) => {
      for (const handle of findObjects(t, session, [{ type: pkcs11js.CKA_ID, value: importObjectId(importId) }])) {
        try {
          t.p.C_DestroyObject(session, handle);
        } catch (err) {
          const e = toHsmError(err, 'C_DestroyObject');
          if (e.kind !== 'key-not-found') throw e;
        }
      }
    }),
  );
}

/** Import IDs whose wrapping private key is in the token (consistency checks). */
export function listWrappingKeyIds(t: TokenAccess): Promise<string[]> {
  return t.withSession((session) => {
    const ids: string[] = [];
    for (const handle of findObjects(t, session, [{ type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY }])) {
      const label = readAttribute(t, session, handle, pkcs11js.CKA_LABEL)?.toString('utf8');
      if (label?.startsWith(IMPORT_LABEL_PREFIX)) ids.push(label.slice(IMPORT_LABEL_PREFIX.length));
    }
    return ids.sort();
  });
}

export function findImportObject(t: TokenAccess, session: Handle, importId: string, objectClass: number): Handle {
  const [handle] = findObjects(t, session, [
    { type: pkcs11js.CKA_CLASS, value: objectClass },
    { type: pkcs11js.CKA_ID, value: importObjectId(importId) },
  ]);
  if (handle === undefined) throw new HsmError('key-not-found', 'CKR_OBJECT_HANDLE_INVALID', 'C_FindObjects', `no token objects for import ${importId}`);
  return handle;
}

function findObjects(t: TokenAccess, session: Handle, template: P11.Template): Handle[] {
  let fn = 'C_FindObjectsInit';
  try {
    t.p.C_FindObjectsInit(session, template);
    fn = 'C_FindObjects';
    const found: Handle[] = [];
    for (;;) {
      const batch = t.p.C_FindObjects(session, 100);
      if (batch.length === 0) break;
      found.push(...batch);
    }
    fn = 'C_FindObjectsFinal';
    t.p.C_FindObjectsFinal(session);
    return found;
  } catch (err) {
    throw toHsmError(err, fn, 'looking up import objects');
  }
}

function spkiOf(t: TokenAccess, session: Handle, publicKey: Handle): Buffer {
  const n = readAttribute(t, session, publicKey, pkcs11js.CKA_MODULUS);
  const e = readAttribute(t, session, publicKey, pkcs11js.CKA_PUBLIC_EXPONENT);
  if (!n || !e) throw new HsmError('other', 'CKR_ATTRIBUTE_TYPE_INVALID', 'C_GetAttributeValue', 'cannot read the wrapping public key');
  const jwk = { kty: 'RSA', n: n.toString('base64url'), e: e.toString('base64url') };
  return createPublicKey({ key: jwk, format: 'jwk' }).export({ type: 'spki', format: 'der' });
}

function importObjectId(importId: string): Buffer {
  return Buffer.from(`import#${importId}`, 'utf8');
}
