/**
 * EME-OAEP decoding (RFC 8017 §7.1.2 step 3) for tokens whose CKM_RSA_PKCS_OAEP lacks a hash
 * (SoftHSM2 2.6.1 does SHA-1 only): the token does the private-key operation with CKM_RSA_X_509
 * and the service removes the padding. The private key never leaves the token; what passes
 * through memory is the padded plaintext, which the caller receives anyway.
 *
 * Every check runs over the whole block and the failures are folded together, so the time taken
 * does not say which check failed (Manger's attack needs that distinction).
 */
import { createHash } from 'node:crypto';
import type { HashName } from './types.js';

const EMPTY_LABEL_HASH = new Map<HashName, Buffer>();

function labelHash(hash: HashName): Buffer {
  let h = EMPTY_LABEL_HASH.get(hash);
  if (h === undefined) {
    h = createHash(hash).digest();
    EMPTY_LABEL_HASH.set(hash, h);
  }
  return h;
}

/** MGF1 (RFC 8017 B.2.1) with `hash`. */
function mgf1(hash: HashName, seed: Buffer, length: number): Buffer {
  const out = Buffer.alloc(length);
  const counter = Buffer.alloc(4);
  for (let at = 0, i = 0; at < length; i++) {
    counter.writeUInt32BE(i, 0);
    const block = createHash(hash).update(seed).update(counter).digest();
    at += block.copy(out, at);
  }
  return out;
}

/**
 * Returns the message inside the k-byte encoded block `em`, or undefined when the block is not a
 * valid OAEP encoding with an empty label. `em` is wiped before returning.
 */
export function decodeOaep(em: Buffer, hash: HashName): Buffer | undefined {
  const lHash = labelHash(hash);
  const hLen = lHash.length;
  const k = em.length;
  if (k < 2 * hLen + 2) return undefined;
  const maskedSeed = em.subarray(1, 1 + hLen);
  const maskedDb = em.subarray(1 + hLen);
  const seed = mgf1(hash, maskedDb, hLen);
  for (let i = 0; i < hLen; i++) seed[i]! ^= maskedSeed[i]!;
  const db = mgf1(hash, seed, k - hLen - 1);
  for (let i = 0; i < db.length; i++) db[i]! ^= maskedDb[i]!;

  let bad = em[0]!; // Y must be 0
  for (let i = 0; i < hLen; i++) bad |= db[i]! ^ lHash[i]!;
  // Find the 0x01 separator after the zero padding without branching on secret data.
  let separatorAt = 0;
  let found = 0; // 1 once the separator was seen
  for (let i = hLen; i < db.length; i++) {
    const byte = db[i]!;
    const isOne = ((byte ^ 1) - 1) >>> 31; // 1 when byte === 1
    const isZero = (byte - 1) >>> 31; // 1 when byte === 0
    const takeHere = isOne & (found ^ 1);
    separatorAt |= -takeHere & i;
    found |= isOne;
    bad |= (found ^ 1) & (isZero ^ 1); // a byte before the separator that is neither 0 nor 1
  }
  bad |= found ^ 1;
  const message = bad === 0 ? Buffer.from(db.subarray(separatorAt + 1)) : undefined;
  em.fill(0);
  seed.fill(0);
  db.fill(0);
  return message;
}
