/**
 * Token key objects as node:crypto keys: JWKs built from PKCS#11 attributes, DER SPKI from those.
 * node:crypto's JWK import/export covers RSA, EC (including secp256k1) and Ed25519, so no ASN.1
 * library is needed.
 */
import { type JsonWebKey, createPublicKey } from 'node:crypto';
import pkcs11js from 'pkcs11js';
import { readUlong } from './bytes.js';
import { CURVES, ED25519_BYTES, ED25519_PARAMS } from './mechanisms.js';
import { type EcCurve, HsmError } from './types.js';

/** Reads one attribute of the object being encoded. */
export type AttributeReader = (attribute: number) => Buffer;

/** What reading a key's attributes needs to know: its algorithm and curve, not its size. */
export type KeyShape = { kind: 'rsa' } | { kind: 'ec'; curve: EcCurve } | { kind: 'ed25519' };

export function keyShapeOf(read: AttributeReader): KeyShape {
  const keyType = readUlong(read(pkcs11js.CKA_KEY_TYPE));
  if (keyType === pkcs11js.CKK_RSA) return { kind: 'rsa' };
  const params = read(pkcs11js.CKA_EC_PARAMS);
  if (params.equals(ED25519_PARAMS) || params.toString('latin1').includes('edwards25519')) return { kind: 'ed25519' };
  for (const [curve, info] of Object.entries(CURVES)) if (info.params.equals(params)) return { kind: 'ec', curve: curve as EcCurve };
  throw new HsmError('unsupported', 'CKR_DOMAIN_PARAMS_INVALID', 'C_GetAttributeValue', 'public key object on an unknown curve');
}

/** The JWK of a public key object (CKA_MODULUS/CKA_PUBLIC_EXPONENT or CKA_EC_POINT). */
export function publicJwkOf(read: AttributeReader, shape: KeyShape): JsonWebKey {
  if (shape.kind === 'rsa') return { kty: 'RSA', n: b64u(read(pkcs11js.CKA_MODULUS)), e: b64u(read(pkcs11js.CKA_PUBLIC_EXPONENT)) };
  const pointBytes = shape.kind === 'ed25519' ? ED25519_BYTES : 2 * CURVES[shape.curve].bytes + 1;
  const point = unwrapOctetString(read(pkcs11js.CKA_EC_POINT), pointBytes);
  if (shape.kind === 'ed25519') return { kty: 'OKP', crv: 'Ed25519', x: b64u(point) };
  const bytes = CURVES[shape.curve].bytes;
  if (point.length !== pointBytes || point[0] !== 0x04) throw new HsmError('other', 'CKR_ATTRIBUTE_VALUE_INVALID', 'C_GetAttributeValue', 'CKA_EC_POINT is not an uncompressed point');
  return { kty: 'EC', crv: shape.curve, x: b64u(point.subarray(1, 1 + bytes)), y: b64u(point.subarray(1 + bytes)) };
}

/** The JWK of a readable (session, non-sensitive) private key; the attribute buffers are wiped. */
export function privateJwkOf(read: AttributeReader, shape: KeyShape, publicJwk: JsonWebKey): JsonWebKey {
  const secret = (attribute: number, length?: number): string => {
    const raw = read(attribute);
    const value = length === undefined ? raw : leftPad(shape.kind === 'ed25519' ? unwrapOctetString(raw, length) : raw, length);
    const text = b64u(value);
    raw.fill(0);
    value.fill(0);
    return text;
  };
  if (shape.kind === 'rsa') {
    return {
      ...publicJwk,
      d: secret(pkcs11js.CKA_PRIVATE_EXPONENT),
      p: secret(pkcs11js.CKA_PRIME_1),
      q: secret(pkcs11js.CKA_PRIME_2),
      dp: secret(pkcs11js.CKA_EXPONENT_1),
      dq: secret(pkcs11js.CKA_EXPONENT_2),
      qi: secret(pkcs11js.CKA_COEFFICIENT),
    };
  }
  return { ...publicJwk, d: secret(pkcs11js.CKA_VALUE, shape.kind === 'ed25519' ? ED25519_BYTES : CURVES[shape.curve].bytes) };
}

export function spkiOf(jwk: JsonWebKey): Buffer {
  return createPublicKey({ key: jwk, format: 'jwk' }).export({ type: 'spki', format: 'der' });
}

/** CKA_EC_POINT (and an Edwards CKA_VALUE) is a DER OCTET STRING around the bytes; some tokens
 *  give the bare bytes, recognised by their length. */
export function unwrapOctetString(value: Buffer, bareLength: number): Buffer {
  if (value.length === bareLength || value[0] !== 0x04 || value.length < 2) return value;
  const first = value[1]!;
  if (first < 0x80) return first === value.length - 2 ? value.subarray(2) : value;
  const lengthBytes = first & 0x7f;
  if (lengthBytes > 2 || value.length < 2 + lengthBytes) return value;
  const length = value.readUIntBE(2, lengthBytes);
  return length === value.length - 2 - lengthBytes ? value.subarray(2 + lengthBytes) : value;
}

/** Big-endian `value` left-padded with zeros to `length` bytes; a shorter input is wiped. */
export function leftPad(value: Buffer, length: number): Buffer {
  if (value.length >= length) return value;
  const out = Buffer.alloc(length);
  value.copy(out, length - value.length);
  value.fill(0);
  return out;
}

export const b64u = (bytes: Buffer) => bytes.toString('base64url');
