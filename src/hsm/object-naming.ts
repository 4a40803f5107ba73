/**
 * How a BackingKeyRef maps onto token object attributes. Only CKA_ID addresses a key; handles are
 * process-local and never persisted.
 *
 *   CKA_ID    = UTF-8 of `${keyId}#${version}`     e.g. "1234abcd-…-0123#1"   (38+ bytes)
 *   CKA_LABEL = `p11kms:${keyId}:v${version}`      e.g. "p11kms:1234abcd-…-0123:v1"
 *
 * CKA_ID is plain text so that `pkcs11-tool -O` output is readable and any key-ID format works
 * (UUIDs today, `mrk-` + 32 hex later) without a format-specific binary packing. The label is
 * for humans and marks objects as ours during enumeration; the ID is the authority.
 *
 * Lengths: a UUID label is 46 characters, an `mrk-` label 46 too. PKCS#11 puts no limit on
 * CKA_LABEL or CKA_ID; SoftHSM2, Luna, nShield and CloudHSM (≤ 127) accept these. YubiHSM2 does
 * not fit this scheme (2-byte object IDs, 40-byte labels) and would need its own mapping.
 */
import type { BackingKeyRef } from './types.js';

export const LABEL_PREFIX = 'p11kms:';

export function refKey(ref: BackingKeyRef): string {
  return `${ref.keyId}#${ref.version}`;
}

export function objectIdFor(ref: BackingKeyRef): Buffer {
  checkRef(ref);
  return Buffer.from(refKey(ref), 'utf8');
}

export function labelFor(ref: BackingKeyRef): string {
  return `${LABEL_PREFIX}${ref.keyId}:v${ref.version}`;
}

/** Reads a ref back from an object's CKA_LABEL and CKA_ID; undefined when it is not ours. */
export function refFromAttributes(label: Buffer, id: Buffer): BackingKeyRef | undefined {
  if (!label.subarray(0, LABEL_PREFIX.length).equals(LABEL_PREFIX_BYTES)) return undefined;
  const text = id.toString('utf8');
  const hash = text.lastIndexOf('#');
  if (hash <= 0) return undefined;
  const versionText = text.slice(hash + 1);
  if (!/^[1-9]\d{0,8}$/.test(versionText)) return undefined;
  return { keyId: text.slice(0, hash), version: Number(versionText) };
}

const LABEL_PREFIX_BYTES = Buffer.from(LABEL_PREFIX, 'utf8');

function checkRef(ref: BackingKeyRef): void {
  if (typeof ref.keyId !== 'string' || ref.keyId.length === 0 || ref.keyId.includes('#')) {
    throw new RangeError('backing key ref: keyId must be a non-empty string without "#"');
  }
  if (!Number.isInteger(ref.version) || ref.version < 1 || ref.version > 999_999_999) {
    throw new RangeError('backing key ref: version must be an integer ≥ 1');
  }
}
