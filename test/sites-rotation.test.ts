/**
 * Automatic rotation of a multi-Region primary reaches its replica at a peer site: site A runs in
 * this process on a movable clock (so a year can pass), site B is a spawned service with its own
 * token; the ceremony and the peers files as in test/sites-replication.test.ts.
 */
import fs from 'node:fs';
import path from 'node:path';
import { CreateKeyCommand, DecryptCommand, EnableKeyRotationCommand, EncryptCommand, KMSClient, ReplicateKeyCommand } from '@aws-sdk/client-kms';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestClock } from './helpers/clock.js';
import { type ServiceProcess, freePort, spawnTestService, waitHealthy } from './helpers/process.js';
import { REGION, ROOT, type TestService, startTestService, tempDir } from './helpers/service.js';
import { type Site, exportKey, peersFileOf, trust } from './sites/ceremony.js';

const A: Site = { dataDir: tempDir('p11kms-site-a-'), region: REGION };
const B: Site & { port: number } = { dataDir: tempDir('p11kms-site-b-'), region: 'eu-central-1', port: 0 };
const PEER_KEY = { accessKeyId: 'P11KMSPEERAB00000009', secretAccessKey: 'rotation-test-peer-secret-0123456789' };
const clock = new TestClock();
let a: TestService;
let b: ServiceProcess;

beforeAll(async () => {
  B.port = await freePort();
  for (const site of [A, B]) await exportKey(site);
  for (const [site, peer] of [[A, B], [B, A]] as const) expect((await trust(site, peer)).code).toBe(0);
  fs.writeFileSync(path.join(A.dataDir, 'peers.json'), await peersFileOf(B, `http://127.0.0.1:${B.port}`, PEER_KEY));
  // B never calls A in this test; the entry is what lets B accept A's calls.
  fs.writeFileSync(path.join(B.dataDir, 'peers.json'), await peersFileOf(A, 'http://127.0.0.1:9', PEER_KEY));
  const started = await spawnTestService({ P11KMS_DATA_DIR: B.dataDir, P11KMS_REGION: B.region, P11KMS_PORT: String(B.port), P11KMS_PEERS_FILE: path.join(B.dataDir, 'peers.json') });
  b = started.proc;
  await waitHealthy(`http://127.0.0.1:${B.port}`, b);
  a = await startTestService({ P11KMS_DATA_DIR: A.dataDir, P11KMS_REGION: A.region, P11KMS_PEERS_FILE: path.join(A.dataDir, 'peers.json') }, clock.now);
  clock.connect(a.service.url);
}, 120_000);

afterAll(async () => {
  await a?.stop();
  await b?.stop();
  for (const s of [A, B]) fs.rmSync(s.dataDir, { recursive: true, force: true });
});

describe('automatic rotation across sites', () => {
  it('a due automatic rotation at A is pushed to B: the new version decrypts there', async () => {
    const keyId = (await clock.client.send(new CreateKeyCommand({ MultiRegion: true }))).KeyMetadata!.KeyId!;
    await clock.client.send(new ReplicateKeyCommand({ KeyId: keyId, ReplicaRegion: B.region }));
    await clock.client.send(new EnableKeyRotationCommand({ KeyId: keyId, RotationPeriodInDays: 90 }));
    clock.advanceDays(91);
    const summary = await a.service.runDueWork();
    expect(summary.rotated).toContain(keyId);
    const fresh = await clock.client.send(new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from('a year later') }));
    expect(Buffer.from(fresh.CiphertextBlob!).includes(Buffer.from([0, 0, 0, 2]))).toBe(true);
    const atB = new KMSClient({ endpoint: `http://127.0.0.1:${B.port}`, region: B.region, credentials: ROOT, maxAttempts: 1 });
    expect(Buffer.from((await atB.send(new DecryptCommand({ CiphertextBlob: fresh.CiphertextBlob }))).Plaintext!).toString()).toBe('a year later');
  });
});
