/**
 * What SoftHSM2 enforces of CKA_WRAP_WITH_TRUSTED and CKA_TRUSTED, the PKCS#11 attributes that
 * carry a multi-Region key's material to another site's token (src/hsm/site-replication.ts):
 * measured on a fresh token by an independent PKCS#11 application (a child process),
 * so the README's statements about them stay true for the SoftHSM2 installed.
 */
import { execFile, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { locateSoftHsmModule } from '../src/hsm/provision.js';
import { tempDir } from './helpers/service.js';

const repoRoot = fileURLToPath(new URL('..', import.meta.url));
const SO_PIN = '87654321';
const USER_PIN = '12345678';

// The probe: the SO installs a peer's RSA public key as trusted; the user then tries every way
// around it. Each entry is CKR_OK, a CKR_ name, or what the call returned.
const PROBE = String.raw`import { createRequire } from 'node:module';
const require = createRequire(process.env.REPO + '/package.json');
const pk = require('pkcs11js');
const crypto = require('node:crypto');
const p = new pk.PKCS11();
p.load(process.env.P11_LIB);
p.C_Initialize();
const rv = (fn) => { try { const r = fn(); return r === undefined ? 'CKR_OK' : r; } catch (e) { return String(e.message).split(':')[0]; } };
const out = {};
const slot = p.C_GetSlotList(true).find((s) => p.C_GetTokenInfo(s).label.trimEnd() === process.env.P11_LABEL);
const T = (type, value) => ({ type, value });
const aes = (extra) => [T(pk.CKA_CLASS, pk.CKO_SECRET_KEY), T(pk.CKA_KEY_TYPE, pk.CKK_AES), T(pk.CKA_VALUE_LEN, 32), ...extra];
const attr = (s, h, type) => rv(() => p.C_GetAttributeValue(s, h, [{ type }])[0].value[0] === 1);

// SO session: install a trusted wrapping key (an RSA public key made outside the token, as the peer's would be).
const { publicKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = publicKey.export({ format: 'jwk' });
const b = (s) => Buffer.from(s, 'base64url');
const rsaPub = (trusted, priv) => [T(pk.CKA_CLASS, pk.CKO_PUBLIC_KEY), T(pk.CKA_KEY_TYPE, pk.CKK_RSA), T(pk.CKA_TOKEN, true), T(pk.CKA_PRIVATE, priv), T(pk.CKA_WRAP, true), T(pk.CKA_MODULUS, b(jwk.n)), T(pk.CKA_PUBLIC_EXPONENT, b(jwk.e)), T(pk.CKA_LABEL, 'peer'), ...(trusted === undefined ? [] : [T(pk.CKA_TRUSTED, trusted)])];

const so = p.C_OpenSession(slot, pk.CKF_SERIAL_SESSION | pk.CKF_RW_SESSION);
p.C_Login(so, pk.CKU_SO, process.env.SO_PIN);
let trustedPub;
out.soCreateTrustedPublic = rv(() => { trustedPub = p.C_CreateObject(so, rsaPub(true, false)); });
out.soCreateTrustedPrivateObject = rv(() => p.C_CreateObject(so, rsaPub(true, true)));
out.soCreateTrustedAesPublicObject = rv(() => void p.C_GenerateKey(so, { mechanism: pk.CKM_AES_KEY_GEN }, aes([T(pk.CKA_TOKEN, true), T(pk.CKA_PRIVATE, false), T(pk.CKA_WRAP, true), T(pk.CKA_TRUSTED, true)])));
p.C_Logout(so);
p.C_CloseSession(so);

const s = p.C_OpenSession(slot, pk.CKF_SERIAL_SESSION | pk.CKF_RW_SESSION);
p.C_Login(s, pk.CKU_USER, process.env.USER_PIN);
out.userCreateTrustedPublic = rv(() => p.C_CreateObject(s, rsaPub(true, false)));
out.userGenerateTrustedAes = rv(() => p.C_GenerateKey(s, { mechanism: pk.CKM_AES_KEY_GEN }, aes([T(pk.CKA_TOKEN, false), T(pk.CKA_WRAP, true), T(pk.CKA_TRUSTED, true)])));
const untrustedPub = p.C_CreateObject(s, rsaPub(undefined, false));
out.userSetTrustedOnUntrusted = rv(() => p.C_SetAttributeValue(s, untrustedPub, [T(pk.CKA_TRUSTED, true)]));
const untrustedAes = p.C_GenerateKey(s, { mechanism: pk.CKM_AES_KEY_GEN }, aes([T(pk.CKA_TOKEN, false), T(pk.CKA_WRAP, true)]));
// find the SO-installed key from the user session
p.C_FindObjectsInit(s, [T(pk.CKA_CLASS, pk.CKO_PUBLIC_KEY), T(pk.CKA_LABEL, 'peer')]);
const peers = p.C_FindObjects(s, 10); p.C_FindObjectsFinal(s);
const trusted = peers.find((h) => attr(s, h, pk.CKA_TRUSTED) === true);
out.userSeesTrustedKey = trusted !== undefined;

const mrk = p.C_GenerateKey(s, { mechanism: pk.CKM_AES_KEY_GEN }, aes([T(pk.CKA_TOKEN, false), T(pk.CKA_SENSITIVE, true), T(pk.CKA_EXTRACTABLE, true), T(pk.CKA_WRAP_WITH_TRUSTED, true), T(pk.CKA_ENCRYPT, true)]));
const plain = p.C_GenerateKey(s, { mechanism: pk.CKM_AES_KEY_GEN }, aes([T(pk.CKA_TOKEN, false), T(pk.CKA_SENSITIVE, true), T(pk.CKA_EXTRACTABLE, false), T(pk.CKA_ENCRYPT, true)]));
const extractableOnly = p.C_GenerateKey(s, { mechanism: pk.CKM_AES_KEY_GEN }, aes([T(pk.CKA_TOKEN, false), T(pk.CKA_SENSITIVE, true), T(pk.CKA_EXTRACTABLE, true), T(pk.CKA_ENCRYPT, true)]));
const oaep = { mechanism: pk.CKM_RSA_PKCS_OAEP, parameter: { type: pk.CK_PARAMS_RSA_OAEP, hashAlg: pk.CKM_SHA_1, mgf: pk.CKG_MGF1_SHA1, source: 1 } };
const wrap = (mech, w, k) => rv(() => p.C_WrapKey(s, mech, w, k, Buffer.alloc(512)).length);
out.mrk = {
  getValue: rv(() => p.C_GetAttributeValue(s, mrk, [{ type: pk.CKA_VALUE }])),
  wrapUnderUntrustedAes: wrap({ mechanism: pk.CKM_AES_KEY_WRAP_PAD }, untrustedAes, mrk),
  wrapUnderUntrustedRsa: wrap(oaep, untrustedPub, mrk),
  wrapUnderTrustedRsa: trusted ? wrap(oaep, trusted, mrk) : 'no trusted key',
  clearWrapWithTrusted: rv(() => p.C_SetAttributeValue(s, mrk, [T(pk.CKA_WRAP_WITH_TRUSTED, false)])),
  clearSensitive: rv(() => p.C_SetAttributeValue(s, mrk, [T(pk.CKA_SENSITIVE, false)])),
  setExtractableFalse: rv(() => p.C_SetAttributeValue(s, mrk, [T(pk.CKA_EXTRACTABLE, false)])),
};
out.nonExtractable = {
  getValue: rv(() => p.C_GetAttributeValue(s, plain, [{ type: pk.CKA_VALUE }])),
  wrapUnderUntrustedAes: wrap({ mechanism: pk.CKM_AES_KEY_WRAP_PAD }, untrustedAes, plain),
  wrapUnderTrustedRsa: trusted ? wrap(oaep, trusted, plain) : 'no trusted key',
  setWrapWithTrustedTrue: rv(() => p.C_SetAttributeValue(s, plain, [T(pk.CKA_WRAP_WITH_TRUSTED, true)])),
  setExtractableTrue: rv(() => p.C_SetAttributeValue(s, plain, [T(pk.CKA_EXTRACTABLE, true)])),
};
out.extractableWithoutWrapWithTrusted = {
  wrapUnderUntrustedAes: wrap({ mechanism: pk.CKM_AES_KEY_WRAP_PAD }, untrustedAes, extractableOnly),
  setWrapWithTrustedTrue: rv(() => p.C_SetAttributeValue(s, extractableOnly, [T(pk.CKA_WRAP_WITH_TRUSTED, true)])),
};
const oaep256 = { mechanism: pk.CKM_RSA_PKCS_OAEP, parameter: { type: pk.CK_PARAMS_RSA_OAEP, hashAlg: pk.CKM_SHA256, mgf: pk.CKG_MGF1_SHA256, source: 1 } };
out.mrk.wrapUnderTrustedRsaOaepSha256 = trusted ? wrap(oaep256, trusted, mrk) : 'no trusted key';
// Unwrapping into the token (what a peer site does): an in-token RSA pair, the extractable key wrapped under it.
const pair = p.C_GenerateKeyPair(s, { mechanism: pk.CKM_RSA_PKCS_KEY_PAIR_GEN }, [T(pk.CKA_TOKEN, false), T(pk.CKA_MODULUS_BITS, 2048), T(pk.CKA_PUBLIC_EXPONENT, Buffer.from([1, 0, 1])), T(pk.CKA_WRAP, true)], [T(pk.CKA_TOKEN, false), T(pk.CKA_SENSITIVE, true), T(pk.CKA_EXTRACTABLE, false), T(pk.CKA_UNWRAP, true)]);
const wrappedForUnwrap = p.C_WrapKey(s, oaep, pair.publicKey, extractableOnly, Buffer.alloc(512));
const unwrapAs = (mech, extra) => rv(() => { p.C_UnwrapKey(s, mech, pair.privateKey, wrappedForUnwrap, [T(pk.CKA_CLASS, pk.CKO_SECRET_KEY), T(pk.CKA_KEY_TYPE, pk.CKK_AES), T(pk.CKA_TOKEN, false), ...extra]); });
out.unwrap = {
  oaepSha1WithWrapWithTrusted: unwrapAs(oaep, [T(pk.CKA_SENSITIVE, true), T(pk.CKA_EXTRACTABLE, true), T(pk.CKA_WRAP_WITH_TRUSTED, true)]),
  oaepSha256: unwrapAs(oaep256, []),
  notModifiable: unwrapAs(oaep, [T(pk.CKA_MODIFIABLE, false)]),
  notCopyable: unwrapAs(oaep, [T(pk.CKA_COPYABLE, false)]),
  notModifiableThenNotCopyable: unwrapAs(oaep, [T(pk.CKA_MODIFIABLE, false), T(pk.CKA_COPYABLE, false)]),
  notCopyableThenNotModifiable: unwrapAs(oaep, [T(pk.CKA_COPYABLE, false), T(pk.CKA_MODIFIABLE, false)]),
};
if (trusted) out.userClearTrusted = rv(() => p.C_SetAttributeValue(s, trusted, [T(pk.CKA_TRUSTED, false)]));
out.extractableWithoutWrapWithTrusted.wrapAfterSettingIt = wrap({ mechanism: pk.CKM_AES_KEY_WRAP_PAD }, untrustedAes, extractableOnly);
out.mrk.copyClearingWrapWithTrusted = rv(() => { p.C_CopyObject(s, mrk, [T(pk.CKA_WRAP_WITH_TRUSTED, false)]); });
out.mrk.copyClearingSensitive = rv(() => { p.C_CopyObject(s, mrk, [T(pk.CKA_SENSITIVE, false)]); });
if (trusted) out.copyOfTrustedStaysTrusted = rv(() => attr(s, p.C_CopyObject(s, trusted, [T(pk.CKA_TOKEN, false)]), pk.CKA_TRUSTED));
const attacker = b(crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ format: 'jwk' }).n);
if (trusted) out.userCopyTrustedWithOwnModulus = rv(() => { const h = p.C_CopyObject(s, trusted, [T(pk.CKA_MODULUS, attacker)]); return 'COPIED, trusted=' + attr(s, h, pk.CKA_TRUSTED); });
if (trusted) out.userSetModulusOfTrusted = rv(() => p.C_SetAttributeValue(s, trusted, [T(pk.CKA_MODULUS, attacker)]));
if (trusted) out.userDestroyTrusted = rv(() => { p.C_DestroyObject(s, trusted); });
p.C_Logout(s);
p.C_Finalize();
process.stdout.write(JSON.stringify(out));
`;

let dir: string;
let seen: Record<string, any>;

beforeAll(async () => {
  dir = tempDir('p11kms-trusted-');
  const conf = path.join(dir, 'softhsm2.conf');
  fs.mkdirSync(path.join(dir, 'tokens'));
  fs.writeFileSync(conf, `directories.tokendir = ${path.join(dir, 'tokens')}\nobjectstore.backend = file\nlog.level = ERROR\n`);
  const env = { PATH: process.env.PATH ?? '', SOFTHSM2_CONF: conf };
  execFileSync('softhsm2-util', ['--init-token', '--free', '--label', 'trust-probe', '--so-pin', SO_PIN, '--pin', USER_PIN], { env, stdio: 'ignore' });
  const childEnv = { ...env, REPO: repoRoot, P11_LIB: locateSoftHsmModule(), P11_LABEL: 'trust-probe', SO_PIN, USER_PIN };
  seen = await new Promise((resolve, reject) =>
    execFile(process.execPath, ['--input-type=module', '-e', PROBE], { cwd: repoRoot, env: childEnv, timeout: 30_000 }, (err, stdout, stderr) =>
      err ? reject(new Error(`probe failed: ${err.message}\n${stderr}`)) : resolve(JSON.parse(stdout)),
    ),
  );
}, 60_000);
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('CKA_TRUSTED on SoftHSM2', () => {
  it('only the security officer sets it, and only on public (non-private) objects', () => {
    expect(seen.soCreateTrustedPublic).toBe('CKR_OK');
    expect(seen.soCreateTrustedAesPublicObject).toBe('CKR_OK');
    expect(seen.soCreateTrustedPrivateObject).toBe('CKR_USER_NOT_LOGGED_IN');
    expect(seen.userCreateTrustedPublic).toBe('CKR_ATTRIBUTE_READ_ONLY');
    expect(seen.userGenerateTrustedAes).toBe('CKR_ATTRIBUTE_READ_ONLY');
    expect(seen.userSetTrustedOnUntrusted).toBe('CKR_ATTRIBUTE_READ_ONLY');
  });

  it("the user sees the trusted key, cannot untrust it, re-point it or copy it onto another modulus, but can destroy it", () => {
    expect(seen.userSeesTrustedKey).toBe(true);
    expect(seen.userClearTrusted).toBe('CKR_ATTRIBUTE_READ_ONLY');
    expect(seen.userSetModulusOfTrusted).toBe('CKR_ATTRIBUTE_READ_ONLY');
    expect(seen.userCopyTrustedWithOwnModulus).toBe('CKR_ATTRIBUTE_READ_ONLY');
    expect(seen.copyOfTrustedStaysTrusted).toBe(true);
    expect(seen.userDestroyTrusted).toBe('CKR_OK');
  });
});

describe('CKA_WRAP_WITH_TRUSTED on SoftHSM2', () => {
  it('a sensitive, extractable key with it wraps only under a trusted key and never shows its value', () => {
    expect(seen.mrk.getValue).toBe('CKR_ATTRIBUTE_SENSITIVE');
    expect(seen.mrk.wrapUnderUntrustedAes).toBe('CKR_KEY_NOT_WRAPPABLE');
    expect(seen.mrk.wrapUnderUntrustedRsa).toBe('CKR_KEY_NOT_WRAPPABLE');
    expect(seen.mrk.wrapUnderTrustedRsa).toBe(256); // RSA-OAEP under the 2048-bit peer key
  });

  it('once set it stays: not cleared, not copied away, sensitivity kept; extractability can only be dropped', () => {
    expect(seen.mrk.clearWrapWithTrusted).toBe('CKR_ATTRIBUTE_READ_ONLY');
    expect(seen.mrk.copyClearingWrapWithTrusted).toBe('CKR_ATTRIBUTE_READ_ONLY');
    expect(seen.mrk.clearSensitive).toBe('CKR_ATTRIBUTE_READ_ONLY');
    expect(seen.mrk.copyClearingSensitive).toBe('CKR_ATTRIBUTE_READ_ONLY');
    expect(seen.mrk.setExtractableFalse).toBe('CKR_OK');
  });

  it('OAEP wraps and unwraps with SHA-1 only; in an unwrap template CKA_MODIFIABLE=false must come last', () => {
    expect(seen.mrk.wrapUnderTrustedRsaOaepSha256).toBe('CKR_ARGUMENTS_BAD');
    expect(seen.unwrap.oaepSha256).toBe('CKR_ARGUMENTS_BAD');
    expect(seen.unwrap.oaepSha1WithWrapWithTrusted).toBe('CKR_OK');
    expect(seen.unwrap.notModifiable).toBe('CKR_OK');
    expect(seen.unwrap.notCopyable).toBe('CKR_OK');
    // SoftHSM2 applies the template in order: once not modifiable, nothing more can be set.
    expect(seen.unwrap.notModifiableThenNotCopyable).toBe('CKR_ATTRIBUTE_READ_ONLY');
    expect(seen.unwrap.notCopyableThenNotModifiable).toBe('CKR_OK');
  });

  it('it can only be given at creation: an extractable key without it wraps under any key, for good', () => {
    expect(seen.extractableWithoutWrapWithTrusted.wrapUnderUntrustedAes).toBe(40);
    expect(seen.extractableWithoutWrapWithTrusted.setWrapWithTrustedTrue).toBe('CKR_ATTRIBUTE_READ_ONLY');
    expect(seen.extractableWithoutWrapWithTrusted.wrapAfterSettingIt).toBe(40);
  });

  it('a non-extractable key (every key p11kms makes but multi-Region symmetric and HMAC ones) refuses to be wrapped under any key, trusted or not', () => {
    expect(seen.nonExtractable.getValue).toBe('CKR_ATTRIBUTE_SENSITIVE');
    expect(seen.nonExtractable.wrapUnderUntrustedAes).toBe('CKR_KEY_UNEXTRACTABLE');
    expect(seen.nonExtractable.wrapUnderTrustedRsa).toBe('CKR_KEY_UNEXTRACTABLE');
    expect(seen.nonExtractable.setExtractableTrue).toBe('CKR_ATTRIBUTE_READ_ONLY');
    expect(seen.nonExtractable.setWrapWithTrustedTrue).toBe('CKR_ATTRIBUTE_READ_ONLY');
  });
});
