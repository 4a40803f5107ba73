/**
 * The service-side EME-OAEP decoding used when the token decrypts with CKM_RSA_X_509: checked
 * against node:crypto's encoder, for both hashes and every message length, and with corruptions.
 */
import crypto from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { decodeOaep } from '../src/hsm/oaep-decode.js';

const { publicKey, privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });

/** The encoded block EM inside an OAEP ciphertext (raw RSA, as CKM_RSA_X_509 returns it). */
function encodedBlock(message: Buffer, hash: 'sha1' | 'sha256'): Buffer {
  const ciphertext = crypto.publicEncrypt({ key: publicKey, oaepHash: hash, padding: crypto.constants.RSA_PKCS1_OAEP_PADDING }, message);
  return crypto.privateDecrypt({ key: privateKey, padding: crypto.constants.RSA_NO_PADDING }, ciphertext);
}

describe('decodeOaep', () => {
  for (const [hash, max] of [
    ['sha1', 214],
    ['sha256', 190],
  ] as const) {
    it(`${hash}: recovers messages of every length from 0 to ${max}`, () => {
      for (let length = 0; length <= max; length += length < 8 ? 1 : 37) {
        const message = crypto.randomBytes(length);
        expect(decodeOaep(encodedBlock(message, hash), hash)?.equals(message)).toBe(true);
      }
      const full = crypto.randomBytes(max);
      expect(decodeOaep(encodedBlock(full, hash), hash)?.equals(full)).toBe(true);
    });

    it(`${hash}: refuses a nonzero first byte, a corrupted seed or label hash, and the other hash`, () => {
      const message = Buffer.from('oaep');
      const bad = (mutate: (em: Buffer) => void) => {
        const em = encodedBlock(message, hash);
        mutate(em);
        return decodeOaep(em, hash);
      };
      expect(bad((em) => (em[0] = 1))).toBeUndefined();
      expect(bad((em) => (em[3]! ^= 0x10))).toBeUndefined();
      expect(bad((em) => (em[em.length - 1]! ^= 0x01))).toBeUndefined();
      expect(decodeOaep(encodedBlock(message, hash), hash === 'sha1' ? 'sha256' : 'sha1')).toBeUndefined();
    });
  }

  it('wipes the block it was given', () => {
    const em = encodedBlock(Buffer.from('wipe me'), 'sha256');
    decodeOaep(em, 'sha256');
    expect(em.every((b) => b === 0)).toBe(true);
  });
});
