/**
 * The p11kms:local image, driven as its users would: testcontainers starts it on the host's
 * network (a free loopback port), @aws-sdk/client-kms and the AWS CLI talk to it, and its
 * volume is inspected and reused across containers.
 */
import { execFile } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import {
  CreateAliasCommand,
  CreateKeyCommand,
  DecryptCommand,
  DescribeKeyCommand,
  EncryptCommand,
  GetPublicKeyCommand,
  ListAliasesCommand,
  SignCommand,
  VerifyCommand,
} from '@aws-sdk/client-kms';
import { P11kmsContainer, type StartedP11kmsContainer } from 'p11kms/testcontainers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createVolume, docker, dockerCli, execIn, kmsClient, removeVolume, reportSkippedWithoutDocker } from './helpers/container.js';
import { tempDir } from './helpers/service.js';

const DATA_DIR = '/var/lib/p11kms';
const CONTAINER_UID = '10001';

reportSkippedWithoutDocker();

const startOn = (volume: string) => new P11kmsContainer().withNetworkMode('host').withDataVolume(volume).start();

describe.runIf(docker.ready)('p11kms:local serving the AWS KMS API', () => {
  let volume: string;
  let kms: StartedP11kmsContainer;

  beforeAll(async () => {
    volume = await createVolume('api');
    kms = await startOn(volume);
  });
  afterAll(async () => {
    await kms?.stop();
    await removeVolume(volume);
  });

  it('creates a key in the container token, encrypts and decrypts', async () => {
    const client = kmsClient(kms);
    const { KeyMetadata } = await client.send(new CreateKeyCommand({ Description: 'container test' }));
    expect(KeyMetadata?.Arn).toMatch(/^arn:aws:kms:us-east-1:111122223333:key\//);
    const plaintext = crypto.randomBytes(48);
    const { CiphertextBlob } = await client.send(new EncryptCommand({ KeyId: KeyMetadata!.KeyId, Plaintext: plaintext, EncryptionContext: { purpose: 'test' } }));
    const decrypted = await client.send(new DecryptCommand({ CiphertextBlob, EncryptionContext: { purpose: 'test' } }));
    expect(Buffer.from(decrypted.Plaintext!)).toEqual(plaintext);
    expect(decrypted.KeyId).toBe(KeyMetadata!.Arn);
    await expect(client.send(new DecryptCommand({ CiphertextBlob, EncryptionContext: { purpose: 'other' } }))).rejects.toMatchObject({ name: 'InvalidCiphertextException' });
  });

  it('signs with an ECC key generated in the token; the public key verifies outside', async () => {
    const client = kmsClient(kms);
    const { KeyMetadata } = await client.send(new CreateKeyCommand({ KeySpec: 'ECC_NIST_P256', KeyUsage: 'SIGN_VERIFY' }));
    const message = Buffer.from('signed inside the container');
    const { Signature } = await client.send(new SignCommand({ KeyId: KeyMetadata!.KeyId, Message: message, SigningAlgorithm: 'ECDSA_SHA_256' }));
    const { SignatureValid } = await client.send(new VerifyCommand({ KeyId: KeyMetadata!.KeyId, Message: message, Signature, SigningAlgorithm: 'ECDSA_SHA_256' }));
    expect(SignatureValid).toBe(true);
    const { PublicKey } = await client.send(new GetPublicKeyCommand({ KeyId: KeyMetadata!.KeyId }));
    const publicKey = crypto.createPublicKey({ key: Buffer.from(PublicKey!), format: 'der', type: 'spki' });
    expect(crypto.verify('sha256', message, publicKey, Buffer.from(Signature!))).toBe(true);
    expect(crypto.verify('sha256', Buffer.from('another message'), publicKey, Buffer.from(Signature!))).toBe(false);
  });

  const aws = findAwsCli();
  if (!aws) console.warn('AWS CLI case skipped: no `aws` on PATH (apt-get install awscli)');
  it.runIf(aws !== undefined)('answers the AWS CLI', async () => {
    const { accessKeyId, secretAccessKey } = kms.getRootCredentials();
    const env = { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', AWS_ACCESS_KEY_ID: accessKeyId, AWS_SECRET_ACCESS_KEY: secretAccessKey, AWS_DEFAULT_REGION: kms.getRegion(), AWS_CONFIG_FILE: '/dev/null', AWS_SHARED_CREDENTIALS_FILE: '/dev/null' };
    const cli = (...args: string[]) => promisify(execFile)(aws!, ['kms', ...args, '--endpoint-url', kms.getEndpoint(), '--output', 'json'], { env }).then(({ stdout }) => (stdout.trim() === '' ? {} : JSON.parse(stdout)) as Record<string, any>);
    const created = await cli('create-key', '--description', 'from the AWS CLI');
    const keyId = created.KeyMetadata.KeyId as string;
    await cli('create-alias', '--alias-name', 'alias/cli', '--target-key-id', keyId);
    const dir = tempDir('p11kms-awscli-');
    const plaintext = crypto.randomBytes(32);
    fs.writeFileSync(path.join(dir, 'plain.bin'), plaintext);
    const encrypted = await cli('encrypt', '--key-id', 'alias/cli', '--plaintext', `fileb://${path.join(dir, 'plain.bin')}`);
    fs.writeFileSync(path.join(dir, 'cipher.bin'), Buffer.from(encrypted.CiphertextBlob, 'base64'));
    const decrypted = await cli('decrypt', '--ciphertext-blob', `fileb://${path.join(dir, 'cipher.bin')}`);
    expect(Buffer.from(decrypted.Plaintext, 'base64')).toEqual(plaintext);
    expect(decrypted.KeyId).toBe(created.KeyMetadata.Arn);
  });

  it('serves the web console from the image, with its Content-Security-Policy', async () => {
    const res = await fetch(`${kms.getEndpoint()}/console/`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-security-policy')).toContain("script-src 'self'");
    expect(await res.text()).toMatch(/<script type="module" crossorigin src="\/console\/assets\//);
  });

  it('runs every process as the non-root user p11kms', async () => {
    const { stdout: user } = await dockerCli(['inspect', kms.getId(), '--format', '{{.Config.User}}']);
    expect(user.trim()).toBe('p11kms:p11kms');
    // Real UIDs of every process in the container (tini, node, this shell).
    const uids = await execIn(kms, ['sh', '-c', 'for s in /proc/[0-9]*/status; do awk \'/^Uid:/ { print $2, $3 }\' "$s"; done']);
    const lines = uids.trim().split('\n');
    expect(lines.length).toBeGreaterThanOrEqual(2);
    for (const line of lines) expect(line).toBe(`${CONTAINER_UID} ${CONTAINER_UID}`);
  });

  it('keeps the volume private: token, PIN files, database and audit trail owned by p11kms, no group or other access', async () => {
    const listing = await execIn(kms, ['find', DATA_DIR, '-printf', '%m %u %g %y %p\n']);
    const entries = listing.trim().split('\n').map((line) => {
      const [mode, user, group, type, file] = line.split(' ');
      return { mode: parseInt(mode!, 8), user, group, type, file: file! };
    });
    const files = entries.map((e) => e.file);
    for (const expected of ['softhsm/user.pin', 'softhsm/so.pin', 'softhsm/tokens', 'root-credentials.json', 'audit']) {
      expect(files).toContain(`${DATA_DIR}/${expected}`);
    }
    expect(entries.filter((e) => e.file.startsWith(`${DATA_DIR}/softhsm/tokens/`) && e.type === 'f').length).toBeGreaterThan(0);
    for (const entry of entries) {
      expect({ file: entry.file, user: entry.user, group: entry.group, groupOrOther: entry.mode & 0o077 }).toEqual({ file: entry.file, user: 'p11kms', group: 'p11kms', groupOrOther: 0 });
    }
    for (const pin of ['user.pin', 'so.pin']) {
      expect(entries.find((e) => e.file === `${DATA_DIR}/softhsm/${pin}`)?.mode).toBe(0o600);
    }
  });

  it('logs JSON lines on stdout', async () => {
    const { stdout } = await dockerCli(['logs', kms.getId()]);
    const lines = stdout.trim().split('\n');
    expect(lines.length).toBeGreaterThan(2);
    for (const line of lines) expect(JSON.parse(line)).toMatchObject({ service: 'p11kms', level: expect.any(Number), msg: expect.any(String) });
    expect(stdout).not.toContain(kms.getRootCredentials().secretAccessKey);
  });
});

describe.runIf(docker.ready)('p11kms:local on a volume that outlives its container', () => {
  let volume: string;
  beforeAll(async () => {
    volume = await createVolume('restart');
  });
  afterAll(async () => {
    await removeVolume(volume);
  });

  it('stops gracefully on SIGTERM and keeps keys, aliases and ciphertexts for the next container', async () => {
    const first = await startOn(volume);
    let client = kmsClient(first);
    const { KeyMetadata } = await client.send(new CreateKeyCommand({ Description: 'survives restarts' }));
    await client.send(new CreateAliasCommand({ AliasName: 'alias/survivor', TargetKeyId: KeyMetadata!.KeyId }));
    const plaintext = crypto.randomBytes(64);
    const { CiphertextBlob } = await client.send(new EncryptCommand({ KeyId: 'alias/survivor', Plaintext: plaintext }));
    const rootCredentials = first.getRootCredentials();

    // docker stop sends SIGTERM to PID 1 (tini), which hands it to the service.
    await dockerCli(['stop', '--time', '20', first.getId()]);
    const { stdout: state } = await dockerCli(['inspect', first.getId(), '--format', '{{.State.ExitCode}} {{.State.OOMKilled}}']);
    expect(state.trim()).toBe('0 false');
    const { stdout: logs } = await dockerCli(['logs', first.getId()]);
    expect(logs).toMatch(/"signal":"SIGTERM".*"msg":"shutting down"/);
    await first.stop();

    const second = await startOn(volume);
    try {
      expect(second.getRootCredentials()).toEqual(rootCredentials);
      client = kmsClient(second);
      const described = await client.send(new DescribeKeyCommand({ KeyId: 'alias/survivor' }));
      expect(described.KeyMetadata).toMatchObject({ KeyId: KeyMetadata!.KeyId, Description: 'survives restarts', Enabled: true });
      const { Aliases } = await client.send(new ListAliasesCommand({ KeyId: KeyMetadata!.KeyId }));
      expect(Aliases?.map((a) => a.AliasName)).toEqual(['alias/survivor']);
      const decrypted = await client.send(new DecryptCommand({ CiphertextBlob }));
      expect(Buffer.from(decrypted.Plaintext!)).toEqual(plaintext);
      const { stdout: secondLogs } = await dockerCli(['logs', second.getId()]);
      expect(secondLogs).not.toContain('provisioned SoftHSM2 token');
    } finally {
      await second.stop();
    }
  });

  it('refuses to start, with a clear message, once the token PIN file is gone from the volume', async () => {
    const running = await startOn(volume);
    await execIn(running, ['rm', `${DATA_DIR}/softhsm/user.pin`]);
    await running.stop();
    const refused = new P11kmsContainer().withNetworkMode('host').withDataVolume(volume).withStartupTimeout(30_000).start();
    await expect(refused).rejects.toThrow(
      `failed to start: SoftHSM2 token 'p11kms' exists but its PIN file ${DATA_DIR}/softhsm/user.pin is missing; restore it or remove ${DATA_DIR}/softhsm/tokens to start afresh`,
    );
  });
});

describe.runIf(docker.ready)('p11kms:local with a mounted PKCS#11 library (P11KMS_PKCS11_MODULE)', () => {
  // Stands in for an external HSM's library: the host's own SoftHSM2 module, mounted read-only
  // at a path the image does not use, with a token that an operator initialised beforehand.
  const found = ['/usr/lib/softhsm/libsofthsm2.so', '/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so'].find((f) => fs.existsSync(f));
  const hostModule = found && fs.realpathSync(found);
  if (!hostModule) console.warn('mounted-module case skipped: no libsofthsm2.so on this host');
  let volume: string;
  beforeAll(async () => {
    volume = await createVolume('module');
  });
  afterAll(async () => {
    await removeVolume(volume);
  });

  it.runIf(hostModule !== undefined)('serves keys from the token the mounted module offers', async () => {
    const pinDir = tempDir('p11kms-pin-');
    fs.writeFileSync(path.join(pinDir, 'pin'), '246810\n', { mode: 0o644 });
    fs.chmodSync(pinDir, 0o755); // the container's user (uid 10001) reads it through the mount
    await dockerCli(['run', '--rm', '--network', 'none', '-v', `${volume}:${DATA_DIR}`, '--entrypoint', 'sh', 'p11kms:local', '-c',
      `mkdir -p ${DATA_DIR}/softhsm/tokens && softhsm2-util --init-token --free --label operator-token --so-pin 13579 --pin 246810 >/dev/null`]);
    const kms = await new P11kmsContainer()
      .withNetworkMode('host')
      .withDataVolume(volume)
      .withBindMounts([{ source: hostModule!, target: '/opt/hsm/libvendor-pkcs11.so', mode: 'ro' }, { source: pinDir, target: '/run/hsm', mode: 'ro' }])
      .withEnvironment({ P11KMS_PKCS11_MODULE: '/opt/hsm/libvendor-pkcs11.so', P11KMS_TOKEN_LABEL: 'operator-token', P11KMS_PIN_FILE: '/run/hsm/pin' })
      .start();
    try {
      const client = kmsClient(kms);
      const { KeyMetadata } = await client.send(new CreateKeyCommand({}));
      const { CiphertextBlob } = await client.send(new EncryptCommand({ KeyId: KeyMetadata!.KeyId, Plaintext: Buffer.from('external token') }));
      expect(Buffer.from((await client.send(new DecryptCommand({ CiphertextBlob }))).Plaintext!).toString()).toBe('external token');
      const { stdout: logs } = await dockerCli(['logs', kms.getId()]);
      expect(logs).toContain("PKCS#11 token 'operator-token'");
      expect(logs).not.toContain('provisioned SoftHSM2 token');
    } finally {
      await kms.stop();
    }
  });
});

function findAwsCli(): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(':')) {
    const candidate = path.join(dir, 'aws');
    if (dir && fs.existsSync(candidate)) return candidate;
  }
  return undefined;
}
