/**
 * Small byte helpers shared by the PKCS#11 code.
 */

/** A Buffer view of `bytes` without copying. */
export function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** CK_ULONG attribute values come back in host byte order and width (8 bytes on 64-bit Unix). */
export function readUlong(value: Buffer): number {
  if (value.length === 8) return Number(value.readBigUInt64LE(0));
  if (value.length === 4) return value.readUInt32LE(0);
  return value.length > 0 ? value.readUIntLE(0, Math.min(value.length, 6)) : 0;
}
