/**
 * The ImportToken of GetParametersForImport: names the import (its wrapping key pair in the
 * token), the KMS key and the end of its validity, authenticated by an HMAC-SHA-256 computed in
 * the token with a secret that exists only for this import. It cannot be forged or moved to
 * another key, and it dies with the import's token objects.
 *
 *   "p1i" | 0x01 | importId (16 bytes, UUID) | validTo (uint64 BE, ms) | keyId length | keyId
 *   | HMAC-SHA-256 over everything before it (32 bytes)
 */
const MAGIC = Buffer.from('p1i', 'ascii');
const FORMAT_V1 = 0x01;
const MAC_BYTES = 32;

export interface ImportTokenBody {
  importId: string;
  keyId: string;
  validTo: Date;
}

export function encodeImportTokenBody({ importId, keyId, validTo }: ImportTokenBody): Buffer {
  const id = Buffer.from(importId.replaceAll('-', ''), 'hex');
  const key = Buffer.from(keyId, 'ascii');
  const time = Buffer.alloc(8);
  time.writeBigUInt64BE(BigInt(validTo.getTime()));
  return Buffer.concat([MAGIC, Buffer.from([FORMAT_V1]), id, time, Buffer.from([key.length]), key]);
}

/** Splits a token into its authenticated body and MAC; undefined when it is not one of ours. */
export function parseImportToken(token: Buffer): { body: Buffer; mac: Buffer; fields: ImportTokenBody } | undefined {
  const fixed = MAGIC.length + 1 + 16 + 8 + 1;
  if (token.length < fixed + MAC_BYTES || !token.subarray(0, MAGIC.length).equals(MAGIC) || token[MAGIC.length] !== FORMAT_V1) return undefined;
  const keyLength = token[fixed - 1]!;
  if (token.length !== fixed + keyLength + MAC_BYTES) return undefined;
  const hex = token.toString('hex', MAGIC.length + 1, MAGIC.length + 17);
  const importId = `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  const validTo = new Date(Number(token.readBigUInt64BE(MAGIC.length + 17)));
  const keyId = token.toString('ascii', fixed, fixed + keyLength);
  return { body: token.subarray(0, fixed + keyLength), mac: token.subarray(fixed + keyLength), fields: { importId, keyId, validTo } };
}
