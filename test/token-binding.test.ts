/**
 * Token binding (src/kms/token-binding.ts): a metadata store that holds keys opens only the token
 * its keys live in. Real SoftHSM2 tokens: an "operator's" external token directory with several
 * tokens, and the self-provisioned token in the data dir.
 */
import fs from 'node:fs';
import path from 'node:path';
import { CreateKeyCommand, DecryptCommand, EncryptCommand } from '@aws-sdk/client-kms';
import pkcs11js from 'pkcs11js';
import { describe, expect, it } from 'vitest';
import { locateSoftHsmModule } from '../src/hsm/provision.js';
import { startService } from '../src/service.js';
import { runCli } from './helpers/process.js';
import { startTestService, tempDir, testConfig } from './helpers/service.js';

const SO_PIN = '87654321';
const USER_PIN = '12345678';
const MODULE = locateSoftHsmModule();

/** A SoftHSM2 token directory of the operator's, outside any data dir. */
function externalSoftHsm(): { conf: string; env: (label: string) => Record<string, string>; init: (label: string) => void; slots: () => Map<string, bigint> } {
  const dir = tempDir('p11kms-ext-hsm-');
  fs.mkdirSync(path.join(dir, 'tokens'));
  const conf = path.join(dir, 'softhsm2.conf');
  fs.writeFileSync(conf, `directories.tokendir = ${dir}/tokens\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n`);
  const withModule = <T>(fn: (p: pkcs11js.PKCS11) => T): T => {
    process.env.SOFTHSM2_CONF = conf;
    const p = new pkcs11js.PKCS11();
    p.load(MODULE);
    p.C_Initialize();
    try {
      return fn(p);
    } finally {
      p.C_Finalize();
      p.close();
    }
  };
  const labelOf = (p: pkcs11js.PKCS11, slot: pkcs11js.Handle) => p.C_GetTokenInfo(slot).label.trim();
  return {
    conf,
    env: (label) => ({ P11KMS_PKCS11_MODULE: MODULE, P11KMS_TOKEN_LABEL: label, P11KMS_PIN: USER_PIN }),
    /** Initialises token `label`, or re-initialises it when it exists (C_InitToken wipes its objects). */
    init: (label) =>
      withModule((p) => {
        const slots = p.C_GetSlotList(true);
        const existing = slots.find((s) => p.C_GetTokenInfo(s).flags & pkcs11js.CKF_TOKEN_INITIALIZED && labelOf(p, s) === label);
        const free = slots.find((s) => !(p.C_GetTokenInfo(s).flags & pkcs11js.CKF_TOKEN_INITIALIZED));
        p.C_InitToken((existing ?? free)!, SO_PIN, label.padEnd(32, ' '));
        const slot = p.C_GetSlotList(true).find((s) => labelOf(p, s) === label)!;
        const session = p.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
        p.C_Login(session, pkcs11js.CKU_SO, SO_PIN);
        p.C_InitPIN(session, USER_PIN);
        p.C_Logout(session);
        p.C_CloseSession(session);
      }),
    slots: () =>
      withModule((p) => new Map(p.C_GetSlotList(true).filter((s) => p.C_GetTokenInfo(s).flags & pkcs11js.CKF_TOKEN_INITIALIZED).map((s) => [labelOf(p, s), s.readBigUInt64LE()]))),
  };
}

/** Starts a service on `dataDir` with the operator's token settings, makes a key and encrypts. */
async function storeWithAKey(dataDir: string, env: Record<string, string>, conf?: string) {
  if (conf) process.env.SOFTHSM2_CONF = conf;
  const t = await startTestService({ P11KMS_DATA_DIR: dataDir, ...env });
  const keyId = (await t.client.send(new CreateKeyCommand({}))).KeyMetadata!.KeyId!;
  const blob = (await t.client.send(new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from('bound') }))).CiphertextBlob!;
  await t.stop();
  return { keyId, blob };
}

async function startError(dataDir: string, env: Record<string, string>, conf?: string): Promise<string> {
  if (conf) process.env.SOFTHSM2_CONF = conf;
  try {
    const s = await startService(testConfig(dataDir, env));
    await s.close();
  } catch (e) {
    return (e as Error).message;
  }
  throw new Error('expected the start to fail');
}

describe('token binding', () => {
  it('refuses a restart that forgot the module settings, naming the token and P11KMS_PKCS11_MODULE, and provisions nothing', async () => {
    const hsm = externalSoftHsm();
    hsm.init('ops');
    const dataDir = tempDir('p11kms-bind-');
    await storeWithAKey(dataDir, hsm.env('ops'), hsm.conf);

    const message = await startError(dataDir, {});
    expect(message).toContain("token 'ops'");
    expect(message).toContain('1 key(s)');
    expect(message).toContain(`P11KMS_PKCS11_MODULE=${MODULE}`);
    expect(message).toContain('P11KMS_TOKEN_LABEL=ops');
    // No empty token was provisioned in its place.
    const tokens = path.join(dataDir, 'softhsm', 'tokens');
    expect(fs.existsSync(tokens) ? fs.readdirSync(tokens) : []).toEqual([]);
    expect(message).not.toContain(USER_PIN);

    // doctor refuses too (exit 2, same message), so --repair never acts on another token.
    const doctor = await runCli(['doctor', '--repair'], dataDir);
    expect(doctor.code).toBe(2);
    expect(doctor.stderr).toContain("token 'ops'");
    expect(doctor.stderr).toContain('P11KMS_PKCS11_MODULE');
  });

  it('refuses another token of the same module, naming both tokens and P11KMS_TOKEN_LABEL', async () => {
    const hsm = externalSoftHsm();
    hsm.init('ops');
    hsm.init('scratch');
    const dataDir = tempDir('p11kms-bind-');
    await storeWithAKey(dataDir, hsm.env('ops'), hsm.conf);

    const message = await startError(dataDir, hsm.env('scratch'), hsm.conf);
    expect(message).toContain("token 'ops'");
    expect(message).toContain("opened token 'scratch'");
    expect(message).toContain('P11KMS_TOKEN_LABEL is probably wrong');
  });

  it('refuses a re-initialised token (same label, objects gone) and P11KMS_REBIND_TOKEN accepts it', async () => {
    const hsm = externalSoftHsm();
    hsm.init('ops');
    const dataDir = tempDir('p11kms-bind-');
    await storeWithAKey(dataDir, hsm.env('ops'), hsm.conf);
    hsm.init('ops'); // C_InitToken again: a new serial, every object gone

    const message = await startError(dataDir, hsm.env('ops'), hsm.conf);
    expect(message).toContain('has no p11kms identity object');
    expect(message).toContain('re-initialised');

    process.env.SOFTHSM2_CONF = hsm.conf;
    const t = await startTestService({ P11KMS_DATA_DIR: dataDir, ...hsm.env('ops'), P11KMS_REBIND_TOKEN: 'true' });
    await t.stop();
    // Bound now: a plain restart on the re-initialised token passes.
    process.env.SOFTHSM2_CONF = hsm.conf;
    await (await startTestService({ P11KMS_DATA_DIR: dataDir, ...hsm.env('ops') })).stop();
  });

  it('accepts the same token in another slot and its keys still decrypt', async () => {
    const hsm = externalSoftHsm();
    hsm.init('ops');
    const dataDir = tempDir('p11kms-bind-');
    const { blob } = await storeWithAKey(dataDir, hsm.env('ops'), hsm.conf);
    const before = [...hsm.slots().keys()];
    // Move the token's directory into a fresh SoftHSM2 installation that already has another
    // token: its config and its slot list differ (SoftHSM2 derives the slot ID from the token's
    // serial, so the ID itself stays; the binding records neither slot nor config path).
    const moved = externalSoftHsm();
    moved.init('aaa');
    const src = path.join(path.dirname(hsm.conf), 'tokens');
    for (const d of fs.readdirSync(src)) fs.renameSync(path.join(src, d), path.join(path.dirname(moved.conf), 'tokens', d));
    expect(before).toEqual(['ops']);
    expect([...moved.slots().keys()].sort()).toEqual(['aaa', 'ops']);

    process.env.SOFTHSM2_CONF = moved.conf;
    const t = await startTestService({ P11KMS_DATA_DIR: dataDir, ...moved.env('ops') });
    const dec = await t.client.send(new DecryptCommand({ CiphertextBlob: blob }));
    expect(Buffer.from(dec.Plaintext!).toString()).toBe('bound');
    await t.stop();
  });

  it('a self-provisioned store whose softhsm/ folder went missing is refused, not re-provisioned', async () => {
    const dataDir = tempDir('p11kms-bind-');
    await storeWithAKey(dataDir, {});
    fs.rmSync(path.join(dataDir, 'softhsm', 'tokens'), { recursive: true });
    const message = await startError(dataDir, {});
    expect(message).toContain('self-provisioned in the data dir');
    expect(message).toContain('no such token is open');
    expect(fs.readdirSync(path.join(dataDir, 'softhsm', 'tokens'))).toEqual([]);
  });

  it('an empty store provisions its token and rebinds freely', async () => {
    const dataDir = tempDir('p11kms-bind-');
    await (await startTestService({ P11KMS_DATA_DIR: dataDir })).stop();
    // No keys yet: replacing the token folder is fine.
    fs.rmSync(path.join(dataDir, 'softhsm', 'tokens'), { recursive: true });
    await (await startTestService({ P11KMS_DATA_DIR: dataDir })).stop();
  });
});
