/**
 * Across sites, steps one and two (README, "Across sites"): the trust ceremony through the CLI
 * (`p11kms sites export` / `sites trust` with the SO PIN), and the custody proof of the keys a
 * service makes, read from its token by an independent PKCS#11 application: every object refuses
 * its value; keys that are not multi-Region refuse C_WrapKey under any key; multi-Region
 * symmetric and HMAC keys refuse it under any untrusted key and wrap only under the trusted peer
 * key; multi-Region key pairs stay unextractable.
 */
import fs from 'node:fs';
import { CreateKeyCommand, KMSClient } from '@aws-sdk/client-kms';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ServiceProcess, runCli, spawnTestService, waitHealthy } from './helpers/process.js';
import { ROOT, tempDir } from './helpers/service.js';
import { type Site, exportKey, soPinFile, trust } from './sites/ceremony.js';
import { type CustodyObject, probeCustody } from './sites/custody-probe.js';

const A: Site = { dataDir: tempDir('p11kms-site-a-'), region: 'eu-west-1' };
const B: Site = { dataDir: tempDir('p11kms-site-b-'), region: 'eu-central-1' };

afterAll(() => {
  for (const s of [A, B]) fs.rmSync(s.dataDir, { recursive: true, force: true });
});

describe('the trust ceremony (p11kms sites)', () => {
  it('export creates the replication key once and prints the same PEM and SHA-256 fingerprint every time', async () => {
    const first = await exportKey(A);
    expect(first.region).toBe(A.region);
    expect(first.publicKey).toMatch(/^-----BEGIN PUBLIC KEY-----\n/);
    expect(first.fingerprint).toMatch(/^[0-9a-f]{64}$/);
    expect(await exportKey(A)).toEqual(first);
    const text = await runCli(['sites', 'export'], A.dataDir, { P11KMS_REGION: A.region });
    expect(text.code).toBe(0);
    expect(text.stdout).toContain(first.publicKey);
    expect(text.stdout).toContain(`# sha256 ${first.fingerprint}`);
    expect((await exportKey(B)).fingerprint).not.toBe(first.fingerprint);
  });

  it('trust refuses a fingerprint that does not match, a wrong SO PIN, a served Region, and a missing SO PIN file', async () => {
    const wrong = await trust(A, B, 'ab'.repeat(32));
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toContain('not the one given: nothing installed');
    const badPin = `${A.dataDir}/wrong-so.pin`;
    fs.writeFileSync(badPin, '00000000\n');
    const pin = await trust(A, B, undefined, ['--so-pin-file', badPin]);
    expect(pin.code).toBe(1);
    expect(pin.stderr).toContain('wrong SO PIN');
    expect(pin.stderr + pin.stdout).not.toContain('00000000');
    const served = await runCli(['sites', 'trust', '--region', A.region, '--public-key', '/dev/null', '--fingerprint', 'ab'.repeat(32)], A.dataDir, { P11KMS_REGION: A.region, P11KMS_SO_PIN_FILE: soPinFile(A) });
    expect(served.code).toBe(2);
    expect(served.stderr).toContain('served by this deployment');
    const noPin = await runCli(['sites', 'trust', '--region', B.region, '--public-key', '/dev/null', '--fingerprint', 'ab'.repeat(32)], A.dataDir, { P11KMS_REGION: A.region });
    expect(noPin.code).toBe(2);
    expect(noPin.stderr).toContain('P11KMS_SO_PIN_FILE');
  });

  it('trust installs the peer key with the SO PIN (never printed), idempotently, both ways', async () => {
    const soPin = fs.readFileSync(soPinFile(A), 'utf8').trim();
    const ok = await trust(A, B);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toContain(`trusted the replication key of ${B.region}`);
    expect(ok.stdout + ok.stderr).not.toContain(soPin);
    const again = await trust(A, B);
    expect(again.stdout).toContain('was already trusted');
    expect((await trust(B, A)).code).toBe(0);
  });
});

describe('custody proof of the keys a service makes', () => {
  let proc: ServiceProcess;
  const made: Record<string, string> = {};
  let custody: { objects: CustodyObject[]; trustedLabels: string[] };

  beforeAll(async () => {
    const started = await spawnTestService({ P11KMS_DATA_DIR: A.dataDir, P11KMS_REGION: A.region });
    proc = started.proc;
    const url = `http://127.0.0.1:${started.port}`;
    await waitHealthy(url, proc);
    const client = new KMSClient({ endpoint: url, region: A.region, credentials: ROOT, maxAttempts: 1 });
    const create = async (name: string, input: Record<string, unknown>) => (made[name] = (await client.send(new CreateKeyCommand(input))).KeyMetadata!.KeyId!);
    await create('aes', {});
    await create('hmac', { KeySpec: 'HMAC_256', KeyUsage: 'GENERATE_VERIFY_MAC' });
    await create('mrkAes', { MultiRegion: true });
    await create('mrkHmac', { MultiRegion: true, KeySpec: 'HMAC_384', KeyUsage: 'GENERATE_VERIFY_MAC' });
    await create('mrkRsa', { MultiRegion: true, KeySpec: 'RSA_2048', KeyUsage: 'ENCRYPT_DECRYPT' });
    await proc.stop();
    custody = await probeCustody(A.dataDir);
  }, 120_000);
  afterAll(async () => {
    await proc?.stop();
  });

  const objectOf = (name: string) => {
    const found = custody.objects.filter((o) => o.label.includes(made[name]!));
    expect(found, name).toHaveLength(1);
    return found[0]!;
  };

  it('every private and secret object in the token refuses its value', () => {
    expect(custody.objects.length).toBeGreaterThanOrEqual(7); // the 5 keys, the audit key, the replication key
    for (const o of custody.objects) {
      expect(o.value, o.label).toBe('CKR_ATTRIBUTE_SENSITIVE');
      expect(o.sensitive, o.label).toBe(true);
    }
    expect(custody.trustedLabels).toEqual([`p11kms-peer:${B.region}`]);
  });

  it('keys that are not multi-Region refuse C_WrapKey under any key, the trusted one included', () => {
    for (const name of ['aes', 'hmac']) {
      const o = objectOf(name);
      expect(o).toMatchObject({ extractable: false, wrapWithTrusted: false, wrapUntrustedAes: 'CKR_KEY_UNEXTRACTABLE', wrapUntrustedRsa: 'CKR_KEY_UNEXTRACTABLE' });
      expect(o.wrapTrusted).toEqual(['CKR_KEY_UNEXTRACTABLE']);
    }
  });

  it('multi-Region symmetric and HMAC keys refuse every untrusted key and wrap only under the trusted peer key', () => {
    for (const name of ['mrkAes', 'mrkHmac']) {
      const o = objectOf(name);
      expect(o).toMatchObject({ extractable: true, wrapWithTrusted: true, wrapUntrustedAes: 'CKR_KEY_NOT_WRAPPABLE', wrapUntrustedRsa: 'CKR_KEY_NOT_WRAPPABLE' });
      expect(o.wrapTrusted).toEqual([384]); // RSA-OAEP under B's 3072-bit replication key
    }
  });

  it('a multi-Region key pair, the replication key and the audit key stay unextractable', () => {
    const o = objectOf('mrkRsa');
    expect(o).toMatchObject({ class: 'private', extractable: false, wrapUntrustedAes: 'CKR_KEY_UNEXTRACTABLE' });
    for (const label of ['p11kms-replication']) {
      const r = custody.objects.find((x) => x.label === label)!;
      expect(r).toMatchObject({ class: 'private', extractable: false, wrapUntrustedAes: 'CKR_KEY_UNEXTRACTABLE' });
    }
  });
});
