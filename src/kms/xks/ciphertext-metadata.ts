/**
 * What p11kms puts in XKS `ciphertextMetadata` (at most 20 bytes, opaque to AWS KMS and returned
 * with every decrypt): a format byte and the backing-key version that sealed the data, so keys can
 * rotate underneath without AWS KMS knowing.
 *
 * The AAD handed to the token follows the spec's unambiguous layout (2-byte big-endian AAD length
 * || AAD || 1-byte metadata length || metadata), behind a fixed domain label: the same backing
 * keys also seal KMS API ciphertexts (whose AAD starts with the blob header), and the label keeps
 * one front door's ciphertexts from ever authenticating as the other's.
 */
import { xksInvalidCiphertext } from './errors.js';

const FORMAT_V1 = 0x01;
const METADATA_LENGTH = 5;
const DOMAIN_LABEL = Buffer.from('p11kms xks v1\0', 'ascii');

export function encodeCiphertextMetadata(version: number): Buffer {
  const out = Buffer.alloc(METADATA_LENGTH);
  out[0] = FORMAT_V1;
  out.writeUInt32BE(version, 1);
  return out;
}

/** The backing version a ciphertext names; anything not made by encodeCiphertextMetadata is
 *  an invalid ciphertext (it cannot have come from this proxy). */
export function decodeCiphertextMetadata(metadata: Buffer | undefined): number {
  if (metadata === undefined || metadata.length !== METADATA_LENGTH || metadata[0] !== FORMAT_V1) throw xksInvalidCiphertext();
  const version = metadata.readUInt32BE(1);
  if (version < 1) throw xksInvalidCiphertext();
  return version;
}

export function tokenAad(aad: Buffer | undefined, metadata: Buffer): Buffer {
  const aadLength = Buffer.alloc(2);
  aadLength.writeUInt16BE(aad?.length ?? 0);
  return Buffer.concat([DOMAIN_LABEL, aadLength, aad ?? Buffer.alloc(0), Buffer.from([metadata.length]), metadata]);
}
