/**
 * Asymmetric imported material: a wrapped PKCS#8 private key unwrapped into the token, and its
 * public key object reconstructed from what the token tells about the private key.
 * KeyImporter.unwrap (key-import.ts) picks the session and the object-write lock; the
 * RSA_AES_KEY_WRAP_* helpers are shared with secret material (key-import-secret.ts).
 *
 * Asymmetric material (a PKCS#8 private key) enters the token solely through C_UnwrapKey
 * (CKM_AES_KEY_WRAP_PAD under the ephemeral key, or CKM_RSA_PKCS_OAEP for ECC keys wrapped with
 * RSAES_OAEP_* where the token has that OAEP hash: the software OAEP fallback would put the private
 * key in service memory, so it is refused) as a sensitive, non-extractable private key whose one
 * usage is the KMS key's; the public key object (same CKA_ID and label) is made with
 * C_CreateObject from what the token tells about the private key:
 *  - RSA: CKA_MODULUS and CKA_PUBLIC_EXPONENT are readable on the private key.
 *  - EC: the token does not expose the public point Q of a private key. The material is unwrapped
 *    a second time (same ephemeral AES key, or the same RSA ciphertext) as a short-lived,
 *    sensitive, non-extractable SESSION object with CKA_DERIVE and CKA_SIGN. CKM_ECDH1_DERIVE (CKD_NULL) against the generator G
 *    gives x(d·G) = x(Q) (public information); of the two points with that x, Q is the one that
 *    verifies an ECDSA signature the session object makes. ECDH alone cannot tell Q from −Q
 *    (x(d·P) = x(−d·P) for every P), so a KEY_AGREEMENT key needs the signature too: that is why
 *    the helper (never the stored key) may sign. It is destroyed before the call returns.
 *  - Ed25519 would need the same trick without an Edwards derive mechanism: not supported.
 * The check value of asymmetric material is a hash of its SPKI (the same private key ⇔ the same
 * public key), so re-imports compare public keys, as AWS does.
 */
import { ECDH, type JsonWebKey, createECDH, createHash, createPublicKey, verify as verifySignature } from 'node:crypto';
import pkcs11js from 'pkcs11js';
import type * as P11 from 'pkcs11js';
import { toHsmError } from './errors.js';
import {
  type KeyPairMaterial,
  KeyImportError,
  type UnwrapAs,
  type WrappingAlgorithm,
  createObject,
  destroyQuietly,
  isTokenFault,
  laneAttribute,
  laneOf,
  laneSign,
  oaepMechanism,
  unwrapKey,
  wrongLength,
} from './key-import-common.js';
import { ephemeralKeyOf, splitRsaAes } from './key-import-secret.js';
import { spkiOf as spkiOfJwk } from './key-encoding.js';
import { CURVES } from './mechanisms.js';
import { labelFor, objectIdFor } from './object-naming.js';
import type { TokenAccess } from './pkcs11-token.js';
import { type BackingKeyRef, type EcCurve, HsmError } from './types.js';

type Handle = P11.Handle;

/** A wrapped PKCS#8 private key: the private key object (token or probe), its public key object
 *  (token only), and the check value (a hash of the SPKI). */
export async function unwrapKeyPair(
  t: TokenAccess,
  session: Handle,
  privateKey: Handle,
  wrapped: Buffer,
  algorithm: WrappingAlgorithm,
  hash: 'sha1' | 'sha256',
  software: boolean,
  target: BackingKeyRef | 'probe',
  kind: KeyPairMaterial,
): Promise<string> {
  let ephemeral: Handle | undefined;
  let unwrapAs: UnwrapAs;
  if (algorithm.startsWith('RSAES_OAEP')) {
    if (kind.kind === 'rsa' || software) {
      throw new KeyImportError('custody-refused', `${algorithm} cannot bring this private key into the token without the service seeing it`);
    }
    unwrapAs = (template) => unwrapKey(t, session, oaepMechanism(hash), privateKey, wrapped, template);
  } else {
    const { rsaPart, kwpPart } = await splitRsaAes(t, session, privateKey, wrapped);
    const aesKey = await ephemeralKeyOf(t, session, privateKey, rsaPart, hash, software);
    ephemeral = aesKey;
    unwrapAs = (template) => unwrapKey(t, session, { mechanism: pkcs11js.CKM_AES_KEY_WRAP_PAD }, aesKey, kwpPart, template);
  }
  const created: Handle[] = [];
  try {
    const key = await unwrapPrivateKey(t, unwrapAs, keyPairTemplate(t, target, kind, false), kind, session);
    created.push(key);
    const jwk = kind.kind === 'rsa' ? await rsaPublicJwk(t, session, key, kind) : await ecPublicJwk(t, session, key, unwrapAs, kind);
    const spki = spkiOfJwk(jwk);
    if (target !== 'probe') created.push(await createObject(t, session, publicKeyTemplate(t, target, kind, jwk)));
    const checkValue = createHash('sha256').update('p11kms:public-key:').update(spki).digest('hex');
    if (target === 'probe') await destroyQuietly(t, session, key);
    return checkValue;
  } catch (err) {
    for (const handle of created) await destroyQuietly(t, session, handle);
    throw err;
  } finally {
    if (ephemeral !== undefined) await destroyQuietly(t, session, ephemeral);
  }
}

async function unwrapPrivateKey(t: TokenAccess, unwrapAs: UnwrapAs, template: P11.Template, kind: KeyPairMaterial, session: Handle): Promise<Handle> {
  try {
    return await unwrapAs(template);
  } catch (err) {
    if (!(err instanceof HsmError) || err.kind !== 'unavailable') throw err;
    // SoftHSM2 answers CKR_FUNCTION_FAILED when the unwrapped bytes are not a PKCS#8 key of the
    // template's type: the code some HSMs use for a lost connection. Unwrapping the same bytes
    // as a bare session secret with no usage tells the two apart without the service seeing them.
    let opaque: Handle;
    try {
      opaque = await unwrapAs([
        { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
        { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_GENERIC_SECRET },
        { type: pkcs11js.CKA_TOKEN, value: false },
        { type: pkcs11js.CKA_SENSITIVE, value: true },
        { type: pkcs11js.CKA_EXTRACTABLE, value: false },
        { type: pkcs11js.CKA_SIGN, value: false },
        { type: pkcs11js.CKA_VERIFY, value: false },
        { type: pkcs11js.CKA_ENCRYPT, value: false },
        { type: pkcs11js.CKA_DECRYPT, value: false },
        { type: pkcs11js.CKA_DERIVE, value: false },
      ]);
    } catch {
      throw err;
    }
    await destroyQuietly(t, session, opaque);
    throw wrongLength(kind);
  }
}

/** The same attributes as generated key pairs (asymmetric.ts): one usage, nothing else. A
 *  helper is the EC session object that finds the public point (see the file comment). */
function keyPairTemplate(t: TokenAccess, target: BackingKeyRef | 'probe', kind: KeyPairMaterial, helper: boolean): P11.Template {
  const usage = helper ? undefined : kind.usage;
  const template: P11.Template = [
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY },
    { type: pkcs11js.CKA_KEY_TYPE, value: kind.kind === 'rsa' ? pkcs11js.CKK_RSA : pkcs11js.CKK_EC },
    { type: pkcs11js.CKA_TOKEN, value: !helper && target !== 'probe' },
    { type: pkcs11js.CKA_PRIVATE, value: true },
    { type: pkcs11js.CKA_SENSITIVE, value: true },
    { type: pkcs11js.CKA_EXTRACTABLE, value: false },
    { type: pkcs11js.CKA_SIGN, value: helper || usage === 'sign' },
    { type: pkcs11js.CKA_DECRYPT, value: usage === 'decrypt' },
    { type: pkcs11js.CKA_DERIVE, value: helper || usage === 'derive' },
    { type: pkcs11js.CKA_UNWRAP, value: false },
  ];
  if (kind.kind === 'rsa') template.push({ type: pkcs11js.CKA_SIGN_RECOVER, value: false });
  if (!helper && target !== 'probe') {
    template.push({ type: pkcs11js.CKA_ID, value: objectIdFor(target) }, { type: pkcs11js.CKA_LABEL, value: labelFor(target) });
    if (t.hardenedTemplate()) template.push({ type: pkcs11js.CKA_MODIFIABLE, value: false });
  }
  return template;
}

function publicKeyTemplate(t: TokenAccess, target: BackingKeyRef, kind: KeyPairMaterial, jwk: JsonWebKey): P11.Template {
  const template: P11.Template = [
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PUBLIC_KEY },
    { type: pkcs11js.CKA_KEY_TYPE, value: kind.kind === 'rsa' ? pkcs11js.CKK_RSA : pkcs11js.CKK_EC },
    { type: pkcs11js.CKA_TOKEN, value: true },
    { type: pkcs11js.CKA_PRIVATE, value: false },
    { type: pkcs11js.CKA_ID, value: objectIdFor(target) },
    { type: pkcs11js.CKA_LABEL, value: labelFor(target) },
    { type: pkcs11js.CKA_VERIFY, value: kind.usage === 'sign' },
    { type: pkcs11js.CKA_ENCRYPT, value: kind.usage === 'decrypt' },
    { type: pkcs11js.CKA_WRAP, value: false },
  ];
  if (kind.kind === 'rsa') {
    template.push({ type: pkcs11js.CKA_MODULUS, value: Buffer.from(jwk.n!, 'base64url') }, { type: pkcs11js.CKA_PUBLIC_EXPONENT, value: Buffer.from(jwk.e!, 'base64url') });
  } else {
    const point = Buffer.concat([Buffer.from([4]), Buffer.from(jwk.x!, 'base64url'), Buffer.from(jwk.y!, 'base64url')]);
    template.push({ type: pkcs11js.CKA_EC_PARAMS, value: CURVES[kind.curve].params }, { type: pkcs11js.CKA_EC_POINT, value: derOctetString(point) });
  }
  if (t.hardenedTemplate()) template.push({ type: pkcs11js.CKA_MODIFIABLE, value: false });
  return template;
}

/** RSA: the public half is readable on the private key; the modulus must fit the key spec. */
async function rsaPublicJwk(t: TokenAccess, session: Handle, key: Handle, kind: Extract<KeyPairMaterial, { kind: 'rsa' }>): Promise<JsonWebKey> {
  const n = await laneAttribute(t, session, key, pkcs11js.CKA_MODULUS);
  const e = await laneAttribute(t, session, key, pkcs11js.CKA_PUBLIC_EXPONENT);
  if (!n || !e) throw wrongLength(kind);
  const jwk: JsonWebKey = { kty: 'RSA', n: stripZeros(n).toString('base64url'), e: stripZeros(e).toString('base64url') };
  const bits = createPublicKey({ key: jwk, format: 'jwk' }).asymmetricKeyDetails?.modulusLength;
  if (bits !== kind.bits) throw wrongLength(kind);
  return jwk;
}

/** EC: x(Q) by ECDH with G, the sign of y by a test signature (see the file comment). */
async function ecPublicJwk(t: TokenAccess, session: Handle, key: Handle, unwrapAs: UnwrapAs, kind: Extract<KeyPairMaterial, { kind: 'ec' }>): Promise<JsonWebKey> {
  const params = await laneAttribute(t, session, key, pkcs11js.CKA_EC_PARAMS);
  const curve = CURVES[kind.curve];
  if (!params?.equals(curve.params)) throw wrongLength(kind);
  const helper = await unwrapAs(keyPairTemplate(t, 'probe', kind, true));
  try {
    const curveName = NODE_CURVE_NAMES[kind.curve];
    const x = await deriveX(t, session, helper, generatorOf(curveName, curve.bytes), curve.bytes);
    const digest = createHash('sha256').update(POINT_PROBE_MESSAGE).digest();
    let signature: Buffer;
    try {
      signature = await laneSign(t, session, { mechanism: pkcs11js.CKM_ECDSA }, helper, digest, 2 * curve.bytes + 8);
    } catch (err) {
      throw toHsmError(err, 'C_Sign', 'finding the public key of imported EC material');
    }
    for (const prefix of [2, 3]) {
      let point: Buffer;
      try {
        point = ECDH.convertKey(Buffer.concat([Buffer.from([prefix]), x]), curveName, undefined, undefined, 'uncompressed') as Buffer;
      } catch {
        throw wrongLength(kind); // x is not on the curve: cannot happen for a real key
      }
      const jwk: JsonWebKey = { kty: 'EC', crv: kind.curve, x: point.subarray(1, 1 + curve.bytes).toString('base64url'), y: point.subarray(1 + curve.bytes).toString('base64url') };
      const candidate = createPublicKey({ key: jwk, format: 'jwk' });
      if (verifySignature('sha256', POINT_PROBE_MESSAGE, { key: candidate, dsaEncoding: 'ieee-p1363' }, signature)) return jwk;
    }
    throw wrongLength(kind);
  } finally {
    await destroyQuietly(t, session, helper);
  }
}

/** x(d·P) through CKM_ECDH1_DERIVE into a readable session secret, read and destroyed on the
 *  lane's thread ('derive-value'). */
async function deriveX(t: TokenAccess, session: Handle, key: Handle, point: Buffer, bytes: number): Promise<Buffer> {
  const mechanism: P11.Mechanism = {
    mechanism: pkcs11js.CKM_ECDH1_DERIVE,
    parameter: { type: pkcs11js.CK_PARAMS_EC_DH, kdf: pkcs11js.CKD_NULL, publicData: point } as P11.ECDH1,
  };
  let value: Buffer;
  try {
    const answer = await laneOf(t)(
      {
        op: 'derive-value',
        session,
        key,
        mechanism,
        template: [
          { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
          { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_GENERIC_SECRET },
          { type: pkcs11js.CKA_VALUE_LEN, value: bytes },
          { type: pkcs11js.CKA_TOKEN, value: false },
          { type: pkcs11js.CKA_SENSITIVE, value: false },
          { type: pkcs11js.CKA_EXTRACTABLE, value: true },
        ],
      },
      'C_DeriveKey',
    );
    value = Buffer.from(answer.out!);
  } catch (err) {
    if (isTokenFault(err)) throw err;
    throw toHsmError(err, 'C_DeriveKey', 'finding the public key of imported EC material');
  }
  const x = Buffer.alloc(bytes);
  value.copy(x, bytes - Math.min(bytes, value.length), Math.max(0, value.length - bytes));
  return x;
}

const NODE_CURVE_NAMES: Record<EcCurve, string> = { 'P-256': 'prime256v1', 'P-384': 'secp384r1', 'P-521': 'secp521r1', secp256k1: 'secp256k1' };

/** What the EC helper signs to tell Q from −Q (ECDSA over its SHA-256). */
const POINT_PROBE_MESSAGE = Buffer.from('p11kms:public-key-probe', 'ascii');

/** The curve's generator G (uncompressed): the public key of the private scalar 1. */
function generatorOf(curveName: string, scalarBytes: number): Buffer {
  const one = Buffer.alloc(scalarBytes);
  one[scalarBytes - 1] = 1;
  const ecdh = createECDH(curveName);
  ecdh.setPrivateKey(one);
  return ecdh.getPublicKey();
}

function derOctetString(bytes: Buffer): Buffer {
  const length = bytes.length < 0x80 ? Buffer.from([bytes.length]) : bytes.length < 0x100 ? Buffer.from([0x81, bytes.length]) : Buffer.from([0x82, bytes.length >> 8, bytes.length & 0xff]);
  return Buffer.concat([Buffer.from([0x04]), length, bytes]);
}

function stripZeros(value: Buffer): Buffer {
  let i = 0;
  while (i < value.length - 1 && value[i] === 0) i++;
  return value.subarray(i);
}
