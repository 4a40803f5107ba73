/**
 * Two deployments on loopback (two data dirs, two SoftHSM2 tokens, two ports, each its own
 * P11KMS_REGION and P11KMS_PEERS_FILE): the trust ceremony both ways through the CLI, then
 * ReplicateKey from site A to B's Region, ciphertexts and MACs crossing both ways with the AWS
 * SDK, a rotation at A followed at B (pushed at once, and retried by a lifecycle pass while B
 * was down), and the refusals: key pairs, a Region without the ceremony, a second replica, a
 * caller without the peer credential. Audit records at both sites, without key material.
 */
import { createHash, createHmac, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import {
  CreateKeyCommand,
  DecryptCommand,
  DescribeKeyCommand,
  EncryptCommand,
  GenerateMacCommand,
  KMSClient,
  ListResourceTagsCommand,
  ReplicateKeyCommand,
  RotateKeyOnDemandCommand,
  VerifyMacCommand,
} from '@aws-sdk/client-kms';
import { SignatureV4 } from '@smithy/signature-v4';
import { stringify as toYaml } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ServiceProcess, freePort, runCli, spawnTestService, waitHealthy } from './helpers/process.js';
import { ROOT, errorOf, tempDir } from './helpers/service.js';
import { type Site, exportKey, trust } from './sites/ceremony.js';
import { probeCustody } from './sites/custody-probe.js';

const A: Site & { port: number } = { dataDir: tempDir('p11kms-site-a-'), region: 'eu-west-1', port: 0 };
const B: Site & { port: number } = { dataDir: tempDir('p11kms-site-b-'), region: 'eu-central-1', port: 0 };
const NO_CEREMONY = 'us-west-2';
const PEER_KEY = { accessKeyId: 'P11KMSPEERAB00000001', secretAccessKey: randomBytes(24).toString('hex') };
const procs: Record<string, ServiceProcess> = {};
const url = (s: { port: number }) => `http://127.0.0.1:${s.port}`;
const client = (s: Site & { port: number }) => new KMSClient({ endpoint: url(s), region: s.region, credentials: ROOT, maxAttempts: 1 });

async function start(site: Site & { port: number }, extra: Record<string, string> = {}): Promise<void> {
  const started = await spawnTestService({
    P11KMS_DATA_DIR: site.dataDir,
    P11KMS_REGION: site.region,
    P11KMS_PORT: String(site.port),
    P11KMS_PEERS_FILE: path.join(site.dataDir, site === A ? 'peers.yaml' : 'peers.json'),
    ...extra,
  });
  procs[site.region] = started.proc;
  await waitHealthy(url(site), started.proc);
}

beforeAll(async () => {
  A.port = await freePort();
  B.port = await freePort();
  // The ceremony, both ways, before either service runs: each site's replication key first.
  for (const site of [A, B]) await exportKey(site);
  for (const [site, peer] of [[A, B], [B, A]] as const) {
    const r = await trust(site, peer);
    expect(r.code, r.stderr).toBe(0);
  }
  const fingerprintOf = async (s: Site) => (await exportKey(s)).fingerprint;
  const secretFile = path.join(A.dataDir, 'peer-secret');
  fs.writeFileSync(secretFile, `${PEER_KEY.secretAccessKey}\n`, { mode: 0o600 });
  // A's file in YAML with the secret in a file of its own, B's in JSON with it inline.
  fs.writeFileSync(
    path.join(A.dataDir, 'peers.yaml'),
    toYaml({
      peers: [
        { region: B.region, endpoint: url(B), accessKeyId: PEER_KEY.accessKeyId, secretAccessKeyFile: 'peer-secret', fingerprint: await fingerprintOf(B) },
        // Named, but its key was never trusted in A's token.
        { region: NO_CEREMONY, endpoint: url(B), accessKeyId: 'P11KMSPEERAC00000001', secretAccessKey: PEER_KEY.secretAccessKey, fingerprint: 'cd'.repeat(32) },
      ],
    }),
  );
  fs.writeFileSync(path.join(B.dataDir, 'peers.json'), JSON.stringify({ peers: [{ region: A.region, endpoint: url(A), ...PEER_KEY, fingerprint: await fingerprintOf(A) }] }));
  await Promise.all([start(A, { P11KMS_LIFECYCLE_INTERVAL_MS: '500' }), start(B)]);
}, 120_000);

afterAll(async () => {
  await Promise.all(Object.values(procs).map((p) => p.stop()));
  for (const s of [A, B]) fs.rmSync(s.dataDir, { recursive: true, force: true });
});

describe('multi-Region keys across two deployments', () => {
  const at = {} as Record<'A' | 'B', KMSClient>;
  beforeAll(() => {
    at.A = client(A);
    at.B = client(B);
  });
  let keyId: string;
  let hmacKeyId: string;

  it('ReplicateKey to the peer Region creates the replica in B\'s HSM, and both sites list it', async () => {
    keyId = (await at.A.send(new CreateKeyCommand({ MultiRegion: true, Description: 'primary at A' }))).KeyMetadata!.KeyId!;
    const out = await at.A.send(new ReplicateKeyCommand({ KeyId: keyId, ReplicaRegion: B.region, Description: 'replica at B', Tags: [{ TagKey: 'site', TagValue: 'b' }] }));
    expect(out.ReplicaKeyMetadata).toMatchObject({ KeyId: keyId, Arn: `arn:aws:kms:${B.region}:111122223333:key/${keyId}`, Description: 'replica at B', MultiRegion: true });
    expect(out.ReplicaTags).toEqual([{ TagKey: 'site', TagValue: 'b' }]);

    const primary = (await at.A.send(new DescribeKeyCommand({ KeyId: keyId }))).KeyMetadata!;
    expect(primary.MultiRegionConfiguration).toMatchObject({ MultiRegionKeyType: 'PRIMARY', PrimaryKey: { Region: A.region }, ReplicaKeys: [{ Region: B.region, Arn: out.ReplicaKeyMetadata!.Arn }] });
    const replica = (await at.B.send(new DescribeKeyCommand({ KeyId: keyId }))).KeyMetadata!;
    expect(replica).toMatchObject({ KeyState: 'Enabled', Description: 'replica at B', KeySpec: 'SYMMETRIC_DEFAULT' });
    expect(replica.MultiRegionConfiguration).toMatchObject({ MultiRegionKeyType: 'REPLICA', PrimaryKey: { Region: A.region, Arn: primary.Arn } });
    expect((await at.B.send(new ListResourceTagsCommand({ KeyId: keyId }))).Tags).toEqual([{ TagKey: 'site', TagValue: 'b' }]);
  });

  it('a ciphertext made at A decrypts at B, and one made at B decrypts at A; the context still binds', async () => {
    const context = { purpose: 'cross-site' };
    const fromA = await at.A.send(new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from('made at A'), EncryptionContext: context }));
    const atB = await at.B.send(new DecryptCommand({ CiphertextBlob: fromA.CiphertextBlob, EncryptionContext: context }));
    expect(Buffer.from(atB.Plaintext!).toString()).toBe('made at A');
    expect(atB.KeyId).toBe(`arn:aws:kms:${B.region}:111122223333:key/${keyId}`);
    const fromB = await at.B.send(new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from('made at B'), EncryptionContext: context }));
    expect(Buffer.from((await at.A.send(new DecryptCommand({ CiphertextBlob: fromB.CiphertextBlob, EncryptionContext: context }))).Plaintext!).toString()).toBe('made at B');
    const wrongContext = await errorOf(at.B.send(new DecryptCommand({ CiphertextBlob: fromA.CiphertextBlob, EncryptionContext: { purpose: 'other' } })));
    expect(wrongContext.name).toBe('InvalidCiphertextException');
  });

  it('an HMAC multi-Region key travels too: a MAC made at A verifies at B', async () => {
    hmacKeyId = (await at.A.send(new CreateKeyCommand({ MultiRegion: true, KeySpec: 'HMAC_256', KeyUsage: 'GENERATE_VERIFY_MAC' }))).KeyMetadata!.KeyId!;
    await at.A.send(new ReplicateKeyCommand({ KeyId: hmacKeyId, ReplicaRegion: B.region }));
    const message = Buffer.from('a message');
    const { Mac } = await at.A.send(new GenerateMacCommand({ KeyId: hmacKeyId, MacAlgorithm: 'HMAC_SHA_256', Message: message }));
    expect((await at.B.send(new VerifyMacCommand({ KeyId: hmacKeyId, MacAlgorithm: 'HMAC_SHA_256', Message: message, Mac }))).MacValid).toBe(true);
  });

  it('RotateKeyOnDemand at A is pushed to B at once: a ciphertext under the new version decrypts at B', async () => {
    await at.A.send(new RotateKeyOnDemandCommand({ KeyId: keyId }));
    const fresh = await at.A.send(new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from('after rotation') }));
    expect(Buffer.from(fresh.CiphertextBlob!).includes(Buffer.from([0, 0, 0, 2]))).toBe(true); // backing version 2 in the header
    expect(Buffer.from((await at.B.send(new DecryptCommand({ CiphertextBlob: fresh.CiphertextBlob }))).Plaintext!).toString()).toBe('after rotation');
  });

  it('a rotation while B is down succeeds at A and reaches B at a lifecycle pass after B is back', async () => {
    await procs[B.region]!.stop();
    await at.A.send(new RotateKeyOnDemandCommand({ KeyId: keyId }));
    const fresh = await at.A.send(new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from('rotated while B was down') }));
    await start(B);
    let plaintext: string | undefined;
    let last: unknown;
    for (let attempt = 0; attempt < 100 && plaintext === undefined; attempt++) {
      try {
        plaintext = Buffer.from((await at.B.send(new DecryptCommand({ CiphertextBlob: fresh.CiphertextBlob }))).Plaintext!).toString();
      } catch (e) {
        last = e;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    expect(plaintext, String(last)).toBe('rotated while B was down');
  });

  it('refuses what cannot or must not travel, with the reason', async () => {
    const rsa = (await at.A.send(new CreateKeyCommand({ MultiRegion: true, KeySpec: 'RSA_2048', KeyUsage: 'ENCRYPT_DECRYPT' }))).KeyMetadata!.KeyId!;
    const pair = await errorOf(at.A.send(new ReplicateKeyCommand({ KeyId: rsa, ReplicaRegion: B.region })));
    expect(pair.name).toBe('UnsupportedOperationException');
    expect(pair.message).toContain('RSA-OAEP cannot wrap a private key');

    const noCeremony = await errorOf(at.A.send(new ReplicateKeyCommand({ KeyId: keyId, ReplicaRegion: NO_CEREMONY })));
    expect(noCeremony.name).toBe('UnsupportedOperationException');
    expect(noCeremony.message).toContain(`no trusted replication key of ${NO_CEREMONY}`);
    expect(noCeremony.message).toContain('p11kms sites trust');

    const twice = await errorOf(at.A.send(new ReplicateKeyCommand({ KeyId: keyId, ReplicaRegion: B.region })));
    expect(twice.name).toBe('AlreadyExistsException');

    const fresh = (await at.A.send(new CreateKeyCommand({ MultiRegion: true }))).KeyMetadata!.KeyId!;
    const badPolicy = await errorOf(at.A.send(new ReplicateKeyCommand({ KeyId: fresh, ReplicaRegion: B.region, Policy: '{"Statement": "not a list"' })));
    expect(badPolicy.name).toBe('MalformedPolicyDocumentException');

    const plain = (await at.A.send(new CreateKeyCommand({}))).KeyMetadata!.KeyId!;
    expect((await errorOf(at.A.send(new ReplicateKeyCommand({ KeyId: plain, ReplicaRegion: B.region })))).name).toBe('UnsupportedOperationException');
  });

  it("B's peer endpoint denies callers without the peer credential, and a peer speaking for another Region", async () => {
    const body = JSON.stringify({ sourceRegion: A.region, keyId: `mrk-${'0'.repeat(32)}`, currentVersion: 1, versions: [] });
    const unsigned = await fetch(`${url(B)}/p11kms/peer/versions`, { method: 'POST', body, headers: { 'content-type': 'application/json' } });
    expect(unsigned.status).toBe(403);
    expect((await unsigned.json()).__type).toBe('MissingAuthenticationTokenException');

    const wrongSecret = await signedPost(B, '/p11kms/peer/versions', body, { ...PEER_KEY, secretAccessKey: 'not-the-peer-secret-0123456789' });
    expect(wrongSecret.type).toBe('InvalidSignatureException');
    // The KMS API's own credentials are no peer credential.
    const apiCredentials = await signedPost(B, '/p11kms/peer/versions', body, ROOT);
    expect(apiCredentials.type).toBe('UnrecognizedClientException');
    const otherRegion = await signedPost(B, '/p11kms/peer/versions', body.replace(A.region, 'ap-south-1'), PEER_KEY);
    expect(otherRegion.type).toBe('ValidationException'); // an empty version list is malformed first
    const spoofed = JSON.stringify({ sourceRegion: 'ap-south-1', keyId: keyId, currentVersion: 1, versions: [{ version: 1, keyMaterialId: 'a'.repeat(64), createdAt: new Date().toISOString(), rotationType: null, rotatedAt: null, wrappedKey: 'AAAA' }] });
    expect((await signedPost(B, '/p11kms/peer/versions', spoofed, PEER_KEY)).type).toBe('AccessDeniedException');
  });

  it('both sites recorded the replication in their audit trails, without key material', async () => {
    await Promise.all(Object.values(procs).map((p) => p.stop()));
    const query = async (s: Site) => {
      const r = await runCli(['audit', 'query', '--key', keyId], s.dataDir, { P11KMS_REGION: s.region });
      expect(r.code, r.stderr).toBe(0);
      return r.stdout;
    };
    const atA = await query(A);
    const atB = await query(B);
    const events = (text: string) => text.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as { eventName: string; errorCode?: string; awsRegion: string });
    expect(events(atA).map((e) => e.eventName)).toEqual(expect.arrayContaining(['CreateKey', 'ReplicateKey', 'RotateKeyOnDemand', 'Encrypt']));
    expect(events(atB).map((e) => e.eventName)).toEqual(expect.arrayContaining(['CreateKey', 'RotateKey', 'Decrypt']));
    expect(events(atB).find((e) => e.eventName === 'CreateKey')!.awsRegion).toBe(B.region);
    const refused = await runCli(['audit', 'query', '--event', 'RotateKeyFromPeer'], B.dataDir, { P11KMS_REGION: B.region });
    expect(events(refused.stdout).map((e) => e.errorCode)).toEqual(expect.arrayContaining(['InvalidSignatureException', 'AccessDeniedException']));
    for (const text of [atA, atB, refused.stdout]) {
      expect(text).not.toContain('wrappedKey');
      expect(text).not.toContain(PEER_KEY.secretAccessKey);
    }
  });
});

describe("the replica's custody at B", () => {
  it('every version unwrapped at B is sensitive and again wraps only under a trusted key', async () => {
    await Promise.all(Object.values(procs).map((p) => p.stop()));
    const custody = await probeCustody(B.dataDir);
    const replicas = custody.objects.filter((o) => o.class === 'secret' && /mrk-/.test(o.label));
    expect(replicas.length).toBeGreaterThanOrEqual(4); // three versions of the symmetric key, one HMAC key
    for (const o of replicas) {
      expect(o).toMatchObject({ sensitive: true, extractable: true, wrapWithTrusted: true, value: 'CKR_ATTRIBUTE_SENSITIVE', wrapUntrustedAes: 'CKR_KEY_NOT_WRAPPABLE', wrapUntrustedRsa: 'CKR_KEY_NOT_WRAPPABLE' });
      expect(o.wrapTrusted).toEqual([384]); // only under A's replication key, trusted at B
    }
  }, 60_000);
});

/** A POST signed for B's peer endpoint (signing name p11kms-peer) with `credentials`. */
async function signedPost(site: Site & { port: number }, pathName: string, body: string, credentials: { accessKeyId: string; secretAccessKey: string }): Promise<{ status: number; type: string }> {
  class Sha256 {
    private readonly h;
    constructor(secret?: string | Uint8Array) {
      this.h = secret === undefined ? createHash('sha256') : createHmac('sha256', secret);
    }
    update(d: string | Uint8Array) {
      this.h.update(d);
    }
    async digest() {
      return new Uint8Array(this.h.digest());
    }
  }
  const signer = new SignatureV4({ service: 'p11kms-peer', region: site.region, credentials, sha256: Sha256 as never });
  const signed = await signer.sign({ method: 'POST', protocol: 'http:', hostname: '127.0.0.1', port: site.port, path: pathName, query: {}, headers: { host: `127.0.0.1:${site.port}`, 'content-type': 'application/json' }, body });
  const res = await fetch(`${url(site)}${pathName}`, { method: 'POST', headers: signed.headers, body });
  return { status: res.status, type: ((await res.json()) as { __type: string }).__type };
}
