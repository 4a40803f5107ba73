/**
 * The audit trail end to end: a scripted session of allowed, denied, failing and malformed calls
 * through the real AWS SDK produces exactly the expected CloudTrail-shaped records; the real CLI
 * (`node dist/src/cli.js audit verify`) accepts the intact trail and names each kind of tampering;
 * no plaintext the session sent appears anywhere in the data dir or the logs; `audit query` and
 * `usage` read the same records.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import {
  CreateAliasCommand,
  CreateKeyCommand,
  DecryptCommand,
  DescribeKeyCommand,
  EncryptCommand,
  GenerateDataKeyCommand,
  KMSClient,
} from '@aws-sdk/client-kms';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../src/log.js';
import { startService, type RunningService } from '../src/service.js';
import { runCli } from './helpers/process.js';
import { rawCall } from './helpers/raw.js';
import { ACCOUNT_ID, REGION, ROOT, errorOf, tempDir, testConfig } from './helpers/service.js';

const ALICE = { accessKeyId: 'AKIAP11KMSAUDITALICE', secretAccessKey: 'alice-audit-secret-0123456789abcdef' };
const ALICE_ARN = `arn:aws:iam::${ACCOUNT_ID}:user/alice`;
const ROOT_ARN = `arn:aws:iam::${ACCOUNT_ID}:root`;
// Distinctive plaintexts: none of them may appear anywhere on disk or in the logs.
const SECRET_A = 'PLAINTEXT-AUDIT-SECRET-A-7f3c9e2b';
const SECRET_B = 'PLAINTEXT-AUDIT-SECRET-B-1d8a4f60';

type Rec = Record<string, any>;

function readRecords(dataDir: string): Rec[] {
  const dir = path.join(dataDir, 'audit');
  return fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.jsonl'))
    .sort()
    .flatMap((f) =>
      fs
        .readFileSync(path.join(dir, f), 'utf8')
        .split('\n')
        .filter((l) => l.length > 0)
        .map((l) => JSON.parse(l) as Rec),
    );
}

/** A fresh copy of the data dir's audit folder (each tampering case gets its own). */
function copyTrail(from: string): string {
  const to = tempDir('p11kms-audit-tamper-');
  fs.cpSync(path.join(from, 'audit'), path.join(to, 'audit'), { recursive: true });
  return to;
}

function recordFile(dataDir: string): string {
  const dir = path.join(dataDir, 'audit');
  const files = fs.readdirSync(dir).filter((f) => f.endsWith('.jsonl'));
  expect(files).toHaveLength(1);
  return path.join(dir, files[0]!);
}

describe('audit trail', () => {
  const dataDir = tempDir('p11kms-audit-');
  let logText = '';
  let service: RunningService;
  let root: KMSClient;
  let alice: KMSClient;
  const expected: { requestId: string | undefined; eventName: string; check: (r: Rec) => void }[] = [];
  /** The next record must be `eventName`, carry `requestId` (when the SDK call returned one) and pass `check`. */
  const expectRecord = (requestId: string | undefined, eventName: string, check: (r: Rec) => void) => expected.push({ requestId, eventName, check });
  let records: Rec[] = [];
  let keyId = '';
  let keyArn = '';

  beforeAll(async () => {
    const principalsFile = path.join(dataDir, 'principals.json');
    fs.mkdirSync(dataDir, { recursive: true });
    fs.writeFileSync(principalsFile, JSON.stringify({ principals: [{ arn: ALICE_ARN, ...ALICE, policies: [] }] }));
    const config = testConfig(dataDir, { P11KMS_PRINCIPALS_FILE: principalsFile, P11KMS_LOG_LEVEL: 'debug' });
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        logText += chunk.toString();
        cb();
      },
    });
    service = await startService(config, { log: createLogger('debug', sink) });
    root = new KMSClient({ endpoint: service.url, region: REGION, credentials: ROOT, maxAttempts: 1 });
    alice = new KMSClient({ endpoint: service.url, region: REGION, credentials: ALICE, maxAttempts: 1 });

    // ---- the scripted session ----------------------------------------------------------------
    const created = await root.send(new CreateKeyCommand({ Description: 'audited key', Tags: [{ TagKey: 'team', TagValue: 'audit' }] }));
    keyId = created.KeyMetadata!.KeyId!;
    keyArn = created.KeyMetadata!.Arn!;
    expectRecord(created.$metadata.requestId, 'CreateKey', (r) => {
      expect(r.userIdentity).toEqual({ type: 'Root', principalId: ACCOUNT_ID, arn: ROOT_ARN, accountId: ACCOUNT_ID, accessKeyId: ROOT.accessKeyId });
      expect(r.requestParameters).toMatchObject({ description: 'audited key', tags: [{ tagKey: 'team', tagValue: 'audit' }] });
      expect(r.responseElements.keyMetadata).toMatchObject({ AWSAccountId: ACCOUNT_ID, keyId, arn: keyArn, keyState: 'Enabled', keyUsage: 'ENCRYPT_DECRYPT', enabled: true });
      expect(r.responseElements.keyMetadata.creationDate).toMatch(/^[A-Z][a-z]{2} \d{1,2}, \d{4}, \d{1,2}:\d{2}:\d{2} [AP]M$/);
      expect(r.readOnly).toBe(false);
    });

    const alias = await root.send(new CreateAliasCommand({ AliasName: 'alias/audited', TargetKeyId: keyId }));
    expectRecord(alias.$metadata.requestId, 'CreateAlias', (r) => {
      expect(r.requestParameters).toEqual({ aliasName: 'alias/audited', targetKeyId: keyId });
      expect(r.responseElements).toBeNull();
    });

    const enc = await root.send(new EncryptCommand({ KeyId: 'alias/audited', Plaintext: Buffer.from(SECRET_A), EncryptionContext: { dept: 'eng' } }));
    expectRecord(enc.$metadata.requestId, 'Encrypt', (r) => {
      expect(r.requestParameters).toEqual({ keyId: 'alias/audited', encryptionContext: { dept: 'eng' } });
      expect(r.responseElements).toBeNull();
      expect(r.readOnly).toBe(true);
    });

    const dec = await root.send(new DecryptCommand({ CiphertextBlob: enc.CiphertextBlob, EncryptionContext: { dept: 'eng' } }));
    expect(Buffer.from(dec.Plaintext!).toString()).toBe(SECRET_A);
    expectRecord(dec.$metadata.requestId, 'Decrypt', (r) => {
      expect(r.requestParameters).toEqual({ encryptionContext: { dept: 'eng' }, encryptionAlgorithm: 'SYMMETRIC_DEFAULT' });
      expect(r.responseElements).toBeNull();
    });

    const gdk = await root.send(new GenerateDataKeyCommand({ KeyId: keyArn, KeySpec: 'AES_256' }));
    expectRecord(gdk.$metadata.requestId, 'GenerateDataKey', (r) => expect(r.requestParameters).toEqual({ keyId: keyArn, keySpec: 'AES_256' }));

    // Denied: alice has no policy that allows kms:Encrypt.
    const denied = await errorOf(alice.send(new EncryptCommand({ KeyId: 'alias/audited', Plaintext: Buffer.from(SECRET_B) })));
    expect(denied.name).toBe('AccessDeniedException');
    expectRecord(undefined, 'Encrypt', (r) => {
      expect(r.errorCode).toBe('AccessDenied');
      expect(typeof r.errorMessage).toBe('string');
      expect(r.userIdentity).toMatchObject({ type: 'IAMUser', arn: ALICE_ARN, accountId: ACCOUNT_ID, accessKeyId: ALICE.accessKeyId, userName: 'alice' });
      expect(r.requestParameters).toEqual({ keyId: 'alias/audited' });
      expect(r.responseElements).toBeNull();
    });

    // Failed: a ciphertext with a flipped tag byte.
    const bad = Buffer.from(enc.CiphertextBlob!);
    bad[bad.length - 1] ^= 0xff;
    const invalid = await errorOf(root.send(new DecryptCommand({ CiphertextBlob: bad, EncryptionContext: { dept: 'eng' } })));
    expect(invalid.name).toBe('InvalidCiphertextException');
    expectRecord(undefined, 'Decrypt', (r) => expect(r.errorCode).toBe('InvalidCiphertextException'));

    const missing = await errorOf(root.send(new DescribeKeyCommand({ KeyId: '00000000-0000-0000-0000-000000000000' })));
    expect(missing.name).toBe('NotFoundException');
    expectRecord(undefined, 'DescribeKey', (r) => {
      expect(r.errorCode).toBe('NotFoundException');
      expect(r.resources).toEqual([{ accountId: ACCOUNT_ID, type: 'AWS::KMS::Key', ARN: `arn:aws:kms:${REGION}:${ACCOUNT_ID}:key/00000000-0000-0000-0000-000000000000` }]);
    });

    // Refused before any key was authorized: the record names the key behind the alias, if any.
    for (const [alias, resources] of [['alias/audited', [{ accountId: ACCOUNT_ID, type: 'AWS::KMS::Key', ARN: keyArn }]], ['alias/none', undefined]] as const) {
      const body = JSON.stringify({ KeyId: alias, Plaintext: 'AAAA', EncryptionAlgorithm: 'NO_SUCH_ALGORITHM' });
      const invalidInput = await rawCall(service.url, { target: 'TrentService.Encrypt', body });
      expect(invalidInput.json.__type).toBe('ValidationException');
      expectRecord(invalidInput.headers.get('x-amzn-requestid') ?? undefined, 'Encrypt', (r) => {
        expect(r.errorCode).toBe('ValidationException');
        expect(r.resources).toEqual(resources);
      });
    }

    // Malformed: bad signature, unknown operation, invalid JSON.
    const badSig = await rawCall(service.url, { target: 'TrentService.ListKeys', credentials: { accessKeyId: ROOT.accessKeyId, secretAccessKey: 'wrong-secret-wrong-secret-0123' } });
    expect(badSig.status).toBe(400);
    expectRecord(badSig.headers.get('x-amzn-requestid') ?? undefined, 'ListKeys', (r) => {
      expect(r.userIdentity).toEqual({ type: 'Unknown', accessKeyId: ROOT.accessKeyId });
      expect(r.errorCode).toBe(badSig.json.__type);
    });
    const unknownOp = await rawCall(service.url, { target: 'TrentService.FlyToTheMoon' });
    expectRecord(unknownOp.headers.get('x-amzn-requestid') ?? undefined, 'FlyToTheMoon', (r) => expect(r.errorCode).toBe('UnknownOperationException'));
    const badJson = await rawCall(service.url, { target: 'TrentService.Encrypt', body: `{"KeyId": "${keyId}", "Plaintext": ` });
    expect(badJson.json.__type).toBe('SerializationException');
    expectRecord(badJson.headers.get('x-amzn-requestid') ?? undefined, 'Encrypt', (r) => {
      expect(r.errorCode).toBe('SerializationException');
      expect(r.userIdentity.type).toBe('Root');
      expect(r.requestParameters).toBeNull();
    });

    await service.close();
    root.destroy();
    alice.destroy();
    records = readRecords(dataDir);
  });

  afterAll(async () => {
    await service?.close();
  });

  it('records every call, in order, with CloudTrail fields', () => {
    expect(records.map((r) => r.eventName)).toEqual(expected.map((e) => e.eventName));
    for (const [i, e] of expected.entries()) {
      const r = records[i]!;
      if (e.requestId) expect(r.requestID).toBe(e.requestId);
      expect(r).toMatchObject({
        eventVersion: '1.11',
        eventSource: 'kms.amazonaws.com',
        awsRegion: REGION,
        sourceIPAddress: '127.0.0.1',
        eventType: 'AwsApiCall',
        managementEvent: true,
        eventCategory: 'Management',
        recipientAccountId: ACCOUNT_ID,
      });
      expect(r.eventTime).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/);
      expect(r.eventID).toMatch(/^[0-9a-f-]{36}$/);
      expect(typeof r.userAgent).toBe('string');
      expect(r.p11kmsChain).toMatchObject({ seq: i + 1 });
      e.check(r);
    }
    // Key resources for every call that named the key (through an alias too, even when denied).
    for (const r of records.slice(0, 7)) {
      expect(r.resources).toEqual([{ accountId: ACCOUNT_ID, type: 'AWS::KMS::Key', ARN: keyArn }]);
    }
    expect(new Set(records.map((r) => r.eventID)).size).toBe(records.length);
  });

  it('never records plaintext, ciphertext or data keys', () => {
    const text = JSON.stringify(records);
    for (const forbidden of ['plaintext', 'Plaintext', 'ciphertextBlob', 'CiphertextBlob', SECRET_A, SECRET_B]) expect(text).not.toContain(forbidden);
  });

  it('leaves no plaintext anywhere in the data dir or the logs', () => {
    expect(logText.length).toBeGreaterThan(0);
    const needles = [SECRET_A, SECRET_B].flatMap((s) => [Buffer.from(s), Buffer.from(Buffer.from(s).toString('base64'))]);
    const walk = (dir: string): string[] => fs.readdirSync(dir, { withFileTypes: true }).flatMap((d) => (d.isDirectory() ? walk(path.join(dir, d.name)) : [path.join(dir, d.name)]));
    for (const file of walk(dataDir)) {
      const bytes = fs.readFileSync(file);
      for (const needle of needles) expect(bytes.includes(needle), `${file} contains a plaintext`).toBe(false);
    }
    for (const needle of needles) expect(logText.includes(needle.toString())).toBe(false);
  });

  it('signs a final digest with the token key, and `audit verify` accepts the intact trail', async () => {
    const digests = fs.readdirSync(path.join(dataDir, 'audit', 'digests'));
    expect(digests.some((d) => /^public-key-[0-9a-f]{64}\.pem$/.test(d))).toBe(true);
    const digestFiles = digests.filter((d) => d.endsWith('.json'));
    const last = JSON.parse(fs.readFileSync(path.join(dataDir, 'audit', 'digests', digestFiles.sort().at(-1)!), 'utf8'));
    expect(last).toMatchObject({ final: true, lastSequence: records.length, digestSignatureAlgorithm: 'SHA256withECDSA' });
    const { code, stdout, stderr } = await runCli(['audit', 'verify'], dataDir);
    expect(stderr).toBe('');
    expect(code).toBe(0);
    expect(stdout).toContain(`${records.length} records`);
    expect(stdout).toContain(records.at(-1)!.eventID);
  });

  it('checks the digests against the token key with --check-token', async () => {
    const { code, stdout } = await runCli(['audit', 'verify', '--check-token'], dataDir);
    expect(code).toBe(0);
    expect(stdout).toContain('signed by the audit key held in the token');
  });

  describe('tampering is detected', () => {
    const cases: [string, (file: string, dir: string) => void, RegExp][] = [
      [
        'one byte changed in a record',
        (file) => {
          const text = fs.readFileSync(file, 'utf8');
          const at = text.indexOf('"dept":"eng"');
          fs.writeFileSync(file, text.slice(0, at + 9) + 'x' + text.slice(at + 10));
        },
        /record 3 .*altered/,
      ],
      [
        'a record deleted',
        (file) => {
          const lines = fs.readFileSync(file, 'utf8').split('\n');
          lines.splice(4, 1);
          fs.writeFileSync(file, lines.join('\n'));
        },
        /records 5-5 .*missing \(removed\)/,
      ],
      [
        'two records swapped',
        (file) => {
          const lines = fs.readFileSync(file, 'utf8').split('\n');
          [lines[2], lines[3]] = [lines[3]!, lines[2]!];
          fs.writeFileSync(file, lines.join('\n'));
        },
        /reordered|missing/,
      ],
      [
        'the file truncated',
        (file) => {
          const size = fs.statSync(file).size;
          fs.truncateSync(file, Math.floor(size / 2));
        },
        /truncated/,
      ],
      [
        'the digest signature replaced',
        (_file, dir) => {
          const digestDir = path.join(dir, 'audit', 'digests');
          const name = fs.readdirSync(digestDir).filter((d) => d.endsWith('.json')).sort().at(-1)!;
          const d = JSON.parse(fs.readFileSync(path.join(digestDir, name), 'utf8'));
          const sig = Buffer.from(d.digestSignature, 'hex');
          sig[10] ^= 0x01;
          d.digestSignature = sig.toString('hex');
          fs.writeFileSync(path.join(digestDir, name), JSON.stringify(d) + '\n');
        },
        /invalid signature/,
      ],
    ];
    for (const [name, tamper, message] of cases) {
      it(name, async () => {
        const dir = copyTrail(dataDir);
        tamper(recordFile(dir), dir);
        const { code, stderr } = await runCli(['audit', 'verify'], dir);
        expect(code).toBe(1);
        expect(stderr).toMatch(/FAILED/);
        expect(stderr).toMatch(message);
      });
    }
  });

  it('answers `audit query` by event name, principal and key', async () => {
    const byEvent = await runCli(['audit', 'query', '--event', 'Encrypt'], dataDir);
    expect(byEvent.code).toBe(0);
    const encrypts = byEvent.stdout.trim().split('\n').map((l) => JSON.parse(l) as Rec);
    expect(encrypts).toHaveLength(5); // allowed, denied, two refused inputs, malformed JSON
    const byPrincipal = await runCli(['audit', 'query', '--principal', ALICE_ARN], dataDir);
    expect(byPrincipal.stdout.trim().split('\n')).toHaveLength(1);
    const byKey = await runCli(['audit', 'query', '--key', keyId, '--from', '2000-01-01T00:00:00Z'], dataDir);
    expect(byKey.stdout.trim().split('\n').length).toBeGreaterThanOrEqual(7);
    const future = await runCli(['audit', 'query', '--from', '2999-01-01T00:00:00Z'], dataDir);
    expect(future.stdout).toBe('');
  });

  it('reports monthly usage per key and operation with a price estimate', async () => {
    const month = records[0]!.eventTime.slice(0, 7);
    const { code, stdout } = await runCli(['usage', '--month', month, '--prices', '--json'], dataDir);
    expect(code).toBe(0);
    const report = JSON.parse(stdout);
    const key = report.keys.find((k: Rec) => k.key === keyArn);
    expect(key.requests).toMatchObject({ CreateKey: 1, CreateAlias: 1, Encrypt: 1, Decrypt: 1, GenerateDataKey: 1 });
    expect(key.failed).toMatchObject({ Encrypt: 2, Decrypt: 1 }); // denied, refused input through the alias
    expect(report.keysInExistence).toBe(1);
    // Charged from its creation to now (minutes in this run), not to the end of the month.
    expect(key.monthFraction).toBeGreaterThan(0);
    expect(key.monthFraction).toBeLessThan(0.01);
    expect(report.estimate.keyFees).toBe(Math.round(key.monthFraction * 100) / 100);
  });
});
