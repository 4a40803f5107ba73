/**
 * HTTPS on the API port (P11KMS_TLS_CERT_FILE/KEY_FILE) with a CA made in the test: the AWS SDK,
 * the AWS CLI (--ca-bundle) and boto3 (verify=) over real TLS on loopback; TLS 1.2 minimum;
 * aws:SecureTransport true exactly on TLS; unusable key files stop the start.
 */
import { execFile, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import tls from 'node:tls';
import { CreateKeyCommand, DecryptCommand, EncryptCommand, KMSClient } from '@aws-sdk/client-kms';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnTestService, waitHealthy } from './helpers/process.js';
import { ACCOUNT_ID, REGION, ROOT, errorOf, startTestService, tempDir, type TestService } from './helpers/service.js';
import { httpsKmsClient, makeTestCa, type TestCa } from './helpers/tls.js';

/** Real clients from outside Node; a machine without them skips their case and says why. */
const hasAwsCli = spawnSync('aws', ['--version']).status === 0;
const hasBoto3 = spawnSync('python3', ['-c', 'import boto3']).status === 0;
if (!hasAwsCli) console.warn('skipping the AWS CLI case: `aws` is not on PATH (apt-get install awscli)');
if (!hasBoto3) console.warn('skipping the boto3 case: python3 cannot import boto3 (apt-get install python3-boto3)');

let ca: TestCa;
let server: { certFile: string; keyFile: string };
let t: TestService;
let client: KMSClient;

beforeAll(async () => {
  ca = makeTestCa();
  server = ca.issue('server', { subject: '/CN=localhost', server: true });
  t = await startTestService({ P11KMS_TLS_CERT_FILE: server.certFile, P11KMS_TLS_KEY_FILE: server.keyFile });
  client = httpsKmsClient(t.service.url, ca.caFile);
});
afterAll(async () => {
  client?.destroy();
  await t?.stop();
});

function run(cmd: string, args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    // Asynchronous: the service answers from this very process.
    execFile(cmd, args, { env: { ...process.env, ...env }, timeout: 60_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

const awsEnv = () => ({
  AWS_ACCESS_KEY_ID: ROOT.accessKeyId,
  AWS_SECRET_ACCESS_KEY: ROOT.secretAccessKey,
  AWS_DEFAULT_REGION: 'us-east-1',
  AWS_REGION: 'us-east-1',
  AWS_CONFIG_FILE: path.join(ca.dir, 'no-aws-config'),
  AWS_SHARED_CREDENTIALS_FILE: path.join(ca.dir, 'no-aws-credentials'),
});

describe('HTTPS with a test CA', () => {
  it('serves the AWS SDK over TLS: a round trip through Encrypt and Decrypt', async () => {
    expect(t.service.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    const { KeyMetadata } = await client.send(new CreateKeyCommand({}));
    const { CiphertextBlob } = await client.send(new EncryptCommand({ KeyId: KeyMetadata!.KeyId, Plaintext: Buffer.from('over tls') }));
    const { Plaintext } = await client.send(new DecryptCommand({ CiphertextBlob }));
    expect(Buffer.from(Plaintext!).toString()).toBe('over tls');
  });

  it('negotiates TLS 1.3 and refuses clients that offer at most TLS 1.1', async () => {
    const port = t.service.port;
    const ca13 = fs.readFileSync(ca.caFile);
    const protocol = await new Promise<string | null>((resolve, reject) => {
      const s = tls.connect({ host: '127.0.0.1', port, ca: ca13 }, () => {
        resolve(s.getProtocol());
        s.end();
      });
      s.on('error', reject);
    });
    expect(protocol).toBe('TLSv1.3');
    const old = await new Promise<string>((resolve) => {
      const s = tls.connect({ host: '127.0.0.1', port, ca: ca13, minVersion: 'TLSv1', maxVersion: 'TLSv1.1' }, () => resolve('connected'));
      s.on('error', (e) => resolve(e.message));
    });
    expect(old).not.toBe('connected');
  });

  it('does not speak plain HTTP on the TLS port', async () => {
    const err = await fetch(t.service.url.replace('https:', 'http:') + '/healthz').then(
      (r) => `status ${r.status}`,
      (e: Error) => e.message,
    );
    expect(err).not.toMatch(/^status 200/);
  });

  it.skipIf(!hasAwsCli)('serves the AWS CLI with --ca-bundle', async () => {
    const { KeyMetadata } = await client.send(new CreateKeyCommand({}));
    const plaintextFile = path.join(ca.dir, 'cli-plaintext.bin');
    fs.writeFileSync(plaintextFile, 'from the aws cli');
    const enc = await run('aws', ['kms', 'encrypt', '--endpoint-url', t.service.url, '--ca-bundle', ca.caFile, '--key-id', KeyMetadata!.KeyId!, '--plaintext', `fileb://${plaintextFile}`, '--output', 'json'], awsEnv());
    expect(enc.stderr).toBe('');
    expect(enc.code).toBe(0);
    const blob = Buffer.from(JSON.parse(enc.stdout).CiphertextBlob, 'base64');
    const { Plaintext } = await client.send(new DecryptCommand({ CiphertextBlob: blob }));
    expect(Buffer.from(Plaintext!).toString()).toBe('from the aws cli');
    // Without the CA the CLI refuses the certificate.
    const untrusted = await run('aws', ['kms', 'list-keys', '--endpoint-url', t.service.url, '--output', 'json'], { ...awsEnv(), AWS_MAX_ATTEMPTS: '1' });
    expect(untrusted.code).not.toBe(0);
    expect(untrusted.stderr).toMatch(/SSL|certificate/i);
  });

  it.skipIf(!hasBoto3)('serves boto3 with verify=<CA bundle>', async () => {
    const script = [
      'import boto3, sys',
      'kms = boto3.client("kms", endpoint_url=sys.argv[1], region_name="us-east-1", verify=sys.argv[2])',
      'key = kms.create_key()["KeyMetadata"]["KeyId"]',
      'blob = kms.encrypt(KeyId=key, Plaintext=b"from boto3")["CiphertextBlob"]',
      'print(kms.decrypt(CiphertextBlob=blob)["Plaintext"].decode())',
    ].join('\n');
    const out = await run('python3', ['-c', script, t.service.url, ca.caFile], awsEnv());
    expect(out.stderr).toBe('');
    expect(out.stdout.trim()).toBe('from boto3');
  });
});

describe('aws:SecureTransport', () => {
  const denyInsecure = (bypass = true) => ({
    BypassPolicyLockoutSafetyCheck: bypass,
    Policy: JSON.stringify({
      Version: '2012-10-17',
      Statement: [
        { Sid: 'root', Effect: 'Allow', Principal: { AWS: `arn:aws:iam::${ACCOUNT_ID}:root` }, Action: 'kms:*', Resource: '*' },
        { Sid: 'tls only', Effect: 'Deny', Principal: '*', Action: 'kms:*', Resource: '*', Condition: { Bool: { 'aws:SecureTransport': 'false' } } },
      ],
    }),
  });

  it('is true on TLS connections: a Deny on aws:SecureTransport=false lets TLS requests through', async () => {
    const { KeyMetadata } = await client.send(new CreateKeyCommand(denyInsecure(false)));
    await expect(client.send(new EncryptCommand({ KeyId: KeyMetadata!.KeyId, Plaintext: Buffer.from('x') }))).resolves.toBeDefined();
  });

  it('is false on plain HTTP: the same policy denies the request', async () => {
    // One token per process: the plain-HTTP service runs as a process of its own.
    const { proc, port } = await spawnTestService();
    const url = `http://127.0.0.1:${port}`;
    const plain = new KMSClient({ endpoint: url, region: REGION, credentials: ROOT, maxAttempts: 1 });
    try {
      await waitHealthy(url, proc);
      const { KeyMetadata } = await plain.send(new CreateKeyCommand(denyInsecure()));
      const err = await errorOf(plain.send(new EncryptCommand({ KeyId: KeyMetadata!.KeyId, Plaintext: Buffer.from('x') })));
      expect(err.name).toBe('AccessDeniedException');
    } finally {
      plain.destroy();
      expect(await proc.stop()).toBe(0);
    }
  });
});

describe('start-up checks', () => {
  it('refuses a key file that others may read', async () => {
    const keyFile = path.join(tempDir('p11kms-tls-key-'), 'server.key');
    fs.copyFileSync(server.keyFile, keyFile);
    fs.chmodSync(keyFile, 0o644);
    await expect(startTestService({ P11KMS_TLS_CERT_FILE: server.certFile, P11KMS_TLS_KEY_FILE: keyFile })).rejects.toThrow(/P11KMS_TLS_KEY_FILE .* accessible by others \(mode 644\)/);
  });

  it('refuses a key that does not match the certificate, and a certificate without a key', async () => {
    const other = ca.issue('other', { subject: '/CN=other', server: true });
    await expect(startTestService({ P11KMS_TLS_CERT_FILE: server.certFile, P11KMS_TLS_KEY_FILE: other.keyFile })).rejects.toThrow(/cannot be used/);
    await expect(startTestService({ P11KMS_TLS_CERT_FILE: server.certFile })).rejects.toThrow(/P11KMS_TLS_CERT_FILE and P11KMS_TLS_KEY_FILE must be set together/);
  });
});
