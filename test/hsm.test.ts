/**
 * The PKCS#11 layer against a real SoftHSM2 token in a temporary data dir. A process may
 * C_Initialize a module once at a time, so the suites below open and close the Hsm in turn (never
 * two at once); checks that need an independent PKCS#11 application run raw pkcs11js in a child
 * process against the same token directory.
 */
import { execFile, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pkcs11js from 'pkcs11js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TokenConfig } from '../src/config.js';
import { parseCkr, setErrorDialect, toHsmError } from '../src/hsm/errors.js';
import { PROFILES } from '../src/hsm/profiles.js';
import { labelFor, objectIdFor, refFromAttributes } from '../src/hsm/object-naming.js';
import { inspectBackingKey, openHsm } from '../src/hsm/pkcs11-token.js';
import { locateSoftHsmModule, softHsmPaths } from '../src/hsm/provision.js';
import { NO_IDLE_SESSION, SessionPool } from '../src/hsm/session-pool.js';
import { type BackingKeyRef, type Hsm, HsmError } from '../src/hsm/types.js';
import { makeTempDir, removeTempDirs } from './helpers/temp-dir.js';

const repoRoot = fileURLToPath(new URL('..', import.meta.url));
const LABEL = 'p11kms-test';

function tokenConfig(overrides: Partial<TokenConfig> = {}): TokenConfig {
  return { label: LABEL, poolSize: 4, symmetricCalls: 'sync', ...overrides };
}

function newRef(version = 1): BackingKeyRef {
  return { keyId: crypto.randomUUID(), version };
}

/** Test access to the wrapper's private parts (the module instance and the pool). */
function internals(hsm: Hsm): { p: pkcs11js.PKCS11; slot: Buffer; pool: { size: number } } {
  return hsm as unknown as { p: pkcs11js.PKCS11; slot: Buffer; pool: { size: number } };
}

/** Promise.withResolvers is Node 22+. */
function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

async function expectHsmError(promise: Promise<unknown>, kind: HsmError['kind']): Promise<HsmError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, `expected HsmError ${kind}`).toBeInstanceOf(HsmError);
  expect((err as HsmError).kind).toBe(kind);
  return err as HsmError;
}

// ---- raw pkcs11js in a child process: an independent PKCS#11 application ------------------------

const RAW_CHILD = String.raw`
import { createRequire } from 'node:module';
import fs from 'node:fs';
const require = createRequire(process.env.REPO + '/package.json');
const pk = require('pkcs11js');
const p = new pk.PKCS11();
p.load(process.env.P11_LIB);
p.C_Initialize();
const rv = (fn) => { try { fn(); return 'CKR_OK'; } catch (e) { return String(e.message).split(':')[0]; } };
const out = {};
try {
  const slots = p.C_GetSlotList(true).filter((s) => p.C_GetTokenInfo(s).label.trimEnd() === process.env.P11_LABEL);
  out.tokensWithLabel = slots.length;
  const session = p.C_OpenSession(slots[0], pk.CKF_SERIAL_SESSION | pk.CKF_RW_SESSION);
  p.C_Login(session, pk.CKU_USER, fs.readFileSync(process.env.P11_PIN_FILE, 'utf8').replace(/\n$/, ''));
  out.login = 'ok';
  const find = (id) => {
    p.C_FindObjectsInit(session, [{ type: pk.CKA_CLASS, value: pk.CKO_SECRET_KEY }, { type: pk.CKA_ID, value: Buffer.from(id) }]);
    const found = p.C_FindObjects(session, 10);
    p.C_FindObjectsFinal(session);
    return found;
  };
  const action = process.env.P11_ACTION;
  const ids = JSON.parse(process.env.P11_IDS ?? '[]');
  if (action === 'extractability') {
    const wrapKey = p.C_GenerateKey(session, { mechanism: pk.CKM_AES_KEY_GEN }, [
      { type: pk.CKA_CLASS, value: pk.CKO_SECRET_KEY }, { type: pk.CKA_VALUE_LEN, value: 32 },
      { type: pk.CKA_TOKEN, value: false }, { type: pk.CKA_WRAP, value: true },
    ]);
    out.keys = ids.map((id) => {
      const [key] = find(id);
      if (!key) return { id, found: false };
      const flags = {};
      for (const [name, type] of [['sensitive', pk.CKA_SENSITIVE], ['extractable', pk.CKA_EXTRACTABLE], ['neverExtractable', pk.CKA_NEVER_EXTRACTABLE], ['token', pk.CKA_TOKEN], ['private', pk.CKA_PRIVATE]]) {
        flags[name] = p.C_GetAttributeValue(session, key, [{ type }])[0].value[0] === 1;
      }
      return {
        id, found: true, flags,
        getValue: rv(() => p.C_GetAttributeValue(session, key, [{ type: pk.CKA_VALUE }])),
        wrap: rv(() => p.C_WrapKey(session, { mechanism: pk.CKM_AES_KEY_WRAP_PAD }, wrapKey, key, Buffer.alloc(128))),
        wrapNoPad: rv(() => p.C_WrapKey(session, { mechanism: pk.CKM_AES_KEY_WRAP }, wrapKey, key, Buffer.alloc(128))),
      };
    });
  } else if (action === 'destroy' || action === 'replace') {
    for (const id of ids) {
      for (const key of find(id)) p.C_DestroyObject(session, key);
      if (action === 'replace') {
        p.C_GenerateKey(session, { mechanism: pk.CKM_AES_KEY_GEN }, [
          { type: pk.CKA_CLASS, value: pk.CKO_SECRET_KEY }, { type: pk.CKA_KEY_TYPE, value: pk.CKK_AES }, { type: pk.CKA_VALUE_LEN, value: 32 },
          { type: pk.CKA_TOKEN, value: true }, { type: pk.CKA_PRIVATE, value: true }, { type: pk.CKA_SENSITIVE, value: true },
          { type: pk.CKA_EXTRACTABLE, value: false }, { type: pk.CKA_ENCRYPT, value: true }, { type: pk.CKA_DECRYPT, value: true },
          { type: pk.CKA_ID, value: Buffer.from(id) }, { type: pk.CKA_LABEL, value: 'p11kms:replaced' },
        ]);
      }
    }
    out.done = true;
  }
  p.C_Logout(session);
  p.C_CloseSession(session);
} catch (e) {
  out.error = String(e.message);
}
p.C_Finalize();
process.stdout.write(JSON.stringify(out));
`;

function runRawChild(dataDir: string, action: string, ids: string[] = []): Promise<Record<string, unknown>> {
  const paths = softHsmPaths(dataDir);
  const env = {
    PATH: process.env.PATH ?? '',
    REPO: repoRoot,
    SOFTHSM2_CONF: paths.confPath,
    P11_LIB: locateSoftHsmModule(),
    P11_LABEL: LABEL,
    P11_PIN_FILE: paths.userPinPath,
    P11_ACTION: action,
    P11_IDS: JSON.stringify(ids),
  };
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ['--input-type=module', '-e', RAW_CHILD], { cwd: repoRoot, env, timeout: 30_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`raw child failed: ${err.message}\n${stderr}`));
      else resolve(JSON.parse(stdout) as Record<string, unknown>);
    });
  });
}

afterAll(() => removeTempDirs());

// ---- pure units -----------------------------------------------------------------------------------

describe('error translation', () => {
  it('parses both pkcs11js error shapes', () => {
    const typed = new pkcs11js.Pkcs11Error('CKR_PIN_INCORRECT:160', 160, 'C_Login');
    expect(typed.message).toBe('CKR_PIN_INCORRECT');
    expect(parseCkr(typed)).toEqual({ name: 'CKR_PIN_INCORRECT', rv: 160 });
    expect(parseCkr(new Error('CKR_TEMPLATE_INCOMPLETE:208'))).toEqual({ name: 'CKR_TEMPLATE_INCOMPLETE', rv: 208 });
    // v2.40 codes pkcs11js cannot name
    expect(parseCkr(new Error('CKR_VENDOR_DEFINED:27'))?.name).toBe('CKR_ACTION_PROHIBITED');
    expect(parseCkr(new Error('CKR_VENDOR_DEFINED:2147483905'))?.name).toBe('CKR_VENDOR_DEFINED_0x80000101');
    expect(parseCkr(new TypeError('Argument 0 has wrong type'))).toBeUndefined();
  });

  it('maps return values to failure kinds in one place', () => {
    const kind = (message: string, fn: string) => toHsmError(new Error(message), fn).kind;
    // CKR_GENERAL_ERROR is SoftHSM 2.6's failed tag; on other tokens it is a fault of the token.
    setErrorDialect(PROFILES.softhsm2!);
    expect(kind('CKR_GENERAL_ERROR:5', 'C_Decrypt')).toBe('invalid-ciphertext');
    setErrorDialect(PROFILES.generic!);
    expect(kind('CKR_GENERAL_ERROR:5', 'C_Decrypt')).toBe('unavailable');
    setErrorDialect(PROFILES.nshield!);
    expect(kind('CKR_FUNCTION_FAILED:6', 'C_Decrypt')).toBe('invalid-ciphertext');
    setErrorDialect(PROFILES.softhsm2!);
    expect(kind('CKR_ENCRYPTED_DATA_INVALID:64', 'C_Decrypt')).toBe('invalid-ciphertext');
    expect(kind('CKR_ENCRYPTED_DATA_LEN_RANGE:65', 'C_DecryptFinal')).toBe('invalid-ciphertext');
    expect(kind('CKR_GENERAL_ERROR:5', 'C_Encrypt')).toBe('unavailable');
    expect(kind('CKR_OBJECT_HANDLE_INVALID:130', 'C_EncryptInit')).toBe('key-not-found');
    expect(kind('CKR_KEY_HANDLE_INVALID:96', 'C_DecryptInit')).toBe('key-not-found');
    for (const ckr of ['CKR_DEVICE_ERROR:48', 'CKR_DEVICE_REMOVED:50', 'CKR_TOKEN_NOT_PRESENT:224', 'CKR_SESSION_CLOSED:176', 'CKR_CRYPTOKI_NOT_INITIALIZED:400', 'CKR_USER_NOT_LOGGED_IN:257']) {
      expect(kind(ckr, 'C_Encrypt')).toBe('unavailable');
    }
    expect(kind('CKR_MECHANISM_INVALID:112', 'C_EncryptInit')).toBe('unsupported');
    const err = toHsmError(new pkcs11js.Pkcs11Error('CKR_DEVICE_ERROR:48'), 'C_Sign');
    expect(err).toMatchObject({ name: 'HsmError', kind: 'unavailable', ckr: 'CKR_DEVICE_ERROR', fn: 'C_Sign', message: 'C_Sign failed: CKR_DEVICE_ERROR' });
  });
});

describe('object naming', () => {
  it('encodes refs into CKA_ID and CKA_LABEL and back', () => {
    for (const ref of [{ keyId: '1234abcd-12ab-34cd-56ef-1234567890ab', version: 1 }, { keyId: `mrk-${'a'.repeat(32)}`, version: 12 }]) {
      expect(objectIdFor(ref).toString()).toBe(`${ref.keyId}#${ref.version}`);
      expect(labelFor(ref)).toBe(`p11kms:${ref.keyId}:v${ref.version}`);
      expect(refFromAttributes(Buffer.from(labelFor(ref)), objectIdFor(ref))).toEqual(ref);
    }
    expect(refFromAttributes(Buffer.from('other app'), Buffer.from('x#1'))).toBeUndefined();
    expect(refFromAttributes(Buffer.from('p11kms:x'), Buffer.from('no-version'))).toBeUndefined();
    expect(() => objectIdFor({ keyId: 'a#b', version: 1 })).toThrow(RangeError);
    expect(() => objectIdFor({ keyId: 'a', version: 0 })).toThrow(RangeError);
  });
});

describe('session pool', () => {
  function fakePool(max: number) {
    let next = 0;
    const open = new Set<number>();
    const pool = new SessionPool(
      () => {
        const session = Buffer.alloc(8);
        session.writeUInt32LE(++next);
        open.add(next);
        return session;
      },
      (session) => open.delete(session.readUInt32LE()),
      max,
    );
    return { pool, open, opened: () => next };
  }

  it('checks sessions out exclusively, caps them and serves waiters FIFO', async () => {
    const { pool, open } = fakePool(2);
    const inUse = new Set<number>();
    const order: number[] = [];
    const gate = deferred();
    const jobs = Array.from({ length: 6 }, (_, i) =>
      pool.withSession(async (session) => {
        const id = session.readUInt32LE();
        expect(inUse.has(id)).toBe(false);
        inUse.add(id);
        order.push(i);
        if (i < 2) await gate.promise;
        await new Promise((r) => setImmediate(r));
        inUse.delete(id);
        return i;
      }),
    );
    await new Promise((r) => setImmediate(r));
    expect(open.size).toBe(2);
    gate.resolve();
    expect(await Promise.all(jobs)).toEqual([0, 1, 2, 3, 4, 5]);
    expect(order).toEqual([0, 1, 2, 3, 4, 5]);
    expect(pool.size).toBe(2);
  });

  it('closes and replaces a session after an error instead of reusing it', async () => {
    const { pool, open, opened } = fakePool(1);
    let broken: number | undefined;
    const failing = pool.withSession((session) => {
      broken = session.readUInt32LE();
      throw new Error('CKR_ARGUMENTS_BAD:7');
    });
    const waiting = pool.withSession((session) => session.readUInt32LE());
    await expect(failing).rejects.toThrow('CKR_ARGUMENTS_BAD');
    const next = await waiting;
    expect(next).not.toBe(broken);
    expect(open.has(broken!)).toBe(false);
    expect(opened()).toBe(2);
    expect(pool.runIfIdle((s) => s.readUInt32LE())).toBe(next);
  });

  it('runIfIdle reports a busy pool without running the function', async () => {
    const { pool } = fakePool(1);
    const gate = deferred();
    const busy = pool.withSession(() => gate.promise);
    await new Promise((r) => setImmediate(r));
    expect(pool.runIfIdle(() => 'ran')).toBe(NO_IDLE_SESSION);
    gate.resolve();
    await busy;
    expect(pool.runIfIdle(() => 'ran')).toBe('ran');
  });

  it('close rejects waiters, waits for checked-out sessions and closes everything', async () => {
    const { pool, open } = fakePool(1);
    const gate = deferred();
    const busy = pool.withSession(() => gate.promise);
    const waiter = pool.withSession(() => 'never');
    await new Promise((r) => setImmediate(r));
    const closing = pool.close();
    await expect(waiter).rejects.toMatchObject({ kind: 'unavailable' });
    gate.resolve();
    await busy;
    await closing;
    expect(open.size).toBe(0);
    await expect(pool.withSession(() => 1)).rejects.toMatchObject({ kind: 'unavailable' });
  });
});

// ---- against SoftHSM2 -----------------------------------------------------------------------------

describe('provisioning (self-provisioned SoftHSM2)', () => {
  const dataDir = makeTempDir('p11kms-hsm-prov-');
  const paths = softHsmPaths(dataDir);

  it('creates the token, 0600 PIN files and 0700 dirs on first open', async () => {
    const logs: string[] = [];
    const hsm = await openHsm(tokenConfig(), dataDir, (_level, msg) => logs.push(msg));
    try {
      expect(hsm.info).toMatchObject({ label: LABEL, manufacturerId: 'SoftHSM project' });
      expect(hsm.info.serialNumber).not.toBe('');
      expect(hsm.mechanisms.has(pkcs11js.CKM_AES_GCM)).toBe(true);
      expect(hsm.info.mechanismCount).toBe(hsm.mechanisms.size);
      await hsm.ping();
    } finally {
      await hsm.close();
    }
    for (const file of [paths.userPinPath, paths.soPinPath, paths.confPath]) {
      expect(fs.statSync(file).mode & 0o777, file).toBe(0o600);
    }
    for (const dir of [paths.dir, paths.tokenDir]) expect(fs.statSync(dir).mode & 0o777, dir).toBe(0o700);
    const userPin = fs.readFileSync(paths.userPinPath, 'utf8').trim();
    const soPin = fs.readFileSync(paths.soPinPath, 'utf8').trim();
    expect(userPin).toMatch(/^[0-9a-f]{32}$/);
    expect(soPin).toMatch(/^[0-9a-f]{32}$/);
    expect(userPin).not.toBe(soPin);
    expect(fs.readFileSync(paths.confPath, 'utf8')).toContain(`directories.tokendir = ${paths.tokenDir}`);
    expect(fs.existsSync(paths.lockPath)).toBe(false);
    expect(logs.some((m) => m.includes('provisioned'))).toBe(true);
    expect(logs.join('\n')).not.toContain(userPin);
  });

  it('is idempotent: a second start finds the token by label and reads the PIN file', async () => {
    const pinBefore = fs.readFileSync(paths.userPinPath, 'utf8');
    const first = await openHsm(tokenConfig(), dataDir);
    const serial = first.info.serialNumber;
    const ref = newRef();
    await first.generateAesKey(ref);
    await first.close();

    const second = await openHsm(tokenConfig(), dataDir);
    try {
      expect(second.info.serialNumber).toBe(serial);
      expect(await second.listBackingKeys()).toEqual([ref]);
    } finally {
      await second.close();
    }
    expect(fs.readFileSync(paths.userPinPath, 'utf8')).toBe(pinBefore);
    expect(fs.readdirSync(paths.tokenDir)).toHaveLength(1);

    // An independent process sees exactly one token with the label and logs in with the PIN file.
    const raw = await runRawChild(dataDir, 'none');
    expect(raw).toEqual({ tokensWithLabel: 1, login: 'ok' });
  });

  it('opens an operator-supplied module with a PIN file (trailing newline trimmed)', async () => {
    const pinFile = path.join(makeTempDir('p11kms-hsm-pin-'), 'pin');
    fs.writeFileSync(pinFile, `${fs.readFileSync(paths.userPinPath, 'utf8').trim()}\n`, { mode: 0o600 });
    process.env.SOFTHSM2_CONF = paths.confPath;
    const hsm = await openHsm(tokenConfig({ module: locateSoftHsmModule(), pinFile }), dataDir);
    await hsm.ping();
    await hsm.close();
  });

  it('rejects a wrong PIN with a clear error that does not contain the PIN', async () => {
    const wrongPin = 'wrong-pin-5f3a9c';
    const err = await expectHsmError(openHsm(tokenConfig({ module: locateSoftHsmModule(), pin: wrongPin }), dataDir), 'other');
    expect(err.ckr).toBe('CKR_PIN_INCORRECT');
    expect(err.message).toContain('wrong PIN');
    expect(err.message).not.toContain(wrongPin);
    expect(String(err.stack)).not.toContain(wrongPin);
    // the failed open left the module finalised: the right PIN works in the same process
    const hsm = await openHsm(tokenConfig(), dataDir);
    await hsm.close();
  });

  it('names a missing token label and an unloadable module', async () => {
    const missing = await expectHsmError(openHsm(tokenConfig({ module: locateSoftHsmModule(), label: 'no-such-token', pin: '1234' }), dataDir), 'unavailable');
    expect(missing.message).toContain("no token labelled 'no-such-token'");
    expect(missing.message).toContain(`'${LABEL}'`);
    const unloadable = await expectHsmError(openHsm(tokenConfig({ module: '/nonexistent/libpkcs11.so', pin: '1234' }), dataDir), 'unavailable');
    expect(unloadable.message).toContain('cannot load PKCS#11 module /nonexistent/libpkcs11.so');
    expect(unloadable.message).not.toContain('1234');
  });
});

describe('AES-GCM, keys and random (sync calls)', () => {
  const dataDir = makeTempDir('p11kms-hsm-main-');
  let hsm: Hsm;
  const ref = newRef();
  const otherRef = newRef();
  const iv = Buffer.alloc(12, 7);
  const aad = Buffer.from('{"purpose":"test"}');

  beforeAll(async () => {
    hsm = await openHsm(tokenConfig(), dataDir);
    await hsm.generateAesKey(ref);
    await hsm.generateAesKey(otherRef);
  });
  afterAll(async () => {
    await hsm?.close();
  });

  it('round-trips through the token with ciphertext‖tag output', async () => {
    const plaintext = Buffer.from('attack at dawn');
    const ct = await hsm.encryptAesGcm(ref, iv, aad, plaintext);
    expect(ct.length).toBe(plaintext.length + 16);
    expect(ct.subarray(0, plaintext.length).equals(plaintext)).toBe(false);
    expect((await hsm.decryptAesGcm(ref, iv, aad, ct)).equals(plaintext)).toBe(true);
    // deterministic for equal inputs (same key, IV, AAD): GCM, and the key is a real token key
    expect((await hsm.encryptAesGcm(ref, iv, aad, plaintext)).equals(ct)).toBe(true);
    expect((await hsm.encryptAesGcm(otherRef, iv, aad, plaintext)).equals(ct)).toBe(false);
  });

  it('accepts Uint8Array inputs', async () => {
    const plaintext = new Uint8Array([1, 2, 3, 4]);
    const ct = await hsm.encryptAesGcm(ref, new Uint8Array(iv), new Uint8Array(aad), plaintext);
    expect([...(await hsm.decryptAesGcm(ref, new Uint8Array(iv), aad, new Uint8Array(ct)))]).toEqual([1, 2, 3, 4]);
  });

  it('rejects tampered ciphertext, tag, AAD, IV, key and truncation as invalid-ciphertext', async () => {
    const plaintext = crypto.randomBytes(64);
    const ct = await hsm.encryptAesGcm(ref, iv, aad, plaintext);
    const flip = (buf: Buffer, index: number) => {
      const copy = Buffer.from(buf);
      copy[index]! ^= 0x01;
      return copy;
    };
    await expectHsmError(hsm.decryptAesGcm(ref, iv, aad, flip(ct, 3)), 'invalid-ciphertext');
    await expectHsmError(hsm.decryptAesGcm(ref, iv, aad, flip(ct, ct.length - 1)), 'invalid-ciphertext');
    await expectHsmError(hsm.decryptAesGcm(ref, iv, flip(aad, 0), ct), 'invalid-ciphertext');
    await expectHsmError(hsm.decryptAesGcm(ref, iv, Buffer.alloc(0), ct), 'invalid-ciphertext');
    await expectHsmError(hsm.decryptAesGcm(ref, flip(iv, 11), aad, ct), 'invalid-ciphertext');
    await expectHsmError(hsm.decryptAesGcm(otherRef, iv, aad, ct), 'invalid-ciphertext');
    await expectHsmError(hsm.decryptAesGcm(ref, iv, aad, ct.subarray(0, ct.length - 1)), 'invalid-ciphertext');
    await expectHsmError(hsm.decryptAesGcm(ref, iv, aad, ct.subarray(0, 15)), 'invalid-ciphertext');
    await expectHsmError(hsm.decryptAesGcm(ref, Buffer.alloc(8), aad, ct), 'invalid-ciphertext');
    const err = await expectHsmError(hsm.decryptAesGcm(ref, iv, aad, flip(ct, 0)), 'invalid-ciphertext');
    expect(err.fn).toBe('C_Decrypt');
    // sessions that saw the failures were replaced: the key still works
    expect((await hsm.decryptAesGcm(ref, iv, aad, ct)).equals(plaintext)).toBe(true);
  });

  it('handles empty plaintext (tag only) and 4096-byte messages', async () => {
    const empty = await hsm.encryptAesGcm(ref, iv, aad, Buffer.alloc(0));
    expect(empty.length).toBe(16);
    expect((await hsm.decryptAesGcm(ref, iv, aad, empty)).length).toBe(0);
    await expectHsmError(hsm.decryptAesGcm(ref, iv, Buffer.from('other'), empty), 'invalid-ciphertext');
    const emptyNoAad = await hsm.encryptAesGcm(ref, iv, Buffer.alloc(0), Buffer.alloc(0));
    expect(emptyNoAad.equals(empty)).toBe(false);

    const big = crypto.randomBytes(4096);
    const ct = await hsm.encryptAesGcm(ref, iv, aad, big);
    expect(ct.length).toBe(4096 + 16);
    expect((await hsm.decryptAesGcm(ref, iv, aad, ct)).equals(big)).toBe(true);
  });

  it('binds the AAD', async () => {
    const plaintext = Buffer.from('data key');
    const ctA = await hsm.encryptAesGcm(ref, iv, Buffer.from('context-a'), plaintext);
    const ctB = await hsm.encryptAesGcm(ref, iv, Buffer.from('context-b'), plaintext);
    // same keystream, different tags
    expect(ctA.subarray(0, plaintext.length).equals(ctB.subarray(0, plaintext.length))).toBe(true);
    expect(ctA.subarray(plaintext.length).equals(ctB.subarray(plaintext.length))).toBe(false);
    expect((await hsm.decryptAesGcm(ref, iv, Buffer.from('context-a'), ctA)).equals(plaintext)).toBe(true);
    await expectHsmError(hsm.decryptAesGcm(ref, iv, Buffer.from('context-b'), ctA), 'invalid-ciphertext');
  });

  it('rejects a wrong-length IV on encrypt', async () => {
    await expect(hsm.encryptAesGcm(ref, Buffer.alloc(16), aad, Buffer.from('x'))).rejects.toThrow(RangeError);
  });

  it('creates keys the token refuses to reveal or wrap (checked here and from another process)', async () => {
    const refs = [ref, otherRef];
    for (const r of refs) {
      const inspection = await inspectBackingKey(hsm, r);
      expect(inspection.objectCount).toBe(1);
      expect(inspection.label).toBe(labelFor(r));
      expect(inspection.attributes).toMatchObject({
        token: true,
        private: true,
        sensitive: true,
        alwaysSensitive: true,
        extractable: false,
        neverExtractable: true,
        local: true,
        modifiable: false,
        encrypt: true,
        decrypt: true,
        wrap: false,
        unwrap: false,
        valueLen: 32,
      });
      expect(inspection.readValueResult).toBe('CKR_ATTRIBUTE_SENSITIVE');
      expect(inspection.wrapResult).toBe('CKR_KEY_UNEXTRACTABLE');
    }

    const raw = await runRawChild(dataDir, 'extractability', refs.map((r) => objectIdFor(r).toString()));
    expect(raw.login).toBe('ok');
    for (const key of raw.keys as Array<Record<string, unknown>>) {
      expect(key).toMatchObject({
        found: true,
        flags: { sensitive: true, extractable: false, neverExtractable: true, token: true, private: true },
        getValue: 'CKR_ATTRIBUTE_SENSITIVE',
        wrap: 'CKR_KEY_UNEXTRACTABLE',
        wrapNoPad: 'CKR_KEY_UNEXTRACTABLE',
      });
    }
  });

  it('refuses relabelling a generated key (CKA_MODIFIABLE=false) with the plain-Error shape parsed', async () => {
    const { p, slot } = internals(hsm);
    const session = p.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
    try {
      p.C_FindObjectsInit(session, [{ type: pkcs11js.CKA_ID, value: objectIdFor(ref) }]);
      const [handle] = p.C_FindObjects(session, 1);
      p.C_FindObjectsFinal(session);
      let thrown: unknown;
      try {
        p.C_SetAttributeValue(session, handle!, [{ type: pkcs11js.CKA_LABEL, value: 'renamed' }]);
      } catch (e) {
        thrown = e;
      }
      expect(thrown).toBeInstanceOf(Error);
      expect((thrown as { code?: unknown }).code).toBeUndefined(); // the shape without .code
      expect(toHsmError(thrown, 'C_SetAttributeValue').ckr).toBe('CKR_ACTION_PROHIBITED');
    } finally {
      p.C_CloseSession(session);
    }
  });

  it('lists backing keys and forgets destroyed ones (key-not-found, no error on repeat)', async () => {
    const v1 = newRef(1);
    const v2 = { keyId: v1.keyId, version: 2 };
    const mrk = { keyId: `mrk-${crypto.randomBytes(16).toString('hex')}`, version: 1 };
    for (const r of [v1, v2, mrk]) await hsm.generateAesKey(r);
    const listed = await hsm.listBackingKeys();
    for (const r of [ref, otherRef, v1, v2, mrk]) expect(listed).toContainEqual(r);

    const ct = await hsm.encryptAesGcm(v1, iv, aad, Buffer.from('v1'));
    await hsm.destroyKey(v1);
    await expectHsmError(hsm.encryptAesGcm(v1, iv, aad, Buffer.from('v1')), 'key-not-found');
    await expectHsmError(hsm.decryptAesGcm(v1, iv, aad, ct), 'key-not-found');
    await hsm.destroyKey(v1); // already gone: fine
    expect(await hsm.listBackingKeys()).not.toContainEqual(v1);
    // its sibling version is untouched
    expect((await hsm.decryptAesGcm(v2, iv, aad, await hsm.encryptAesGcm(v2, iv, aad, Buffer.from('v2')))).toString()).toBe('v2');
    await expectHsmError(hsm.encryptAesGcm(newRef(), iv, aad, Buffer.from('x')), 'key-not-found');
  });

  it('re-finds a key whose cached handle went stale (destroyed or replaced by another process)', async () => {
    const gone = newRef();
    const replaced = newRef();
    await hsm.generateAesKey(gone);
    await hsm.generateAesKey(replaced);
    const before = await hsm.encryptAesGcm(replaced, iv, aad, Buffer.from('payload'));

    await runRawChild(dataDir, 'destroy', [objectIdFor(gone).toString()]);
    await expectHsmError(hsm.encryptAesGcm(gone, iv, aad, Buffer.from('x')), 'key-not-found');

    await runRawChild(dataDir, 'replace', [objectIdFor(replaced).toString()]);
    const after = await hsm.encryptAesGcm(replaced, iv, aad, Buffer.from('payload'));
    expect(after.equals(before)).toBe(false); // a different key answered, found by CKA_ID
    await expectHsmError(hsm.decryptAesGcm(replaced, iv, aad, before), 'invalid-ciphertext');
  });

  it('generateRandom returns the requested lengths without repeats', () => {
    for (const length of [0, 1, 12, 32, 1024, 65536]) expect(hsm.generateRandom(length).length).toBe(length);
    const draws = new Set(Array.from({ length: 200 }, () => hsm.generateRandom(16).toString('hex')));
    expect(draws.size).toBe(200);
    const big = hsm.generateRandom(4096);
    expect(new Set(big).size).toBeGreaterThan(200); // not constant / not zero
    expect(() => hsm.generateRandom(-1)).toThrow(RangeError);
  });

  it('survives 200 concurrent encrypt/decrypts in sync mode', async () => {
    const jobs = Array.from({ length: 200 }, async (_, i) => {
      const r = i % 2 === 0 ? ref : otherRef;
      const myIv = hsm.generateRandom(12);
      const plaintext = Buffer.from(`message ${i} `.repeat(i % 7));
      const ct = await hsm.encryptAesGcm(r, myIv, aad, plaintext);
      if (i % 10 === 0) {
        ct[0]! ^= 1;
        await expectHsmError(hsm.decryptAesGcm(r, myIv, aad, ct), 'invalid-ciphertext');
        return true;
      }
      return (await hsm.decryptAesGcm(r, myIv, aad, ct)).equals(plaintext);
    });
    expect((await Promise.all(jobs)).every(Boolean)).toBe(true);
    expect(internals(hsm).pool.size).toBeLessThanOrEqual(4);
  });

  it('opens with the handle cache primed: no C_FindObjects before the first encrypt of any key', async () => {
    const refs = [ref, otherRef];
    await hsm.close();
    hsm = await openHsm(tokenConfig(), dataDir);
    const { p } = internals(hsm);
    let finds = 0;
    const original = p.C_FindObjectsInit.bind(p);
    p.C_FindObjectsInit = (...args: Parameters<typeof p.C_FindObjectsInit>) => {
      finds++;
      return original(...args);
    };
    for (const r of refs) await hsm.decryptAesGcm(r, iv, aad, await hsm.encryptAesGcm(r, iv, aad, Buffer.from('primed')));
    expect(finds).toBe(0);
  });

  it('close is idempotent and later calls fail as unavailable', async () => {
    await hsm.close();
    await hsm.close();
    await expectHsmError(hsm.encryptAesGcm(ref, iv, aad, Buffer.from('x')), 'unavailable');
    await expectHsmError(hsm.ping(), 'unavailable');
    expect(() => hsm.generateRandom(4)).toThrow(HsmError);
  });
});

describe('async calls', () => {
  const dataDir = makeTempDir('p11kms-hsm-async-');
  let hsm: Hsm;

  beforeAll(async () => {
    hsm = await openHsm(tokenConfig({ symmetricCalls: 'async', poolSize: 4 }), dataDir);
  });
  afterAll(async () => {
    await hsm?.close();
  });

  it('runs 200 concurrent encrypts (and keygens alongside) with poolSize 4, correctly and without crashing', async () => {
    const refs = [newRef(), newRef(), newRef()];
    await Promise.all(refs.map((r) => hsm.generateAesKey(r)));
    const aad = Buffer.from('async');
    const extraKeys = Array.from({ length: 4 }, () => newRef());
    const keygens = Promise.all(extraKeys.map((r) => hsm.generateAesKey(r)));
    const work = Array.from({ length: 200 }, async (_, i) => {
      const r = refs[i % refs.length]!;
      const iv = hsm.generateRandom(12);
      const plaintext = crypto.randomBytes(i % 64);
      const ct = await hsm.encryptAesGcm(r, iv, aad, plaintext);
      expect(ct.length).toBe(plaintext.length + 16);
      return { r, iv, plaintext, ct };
    });
    const results = await Promise.all(work);
    await keygens;
    expect(internals(hsm).pool.size).toBeLessThanOrEqual(4);
    const checks = results.map(async ({ r, iv, plaintext, ct }, i) => {
      if (i % 8 === 0) {
        await expectHsmError(hsm.decryptAesGcm(r, iv, aad, Buffer.concat([ct.subarray(0, -1), Buffer.from([ct.at(-1)! ^ 1])])), 'invalid-ciphertext');
      }
      return (await hsm.decryptAesGcm(r, iv, aad, ct)).equals(plaintext);
    });
    expect((await Promise.all(checks)).every(Boolean)).toBe(true);
    const listed = await hsm.listBackingKeys();
    for (const r of [...refs, ...extraKeys]) expect(listed).toContainEqual(r);
    await hsm.ping();
  });

  it('handles empty plaintext and tamper detection on the async path', async () => {
    const r = newRef();
    await hsm.generateAesKey(r);
    const iv = hsm.generateRandom(12);
    const tag = await hsm.encryptAesGcm(r, iv, Buffer.alloc(0), Buffer.alloc(0));
    expect(tag.length).toBe(16);
    expect((await hsm.decryptAesGcm(r, iv, Buffer.alloc(0), tag)).length).toBe(0);
    await expectHsmError(hsm.decryptAesGcm(r, iv, Buffer.from('x'), tag), 'invalid-ciphertext');
    await hsm.destroyKey(r);
    await expectHsmError(hsm.encryptAesGcm(r, iv, Buffer.alloc(0), Buffer.from('x')), 'key-not-found');
  });
});

describe('a token shared by several service processes (P11KMS_WORKERS > 1)', () => {
  const dataDir = makeTempDir('p11kms-hsm-shared-');
  let hsm: Hsm;
  beforeAll(async () => {
    hsm = await openHsm(tokenConfig({ sharedAcrossProcesses: true }), dataDir);
  });
  afterAll(async () => {
    await hsm?.close();
  });

  it('waits for the cross-process object lock before writing or scanning', async () => {
    // Another service process (here: a lock file in the name of a live process, our parent) is
    // writing token objects.
    const lockPath = softHsmPaths(dataDir).objectWriteLockPath;
    fs.writeFileSync(lockPath, `${process.ppid}\n`, { flag: 'wx' });
    const written = newRef();
    const settled: string[] = [];
    const write = hsm.generateAesKey(written).then(() => settled.push('write'));
    const scan = hsm.listBackingKeys().then(() => settled.push('scan'));
    try {
      await new Promise((r) => setTimeout(r, 150));
      expect(settled).toEqual([]);
    } finally {
      fs.rmSync(lockPath);
    }
    await Promise.all([write, scan]);
    expect(settled).toEqual(['write', 'scan']);
    expect(await hsm.listBackingKeys()).toContainEqual(written);
    expect(fs.existsSync(lockPath)).toBe(false);
  });

  it('breaks at once a lock left by a process that no longer exists (a node killed mid-write)', async () => {
    const lockPath = softHsmPaths(dataDir).objectWriteLockPath;
    const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
    fs.writeFileSync(lockPath, `${dead.stdout}\n`, { flag: 'wx' });
    const started = performance.now();
    await hsm.generateAesKey(newRef());
    expect(performance.now() - started).toBeLessThan(5_000); // not the 60 s of a stale lock
    expect(fs.existsSync(lockPath)).toBe(false);
  });

  it('provisions, loads the module and logs in only while no other process writes objects', async () => {
    await hsm.close(); // one C_Initialize per process: this test opens a second token
    const freshDir = makeTempDir('p11kms-hsm-shared-open-');
    const paths = softHsmPaths(freshDir);
    fs.mkdirSync(paths.dir, { recursive: true, mode: 0o700 });
    fs.writeFileSync(paths.objectWriteLockPath, `${process.ppid}\n`, { flag: 'wx' });
    const logs: string[] = [];
    const opening = openHsm(tokenConfig({ sharedAcrossProcesses: true }), freshDir, (_level, msg) => logs.push(msg));
    try {
      await new Promise((r) => setTimeout(r, 150));
      expect(logs.filter((m) => m.includes('provisioned'))).toEqual([]);
    } finally {
      fs.rmSync(paths.objectWriteLockPath);
    }
    const fresh = await opening;
    try {
      expect(logs.some((m) => m.includes('provisioned'))).toBe(true);
      await fresh.ping();
    } finally {
      await fresh.close();
    }
  });
});
