/**
 * Unit tests of the ciphertext blob format and the canonical encryption-context encoding.
 */
import { describe, expect, it } from 'vitest';
import { additionalData, assembleBlob, encodeEncryptionContext, encodeHeader, parseBlob } from '../src/kms/ciphertext.js';

const keyId = '1234abcd-12ab-34cd-56ef-1234567890ab';

describe('encryption context encoding', () => {
  it('is unambiguous: {"ab":"c"} and {"a":"bc"} differ', () => {
    expect(encodeEncryptionContext({ ab: 'c' }).equals(encodeEncryptionContext({ a: 'bc' }))).toBe(false);
    expect(encodeEncryptionContext({ a: '', b: '' }).equals(encodeEncryptionContext({ 'a\u0000': 'b' }))).toBe(false);
  });

  it('is independent of member order and treats absent and empty alike', () => {
    expect(encodeEncryptionContext({ b: '2', a: '1' }).equals(encodeEncryptionContext({ a: '1', b: '2' }))).toBe(true);
    expect(encodeEncryptionContext(undefined).equals(encodeEncryptionContext({}))).toBe(true);
  });

  it('sorts by UTF-8 bytes and length-prefixes every string', () => {
    const encoded = encodeEncryptionContext({ 'é': 'x', z: 'y' });
    expect(encoded.readUInt32BE(0)).toBe(2);
    expect(encoded.readUInt32BE(4)).toBe(1); // "z" (0x7a) sorts before "é" (0xc3 0xa9)
    expect(encoded.toString('utf8', 8, 9)).toBe('z');
  });
});

describe('blob format', () => {
  it('round-trips the header and splits IV and sealed data', () => {
    const header = encodeHeader({ keyId, version: 7 });
    const iv = Buffer.alloc(12, 0xaa);
    const sealed = Buffer.alloc(40, 0xbb);
    const parsed = parseBlob(assembleBlob(header, iv, sealed));
    expect(parsed.keyId).toBe(keyId);
    expect(parsed.version).toBe(7);
    expect(parsed.iv.equals(iv)).toBe(true);
    expect(parsed.sealed.equals(sealed)).toBe(true);
    expect(parsed.header.equals(header)).toBe(true);
  });

  it('binds the header into the AAD', () => {
    const a = additionalData(encodeHeader({ keyId, version: 1 }), { k: 'v' });
    const b = additionalData(encodeHeader({ keyId, version: 2 }), { k: 'v' });
    expect(a.equals(b)).toBe(false);
  });

  it('rejects foreign and truncated blobs as InvalidCiphertextException', () => {
    const good = assembleBlob(encodeHeader({ keyId, version: 1 }), Buffer.alloc(12), Buffer.alloc(16));
    for (const bad of [Buffer.alloc(0), Buffer.from('hello world, this is not a blob at all'), good.subarray(0, good.length - 1)]) {
      expect(() => parseBlob(bad)).toThrowError(expect.objectContaining({ type: 'InvalidCiphertextException' }));
    }
    const wrongFormat = Buffer.from(good);
    wrongFormat[3] = 2;
    expect(() => parseBlob(wrongFormat)).toThrowError(expect.objectContaining({ type: 'InvalidCiphertextException' }));
  });
});
