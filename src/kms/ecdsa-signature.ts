/**
 * ECDSA signature encodings. Tokens produce and verify raw r‖s (PKCS#11 CKM_ECDSA); AWS returns
 * and accepts the DER Ecdsa-Sig-Value of RFC 3279 §2.2.3: SEQUENCE { r INTEGER, s INTEGER }.
 */

/** r‖s (each `fieldBytes` long) → DER. */
export function ecdsaRawToDer(raw: Buffer): Buffer {
  const half = raw.length / 2;
  const body = Buffer.concat([derInteger(raw.subarray(0, half)), derInteger(raw.subarray(half))]);
  return Buffer.concat([Buffer.from([0x30]), derLength(body.length), body]);
}

/** DER → r‖s with each integer left-padded to `fieldBytes`; undefined when not a well-formed
 *  signature of that size. */
export function ecdsaDerToRaw(der: Buffer, fieldBytes: number): Buffer | undefined {
  const sequence = readTlv(der, 0, 0x30);
  if (sequence === undefined || sequence.end !== der.length) return undefined;
  const r = readTlv(der, sequence.start, 0x02);
  if (r === undefined) return undefined;
  const s = readTlv(der, r.end, 0x02);
  if (s === undefined || s.end !== sequence.end) return undefined;
  const out = Buffer.alloc(2 * fieldBytes);
  for (const [index, tlv] of [r, s].entries()) {
    let value = der.subarray(tlv.start, tlv.end);
    if (value.length === 0 || (value[0]! & 0x80) !== 0) return undefined; // empty or negative
    while (value.length > 1 && value[0] === 0) value = value.subarray(1);
    if (value.length > fieldBytes) return undefined;
    value.copy(out, (index + 1) * fieldBytes - value.length);
  }
  return out;
}

function derInteger(unsigned: Buffer): Buffer {
  let start = 0;
  while (start < unsigned.length - 1 && unsigned[start] === 0) start++;
  let value = unsigned.subarray(start);
  if ((value[0]! & 0x80) !== 0) value = Buffer.concat([Buffer.from([0]), value]);
  return Buffer.concat([Buffer.from([0x02]), derLength(value.length), value]);
}

function derLength(length: number): Buffer {
  if (length < 0x80) return Buffer.from([length]);
  if (length < 0x100) return Buffer.from([0x81, length]);
  return Buffer.from([0x82, length >> 8, length & 0xff]);
}

/** Reads a tag-length-value at `at`; undefined when the tag differs or lengths overrun. */
function readTlv(der: Buffer, at: number, tag: number): { start: number; end: number } | undefined {
  if (at + 2 > der.length || der[at] !== tag) return undefined;
  let length = der[at + 1]!;
  let start = at + 2;
  if (length & 0x80) {
    const count = length & 0x7f;
    if (count === 0 || count > 2 || start + count > der.length) return undefined;
    length = der.readUIntBE(start, count);
    start += count;
  }
  const end = start + length;
  return end > der.length ? undefined : { start, end };
}
