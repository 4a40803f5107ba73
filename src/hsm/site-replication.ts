/**
 * Carrying a multi-Region key's material to another site's token without it ever being in clear
 * outside a token (README, "Across sites"). Three kinds of token objects:
 *
 *  - this site's replication key pair (label "p11kms-replication", CKA_ID "replication#site"):
 *    RSA-3072, the private key sensitive, non-extractable, CKA_UNWRAP only; its public key is
 *    what the other site's security officer installs as trusted (`p11kms sites export`);
 *  - a peer site's public replication key (label "p11kms-peer:<Region>"), installed by this
 *    token's security officer with CKA_TRUSTED=true and CKA_WRAP=true (`p11kms sites trust`;
 *    SoftHSM2 lets only the SO set CKA_TRUSTED, and only on public objects:
 *    test/regions-trusted-wrap.test.ts);
 *  - the multi-Region keys themselves, made with CKA_EXTRACTABLE=true and
 *    CKA_WRAP_WITH_TRUSTED=true (custody 'trusted-wrap'), so the token wraps them under a
 *    trusted key only, and nothing else.
 *
 * The wrapping is RSA-OAEP with SHA-1 and MGF1-SHA-1: SoftHSM2 2.6 checks the OAEP parameters of
 * C_WrapKey and C_UnwrapKey and refuses any other hash ("hashAlg must be CKM_SHA_1",
 * CKR_ARGUMENTS_BAD), and unwrapping must happen in the token (no OAEP unpadding in service
 * memory, unlike key import's fallback). OAEP's security does not rest on SHA-1's collision
 * resistance; a token with OAEP-SHA-256 unwrapping would only need REPLICATION_OAEP changed.
 */
import { createHash, createPublicKey } from 'node:crypto';
import pkcs11js from 'pkcs11js';
import type * as P11 from 'pkcs11js';
import type { TokenConfig } from '../config.js';
import { readUlong } from './bytes.js';
import { toHsmError } from './errors.js';
import { oaepMechanism, readAttribute } from './key-import-common.js';
import { findKeyObjects } from './key-objects.js';
import { labelFor, objectIdFor } from './object-naming.js';
import { tokenAccessOf } from './pkcs11-token.js';
import { findTokenSlot, locateSoftHsmModule, prepareSoftHsmDir, softHsmPaths } from './provision.js';
import type { TokenAccess } from './token-access.js';
import { connect, shutDownModule } from './token-module.js';
import { custodyAttributes } from './key-custody.js';
import { type BackingKeyRef, type HashName, type Hsm, HsmError } from './types.js';

type Handle = P11.Handle;

const REPLICATION_ID = Buffer.from('replication#site', 'utf8');
const REPLICATION_LABEL = 'p11kms-replication';
const PEER_LABEL_PREFIX = 'p11kms-peer:';
const REPLICATION_KEY_BITS = 3072;
const REPLICATION_OAEP = oaepMechanism('sha1');

/** A site's public replication key: DER SubjectPublicKeyInfo and its SHA-256 (hex). */
export interface SitePublicKey {
  spki: Buffer;
  fingerprint: string;
}

/** What a travelling secret key is, to unwrap it with the right type and usage. */
export type TravellingMaterial = { kind: 'aes' } | { kind: 'hmac'; hash: HashName };

export const fingerprintOf = (spki: Buffer): string => createHash('sha256').update(spki).digest('hex');

export function spkiToPem(spki: Buffer): string {
  return createPublicKey({ key: spki, format: 'der', type: 'spki' }).export({ type: 'spki', format: 'pem' }).toString();
}

/** A PEM (or DER) RSA public key as DER SPKI; throws a plain Error naming what is wrong. */
export function rsaSpkiOf(text: Buffer): Buffer {
  let key;
  try {
    key = text.includes('-----BEGIN') ? createPublicKey({ key: text.toString('utf8'), format: 'pem' }) : createPublicKey({ key: text, format: 'der', type: 'spki' });
  } catch {
    throw new Error('the file is not a PEM or DER public key');
  }
  if (key.asymmetricKeyType !== 'rsa' || (key.asymmetricKeyDetails?.modulusLength ?? 0) < 2048) {
    throw new Error('a replication key is an RSA public key of at least 2048 bits');
  }
  return key.export({ type: 'spki', format: 'der' });
}

// ---- this site's replication key pair ----------------------------------------------------------

/** This site's public replication key; with `create` the key pair is generated on first need
 *  (slow lane), otherwise undefined when absent. */
export async function siteReplicationKey(hsm: Hsm, create: boolean): Promise<SitePublicKey | undefined> {
  const t = tokenAccessOf(hsm);
  const found = await t.withSession((session) => findReplicationPublicKey(t, session));
  if (found) return found;
  if (!create) return undefined;
  await t.slowSession(async (session, call) => {
    if (findReplicationPublicKey(t, session)) return; // a concurrent first need made it
    const identity: P11.Template = [
      { type: pkcs11js.CKA_TOKEN, value: true },
      { type: pkcs11js.CKA_ID, value: REPLICATION_ID },
      { type: pkcs11js.CKA_LABEL, value: REPLICATION_LABEL },
    ];
    const publicTemplate: P11.Template = [
      ...identity,
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PUBLIC_KEY },
      { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_RSA },
      { type: pkcs11js.CKA_MODULUS_BITS, value: REPLICATION_KEY_BITS },
      { type: pkcs11js.CKA_PUBLIC_EXPONENT, value: Buffer.from([1, 0, 1]) },
      { type: pkcs11js.CKA_PRIVATE, value: false },
      // Only the peer's copy (installed trusted there) wraps; this one is for export.
      { type: pkcs11js.CKA_WRAP, value: false },
      { type: pkcs11js.CKA_ENCRYPT, value: false },
      { type: pkcs11js.CKA_VERIFY, value: false },
    ];
    const privateTemplate: P11.Template = [
      ...identity,
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY },
      { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_RSA },
      { type: pkcs11js.CKA_PRIVATE, value: true },
      { type: pkcs11js.CKA_SENSITIVE, value: true },
      { type: pkcs11js.CKA_EXTRACTABLE, value: false },
      { type: pkcs11js.CKA_UNWRAP, value: true },
      { type: pkcs11js.CKA_DECRYPT, value: false },
      { type: pkcs11js.CKA_SIGN, value: false },
      { type: pkcs11js.CKA_DERIVE, value: false },
    ];
    try {
      await call({ op: 'generate-key-pair', session, mechanism: { mechanism: pkcs11js.CKM_RSA_PKCS_KEY_PAIR_GEN }, publicTemplate, privateTemplate }, 'C_GenerateKeyPair');
    } catch (err) {
      const e = toHsmError(err, 'C_GenerateKeyPair');
      throw new HsmError(e.kind, e.ckr, e.fn, `creating the site replication key: ${e.message}`);
    }
  }, true);
  const made = await t.withSession((session) => findReplicationPublicKey(t, session));
  if (!made) throw new HsmError('key-not-found', 'CKR_OBJECT_HANDLE_INVALID', 'C_FindObjects', 'the site replication key is missing right after its creation');
  return made;
}

function findReplicationPublicKey(t: TokenAccess, session: Handle): SitePublicKey | undefined {
  const [handle] = findObjects(t.p, session, [
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PUBLIC_KEY },
    { type: pkcs11js.CKA_ID, value: REPLICATION_ID },
  ]);
  if (handle === undefined) return undefined;
  const spki = rsaSpkiOfObject(t.p, session, handle);
  return { spki, fingerprint: fingerprintOf(spki) };
}

// ---- peers' trusted keys -----------------------------------------------------------------------

/** The fingerprints of the trusted replication keys installed for the peer Region `region`. */
export function trustedPeerKeys(hsm: Hsm, region: string): Promise<string[]> {
  const t = tokenAccessOf(hsm);
  return t.withSession((session) => findTrustedPeerKeys(t.p, session, region).map((k) => k.fingerprint));
}

function findTrustedPeerKeys(p: P11.PKCS11, session: Handle, region: string): { handle: Handle; fingerprint: string }[] {
  const handles = findObjects(p, session, [
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PUBLIC_KEY },
    { type: pkcs11js.CKA_LABEL, value: `${PEER_LABEL_PREFIX}${region}` },
    { type: pkcs11js.CKA_TRUSTED, value: true },
  ]);
  return handles.map((handle) => ({ handle, fingerprint: fingerprintOf(rsaSpkiOfObject(p, session, handle)) }));
}

/**
 * Installs a peer site's public replication key as a trusted wrapping key, logged in as the
 * token's security officer on a connection of its own (the SO cannot log in while the user is).
 * Refuses when the key's fingerprint is not `fingerprint` (what the peer's operator read out),
 * and is idempotent for a key already installed. The SO PIN is never logged nor echoed.
 */
export function installTrustedPeerKey(token: TokenConfig, dataDir: string, soPin: string, region: string, spki: Buffer, fingerprint: string): 'installed' | 'already-trusted' {
  const actual = fingerprintOf(spki);
  if (actual !== fingerprint.toLowerCase().replace(/[:\s]/g, '')) {
    throw new HsmError('other', 'CKR_ARGUMENTS_BAD', 'sites trust', `the public key's SHA-256 fingerprint is ${actual}, not the one given: nothing installed`);
  }
  let modulePath = token.module;
  if (modulePath === undefined) {
    prepareSoftHsmDir(softHsmPaths(dataDir));
    modulePath = locateSoftHsmModule();
  }
  const connection = connect(modulePath, () => {}, (p) => {
    const slot = findTokenSlot(p, token.label);
    if (slot === undefined) throw new HsmError('unavailable', 'CKR_TOKEN_NOT_PRESENT', 'C_GetTokenInfo', `no token labelled '${token.label}' (start the service or run \`p11kms sites export\` once first)`);
    return { slot, pin: '' };
  });
  const { p, slot } = connection;
  let fn = 'C_OpenSession';
  try {
    const session = p.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
    fn = 'C_Login';
    try {
      p.C_Login(session, pkcs11js.CKU_SO, soPin);
    } catch (err) {
      const e = toHsmError(err, 'C_Login');
      if (e.ckr === 'CKR_PIN_INCORRECT') throw new HsmError('other', e.ckr, 'C_Login', `security officer login to token '${token.label}' failed: wrong SO PIN (CKR_PIN_INCORRECT)`);
      throw e;
    }
    fn = 'C_FindObjects';
    if (findTrustedPeerKeys(p, session, region).some((k) => k.fingerprint === actual)) return 'already-trusted';
    const jwk = createPublicKey({ key: spki, format: 'der', type: 'spki' }).export({ format: 'jwk' });
    fn = 'C_CreateObject';
    p.C_CreateObject(session, [
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PUBLIC_KEY },
      { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_RSA },
      { type: pkcs11js.CKA_TOKEN, value: true },
      { type: pkcs11js.CKA_PRIVATE, value: false },
      { type: pkcs11js.CKA_TRUSTED, value: true },
      { type: pkcs11js.CKA_WRAP, value: true },
      { type: pkcs11js.CKA_ENCRYPT, value: false },
      { type: pkcs11js.CKA_VERIFY, value: false },
      { type: pkcs11js.CKA_MODULUS, value: Buffer.from(jwk.n!, 'base64url') },
      { type: pkcs11js.CKA_PUBLIC_EXPONENT, value: Buffer.from(jwk.e!, 'base64url') },
      { type: pkcs11js.CKA_LABEL, value: `${PEER_LABEL_PREFIX}${region}` },
      { type: pkcs11js.CKA_ID, value: Buffer.from(`peer#${region}`, 'utf8') },
    ]);
    fn = 'C_Logout';
    p.C_Logout(session);
    return 'installed';
  } catch (err) {
    throw err instanceof HsmError ? err : toHsmError(err, fn, 'installing a trusted peer key');
  } finally {
    shutDownModule(p, slot);
  }
}

// ---- wrapping for a peer and unwrapping from one -----------------------------------------------

/**
 * The secret key of `ref` wrapped (RSA-OAEP) under the trusted key of `region` whose
 * fingerprint is `fingerprint`. The token decides: a key without CKA_WRAP_WITH_TRUSTED or a
 * wrapping key without CKA_TRUSTED is refused (CKR_KEY_NOT_WRAPPABLE, CKR_KEY_UNEXTRACTABLE).
 */
export function wrapForPeer(hsm: Hsm, ref: BackingKeyRef, region: string, fingerprint: string): Promise<Buffer> {
  const t = tokenAccessOf(hsm);
  return t.withSession((session) => {
    const peer = findTrustedPeerKeys(t.p, session, region).find((k) => k.fingerprint === fingerprint.toLowerCase());
    if (!peer) {
      throw new HsmError('key-not-found', 'CKR_WRAPPING_KEY_HANDLE_INVALID', 'C_FindObjects', `no trusted replication key of ${region} with fingerprint ${fingerprint} in token '${t.label}' (run \`p11kms sites trust\`)`);
    }
    const key = secretKeyOf(t.p, session, ref);
    try {
      return Buffer.from(t.p.C_WrapKey(session, REPLICATION_OAEP, peer.handle, key, Buffer.alloc(REPLICATION_KEY_BITS / 8 + 512)));
    } catch (err) {
      throw toHsmError(err, 'C_WrapKey', `wrapping ${ref.keyId} version ${ref.version} for ${region}`);
    }
  });
}

/**
 * Unwraps material a peer wrapped under this site's replication key into the token object of
 * `ref`: sensitive, and again extractable only under a trusted key, with the usage of its kind.
 */
export async function unwrapFromPeer(hsm: Hsm, ref: BackingKeyRef, material: TravellingMaterial, wrapped: Buffer): Promise<void> {
  const t = tokenAccessOf(hsm);
  const template: P11.Template = [
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
    { type: pkcs11js.CKA_KEY_TYPE, value: material.kind === 'aes' ? pkcs11js.CKK_AES : pkcs11js.CKK_GENERIC_SECRET },
    { type: pkcs11js.CKA_TOKEN, value: true },
    { type: pkcs11js.CKA_PRIVATE, value: true },
    ...custodyAttributes('trusted-wrap'),
    { type: pkcs11js.CKA_ENCRYPT, value: material.kind === 'aes' },
    { type: pkcs11js.CKA_DECRYPT, value: material.kind === 'aes' },
    { type: pkcs11js.CKA_SIGN, value: material.kind === 'hmac' },
    { type: pkcs11js.CKA_VERIFY, value: material.kind === 'hmac' },
    { type: pkcs11js.CKA_WRAP, value: false },
    { type: pkcs11js.CKA_UNWRAP, value: false },
    { type: pkcs11js.CKA_DERIVE, value: false },
    { type: pkcs11js.CKA_ID, value: objectIdFor(ref) },
    { type: pkcs11js.CKA_LABEL, value: labelFor(ref) },
    // Last, and CKA_MODIFIABLE after CKA_COPYABLE: SoftHSM2 2.6 applies an unwrap template in
    // order, and nothing more can be set once the object is not modifiable
    // (CKR_ATTRIBUTE_READ_ONLY; test/regions-trusted-wrap.test.ts).
    ...(t.hardenedTemplate() ? [{ type: pkcs11js.CKA_COPYABLE, value: false }, { type: pkcs11js.CKA_MODIFIABLE, value: false }] : []),
  ];
  await t.slowSession(async (session, slowCall) => {
    const [privateKey] = findObjects(t.p, session, [
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY },
      { type: pkcs11js.CKA_ID, value: REPLICATION_ID },
    ]);
    if (privateKey === undefined) throw new HsmError('key-not-found', 'CKR_UNWRAPPING_KEY_HANDLE_INVALID', 'C_FindObjects', `token '${t.label}' has no site replication key (run \`p11kms sites export\`)`);
    if (findKeyObjects(t.p, session, ref).length > 0) throw new HsmError('other', 'CKR_ARGUMENTS_BAD', 'C_UnwrapKey', `${ref.keyId} version ${ref.version} is already in token '${t.label}'`);
    try {
      await slowCall({ op: 'unwrap', session, mechanism: REPLICATION_OAEP, key: privateKey, wrapped, template }, 'C_UnwrapKey');
    } catch (err) {
      const e = toHsmError(err, 'C_UnwrapKey');
      throw new HsmError(e.kind === 'other' ? 'invalid-ciphertext' : e.kind, e.ckr, 'C_UnwrapKey', `unwrapping ${ref.keyId} version ${ref.version} from a peer: ${e.ckr}`);
    }
  }, true);
  t.forget(ref);
}

// ---- helpers -----------------------------------------------------------------------------------

function secretKeyOf(p: P11.PKCS11, session: Handle, ref: BackingKeyRef): Handle {
  const key = findKeyObjects(p, session, ref).find((h) => readUlong(p.C_GetAttributeValue(session, h, [{ type: pkcs11js.CKA_CLASS }])[0]!.value) === pkcs11js.CKO_SECRET_KEY);
  if (key === undefined) throw new HsmError('key-not-found', 'CKR_OBJECT_HANDLE_INVALID', 'C_FindObjects', `no secret key object for ${ref.keyId} version ${ref.version}`);
  return key;
}

function findObjects(p: P11.PKCS11, session: Handle, template: P11.Template): Handle[] {
  let fn = 'C_FindObjectsInit';
  try {
    p.C_FindObjectsInit(session, template);
    fn = 'C_FindObjects';
    const found = p.C_FindObjects(session, 64);
    fn = 'C_FindObjectsFinal';
    p.C_FindObjectsFinal(session);
    return found;
  } catch (err) {
    throw toHsmError(err, fn, 'looking up replication keys');
  }
}

function rsaSpkiOfObject(p: P11.PKCS11, session: Handle, handle: Handle): Buffer {
  const t = { p } as TokenAccess;
  const n = readAttribute(t, session, handle, pkcs11js.CKA_MODULUS);
  const e = readAttribute(t, session, handle, pkcs11js.CKA_PUBLIC_EXPONENT);
  if (!n || !e) throw new HsmError('other', 'CKR_ATTRIBUTE_TYPE_INVALID', 'C_GetAttributeValue', 'cannot read a replication public key');
  return createPublicKey({ key: { kty: 'RSA', n: n.toString('base64url'), e: e.toString('base64url') }, format: 'jwk' }).export({ type: 'spki', format: 'der' });
}
