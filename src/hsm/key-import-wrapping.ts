/**
 * The per-import token objects of GetParametersForImport (used through KeyImporter in
 * key-import.ts): the RSA wrapping key pair, the HMAC-SHA-256 secret that makes import tokens
 * unforgeable, and finding, listing and destroying these objects.
 *
 * Per import the token holds three objects under CKA_ID "import#<importId>", label
 * "p11kms-import:<importId>": the RSA private key (CKA_UNWRAP), its public key, and an
 * HMAC-SHA-256 secret that authenticates the import token. Creating and destroying them runs
 * under the cross-process object-write lock (TokenAccess.tokenWrite). Every token call runs in
 * the slow lane (key-import-common.ts inLane).
 */
import { createPublicKey } from 'node:crypto';
import pkcs11js from 'pkcs11js';
import type * as P11 from 'pkcs11js';
import { toHsmError } from './errors.js';
import { WRAPPING_KEY_BITS, type WrappingKeySpec, inLane, laneAttribute, laneCalls, laneFindObjects, laneOf, laneSign } from './key-import-common.js';
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
  // The generations take seconds for RSA-4096; the public key is read in the same lane turn.
  return inLane(
    t,
    async (t, session) => {
      let publicKey: Handle;
      try {
        const call = laneOf(t);
        const pair = await call({ op: 'generate-key-pair', session, mechanism: { mechanism: pkcs11js.CKM_RSA_PKCS_KEY_PAIR_GEN }, publicTemplate, privateTemplate }, 'C_GenerateKeyPair');
        await call({ op: 'generate-key', session, mechanism: { mechanism: pkcs11js.CKM_GENERIC_SECRET_KEY_GEN }, template: macTemplate }, 'C_GenerateKey');
        publicKey = Buffer.from(pair.handles![0]!);
      } catch (err) {
        const e = toHsmError(err, 'C_GenerateKeyPair');
        throw new HsmError(e.kind, e.ckr, e.fn, `creating an import wrapping key: ${e.message}`);
      }
      return spkiOf(t, session, publicKey);
    },
    true,
  );
}

/** HMAC-SHA-256 of `data` under the import's token-held MAC key. */
export function macImportToken(t: TokenAccess, importId: string, data: Uint8Array): Promise<Buffer> {
  return inLane(t, async (t, session) => {
    const key = await findImportObject(t, session, importId, pkcs11js.CKO_SECRET_KEY);
    try {
      return await laneSign(t, session, { mechanism: pkcs11js.CKM_SHA256_HMAC }, key, Buffer.from(data), 32);
    } catch (err) {
      throw toHsmError(err, 'C_Sign', 'authenticating an import token');
    }
  });
}

/** Destroys the three objects of an import; no error when already gone. */
export function destroyWrappingKey(t: TokenAccess, importId: string): Promise<void> {
  return inLane(
    t,
    async (t, session) => {
      for (const handle of await findObjects(t, session, [{ type: pkcs11js.CKA_ID, value: importObjectId(importId) }])) {
        try {
          await laneCalls(t, session, [{ fn: 'C_DestroyObject', args: [handle] }], 'C_DestroyObject');
        } catch (err) {
          const e = toHsmError(err, 'C_DestroyObject');
          if (e.kind !== 'key-not-found') throw e;
        }
      }
    },
    true,
  );
}

/** Import IDs whose wrapping private key is in the token (consistency checks). */
export function listWrappingKeyIds(t: TokenAccess): Promise<string[]> {
  return inLane(t, async (t, session) => {
    const ids: string[] = [];
    for (const handle of await findObjects(t, session, [{ type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY }])) {
      const label = (await laneAttribute(t, session, handle, pkcs11js.CKA_LABEL))?.toString('utf8');
      if (label?.startsWith(IMPORT_LABEL_PREFIX)) ids.push(label.slice(IMPORT_LABEL_PREFIX.length));
    }
    return ids.sort();
  });
}

export async function findImportObject(t: TokenAccess, session: Handle, importId: string, objectClass: number): Promise<Handle> {
  const [handle] = await findObjects(t, session, [
    { type: pkcs11js.CKA_CLASS, value: objectClass },
    { type: pkcs11js.CKA_ID, value: importObjectId(importId) },
  ]);
  if (handle === undefined) throw new HsmError('key-not-found', 'CKR_OBJECT_HANDLE_INVALID', 'C_FindObjects', `no token objects for import ${importId}`);
  return handle;
}

async function findObjects(t: TokenAccess, session: Handle, template: P11.Template): Promise<Handle[]> {
  try {
    return await laneFindObjects(t, session, template);
  } catch (err) {
    throw toHsmError(err, 'C_FindObjects', 'looking up import objects');
  }
}

async function spkiOf(t: TokenAccess, session: Handle, publicKey: Handle): Promise<Buffer> {
  const n = await laneAttribute(t, session, publicKey, pkcs11js.CKA_MODULUS);
  const e = await laneAttribute(t, session, publicKey, pkcs11js.CKA_PUBLIC_EXPONENT);
  if (!n || !e) throw new HsmError('other', 'CKR_ATTRIBUTE_TYPE_INVALID', 'C_GetAttributeValue', 'cannot read the wrapping public key');
  const jwk = { kty: 'RSA', n: n.toString('base64url'), e: e.toString('base64url') };
  return createPublicKey({ key: jwk, format: 'jwk' }).export({ type: 'spki', format: 'der' });
}

function importObjectId(importId: string): Buffer {
  return Buffer.from(`import#${importId}`, 'utf8');
}
