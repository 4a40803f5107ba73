/**
 * The XKS Proxy API v1 against a real service (SoftHSM2 token, SQLite, audit trail): every shape
 * and error of the spec checked strictly (exact member sets, statuses, error names), SigV4 with
 * the right and wrong service and credentials, credential rotation, AAD and ciphertextMetadata
 * binding, rotation underneath, key visibility by tag, and the audit record of every call.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import {
  CreateKeyCommand,
  DecryptCommand,
  DisableKeyCommand,
  EnableKeyCommand,
  EncryptCommand,
  RotateKeyOnDemandCommand,
  TagResourceCommand,
  UntagResourceCommand,
} from '@aws-sdk/client-kms';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { queryAuditRecords } from '../src/audit/query.js';
import { ConfigError } from '../src/config.js';
import { usageReport } from '../src/usage/report.js';
import { ROOT, startTestService, tempDir, testConfig, type TestService } from './helpers/service.js';
import { httpsKmsClient, makeTestCa } from './helpers/tls.js';
import { XKS_CREDENTIAL, XKS_CREDENTIAL_2, XKS_PREFIX, b64, healthPath, keyPath, requestMetadata, xksCall } from './helpers/xks.js';

const XKS_TAG = [{ TagKey: 'p11kms:xks', TagValue: 'enabled' }];

function writeCredentials(file: string, credentials: { accessKeyId: string; secretAccessKey: string }[]): void {
  const pairs = credentials.map(({ accessKeyId, secretAccessKey }) => ({ accessKeyId, secretAccessKey }));
  fs.writeFileSync(file, JSON.stringify({ credentials: pairs }), { mode: 0o600 });
}

describe('XKS proxy API', () => {
  let t: TestService;
  let credentialsFile: string;
  let keyId: string;
  const encryptBody = (plaintext: string | Buffer, extra: Record<string, unknown> = {}) => ({
    requestMetadata: requestMetadata({ kmsOperation: 'GenerateDataKey' }),
    plaintext: b64(plaintext),
    encryptionAlgorithm: 'AES_GCM',
    ...extra,
  });
  const decryptBody = (enc: Record<string, string>, extra: Record<string, unknown> = {}) => ({
    requestMetadata: requestMetadata({ kmsOperation: 'Decrypt' }),
    ciphertext: enc.ciphertext,
    ciphertextMetadata: enc.ciphertextMetadata,
    initializationVector: enc.initializationVector,
    authenticationTag: enc.authenticationTag,
    encryptionAlgorithm: 'AES_GCM',
    ...extra,
  });
  const call = (p: string, body: unknown, options = {}) => xksCall(t.service.url, p, body, options);
  const newXksKey = async (input: Record<string, unknown> = {}) =>
    (await t.client.send(new CreateKeyCommand({ ...input, Tags: XKS_TAG }))).KeyMetadata!.KeyId!;

  beforeAll(async () => {
    const dir = tempDir('p11kms-xks-');
    credentialsFile = path.join(dir, 'xks-credentials.json');
    writeCredentials(credentialsFile, [XKS_CREDENTIAL, XKS_CREDENTIAL_2]);
    t = await startTestService({ P11KMS_DATA_DIR: path.join(dir, 'data'), P11KMS_XKS_URI_PREFIX: XKS_PREFIX, P11KMS_XKS_CREDENTIALS_FILE: credentialsFile });
    keyId = await newXksKey();
  });
  afterAll(() => t?.stop());

  describe('GetKeyMetadata', () => {
    it('answers exactly keySpec, keyUsage and keyStatus for a tagged AES key', async () => {
      const res = await call(keyPath(keyId, 'metadata'), { requestMetadata: requestMetadata({ kmsOperation: 'CreateKey', kmsKeyArn: undefined }) });
      expect(res.status).toBe(200);
      expect(res.headers['content-type']).toMatch(/^application\/json/);
      expect(res.json).toStrictEqual({ keySpec: 'AES_256', keyUsage: ['ENCRYPT', 'DECRYPT'], keyStatus: 'ENABLED' });
    });

    it('does not see an untagged key, nor one whose tag is not "enabled"', async () => {
      const plain = (await t.client.send(new CreateKeyCommand({}))).KeyMetadata!.KeyId!;
      const other = (await t.client.send(new CreateKeyCommand({ Tags: [{ TagKey: 'p11kms:xks', TagValue: 'disabled' }] }))).KeyMetadata!.KeyId!;
      for (const id of [plain, other, '00000000-0000-0000-0000-000000000000', 'some.external_key-id']) {
        const res = await call(keyPath(id, 'metadata'), { requestMetadata: requestMetadata() });
        expect(res.status, id).toBe(404);
        expect(res.json, id).toStrictEqual({ errorName: 'KeyNotFoundException', errorMessage: expect.any(String) });
        expect((await call(keyPath(id, 'encrypt'), encryptBody('x'))).json.errorName).toBe('KeyNotFoundException');
      }
    });

    it('shows other specs with the usage they have', async () => {
      const hmac = await newXksKey({ KeySpec: 'HMAC_256', KeyUsage: 'GENERATE_VERIFY_MAC' });
      const ecc = await newXksKey({ KeySpec: 'ECC_NIST_P256', KeyUsage: 'SIGN_VERIFY' });
      const rsa = await newXksKey({ KeySpec: 'RSA_2048', KeyUsage: 'ENCRYPT_DECRYPT' });
      const md = async (id: string) => (await call(keyPath(id, 'metadata'), { requestMetadata: requestMetadata() })).json;
      expect(await md(hmac)).toStrictEqual({ keySpec: 'HMAC_256', keyUsage: ['SIGN', 'VERIFY'], keyStatus: 'ENABLED' });
      expect(await md(ecc)).toStrictEqual({ keySpec: 'ECC_NIST_P256', keyUsage: ['SIGN', 'VERIFY'], keyStatus: 'ENABLED' });
      expect(await md(rsa)).toStrictEqual({ keySpec: 'RSA_2048', keyUsage: ['ENCRYPT', 'DECRYPT'], keyStatus: 'ENABLED' });
      for (const id of [hmac, ecc, rsa]) {
        const res = await call(keyPath(id, 'encrypt'), encryptBody('secret'));
        expect(res.status).toBe(400);
        expect(res.json.errorName).toBe('InvalidKeyUsageException');
        const dec = await call(keyPath(id, 'decrypt'), {
          requestMetadata: requestMetadata(),
          ciphertext: b64('abc'),
          initializationVector: b64(Buffer.alloc(12)),
          authenticationTag: b64(Buffer.alloc(16)),
          encryptionAlgorithm: 'AES_GCM',
        });
        expect(dec.json.errorName).toBe('InvalidKeyUsageException');
      }
    });

    it('follows the KMS key state: a disabled key is DISABLED and refuses encrypt and decrypt', async () => {
      const id = await newXksKey();
      const enc = (await call(keyPath(id, 'encrypt'), encryptBody('before'))).json;
      await t.client.send(new DisableKeyCommand({ KeyId: id }));
      expect((await call(keyPath(id, 'metadata'), { requestMetadata: requestMetadata() })).json.keyStatus).toBe('DISABLED');
      for (const res of [await call(keyPath(id, 'encrypt'), encryptBody('x')), await call(keyPath(id, 'decrypt'), decryptBody(enc))]) {
        expect(res.status).toBe(400);
        expect(res.json.errorName).toBe('InvalidStateException');
      }
      await t.client.send(new EnableKeyCommand({ KeyId: id }));
      expect(Buffer.from((await call(keyPath(id, 'decrypt'), decryptBody(enc))).json.plaintext, 'base64').toString()).toBe('before');
    });

    it('stops serving a key once its tag is removed (a normal, audited KMS call)', async () => {
      const id = await newXksKey();
      expect((await call(keyPath(id, 'metadata'), { requestMetadata: requestMetadata() })).status).toBe(200);
      await t.client.send(new UntagResourceCommand({ KeyId: id, TagKeys: ['p11kms:xks'] }));
      expect((await call(keyPath(id, 'metadata'), { requestMetadata: requestMetadata() })).status).toBe(404);
      await t.client.send(new TagResourceCommand({ KeyId: id, Tags: XKS_TAG }));
      expect((await call(keyPath(id, 'metadata'), { requestMetadata: requestMetadata() })).status).toBe(200);
    });
  });

  describe('Encrypt and Decrypt', () => {
    it('round-trips with AAD: IV, tag and ciphertext apart, ciphertext as long as the plaintext', async () => {
      const aad = b64('project=nile,department=marketing');
      const res = await call(keyPath(keyId, 'encrypt'), encryptBody('Hello World!', { additionalAuthenticatedData: aad }));
      expect(res.status).toBe(200);
      expect(Object.keys(res.json).sort()).toEqual(['authenticationTag', 'ciphertext', 'ciphertextMetadata', 'initializationVector']);
      expect(Buffer.from(res.json.ciphertext, 'base64').length).toBe(12);
      expect(Buffer.from(res.json.initializationVector, 'base64').length).toBe(12);
      expect(Buffer.from(res.json.authenticationTag, 'base64').length).toBe(16);
      expect(Buffer.from(res.json.ciphertextMetadata, 'base64').length).toBeLessThanOrEqual(20);
      const dec = await call(keyPath(keyId, 'decrypt'), decryptBody(res.json, { additionalAuthenticatedData: aad }));
      expect(dec.status).toBe(200);
      expect(dec.json).toStrictEqual({ plaintext: b64('Hello World!') });
    });

    it('binds AAD and ciphertextMetadata: every change is InvalidCiphertextException', async () => {
      const aad = b64('context');
      const enc = (await call(keyPath(keyId, 'encrypt'), encryptBody('bound', { additionalAuthenticatedData: aad }))).json;
      const md = Buffer.from(enc.ciphertextMetadata, 'base64');
      const flipped = (s: string) => {
        const b = Buffer.from(s, 'base64');
        b[0] ^= 1;
        return b.toString('base64');
      };
      const cases: Record<string, unknown>[] = [
        { additionalAuthenticatedData: b64('context!') },
        {}, // AAD dropped
        { additionalAuthenticatedData: aad, ciphertextMetadata: undefined },
        { additionalAuthenticatedData: aad, ciphertextMetadata: b64(Buffer.from([md[0]!, 0, 0, 0, 9])) },
        { additionalAuthenticatedData: aad, authenticationTag: flipped(enc.authenticationTag) },
        { additionalAuthenticatedData: aad, ciphertext: flipped(enc.ciphertext) },
        { additionalAuthenticatedData: aad, initializationVector: flipped(enc.initializationVector) },
        { additionalAuthenticatedData: aad, initializationVector: b64(Buffer.alloc(16)) },
        { additionalAuthenticatedData: aad, authenticationTag: b64(Buffer.alloc(12)) },
      ];
      for (const change of cases) {
        const res = await call(keyPath(keyId, 'decrypt'), decryptBody(enc, change));
        expect(res.status, JSON.stringify(change)).toBe(400);
        expect(res.json.errorName, JSON.stringify(change)).toBe('InvalidCiphertextException');
      }
    });

    it('keeps AAD and metadata apart (the spec\'s length-prefix example)', async () => {
      // Encrypted with no AAD; the attacker moves the metadata into the AAD and drops the metadata.
      const enc = (await call(keyPath(keyId, 'encrypt'), encryptBody('no aad'))).json;
      const res = await call(keyPath(keyId, 'decrypt'), decryptBody(enc, { additionalAuthenticatedData: enc.ciphertextMetadata, ciphertextMetadata: undefined }));
      expect(res.json.errorName).toBe('InvalidCiphertextException');
    });

    it('returns the CDIV over AAD, metadata, IV, ciphertext and tag when asked', async () => {
      const aad = Buffer.from('cdiv aad');
      const res = await call(keyPath(keyId, 'encrypt'), encryptBody('integrity', { additionalAuthenticatedData: b64(aad), ciphertextDataIntegrityValueAlgorithm: 'SHA_256' }));
      expect(res.status).toBe(200);
      const part = (m: string) => Buffer.from(res.json[m], 'base64');
      const expected = createHash('sha256')
        .update(Buffer.concat([aad, part('ciphertextMetadata'), part('initializationVector'), part('ciphertext'), part('authenticationTag')]))
        .digest('base64');
      expect(res.json.ciphertextDataIntegrityValue).toBe(expected);
      const noAad = await call(keyPath(keyId, 'encrypt'), encryptBody('x', { ciphertextDataIntegrityValueAlgorithm: 'SHA_256' }));
      const p2 = (m: string) => Buffer.from(noAad.json[m], 'base64');
      expect(noAad.json.ciphertextDataIntegrityValue).toBe(
        createHash('sha256').update(Buffer.concat([p2('ciphertextMetadata'), p2('initializationVector'), p2('ciphertext'), p2('authenticationTag')])).digest('base64'),
      );
    });

    it('decrypts what was encrypted before a rotation, after it', async () => {
      const id = await newXksKey();
      const before = (await call(keyPath(id, 'encrypt'), encryptBody('v1 data'))).json;
      await t.client.send(new RotateKeyOnDemandCommand({ KeyId: id }));
      const after = (await call(keyPath(id, 'encrypt'), encryptBody('v2 data'))).json;
      expect(after.ciphertextMetadata).not.toBe(before.ciphertextMetadata);
      expect((await call(keyPath(id, 'decrypt'), decryptBody(before))).json.plaintext).toBe(b64('v1 data'));
      expect((await call(keyPath(id, 'decrypt'), decryptBody(after))).json.plaintext).toBe(b64('v2 data'));
    });

    it('takes the spec\'s sizes (4300 bytes plaintext, 8192 bytes AAD) and refuses larger ones with 501', async () => {
      const ok = await call(keyPath(keyId, 'encrypt'), encryptBody(Buffer.alloc(4300, 7), { additionalAuthenticatedData: b64(Buffer.alloc(8192, 1)) }));
      expect(ok.status).toBe(200);
      const dec = await call(keyPath(keyId, 'decrypt'), decryptBody(ok.json, { additionalAuthenticatedData: b64(Buffer.alloc(8192, 1)) }));
      expect(Buffer.from(dec.json.plaintext, 'base64').equals(Buffer.alloc(4300, 7))).toBe(true);
      for (const body of [encryptBody(Buffer.alloc(4301)), encryptBody('x', { additionalAuthenticatedData: b64(Buffer.alloc(8193)) })]) {
        const res = await call(keyPath(keyId, 'encrypt'), body);
        expect(res.status).toBe(501);
        expect(res.json.errorName).toBe('UnsupportedOperationException');
      }
    });

    it('leaves KMS API ciphertexts of the same key undecryptable through XKS, and vice versa', async () => {
      const kmsBlob = (await t.client.send(new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from('kms api') }))).CiphertextBlob!;
      expect(Buffer.from((await t.client.send(new DecryptCommand({ CiphertextBlob: kmsBlob }))).Plaintext!).toString()).toBe('kms api');
      const enc = (await call(keyPath(keyId, 'encrypt'), encryptBody('xks'))).json;
      const res = await call(keyPath(keyId, 'decrypt'), decryptBody(enc, { ciphertext: b64(Buffer.from(kmsBlob).subarray(-23, -16)) }));
      expect(res.json.errorName).toBe('InvalidCiphertextException');
    });

    it('treats kmsRequestId and kmsOperation as opaque strings', async () => {
      const res = await call(keyPath(keyId, 'encrypt'), encryptBody('x', { requestMetadata: requestMetadata({ kmsRequestId: 'not a uuid at all', kmsOperation: 'BulkEncryptOfTheFuture' }) }));
      expect(res.status).toBe(200);
    });
  });

  describe('validation', () => {
    const cases: [string, () => unknown, string?][] = [
      ['no requestMetadata', () => ({ plaintext: b64('x'), encryptionAlgorithm: 'AES_GCM' })],
      ['no kmsRequestId', () => encryptBody('x', { requestMetadata: requestMetadata({ kmsRequestId: undefined }) })],
      ['no awsPrincipalArn', () => encryptBody('x', { requestMetadata: requestMetadata({ awsPrincipalArn: undefined }) })],
      ['no kmsKeyArn on encrypt', () => encryptBody('x', { requestMetadata: requestMetadata({ kmsKeyArn: undefined }) })],
      ['a number as kmsOperation', () => encryptBody('x', { requestMetadata: requestMetadata({ kmsOperation: 7 }) })],
      ['no plaintext', () => ({ requestMetadata: requestMetadata(), encryptionAlgorithm: 'AES_GCM' })],
      ['plaintext not Base64', () => ({ ...encryptBody('x'), plaintext: 'not*base64' })],
      ['another algorithm', () => encryptBody('x', { encryptionAlgorithm: 'AES_CBC' })],
      ['another CDIV algorithm', () => encryptBody('x', { ciphertextDataIntegrityValueAlgorithm: 'MD5' })],
      ['AAD not Base64', () => encryptBody('x', { additionalAuthenticatedData: '%%%' })],
    ];
    it.each(cases)('%s: 400 ValidationException', async (_name, body) => {
      const res = await call(keyPath(keyId, 'encrypt'), body());
      expect(res.status).toBe(400);
      expect(res.json).toStrictEqual({ errorName: 'ValidationException', errorMessage: expect.any(String) });
    });

    it('a body that is not JSON, or not an object: 400 ValidationException', async () => {
      for (const rawBody of ['{not json', '[]', '"text"', 'null']) {
        const res = await call(keyPath(keyId, 'encrypt'), undefined, { rawBody });
        expect(res.status, rawBody).toBe(400);
        expect(res.json.errorName, rawBody).toBe('ValidationException');
      }
    });

    it('a body over the proxy\'s 64 KiB limit: 400 ValidationException, answered', async () => {
      const res = await call(keyPath(keyId, 'encrypt'), encryptBody(Buffer.alloc(70_000)));
      expect(res.status).toBe(400);
      expect(res.json).toStrictEqual({ errorName: 'ValidationException', errorMessage: expect.stringContaining('exceeds') });
    });

    it('decrypt without IV or tag: 400 ValidationException', async () => {
      const enc = (await call(keyPath(keyId, 'encrypt'), encryptBody('x'))).json;
      for (const missing of ['initializationVector', 'authenticationTag', 'ciphertext']) {
        const res = await call(keyPath(keyId, 'decrypt'), decryptBody(enc, { [missing]: undefined }));
        expect(res.json.errorName, missing).toBe('ValidationException');
      }
    });

    it('an externalKeyId outside the spec\'s character set: 400 ValidationException', async () => {
      const res = await call(keyPath('bad%24id', 'metadata'), { requestMetadata: requestMetadata() });
      expect(res.status).toBe(400);
      expect(res.json.errorName).toBe('ValidationException');
    });
  });

  describe('URIs and methods', () => {
    it('a wrong prefix or an unknown path under it is InvalidUriPathException (404), not a KMS API error', async () => {
      for (const p of [
        `/other/kms/xks/v1/keys/${keyId}/metadata`,
        `/kms/xks/v1/keys/${keyId}/metadata`,
        `${XKS_PREFIX}/kms/xks/v1/keys/${keyId}/sign`,
        `${XKS_PREFIX}/kms/xks/v1/keys/${keyId}`,
        `${XKS_PREFIX}/kms/xks/v1/healthz`,
        `${XKS_PREFIX}/kms/xks/v1`,
      ]) {
        const res = await call(p, { requestMetadata: requestMetadata() });
        expect(res.status, p).toBe(404);
        expect(res.json, p).toStrictEqual({ errorName: 'InvalidUriPathException', errorMessage: expect.any(String) });
      }
    });

    it('GET (or PUT) at an API URI is 405 Method Not Allowed', async () => {
      for (const method of ['GET', 'PUT']) {
        const res = await call(keyPath(keyId, 'metadata'), undefined, { method, rawBody: '' });
        expect(res.status, method).toBe(405);
        expect(res.headers.allow).toBe('POST');
      }
      expect((await call(healthPath(), undefined, { method: 'GET', rawBody: '' })).status).toBe(405);
    });

    it('leaves the KMS API and the service routes as they were', async () => {
      expect((await t.client.send(new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from('still') }))).KeyId).toContain(keyId);
      expect((await fetch(`${t.service.url}/healthz`)).status).toBe(200);
    });
  });

  describe('SigV4', () => {
    const body = () => ({ requestMetadata: requestMetadata() });
    it('accepts both configured credentials (rotation)', async () => {
      for (const credentials of [XKS_CREDENTIAL, XKS_CREDENTIAL_2]) {
        expect((await call(keyPath(keyId, 'metadata'), body(), { credentials })).status).toBe(200);
      }
    });

    const refusals: [string, Record<string, unknown>][] = [
      ['the KMS service name', { service: 'kms' }],
      ['another Region', { region: 'eu-west-1' }],
      ['an unknown access key', { credentials: { accessKeyId: 'XKSAKIDUNKNOWNAAAAAA', secretAccessKey: XKS_CREDENTIAL.secretAccessKey } }],
      ['a wrong secret', { credentials: { accessKeyId: XKS_CREDENTIAL.accessKeyId, secretAccessKey: XKS_CREDENTIAL_2.secretAccessKey } }],
      ['the KMS API root credential', { credentials: ROOT }],
      ['no signature', { sign: false }],
    ];
    it.each(refusals)('refuses %s with 401 AuthenticationFailedException', async (_name, options) => {
      const res = await call(keyPath(keyId, 'metadata'), body(), options);
      expect(res.status).toBe(401);
      expect(res.json).toStrictEqual({ errorName: 'AuthenticationFailedException', errorMessage: expect.any(String) });
      expect((await call(healthPath(), { requestMetadata: { kmsRequestId: 'r', kmsOperation: 'KmsHealthCheck' } }, options)).status).toBe(401);
    });

    it('the KMS API refuses the XKS credential', async () => {
      const xksAsKms = t.clientFor({ ...XKS_CREDENTIAL }); // the SDK annotates the object it is given
      await expect(xksAsKms.send(new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from('x') }))).rejects.toMatchObject({ name: 'UnrecognizedClientException' });
      xksAsKms.destroy();
    });
  });

  describe('GetHealthStatus', () => {
    it('reports the proxy and the token in the spec\'s shape', async () => {
      const res = await call(healthPath(), { requestMetadata: { kmsRequestId: 'abc', kmsOperation: 'KmsHealthCheck' } });
      expect(res.status).toBe(200);
      expect(res.json).toStrictEqual({
        xksProxyFleetSize: 1,
        xksProxyVendor: 'p11kms',
        xksProxyModel: expect.stringMatching(/^p11kms \d+\.\d+\.\d+/),
        ekmVendor: 'SoftHSM project',
        ekmFleetDetails: [{ id: expect.any(String), model: expect.stringContaining('SoftHSM'), healthStatus: 'ACTIVE' }],
      });
    });
  });

  describe('audit, metrics and usage', () => {
    it('records every XKS call with its request metadata, never the plaintext', async () => {
      const secret = 'xks-plaintext-that-must-not-be-logged';
      const rid = `audit-${Date.now()}`;
      await call(keyPath(keyId, 'encrypt'), encryptBody(secret, { requestMetadata: requestMetadata({ kmsRequestId: rid, kmsOperation: 'GenerateDataKey' }) }));
      await call(keyPath(keyId, 'encrypt'), encryptBody(secret, { requestMetadata: requestMetadata({ kmsRequestId: `${rid}-denied` }) }), { credentials: ROOT });
      await call(`/nowhere/kms/xks/v1/health`, {});
      const records = [];
      for await (const r of queryAuditRecords(t.dataDir, {})) records.push(r);
      const ok = records.find((r) => (r.additionalEventData as { kmsRequestId?: string } | undefined)?.kmsRequestId === rid)!;
      expect(ok).toMatchObject({
        eventSource: 'kms-xks-proxy',
        eventName: 'XksEncrypt',
        eventType: 'AwsApiCall',
        userIdentity: { type: 'AWSService', invokedBy: 'kms.amazonaws.com', accessKeyId: XKS_CREDENTIAL.accessKeyId },
        requestParameters: { externalKeyId: keyId, encryptionAlgorithm: 'AES_GCM', requestMetadata: { kmsRequestId: rid, kmsOperation: 'GenerateDataKey', awsPrincipalArn: 'arn:aws:iam::123456789012:user/Alice' } },
        resources: [{ ARN: expect.stringContaining(`:key/${keyId}`) }],
      });
      expect(ok.errorCode).toBeUndefined();
      const denied = records.find((r) => (r.additionalEventData as { kmsRequestId?: string } | undefined)?.kmsRequestId === `${rid}-denied`)!;
      expect(denied).toMatchObject({ eventName: 'XksEncrypt', errorCode: 'AuthenticationFailedException', userIdentity: { accessKeyId: ROOT.accessKeyId } });
      expect(records.some((r) => r.eventName === 'XksUnknownOperation' && r.errorCode === 'InvalidUriPathException')).toBe(true);
      const auditDir = path.join(t.dataDir, 'audit');
      for (const f of fs.readdirSync(auditDir, { recursive: true }) as string[]) {
        const file = path.join(auditDir, f);
        if (!fs.statSync(file).isFile()) continue;
        const text = fs.readFileSync(file, 'utf8');
        expect(text.includes(secret) || text.includes(b64(secret))).toBe(false);
      }
    });

    it('counts XKS calls per operation in /metrics and per key in the usage report', async () => {
      await call(keyPath(keyId, 'metadata'), { requestMetadata: requestMetadata() });
      const metrics = await (await fetch(`${t.service.url}/metrics`)).text();
      expect(metrics).toMatch(/p11kms_requests_total\{operation="XksEncrypt",code="OK"\} [1-9]/);
      expect(metrics).toMatch(/p11kms_requests_total\{operation="XksGetKeyMetadata",code="OK"\} [1-9]/);
      expect(metrics).toMatch(/p11kms_requests_total\{operation="XksEncrypt",code="AuthenticationFailedException"\} [1-9]/);
      await t.service.audit.close(); // make every record durable and digested before reading
      const month = new Date().toISOString().slice(0, 7);
      const report = await usageReport(t.dataDir, { kind: 'sqlite', file: path.join(t.dataDir, 'p11kms.db') }, month, false);
      const row = report.keys.find((k) => k.key.endsWith(`:key/${keyId}`))!;
      expect(row.requests.XksEncrypt).toBeGreaterThan(3);
      expect(row.requests.XksDecrypt).toBeGreaterThan(1);
    });
  });
});

describe('XKS credential rotation through the credentials file', () => {
  it('picks up a rewritten file without a restart; a broken file keeps the last good one', async () => {
    const dir = tempDir('p11kms-xks-rot-');
    const file = path.join(dir, 'creds.json');
    writeCredentials(file, [XKS_CREDENTIAL]);
    const t = await startTestService({ P11KMS_DATA_DIR: path.join(dir, 'data'), P11KMS_XKS_URI_PREFIX: XKS_PREFIX, P11KMS_XKS_CREDENTIALS_FILE: file, P11KMS_AUDIT: 'off' });
    try {
      const health = (credentials: typeof XKS_CREDENTIAL) =>
        xksCall(t.service.url, healthPath(), { requestMetadata: { kmsRequestId: 'r', kmsOperation: 'KmsHealthCheck' } }, { credentials }).then((r) => r.status);
      expect(await health(XKS_CREDENTIAL)).toBe(200);
      expect(await health(XKS_CREDENTIAL_2)).toBe(401);
      writeCredentials(file, [XKS_CREDENTIAL, XKS_CREDENTIAL_2]);
      await waitFor(async () => (await health(XKS_CREDENTIAL_2)) === 200);
      writeCredentials(file, [XKS_CREDENTIAL_2]);
      await waitFor(async () => (await health(XKS_CREDENTIAL)) === 401);
      fs.writeFileSync(file, '{"credentials": [{"accessKeyId": "short", "secretAccessKey": "x"}]}');
      await new Promise((r) => setTimeout(r, 2500));
      expect(await health(XKS_CREDENTIAL_2)).toBe(200);
    } finally {
      await t.stop();
    }
  });
});

describe('XKS secondary authorization', () => {
  let t: TestService;
  let keyId: string;
  let otherKeyId: string;
  beforeAll(async () => {
    const dir = tempDir('p11kms-xks-authz-');
    t = await startTestService({ P11KMS_DATA_DIR: path.join(dir, 'data'), P11KMS_AUDIT: 'off' });
    keyId = (await t.client.send(new CreateKeyCommand({ Tags: XKS_TAG }))).KeyMetadata!.KeyId!;
    otherKeyId = (await t.client.send(new CreateKeyCommand({ Tags: XKS_TAG }))).KeyMetadata!.KeyId!;
    await t.stop();
    const rules = path.join(dir, 'xks-rules.json');
    fs.writeFileSync(
      rules,
      JSON.stringify({
        Version: '2012-10-17',
        Statement: [
          { Effect: 'Allow', Principal: { AWS: 'arn:aws:iam::123456789012:user/Alice' }, Action: ['xks:GetKeyMetadata', 'xks:Decrypt'], Resource: '*' },
          {
            Effect: 'Allow',
            Principal: { AWS: 'arn:aws:iam::123456789012:user/Alice' },
            Action: 'xks:Encrypt',
            Resource: `arn:aws:kms:us-east-1:111122223333:key/${keyId}`,
            Condition: { StringEquals: { 'xks:KmsOperation': 'GenerateDataKey' } },
          },
          { Effect: 'Deny', Principal: '*', Action: 'xks:*', Resource: '*', Condition: { StringEquals: { 'xks:KmsViaService': 'ebs' } } },
        ],
      }),
    );
    t = await startTestService({
      P11KMS_DATA_DIR: path.join(dir, 'data'),
      P11KMS_AUDIT: 'off',
      P11KMS_XKS_URI_PREFIX: XKS_PREFIX,
      P11KMS_XKS_ACCESS_KEY_ID: XKS_CREDENTIAL.accessKeyId,
      P11KMS_XKS_SECRET_ACCESS_KEY: XKS_CREDENTIAL.secretAccessKey,
      P11KMS_XKS_AUTHORIZATION_FILE: rules,
    });
  });
  afterAll(() => t?.stop());

  const encrypt = (id: string, md: Record<string, unknown>) =>
    xksCall(t.service.url, keyPath(id, 'encrypt'), { requestMetadata: requestMetadata(md), plaintext: b64('x'), encryptionAlgorithm: 'AES_GCM' });

  it('allows what the rules allow, and denies everything else by default with 403', async () => {
    expect((await encrypt(keyId, { kmsOperation: 'GenerateDataKey' })).status).toBe(200);
    const denied = [
      await encrypt(keyId, { kmsOperation: 'Encrypt' }),
      await encrypt(otherKeyId, { kmsOperation: 'GenerateDataKey' }),
      await encrypt(keyId, { kmsOperation: 'GenerateDataKey', awsPrincipalArn: 'arn:aws:iam::123456789012:user/Mallory' }),
      await encrypt(keyId, { kmsOperation: 'GenerateDataKey', kmsViaService: 'ebs' }),
      await xksCall(t.service.url, keyPath(keyId, 'metadata'), { requestMetadata: requestMetadata({ awsPrincipalArn: 'AWS Internal' }) }),
    ];
    for (const res of denied) {
      expect(res.status).toBe(403);
      expect(res.json).toStrictEqual({ errorName: 'AccessDeniedException', errorMessage: expect.any(String) });
    }
    expect((await xksCall(t.service.url, keyPath(otherKeyId, 'metadata'), { requestMetadata: requestMetadata() })).status).toBe(200);
  });

  it('never applies to GetHealthStatus', async () => {
    expect((await xksCall(t.service.url, healthPath(), { requestMetadata: { kmsRequestId: 'x', kmsOperation: 'KmsHealthCheck' } })).status).toBe(200);
  });
});

describe('XKS over TLS', () => {
  it('serves the XKS API over HTTPS on the service port (TLS 1.2 or later), and nothing in clear there', async () => {
    const dir = tempDir('p11kms-xks-tls-');
    const ca = makeTestCa('p11kms XKS test CA');
    const server = ca.issue('server', { subject: '/CN=localhost', server: true });
    const t = await startTestService({
      P11KMS_DATA_DIR: path.join(dir, 'data'),
      P11KMS_AUDIT: 'off',
      P11KMS_TLS_CERT_FILE: server.certFile,
      P11KMS_TLS_KEY_FILE: server.keyFile,
      P11KMS_XKS_URI_PREFIX: XKS_PREFIX,
      P11KMS_XKS_ACCESS_KEY_ID: XKS_CREDENTIAL.accessKeyId,
      P11KMS_XKS_SECRET_ACCESS_KEY: XKS_CREDENTIAL.secretAccessKey,
    });
    try {
      expect(t.service.url).toMatch(/^https:/);
      const caPem = fs.readFileSync(ca.caFile);
      const health = await xksCall(t.service.url, healthPath(), { requestMetadata: { kmsRequestId: 'tls', kmsOperation: 'KmsHealthCheck' } }, { ca: caPem });
      expect(health.status).toBe(200);
      expect(health.json.ekmFleetDetails[0].healthStatus).toBe('ACTIVE');
      // A key made through the KMS API over TLS, then used over XKS over TLS.
      const kms = httpsKmsClient(t.service.url, ca.caFile);
      const keyId = (await kms.send(new CreateKeyCommand({ Tags: XKS_TAG }))).KeyMetadata!.KeyId!;
      kms.destroy();
      const enc = await xksCall(t.service.url, keyPath(keyId, 'encrypt'), { requestMetadata: requestMetadata(), plaintext: b64('over tls'), encryptionAlgorithm: 'AES_GCM' }, { ca: caPem });
      expect(enc.status).toBe(200);
      const plainUrl = t.service.url.replace('https:', 'http:');
      await expect(xksCall(plainUrl, healthPath(), { requestMetadata: { kmsRequestId: 'x', kmsOperation: 'KmsHealthCheck' } })).rejects.toThrow();
    } finally {
      await t.stop();
    }
  });
});

describe('XKS configuration', () => {
  const dir = tempDir('p11kms-xks-config-');
  it.each([
    [{ P11KMS_XKS_URI_PREFIX: '/xks' }, /needs its SigV4 credential/],
    [{ P11KMS_XKS_ACCESS_KEY_ID: XKS_CREDENTIAL.accessKeyId, P11KMS_XKS_SECRET_ACCESS_KEY: XKS_CREDENTIAL.secretAccessKey }, /need P11KMS_XKS_URI_PREFIX/],
    [{ P11KMS_XKS_URI_PREFIX: '/xks', P11KMS_XKS_ACCESS_KEY_ID: 'lowercase-not-allowed', P11KMS_XKS_SECRET_ACCESS_KEY: XKS_CREDENTIAL.secretAccessKey }, /P11KMS_XKS_ACCESS_KEY_ID/],
    [{ P11KMS_XKS_URI_PREFIX: '/xks', P11KMS_XKS_ACCESS_KEY_ID: XKS_CREDENTIAL.accessKeyId }, /must be set together/],
    [{ P11KMS_XKS_URI_PREFIX: 'no-leading-slash', P11KMS_XKS_ACCESS_KEY_ID: XKS_CREDENTIAL.accessKeyId, P11KMS_XKS_SECRET_ACCESS_KEY: XKS_CREDENTIAL.secretAccessKey }, /P11KMS_XKS_URI_PREFIX/],
  ])('refuses %o', (env, message) => {
    expect(() => testConfig(dir, env as Record<string, string>)).toThrow(ConfigError);
    expect(() => testConfig(dir, env as Record<string, string>)).toThrow(message);
  });

  it('a rules file that is not a valid policy stops the start, naming the file', async () => {
    const rules = path.join(dir, 'bad-rules.json');
    fs.writeFileSync(rules, JSON.stringify({ Statement: [{ Effect: 'Allow', Action: 'xks:Encrypt', Resource: '*' }] }));
    await expect(
      startTestService({
        P11KMS_DATA_DIR: path.join(dir, 'data'),
        P11KMS_XKS_URI_PREFIX: XKS_PREFIX,
        P11KMS_XKS_ACCESS_KEY_ID: XKS_CREDENTIAL.accessKeyId,
        P11KMS_XKS_SECRET_ACCESS_KEY: XKS_CREDENTIAL.secretAccessKey,
        P11KMS_XKS_AUTHORIZATION_FILE: rules,
      }),
    ).rejects.toThrow(/bad-rules\.json.*principal/);
  });
});

async function waitFor(condition: () => Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > until) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 100));
  }
}
