/**
 * The start contract: environment configuration validated at start-up, generated root
 * credentials, foreground service on the configured address, and restart persistence (keys and
 * aliases survive, old ciphertexts decrypt).
 */
import fs from 'node:fs';
import path from 'node:path';
import { CreateAliasCommand, CreateKeyCommand, DecryptCommand, DescribeKeyCommand, EncryptCommand, KMSClient, ListAliasesCommand } from '@aws-sdk/client-kms';
import { describe, expect, it } from 'vitest';
import { parsePrometheusText, sampleOf } from './helpers/prom-text.js';
import { freePort, spawnService, waitHealthy } from './helpers/process.js';
import { REGION, tempDir } from './helpers/service.js';

describe('configuration errors', () => {
  for (const [name, value] of [
    ['P11KMS_PORT', 'eighty'],
    ['P11KMS_PORT', '70000'],
    ['P11KMS_ACCOUNT_ID', '12345'],
    ['P11KMS_REGION', 'Mars'],
    ['P11KMS_SYMMETRIC_CALLS', 'sometimes'],
  ] as const) {
    it(`stops with a message naming ${name}=${value}`, async () => {
      const proc = spawnService({ P11KMS_DATA_DIR: tempDir('p11kms-badcfg-'), [name]: value });
      const code = await proc.exited;
      expect(code).not.toBe(0);
      expect(proc.output()).toContain(name);
    });
  }

  it('refuses root credentials with white space, naming the variable', async () => {
    const proc = spawnService({ P11KMS_DATA_DIR: tempDir('p11kms-badcfg-'), P11KMS_ROOT_ACCESS_KEY_ID: 'test', P11KMS_ROOT_SECRET_ACCESS_KEY: 'has space' });
    expect(await proc.exited).not.toBe(0);
    expect(proc.output()).toContain('P11KMS_ROOT_SECRET_ACCESS_KEY');
  });

  it('requires the token label and PIN with an external module', async () => {
    const proc = spawnService({ P11KMS_DATA_DIR: tempDir('p11kms-badcfg-'), P11KMS_PKCS11_MODULE: '/nonexistent.so' });
    expect(await proc.exited).not.toBe(0);
    expect(proc.output()).toContain('P11KMS_TOKEN_LABEL');
  });
});

describe('a fresh data dir', () => {
  it('generates root credentials (0600), serves, and keeps keys, aliases and ciphertexts across a restart', async () => {
    const dataDir = tempDir('p11kms-start-');
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const env = { P11KMS_DATA_DIR: dataDir, P11KMS_PORT: String(port) };

    const first = spawnService(env);
    await waitHealthy(url, first);
    const credsFile = path.join(dataDir, 'root-credentials.json');
    expect(fs.statSync(credsFile).mode & 0o777).toBe(0o600);
    const creds = JSON.parse(fs.readFileSync(credsFile, 'utf8')) as { accessKeyId: string; secretAccessKey: string };
    expect(first.output()).toContain(credsFile);
    expect(first.output()).not.toContain(creds.secretAccessKey);

    const client = new KMSClient({ endpoint: url, region: REGION, credentials: creds, maxAttempts: 1 });
    const key = (await client.send(new CreateKeyCommand({ Description: 'survives restarts' }))).KeyMetadata!;
    await client.send(new CreateAliasCommand({ AliasName: 'alias/app', TargetKeyId: key.KeyId }));
    const enc = await client.send(new EncryptCommand({ KeyId: 'alias/app', Plaintext: Buffer.from('persist me'), EncryptionContext: { k: 'v' } }));
    expect(await first.stop()).toBe(0);

    const second = spawnService(env);
    await waitHealthy(url, second);
    expect(second.output()).not.toContain(creds.secretAccessKey);
    const described = (await client.send(new DescribeKeyCommand({ KeyId: 'alias/app' }))).KeyMetadata!;
    expect(described.KeyId).toBe(key.KeyId);
    expect(described.Description).toBe('survives restarts');
    expect((await client.send(new ListAliasesCommand({ KeyId: key.KeyId }))).Aliases!.map((a) => a.AliasName)).toEqual(['alias/app']);
    const dec = await client.send(new DecryptCommand({ CiphertextBlob: enc.CiphertextBlob, EncryptionContext: { k: 'v' } }));
    expect(Buffer.from(dec.Plaintext!).toString()).toBe('persist me');
    client.destroy();
    expect(await second.stop()).toBe(0);

    // Nothing under the data dir holds the plaintext we sent.
    const files = fs.readdirSync(dataDir, { recursive: true, withFileTypes: true }).filter((d) => d.isFile());
    for (const f of files) {
      const content = fs.readFileSync(path.join(f.parentPath, f.name));
      expect(content.includes(Buffer.from('persist me'))).toBe(false);
    }
  });
});

describe('configured root credentials', () => {
  it('accept the short IDs test set-ups use (test/test) and nothing else', async () => {
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const proc = spawnService({ P11KMS_DATA_DIR: tempDir('p11kms-testcreds-'), P11KMS_PORT: String(port), P11KMS_ROOT_ACCESS_KEY_ID: 'test', P11KMS_ROOT_SECRET_ACCESS_KEY: 'test' });
    try {
      await waitHealthy(url, proc);
      const client = new KMSClient({ endpoint: url, region: REGION, credentials: { accessKeyId: 'test', secretAccessKey: 'test' }, maxAttempts: 1 });
      const key = (await client.send(new CreateKeyCommand({}))).KeyMetadata!;
      expect(key.Arn).toContain(':key/');
      const wrong = new KMSClient({ endpoint: url, region: REGION, credentials: { accessKeyId: 'test', secretAccessKey: 'nope' }, maxAttempts: 1 });
      await expect(wrong.send(new DescribeKeyCommand({ KeyId: key.KeyId }))).rejects.toMatchObject({ name: 'InvalidSignatureException' });
      client.destroy();
      wrong.destroy();
    } finally {
      expect(await proc.stop()).toBe(0);
    }
  });
});

describe('P11KMS_WORKERS', () => {
  it('serves from several processes that share one token and one database', async () => {
    const dataDir = tempDir('p11kms-workers-');
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const proc = spawnService({ P11KMS_DATA_DIR: dataDir, P11KMS_PORT: String(port), P11KMS_WORKERS: '2' });
    try {
      await waitHealthy(url, proc);
      const creds = JSON.parse(fs.readFileSync(path.join(dataDir, 'root-credentials.json'), 'utf8')) as { accessKeyId: string; secretAccessKey: string };
      const clients = [0, 1, 2, 3].map(() => new KMSClient({ endpoint: url, region: REGION, credentials: creds, maxAttempts: 1 }));
      // Separate clients open separate connections, which the primary spreads over the workers:
      // whichever process created a key, every other one can use it.
      const keys = await Promise.all(clients.map(async (c) => (await c.send(new CreateKeyCommand({}))).KeyMetadata!.KeyId!));
      for (const keyId of keys) {
        const blobs = await Promise.all(clients.map((c) => c.send(new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from(keyId) }))));
        for (const [i, { CiphertextBlob }] of blobs.entries()) {
          const dec = await clients[(i + 1) % clients.length]!.send(new DecryptCommand({ CiphertextBlob }));
          expect(Buffer.from(dec.Plaintext!).toString()).toBe(keyId);
        }
      }
      for (const c of clients) c.destroy();

      // Whichever worker answers the scrape, /metrics counts every worker's requests.
      for (let scrape = 0; scrape < 3; scrape++) {
        const res = await fetch(`${url}/metrics`, { headers: { connection: 'close' } });
        expect(res.status).toBe(200);
        const families = parsePrometheusText(await res.text());
        expect(sampleOf(families, 'p11kms_requests_total', 'p11kms_requests_total', { operation: 'Encrypt', code: 'OK' })?.value).toBe(16);
        expect(sampleOf(families, 'p11kms_requests_total', 'p11kms_requests_total', { operation: 'Decrypt', code: 'OK' })?.value).toBe(16);
        expect(sampleOf(families, 'p11kms_requests_total', 'p11kms_requests_total', { operation: 'CreateKey', code: 'OK' })?.value).toBe(4);
        expect(sampleOf(families, 'p11kms_token_up', 'p11kms_token_up')?.value).toBe(1);
      }
    } finally {
      expect(await proc.stop()).toBe(0);
    }
    expect(fs.readdirSync(dataDir).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  });
});
