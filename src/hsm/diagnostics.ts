/**
 * Diagnostics of backing keys for operator tooling (`doctor`) and tests: which attributes the
 * token object carries and whether the token refuses to reveal or wrap its material. Reached
 * through inspectBackingKey (pkcs11-token.ts), which runs it on a session of its own via
 * Pkcs11Hsm.inspect. Never returns key material.
 */
import pkcs11js from 'pkcs11js';
import type * as P11 from 'pkcs11js';
import { readUlong } from './bytes.js';
import { toHsmError } from './errors.js';
import { findKeyObjects, keyNotFound } from './key-objects.js';
import type { BackingKeyRef } from './types.js';

type Handle = P11.Handle;

const AES_KEY_BYTES = 32;

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

/** Inspects the token object behind `ref` on `session`, which the caller opened for this alone
 *  (the wrap test creates a session object on it) and closes afterwards. */
export async function inspectOnSession(p: P11.PKCS11, mechanisms: ReadonlySet<number>, session: Handle, ref: BackingKeyRef): Promise<BackingKeyInspection> {
  const handles = findKeyObjects(p, session, ref);
  const handle = handles[0];
  if (handle === undefined) throw keyNotFound(ref);
  const flag = (type: number): boolean | undefined => {
    const value = readAttribute(p, session, handle, type);
    return value === undefined ? undefined : value.length > 0 && value[0] !== 0;
  };
  const labelValue = readAttribute(p, session, handle, pkcs11js.CKA_LABEL);
  const valueLen = readAttribute(p, session, handle, pkcs11js.CKA_VALUE_LEN);
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
    readValueResult: tryReadValue(p, session, handle),
    secretReadResult: tryReadValue(p, session, handle, isRsaKey(p, session, handle) ? pkcs11js.CKA_PRIVATE_EXPONENT : pkcs11js.CKA_VALUE),
    wrapResult: await tryWrap(p, mechanisms, session, handle),
  };
}

function readAttribute(p: P11.PKCS11, session: Handle, handle: Handle, type: number): Buffer | undefined {
  try {
    return p.C_GetAttributeValue(session, handle, [{ type }])[0]!.value;
  } catch {
    return undefined;
  }
}

function isRsaKey(p: P11.PKCS11, session: Handle, handle: Handle): boolean {
  const keyType = readAttribute(p, session, handle, pkcs11js.CKA_KEY_TYPE);
  return keyType !== undefined && readUlong(keyType) === pkcs11js.CKK_RSA;
}

function tryReadValue(p: P11.PKCS11, session: Handle, handle: Handle, type: number = pkcs11js.CKA_VALUE): string {
  try {
    const [attr] = p.C_GetAttributeValue(session, handle, [{ type }]);
    attr?.value.fill(0); // readable key material is the finding; the bytes are not reported
    return 'CKR_OK';
  } catch (err) {
    return toHsmError(err, 'C_GetAttributeValue').ckr;
  }
}

async function tryWrap(p: P11.PKCS11, mechanisms: ReadonlySet<number>, session: Handle, handle: Handle): Promise<string> {
  const mechanism = [pkcs11js.CKM_AES_KEY_WRAP_PAD, pkcs11js.CKM_AES_KEY_WRAP].find((m) => mechanisms.has(m));
  if (mechanism === undefined) return 'not-tried';
  const wrappingKey = await p.C_GenerateKeyAsync(session, { mechanism: pkcs11js.CKM_AES_KEY_GEN }, [
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
    { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_AES },
    { type: pkcs11js.CKA_VALUE_LEN, value: AES_KEY_BYTES },
    { type: pkcs11js.CKA_TOKEN, value: false },
    { type: pkcs11js.CKA_SENSITIVE, value: true },
    { type: pkcs11js.CKA_EXTRACTABLE, value: false },
    { type: pkcs11js.CKA_WRAP, value: true },
  ]);
  try {
    const wrapped = await p.C_WrapKeyAsync(session, { mechanism }, wrappingKey, handle, Buffer.alloc(AES_KEY_BYTES + 64));
    wrapped.fill(0);
    return 'CKR_OK';
  } catch (err) {
    return toHsmError(err, 'C_WrapKey').ckr;
  } finally {
    try {
      p.C_DestroyObject(session, wrappingKey);
    } catch {
      // a session object dies with its session anyway
    }
  }
}
