/**
 * The custody proof of a site's token, read by an independent PKCS#11 application (a child
 * process, as test/regions-trusted-wrap.test.ts does): for every private and secret object, whether
 * its value can be read, and for every p11kms secret key whether C_WrapKey works under an
 * untrusted AES key, an untrusted RSA key and each installed trusted peer key. Run it only while
 * no service holds the token.
 */
import { execFile } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { locateSoftHsmModule } from '../../src/hsm/provision.js';

const repoRoot = fileURLToPath(new URL('../..', import.meta.url));

const PROBE = String.raw`import { createRequire } from 'node:module';
const require = createRequire(process.env.REPO + '/package.json');
const fs = require('node:fs');
const crypto = require('node:crypto');
const pk = require('pkcs11js');
const p = new pk.PKCS11();
p.load(process.env.P11_LIB);
p.C_Initialize();
const rv = (fn) => { try { const r = fn(); return r === undefined ? 'CKR_OK' : r; } catch (e) { return String(e.message).split(':')[0]; } };
const T = (type, value) => ({ type, value });
const slot = p.C_GetSlotList(true).find((s) => p.C_GetTokenInfo(s).label.trimEnd() === 'p11kms');
const s = p.C_OpenSession(slot, pk.CKF_SERIAL_SESSION | pk.CKF_RW_SESSION);
p.C_Login(s, pk.CKU_USER, fs.readFileSync(process.env.PIN_FILE, 'utf8').trim());
p.C_FindObjectsInit(s, []);
const all = p.C_FindObjects(s, 10000);
p.C_FindObjectsFinal(s);
const get = (h, type) => { try { return p.C_GetAttributeValue(s, h, [{ type }])[0].value; } catch { return undefined; } };
const ulong = (b) => b.readUInt32LE(0) + (b.length > 4 ? b.readUInt32LE(4) * 2 ** 32 : 0);
const untrustedAes = p.C_GenerateKey(s, { mechanism: pk.CKM_AES_KEY_GEN }, [T(pk.CKA_CLASS, pk.CKO_SECRET_KEY), T(pk.CKA_KEY_TYPE, pk.CKK_AES), T(pk.CKA_VALUE_LEN, 32), T(pk.CKA_TOKEN, false), T(pk.CKA_WRAP, true)]);
const jwk = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ format: 'jwk' });
const untrustedRsa = p.C_CreateObject(s, [T(pk.CKA_CLASS, pk.CKO_PUBLIC_KEY), T(pk.CKA_KEY_TYPE, pk.CKK_RSA), T(pk.CKA_TOKEN, false), T(pk.CKA_WRAP, true), T(pk.CKA_MODULUS, Buffer.from(jwk.n, 'base64url')), T(pk.CKA_PUBLIC_EXPONENT, Buffer.from(jwk.e, 'base64url'))]);
const oaep = { mechanism: pk.CKM_RSA_PKCS_OAEP, parameter: { type: pk.CK_PARAMS_RSA_OAEP, hashAlg: pk.CKM_SHA_1, mgf: pk.CKG_MGF1_SHA1, source: 1 } };
const trusted = all.filter((h) => ulong(get(h, pk.CKA_CLASS)) === pk.CKO_PUBLIC_KEY && get(h, pk.CKA_TRUSTED)?.[0] === 1);
const wrap = (mech, w, k) => rv(() => p.C_WrapKey(s, mech, w, k, Buffer.alloc(1024)).length);
const out = { objects: [], trustedLabels: trusted.map((h) => get(h, pk.CKA_LABEL).toString()) };
for (const h of all) {
  const cls = ulong(get(h, pk.CKA_CLASS));
  if (cls !== pk.CKO_SECRET_KEY && cls !== pk.CKO_PRIVATE_KEY) continue;
  const label = get(h, pk.CKA_LABEL)?.toString() ?? '';
  const o = { label, class: cls === pk.CKO_SECRET_KEY ? 'secret' : 'private', sensitive: get(h, pk.CKA_SENSITIVE)?.[0] === 1, extractable: get(h, pk.CKA_EXTRACTABLE)?.[0] === 1, wrapWithTrusted: get(h, pk.CKA_WRAP_WITH_TRUSTED)?.[0] === 1 };
  const secretPart = ulong(get(h, pk.CKA_KEY_TYPE)) === pk.CKK_RSA ? pk.CKA_PRIVATE_EXPONENT : pk.CKA_VALUE; // EC private keys keep theirs in CKA_VALUE
  o.value = rv(() => p.C_GetAttributeValue(s, h, [{ type: secretPart }]) && 'READABLE');
  if (cls === pk.CKO_SECRET_KEY) {
    o.wrapUntrustedAes = wrap({ mechanism: pk.CKM_AES_KEY_WRAP_PAD }, untrustedAes, h);
    o.wrapUntrustedRsa = wrap(oaep, untrustedRsa, h);
    o.wrapTrusted = trusted.map((t) => wrap(oaep, t, h));
  } else {
    o.wrapUntrustedAes = wrap({ mechanism: pk.CKM_AES_KEY_WRAP_PAD }, untrustedAes, h);
  }
  out.objects.push(o);
}
p.C_Logout(s);
p.C_Finalize();
process.stdout.write(JSON.stringify(out));
`;

export interface CustodyObject {
  label: string;
  class: 'secret' | 'private';
  sensitive: boolean;
  extractable: boolean;
  wrapWithTrusted: boolean;
  value: string;
  wrapUntrustedAes: string | number;
  wrapUntrustedRsa?: string | number;
  wrapTrusted?: (string | number)[];
}

export function probeCustody(dataDir: string): Promise<{ objects: CustodyObject[]; trustedLabels: string[] }> {
  const env = {
    PATH: process.env.PATH ?? '',
    SOFTHSM2_CONF: path.join(dataDir, 'softhsm', 'softhsm2.conf'),
    PIN_FILE: path.join(dataDir, 'softhsm', 'user.pin'),
    REPO: repoRoot,
    P11_LIB: locateSoftHsmModule(),
  };
  return new Promise((resolve, reject) =>
    execFile(process.execPath, ['--input-type=module', '-e', PROBE], { cwd: repoRoot, env, timeout: 60_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) =>
      err ? reject(new Error(`custody probe failed: ${err.message}\n${stderr}`)) : resolve(JSON.parse(stdout)),
    ),
  );
}
