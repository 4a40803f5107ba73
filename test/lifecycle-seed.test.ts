/**
 * Seeding (P11KMS_SEED_FILE) and strict key custody: fixed key IDs, aliases, tags, rotation and
 * imported material from a seed; applying it twice changes nothing; the same seed on a fresh
 * data dir yields keys that open the first run's ciphertexts.
 */
import { createCipheriv, createDecipheriv, generateKeyPairSync, randomBytes, verify } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import {
  DecryptCommand,
  DescribeKeyCommand,
  EncryptCommand,
  GetKeyRotationStatusCommand,
  GetPublicKeyCommand,
  SignCommand,
  GetParametersForImportCommand,
  CreateAliasCommand,
  CreateKeyCommand,
  ListAliasesCommand,
  ListKeysCommand,
  ListResourceTagsCommand,
} from '@aws-sdk/client-kms';
import { afterEach, describe, expect, it } from 'vitest';
import { additionalData, parseBlob } from '../src/kms/ciphertext.js';
import { createLogger } from '../src/log.js';
import { startService } from '../src/service.js';
import { runCli } from './helpers/process.js';
import { errorOf, startTestService, tempDir, testConfig, type TestService } from './helpers/service.js';

const APP_KEY = '11111111-2222-4333-8444-555555555555';
const BYOK_KEY = '66666666-7777-4888-9999-000000000000';
const WRAPPED_KEY = '77777777-8888-4999-aaaa-bbbbbbbbbbbb';
const material = randomBytes(32);
const wrappedMaterial = randomBytes(32);
const transportKey = randomBytes(32);
const kwp = createCipheriv('id-aes256-wrap-pad', transportKey, Buffer.from('A65959A6', 'hex'));
const wrappedHex = Buffer.concat([kwp.update(wrappedMaterial), kwp.final()]).toString('hex');
// Asymmetric material: private keys in PKCS#8 DER, one plain and one wrapped under the transport key.
const EC_KEY = '88888888-9999-4aaa-bbbb-cccccccccccc';
const RSA_KEY = '99999999-aaaa-4bbb-8ccc-dddddddddddd';
const ecPair = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const rsaPair = generateKeyPairSync('rsa', { modulusLength: 2048 });
const rsaKwp = createCipheriv('id-aes256-wrap-pad', transportKey, Buffer.from('A65959A6', 'hex'));
const rsaWrappedHex = Buffer.concat([rsaKwp.update(rsaPair.privateKey.export({ format: 'der', type: 'pkcs8' })), rsaKwp.final()]).toString('hex');

function writeSeed(dir: string, extra: Record<string, unknown> = {}): string {
  const file = path.join(dir, 'seed.json');
  fs.writeFileSync(
    file,
    JSON.stringify({
      keys: [
        { keyId: APP_KEY, description: 'ci app key', aliases: ['alias/ci-app'], tags: { env: 'ci' }, rotation: { enabled: true, periodInDays: 90 } },
        { keyId: BYOK_KEY, origin: 'EXTERNAL', aliases: ['alias/ci-byok'], keyMaterial: { plainHex: material.toString('hex') } },
        { keyId: WRAPPED_KEY, origin: 'EXTERNAL', keyMaterial: { wrappedHex, wrappingKeyHex: transportKey.toString('hex') } },
        {
          keyId: EC_KEY,
          origin: 'EXTERNAL',
          keySpec: 'ECC_NIST_P256',
          keyUsage: 'SIGN_VERIFY',
          keyMaterial: { plainHex: ecPair.privateKey.export({ format: 'der', type: 'pkcs8' }).toString('hex') },
        },
        {
          keyId: RSA_KEY,
          origin: 'EXTERNAL',
          keySpec: 'RSA_2048',
          keyUsage: 'SIGN_VERIFY',
          keyMaterial: { wrappedHex: rsaWrappedHex, wrappingKeyHex: transportKey.toString('hex') },
        },
      ],
      ...extra,
    }),
  );
  return file;
}

function openLocally(blob: Buffer, key: Buffer): string {
  const parsed = parseBlob(blob);
  const decipher = createDecipheriv('aes-256-gcm', key, parsed.iv);
  decipher.setAAD(additionalData(parsed.header, undefined));
  decipher.setAuthTag(parsed.sealed.subarray(-16));
  return Buffer.concat([decipher.update(parsed.sealed.subarray(0, -16)), decipher.final()]).toString();
}

let running: TestService | undefined;
afterEach(async () => {
  await running?.stop();
  running = undefined;
});

async function start(env: Record<string, string>): Promise<TestService> {
  running = await startTestService(env);
  return running;
}

describe('seed file', () => {
  const dataDir = tempDir('p11kms-seed-');
  const seedFile = writeSeed(tempDir('p11kms-seedfile-'));
  let blob: Buffer;
  let snapshot: unknown;

  async function describeAll(t: TestService) {
    const keys = (await t.client.send(new ListKeysCommand({}))).Keys!.map((k) => k.KeyId).sort();
    const metadata = await Promise.all(keys.map(async (k) => (await t.client.send(new DescribeKeyCommand({ KeyId: k! }))).KeyMetadata));
    const aliases = (await t.client.send(new ListAliasesCommand({}))).Aliases!.map((a) => [a.AliasName, a.TargetKeyId]);
    const tags = (await t.client.send(new ListResourceTagsCommand({ KeyId: APP_KEY }))).Tags;
    const rotation = await t.client.send(new GetKeyRotationStatusCommand({ KeyId: APP_KEY }));
    return { keys, metadata, aliases, tags, rotation: [rotation.KeyRotationEnabled, rotation.RotationPeriodInDays, rotation.NextRotationDate] };
  }

  it('creates the keys with their fixed IDs, aliases, tags, rotation and imported material', async () => {
    const t = await start({ P11KMS_DATA_DIR: dataDir, P11KMS_SEED_FILE: seedFile });
    const app = (await t.client.send(new DescribeKeyCommand({ KeyId: 'alias/ci-app' }))).KeyMetadata!;
    expect(app).toMatchObject({ KeyId: APP_KEY, Description: 'ci app key', KeyState: 'Enabled' });
    expect((await t.client.send(new ListResourceTagsCommand({ KeyId: APP_KEY }))).Tags).toEqual([{ TagKey: 'env', TagValue: 'ci' }]);
    expect((await t.client.send(new GetKeyRotationStatusCommand({ KeyId: APP_KEY })))).toMatchObject({ KeyRotationEnabled: true, RotationPeriodInDays: 90 });
    const byok = (await t.client.send(new DescribeKeyCommand({ KeyId: 'alias/ci-byok' }))).KeyMetadata!;
    expect(byok).toMatchObject({ KeyId: BYOK_KEY, Origin: 'EXTERNAL', KeyState: 'Enabled', ExpirationModel: 'KEY_MATERIAL_DOES_NOT_EXPIRE' });
    blob = Buffer.from((await t.client.send(new EncryptCommand({ KeyId: 'alias/ci-byok', Plaintext: Buffer.from('ci secret') }))).CiphertextBlob!);
    // The token really holds the seeded materials.
    expect(openLocally(blob, material)).toBe('ci secret');
    const wrappedBlob = Buffer.from((await t.client.send(new EncryptCommand({ KeyId: WRAPPED_KEY, Plaintext: Buffer.from('wrapped seed') }))).CiphertextBlob!);
    expect(openLocally(wrappedBlob, wrappedMaterial)).toBe('wrapped seed');
    // Seeded private keys: the token signs with exactly them.
    for (const [keyId, pair, algorithm, hash] of [
      [EC_KEY, ecPair, 'ECDSA_SHA_256', 'sha256'],
      [RSA_KEY, rsaPair, 'RSASSA_PKCS1_V1_5_SHA_256', 'sha256'],
    ] as const) {
      expect((await t.client.send(new DescribeKeyCommand({ KeyId: keyId }))).KeyMetadata).toMatchObject({ KeyState: 'Enabled', Origin: 'EXTERNAL' });
      const spki = Buffer.from((await t.client.send(new GetPublicKeyCommand({ KeyId: keyId }))).PublicKey!);
      expect(spki.equals(pair.publicKey.export({ format: 'der', type: 'spki' }))).toBe(true);
      const { Signature } = await t.client.send(new SignCommand({ KeyId: keyId, Message: Buffer.from('seeded'), SigningAlgorithm: algorithm }));
      expect(verify(hash, Buffer.from('seeded'), pair.publicKey, Buffer.from(Signature!))).toBe(true);
    }
    snapshot = await describeAll(t);
  });

  it('changes nothing when applied again', async () => {
    const t = await start({ P11KMS_DATA_DIR: dataDir, P11KMS_SEED_FILE: seedFile });
    expect(await describeAll(t)).toEqual(snapshot);
    expect(Buffer.from((await t.client.send(new DecryptCommand({ CiphertextBlob: blob }))).Plaintext!).toString()).toBe('ci secret');
  });

  it('gives a fresh data dir keys that open the ciphertexts of an earlier run', async () => {
    const t = await start({ P11KMS_SEED_FILE: seedFile });
    expect(Buffer.from((await t.client.send(new DecryptCommand({ CiphertextBlob: blob }))).Plaintext!).toString()).toBe('ci secret');
  });

  it('reads the same seed written as YAML', async () => {
    const yamlFile = path.join(tempDir('p11kms-yamlseed-'), 'seed.yaml');
    fs.writeFileSync(
      yamlFile,
      [
        'keys:',
        `  - keyId: ${BYOK_KEY}`,
        '    origin: EXTERNAL',
        '    aliases: [alias/ci-byok]',
        '    keyMaterial:',
        `      plainHex: "${material.toString('hex')}"`,
        `  - keyId: ${APP_KEY}`,
        '    description: yaml app key',
        '    tags: { env: ci }',
        '',
      ].join('\n'),
    );
    const t = await start({ P11KMS_SEED_FILE: yamlFile });
    expect((await t.client.send(new DescribeKeyCommand({ KeyId: APP_KEY }))).KeyMetadata!.Description).toBe('yaml app key');
    expect(Buffer.from((await t.client.send(new DecryptCommand({ CiphertextBlob: blob }))).Plaintext!).toString()).toBe('ci secret');
  });

  it('stops the start with a message that names the problem but never the material', async () => {
    const bad = writeSeed(tempDir('p11kms-badseed-'), { unexpected: true });
    const problem = await startTestService({ P11KMS_SEED_FILE: bad }).then(
      (t) => t.stop().then(() => ''),
      (e: Error) => e.message,
    );
    expect(problem).toMatch(/seed file .* is invalid/);
    expect(problem).not.toContain(material.toString('hex'));
    expect(problem).not.toContain(transportKey.toString('hex'));
  });
});

describe('strict key custody', () => {
  it('refuses wrapping algorithms this token cannot unwrap itself, naming the mechanism', async () => {
    const t = await start({ P11KMS_STRICT_KEY_CUSTODY: 'true' });
    const keyId = (await t.client.send(new CreateKeyCommand({ Origin: 'EXTERNAL' }))).KeyMetadata!.KeyId!;
    for (const WrappingAlgorithm of ['RSAES_OAEP_SHA_256', 'RSA_AES_KEY_WRAP_SHA_256'] as const) {
      const refused = await errorOf(t.client.send(new GetParametersForImportCommand({ KeyId: keyId, WrappingAlgorithm, WrappingKeySpec: 'RSA_2048' })));
      expect(refused.name).toBe('UnsupportedOperationException');
      expect(refused.message).toContain('CKM_RSA_PKCS_OAEP');
    }
    const ok = await t.client.send(new GetParametersForImportCommand({ KeyId: keyId, WrappingAlgorithm: 'RSA_AES_KEY_WRAP_SHA_1', WrappingKeySpec: 'RSA_2048' }));
    expect(ok.PublicKey!.length).toBeGreaterThan(200);
  });
});

describe('seeding next to existing keys', () => {
  const NEW_KEY = 'aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee';

  function seedFile(entries: unknown[]): string {
    const file = path.join(tempDir('p11kms-seedrules-'), 'seed.json');
    fs.writeFileSync(file, JSON.stringify({ keys: entries }));
    return file;
  }

  async function startLogged(dataDir: string, file: string) {
    const lines: string[] = [];
    const log = createLogger('info', { write: (s: string) => void lines.push(s) });
    const service = await startService(testConfig(dataDir, { P11KMS_SEED_FILE: file }), { log });
    await service.close();
    return lines.map((l) => JSON.parse(l) as { msg: string; level: number });
  }

  /** The seed's service events, each start's in its own order, starts in the order they first
   *  appeared on disk: chain file names carry no start order (one process, random suffixes), and
   *  eventTime has one-second steps, so neither sorts starts within the same second. */
  const chainsSeen: string[] = [];
  function serviceEvents(dataDir: string): Array<{ eventName: string; additionalEventData?: { seedChange?: string } }> {
    const dir = path.join(dataDir, 'audit');
    const files = fs.readdirSync(dir).filter((f) => f.endsWith('.jsonl'));
    for (const f of files) if (!chainsSeen.includes(f)) chainsSeen.push(f);
    return chainsSeen
      .filter((f) => files.includes(f))
      .flatMap((f) => fs.readFileSync(path.join(dir, f), 'utf8').split('\n').filter(Boolean))
      .map((l) => JSON.parse(l))
      .filter((r) => r.eventType === 'AwsServiceEvent' && r.additionalEventData?.seedFile);
  }

  it('never re-points an existing alias or changes an existing key unless the entry says so; dry run first; every change logged and audited', async () => {
    const dataDir = tempDir('p11kms-seedrules-');
    const t = await startTestService({ P11KMS_DATA_DIR: dataDir });
    const mine = (await t.client.send(new CreateKeyCommand({ Description: 'mine' }))).KeyMetadata!.KeyId!;
    await t.client.send(new CreateAliasCommand({ AliasName: 'alias/my-app-key', TargetKeyId: mine }));
    await t.stop();

    const cautious = seedFile([
      { keyId: NEW_KEY, description: 'seeded', aliases: ['alias/my-app-key', 'alias/seeded'] },
      { keyId: mine, description: 'the seed says otherwise', tags: { env: 'ci' } },
    ]);
    // The dry run lists what would change and what would be left alone, and changes nothing.
    const check = await runCli(['seed', '--check', cautious], dataDir);
    expect(check.code).toBe(0);
    expect(check.stdout).toContain(`would CreateKey key ${NEW_KEY}`);
    expect(check.stdout).toContain(`would CreateAlias alias/seeded -> key ${NEW_KEY}`);
    expect(check.stdout).toContain(`would skip alias/my-app-key: it names key ${mine}`);
    expect(check.stdout).toContain(`would skip UpdateKeyDescription description of key ${mine}`);
    expect(check.stdout).toContain(`would skip TagResource tags env of key ${mine}`);

    const logs = await startLogged(dataDir, cautious);
    const infos = logs.filter((l) => l.level === 30).map((l) => l.msg);
    expect(infos).toContain(`seed: CreateKey key ${NEW_KEY} (SYMMETRIC_DEFAULT, AWS_KMS)`);
    expect(infos).toContain(`seed: CreateAlias alias/seeded -> key ${NEW_KEY}`);
    const warnings = logs.filter((l) => l.level === 40).map((l) => l.msg);
    expect(warnings.some((w) => w.includes('alias/my-app-key') && w.includes('"repoint": true'))).toBe(true);
    expect(warnings.some((w) => w.includes(`description of key ${mine}`) && w.includes('"update": true'))).toBe(true);
    expect(serviceEvents(dataDir).map((e) => e.eventName)).toEqual(['CreateKey', 'CreateAlias']);

    const u = await startTestService({ P11KMS_DATA_DIR: dataDir });
    expect((await u.client.send(new DescribeKeyCommand({ KeyId: 'alias/my-app-key' }))).KeyMetadata).toMatchObject({ KeyId: mine, Description: 'mine' });
    expect((await u.client.send(new ListResourceTagsCommand({ KeyId: mine }))).Tags).toEqual([]);
    await u.stop();

    // With consent per entry, the same differences are applied, each logged and audited.
    const consenting = seedFile([
      { keyId: NEW_KEY, description: 'seeded', aliases: [{ name: 'alias/my-app-key', repoint: true }, 'alias/seeded'] },
      { keyId: mine, update: true, description: 'the seed says otherwise', tags: { env: 'ci' } },
    ]);
    const second = await runCli(['seed', '--check', consenting], dataDir);
    expect(second.stdout).toContain(`would UpdateAlias alias/my-app-key from key ${mine} to key ${NEW_KEY}`);
    const applied = (await startLogged(dataDir, consenting)).map((l) => l.msg);
    expect(applied).toContain(`seed: UpdateAlias alias/my-app-key from key ${mine} to key ${NEW_KEY}`);
    expect(applied).toContain(`seed: UpdateKeyDescription description of key ${mine}`);
    expect(applied).toContain(`seed: TagResource tags env of key ${mine}`);
    expect(serviceEvents(dataDir).map((e) => e.eventName)).toEqual(['CreateKey', 'CreateAlias', 'UpdateAlias', 'UpdateKeyDescription', 'TagResource']);
    const v = await startTestService({ P11KMS_DATA_DIR: dataDir });
    expect((await v.client.send(new DescribeKeyCommand({ KeyId: 'alias/my-app-key' }))).KeyMetadata!.KeyId).toBe(NEW_KEY);
    expect((await v.client.send(new DescribeKeyCommand({ KeyId: mine }))).KeyMetadata!.Description).toBe('the seed says otherwise');
    await v.stop();
    // Applied: the dry run now has nothing to do.
    expect((await runCli(['seed', '--check', consenting], dataDir)).stdout).toContain('0 change(s), 0 skipped');
  });

  it('the dry run names a bad seed file without echoing material', async () => {
    const bad = seedFile([{ keyId: NEW_KEY, origin: 'AWS_KMS', keyMaterial: { plainHex: material.toString('hex') } }]);
    const check = await runCli(['seed', '--check', bad], tempDir('p11kms-seedrules-'));
    expect(check.code).toBe(2);
    expect(check.stderr).toContain('keyMaterial needs origin EXTERNAL');
    expect(check.stderr).not.toContain(material.toString('hex'));
  });
});
