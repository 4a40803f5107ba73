/**
 * What the service tells its operator: one info line per request, a start-up summary without
 * secrets, and failed starts that say why, stop, and leave no credentials behind.
 */
import fs from 'node:fs';
import path from 'node:path';
import { CreateKeyCommand, DecryptCommand, EncryptCommand, KMSClient } from '@aws-sdk/client-kms';
import { describe, expect, it } from 'vitest';
import { createLogger, requestLineLogger } from '../src/log.js';
import { startService } from '../src/service.js';
import { spawnService } from './helpers/process.js';
import { ROOT, errorOf, tempDir, testConfig } from './helpers/service.js';

type Line = Record<string, unknown> & { msg: string; level: number };

describe('logs', () => {
  it('one info line per request (request ID, operation, principal, key, status, error type, duration), never the plaintext', async () => {
    const lines: string[] = [];
    const log = createLogger('info', { write: (s: string) => void lines.push(s) });
    const service = await startService(testConfig(tempDir('p11kms-logs-')), { log });
    const client = new KMSClient({ endpoint: service.url, region: 'us-east-1', credentials: ROOT, maxAttempts: 1 });
    try {
      const keyId = (await client.send(new CreateKeyCommand({}))).KeyMetadata!.KeyId!;
      const { CiphertextBlob } = await client.send(new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from('top secret payload') }));
      await client.send(new DecryptCommand({ CiphertextBlob }));
      await errorOf(client.send(new EncryptCommand({ KeyId: 'alias/none', Plaintext: Buffer.from('x') })));
      const parsed = lines.map((l) => JSON.parse(l) as Line);
      const summary = parsed.find((l) => l.msg === 'p11kms listening')!;
      expect(summary).toMatchObject({ principals: 1, region: 'us-east-1', accountId: '111122223333', audit: expect.stringContaining('audit'), keys: 0, workers: 1 });
      expect(summary.token).toMatchObject({ label: 'p11kms', model: 'SoftHSM v2', module: 'self-provisioned SoftHSM2' });
      expect(summary.store).toMatch(/p11kms\.db$/);
      const requests = parsed.filter((l) => l.msg === 'request');
      expect(requests.map((r) => r.operation)).toEqual(['CreateKey', 'Encrypt', 'Decrypt', 'Encrypt']);
      for (const r of requests) {
        expect(r.level).toBe(30);
        expect(r.requestId).toMatch(/^[0-9a-f-]{36}$/);
        expect(r.principal).toBe('arn:aws:iam::111122223333:root');
        expect(typeof r.ms).toBe('number');
      }
      expect(requests[0]).toMatchObject({ key: keyId, status: 200 });
      expect(requests[1]).toMatchObject({ key: expect.stringContaining(keyId), status: 200 });
      expect(requests[2]).toMatchObject({ key: expect.stringContaining(keyId), status: 200 });
      expect(requests[3]).toMatchObject({ key: 'alias/none', status: 400, error: 'NotFoundException' });
      const all = lines.join('');
      expect(all).not.toContain('top secret payload');
      expect(all).not.toContain(Buffer.from('top secret payload').toString('base64'));
      expect(all).not.toContain(ROOT.secretAccessKey);
    } finally {
      client.destroy();
      await service.close();
    }
  });

  it('a data dir that cannot be created stops the start with a message naming P11KMS_DATA_DIR', async () => {
    const proc = spawnService({ P11KMS_DATA_DIR: '/proc/p11kms-cannot-exist/data' });
    const timer = setTimeout(() => proc.child.kill('SIGKILL'), 20_000);
    const code = await proc.exited;
    clearTimeout(timer);
    expect(code).toBe(1);
    expect(proc.output()).toContain('P11KMS_DATA_DIR /proc/p11kms-cannot-exist/data cannot be created');
  });

  it('a failed start leaves no generated root credentials behind', async () => {
    const dataDir = tempDir('p11kms-failstart-');
    const proc = spawnService({ P11KMS_DATA_DIR: dataDir, P11KMS_PKCS11_MODULE: '/nonexistent/libpkcs11.so', P11KMS_TOKEN_LABEL: 'x', P11KMS_PIN: '1234' });
    expect(await proc.exited).toBe(1);
    expect(proc.output()).toContain('cannot load PKCS#11 module /nonexistent/libpkcs11.so');
    expect(proc.output()).not.toContain('1234');
    expect(fs.existsSync(path.join(dataDir, 'root-credentials.json'))).toBe(false);
  });
});

describe('the request-line logger', () => {
  it('writes the same JSON line shape to the same destination, and the logger it came from still redacts', () => {
    const lines: string[] = [];
    const log = createLogger('info', { write: (s: string) => void lines.push(s) });
    const requestLog = requestLineLogger(log);
    requestLog.info({ requestId: 'r-1', operation: 'Encrypt', principal: 'arn:aws:iam::111122223333:root', key: 'k', status: 200, ms: 0.5 }, 'request');
    log.info({ input: { Plaintext: 'top secret payload' }, headers: { authorization: 'AWS4-HMAC-SHA256 Credential=AKIA' } }, 'other');
    const [request, other] = lines.map((l) => JSON.parse(l) as Line);
    expect(request).toMatchObject({ level: 30, service: 'p11kms', msg: 'request', requestId: 'r-1', operation: 'Encrypt', key: 'k', status: 200, ms: 0.5 });
    expect(other).toMatchObject({ input: { Plaintext: '[redacted]' }, headers: { authorization: '[redacted]' } });
    expect(lines.join('')).not.toContain('top secret payload');
  });
});

