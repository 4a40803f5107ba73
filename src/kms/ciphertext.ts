/**
 * The symmetric ciphertext blob: a versioned format that names the KMS key and the backing-key
 * version, so Decrypt needs no KeyId and never tries several keys.
 *
 *   magic "p1k" | format 0x01 | keyId length (1 byte) | keyId (ASCII) | backing version (uint32 BE)
 *   | IV (12 bytes, from the token's RNG) | AES-256-GCM ciphertext ‖ 128-bit tag
 *
 * The AAD is the header (everything before the IV) followed by the canonical encoding of the
 * encryption context, so neither the header nor the context can be changed without failing the tag.
 */
import { isKeyId } from './arn.js';
import { invalidCiphertext } from './errors.js';

const MAGIC = Buffer.from('p1k', 'ascii');
const FORMAT_V1 = 0x01;
export const IV_LENGTH = 12;
const TAG_LENGTH = 16;

export interface CiphertextHeader {
  keyId: string;
  version: number;
}

export interface ParsedCiphertext extends CiphertextHeader {
  header: Buffer;
  iv: Buffer;
  sealed: Buffer;
}

export function encodeHeader({ keyId, version }: CiphertextHeader): Buffer {
  const id = Buffer.from(keyId, 'ascii');
  const header = Buffer.allocUnsafe(MAGIC.length + 2 + id.length + 4);
  let at = MAGIC.copy(header, 0);
  header[at++] = FORMAT_V1;
  header[at++] = id.length;
  at += id.copy(header, at);
  header.writeUInt32BE(version, at);
  return header;
}

export function assembleBlob(header: Buffer, iv: Uint8Array, sealed: Uint8Array): Buffer {
  return Buffer.concat([header, iv, sealed]);
}

/**
 * The header of `blob` when it is a symmetric blob of this service, else undefined. Strict (the
 * key ID must have a key ID's form), so that an RSA ciphertext is never mistaken for one: its
 * first 41 random bytes would have to spell the magic, the format, a length of 36 and a key ID.
 */
export function symmetricHeaderOf(blob: Buffer): CiphertextHeader | undefined {
  try {
    const { keyId, version } = parseBlob(blob);
    return isKeyId(keyId) ? { keyId, version } : undefined;
  } catch {
    return undefined;
  }
}

/** Splits a blob; anything that is not a well-formed v1 blob is InvalidCiphertextException. */
export function parseBlob(blob: Buffer): ParsedCiphertext {
  const minimum = MAGIC.length + 2 + 1 + 4 + IV_LENGTH + TAG_LENGTH;
  if (blob.length < minimum || !blob.subarray(0, MAGIC.length).equals(MAGIC) || blob[MAGIC.length] !== FORMAT_V1) {
    throw invalidCiphertext();
  }
  const idLength = blob[MAGIC.length + 1]!;
  const idStart = MAGIC.length + 2;
  const versionAt = idStart + idLength;
  const ivAt = versionAt + 4;
  if (blob.length < ivAt + IV_LENGTH + TAG_LENGTH) throw invalidCiphertext();
  return {
    keyId: blob.toString('ascii', idStart, versionAt),
    version: blob.readUInt32BE(versionAt),
    header: blob.subarray(0, ivAt),
    iv: blob.subarray(ivAt, ivAt + IV_LENGTH),
    sealed: blob.subarray(ivAt + IV_LENGTH),
  };
}

/**
 * Unambiguous encoding of an encryption context: pair count, then each pair sorted by key bytes,
 * every string length-prefixed (uint32 BE). {"ab":"c"} and {"a":"bc"} therefore differ.
 */
export function encodeEncryptionContext(context: Record<string, string> | undefined): Buffer {
  const pairs = Object.entries(context ?? {}).map(([k, v]) => [Buffer.from(k, 'utf8'), Buffer.from(v, 'utf8')] as const);
  pairs.sort(([a], [b]) => Buffer.compare(a, b));
  const parts: Buffer[] = [uint32(pairs.length)];
  for (const [k, v] of pairs) parts.push(uint32(k.length), k, uint32(v.length), v);
  return Buffer.concat(parts);
}

function uint32(n: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(n, 0);
  return b;
}

export function additionalData(header: Buffer, context: Record<string, string> | undefined): Buffer {
  return Buffer.concat([header, encodeEncryptionContext(context)]);
}
