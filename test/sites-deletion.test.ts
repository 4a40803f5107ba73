/**
 * Deletion and authorization of multi-Region keys across two deployments: site A is a spawned
 * service (the primaries), site B runs in this process on a movable clock (so a replica's waiting
 * period can end). The ceremony and the peers files as in test/sites-replication.test.ts.
 *
 * - B's peer endpoint authorizes the caller A names (kms:CreateKey, kms:TagResource with tags, in
 *   B's Region, by B's own principals file): a principal B does not know, or whose policies at B
 *   do not allow it, gets AccessDeniedException at A.
 * - A primary with a replica at B waits in PendingReplicaDeletion and lists the replica until B
 *   deletes it at the end of its waiting period; then A starts the primary's own waiting period.
 *   CancelKeyDeletion at B keeps the replica listed.
 * - When A cannot be reached at that moment, the replica is gone at B for the API and a later
 *   lifecycle pass at B tells A.
 * - UpdatePrimaryRegion to B's Region is refused (UnsupportedOperationException).
 */
import fs from 'node:fs';
import path from 'node:path';
import {
  CancelKeyDeletionCommand,
  CreateKeyCommand,
  DescribeKeyCommand,
  KMSClient,
  ReplicateKeyCommand,
  ScheduleKeyDeletionCommand,
  UpdatePrimaryRegionCommand,
} from '@aws-sdk/client-kms';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DAY_MS, TestClock } from './helpers/clock.js';
import { credentials, identityPolicy, testUser, writePrincipalsFile } from './helpers/principals.js';
import { type ServiceProcess, freePort, runCli, spawnTestService, waitHealthy } from './helpers/process.js';
import { REGION, ROOT, type TestService, errorOf, startTestService, tempDir } from './helpers/service.js';
import { type Site, exportKey, peersFileOf, trust } from './sites/ceremony.js';

const A: Site & { port: number } = { dataDir: tempDir('p11kms-site-a-'), region: 'eu-west-1', port: 0 };
const B: Site & { port: number } = { dataDir: tempDir('p11kms-site-b-'), region: REGION, port: 0 };
const PEER_KEY = { accessKeyId: 'P11KMSPEERAB00000011', secretAccessKey: 'deletion-test-peer-secret-0123456789' };
const everything = identityPolicy({ Effect: 'Allow', Action: 'kms:*', Resource: '*' });
// At A each may do everything; at B: `creator` may create keys but not tag them, `onlooker` may
// only describe, `stranger` is not a principal of B at all.
const atA = { creator: testUser('creator', [everything]), onlooker: testUser('onlooker', [everything]), stranger: testUser('stranger', [everything]) };
const atB = [
  { ...atA.creator, policies: [identityPolicy({ Effect: 'Allow', Action: 'kms:CreateKey', Resource: '*' })] },
  { ...atA.onlooker, policies: [identityPolicy({ Effect: 'Allow', Action: 'kms:DescribeKey', Resource: '*' })] },
];
const clock = new TestClock();
let a: ServiceProcess | undefined;
let b: TestService;
const url = (s: { port: number }) => `http://127.0.0.1:${s.port}`;
const clientOfA = (creds = ROOT) => new KMSClient({ endpoint: url(A), region: A.region, credentials: creds, maxAttempts: 1 });
const principalsOfA = writePrincipalsFile(Object.values(atA));

async function startA(): Promise<void> {
  const started = await spawnTestService({
    P11KMS_DATA_DIR: A.dataDir,
    P11KMS_REGION: A.region,
    P11KMS_PORT: String(A.port),
    P11KMS_PEERS_FILE: path.join(A.dataDir, 'peers.json'),
    P11KMS_PRINCIPALS_FILE: principalsOfA,
  });
  a = started.proc;
  await waitHealthy(url(A), a);
}

beforeAll(async () => {
  A.port = await freePort();
  B.port = await freePort();
  for (const site of [A, B]) await exportKey(site);
  for (const [site, peer] of [[A, B], [B, A]] as const) expect((await trust(site, peer)).code).toBe(0);
  fs.writeFileSync(path.join(A.dataDir, 'peers.json'), await peersFileOf(B, url(B), PEER_KEY));
  fs.writeFileSync(path.join(B.dataDir, 'peers.json'), await peersFileOf(A, url(A), PEER_KEY));
  await startA();
  b = await startTestService(
    { P11KMS_DATA_DIR: B.dataDir, P11KMS_REGION: B.region, P11KMS_PORT: String(B.port), P11KMS_PEERS_FILE: path.join(B.dataDir, 'peers.json'), P11KMS_PRINCIPALS_FILE: writePrincipalsFile(atB) },
    clock.now,
  );
  clock.connect(b.service.url);
}, 120_000);

afterAll(async () => {
  await a?.stop();
  await b?.stop();
  for (const s of [A, B]) fs.rmSync(s.dataDir, { recursive: true, force: true });
});

const replicaRegions = async (keyId: string) =>
  ((await clientOfA().send(new DescribeKeyCommand({ KeyId: keyId }))).KeyMetadata!.MultiRegionConfiguration!.ReplicaKeys ?? []).map((r) => r.Region);

describe("ReplicateKey to a peer's Region: the peer authorizes the caller in its own Region", () => {
  const create = async (creds: { accessKeyId: string; secretAccessKey: string }) =>
    (await clientOfA(creds).send(new CreateKeyCommand({ MultiRegion: true }))).KeyMetadata!.KeyId!;

  it('a principal B does not know is denied, and so is one without kms:CreateKey at B', async () => {
    for (const who of [atA.stranger, atA.onlooker]) {
      const keyId = await create(credentials(who));
      const denied = await errorOf(clientOfA(credentials(who)).send(new ReplicateKeyCommand({ KeyId: keyId, ReplicaRegion: B.region })));
      expect(denied.name).toBe('AccessDeniedException');
      expect(denied.message).toContain(who.arn);
      // Nothing was created at B, and A records no replica.
      expect((await errorOf(clock.client.send(new DescribeKeyCommand({ KeyId: keyId })))).name).toBe('NotFoundException');
      expect(await replicaRegions(keyId)).toEqual([]);
    }
  });

  it('kms:CreateKey at B is enough without tags; with tags kms:TagResource at B is needed too', async () => {
    const keyId = await create(credentials(atA.creator));
    const tagged = await errorOf(clientOfA(credentials(atA.creator)).send(new ReplicateKeyCommand({ KeyId: keyId, ReplicaRegion: B.region, Tags: [{ TagKey: 'k', TagValue: 'v' }] })));
    expect(tagged.name).toBe('AccessDeniedException');
    expect(tagged.message).toContain('kms:TagResource');
    const out = await clientOfA(credentials(atA.creator)).send(new ReplicateKeyCommand({ KeyId: keyId, ReplicaRegion: B.region }));
    expect(out.ReplicaKeyMetadata).toMatchObject({ KeyId: keyId, KeyState: 'Enabled' });
    expect((await clock.client.send(new DescribeKeyCommand({ KeyId: keyId }))).KeyMetadata!.KeyState).toBe('Enabled');
  });
  it("UpdatePrimaryRegion to B's Region is refused with the reason; the primary stays at A", async () => {
    const keyId = (await clientOfA().send(new CreateKeyCommand({ MultiRegion: true }))).KeyMetadata!.KeyId!;
    await clientOfA().send(new ReplicateKeyCommand({ KeyId: keyId, ReplicaRegion: B.region }));
    const refused = await errorOf(clientOfA().send(new UpdatePrimaryRegionCommand({ KeyId: keyId, PrimaryRegion: B.region })));
    expect(refused.name).toBe('UnsupportedOperationException');
    expect(refused.message).toContain('served by another deployment');
    expect((await clientOfA().send(new DescribeKeyCommand({ KeyId: keyId }))).KeyMetadata!.MultiRegionConfiguration!.MultiRegionKeyType).toBe('PRIMARY');
  });
});

describe('deleting a replica at B, and the primary at A', () => {
  let first: string;
  let second: string;
  beforeAll(async () => {
    // Replicated while the clocks of A and B agree (B's moves below, and A's calls to B are signed
    // with the real time).
    for (const name of ['first', 'second'] as const) {
      const keyId = (await clientOfA().send(new CreateKeyCommand({ MultiRegion: true }))).KeyMetadata!.KeyId!;
      await clientOfA().send(new ReplicateKeyCommand({ KeyId: keyId, ReplicaRegion: B.region }));
      if (name === 'first') first = keyId;
      else second = keyId;
    }
  });

  it('the primary waits in PendingReplicaDeletion until B deletes its replica, then in PendingDeletion', async () => {
    const scheduled = await clientOfA().send(new ScheduleKeyDeletionCommand({ KeyId: first, PendingWindowInDays: 7 }));
    expect(scheduled).toMatchObject({ KeyState: 'PendingReplicaDeletion', PendingWindowInDays: 7 });
    expect(scheduled.DeletionDate).toBeUndefined();

    const atB = await clock.client.send(new ScheduleKeyDeletionCommand({ KeyId: first, PendingWindowInDays: 7 }));
    expect(atB.KeyState).toBe('PendingDeletion');
    // AWS: the primary lists a replica until it is deleted, not when it is scheduled.
    expect(await replicaRegions(first)).toEqual([B.region]);

    clock.advanceDays(8);
    const summary = await b.service.runDueWork();
    expect(summary.deleted).toContain(`${first}/${B.region}`);
    expect((await errorOf(clock.client.send(new DescribeKeyCommand({ KeyId: first })))).name).toBe('NotFoundException');

    const primary = (await clientOfA().send(new DescribeKeyCommand({ KeyId: first }))).KeyMetadata!;
    expect(primary.MultiRegionConfiguration!.ReplicaKeys ?? []).toEqual([]);
    expect(primary.KeyState).toBe('PendingDeletion');
    expect(primary.PendingDeletionWindowInDays).toBe(7);
    // Its own waiting period begins when the replica is gone (A runs on the real clock).
    const wait = primary.DeletionDate!.getTime() - Date.now();
    expect(wait).toBeGreaterThan(6 * DAY_MS);
    expect(wait).toBeLessThanOrEqual(7 * DAY_MS);
  });

  it('CancelKeyDeletion at B keeps the replica listed at A', async () => {
    await clock.client.send(new ScheduleKeyDeletionCommand({ KeyId: second, PendingWindowInDays: 7 }));
    await clock.client.send(new CancelKeyDeletionCommand({ KeyId: second }));
    expect((await clock.client.send(new DescribeKeyCommand({ KeyId: second }))).KeyMetadata!.KeyState).toBe('Disabled');
    expect(await replicaRegions(second)).toEqual([B.region]);
  });

  it('a replica deleted while A is down is gone at B at once and no longer listed at A after a later pass', async () => {
    await clock.client.send(new ScheduleKeyDeletionCommand({ KeyId: second, PendingWindowInDays: 7 }));
    await a!.stop();
    clock.advanceDays(8);
    const whileDown = await b.service.runDueWork();
    expect(whileDown.deleted).not.toContain(`${second}/${B.region}`);
    expect((await errorOf(clock.client.send(new DescribeKeyCommand({ KeyId: second })))).name).toBe('NotFoundException');

    await startA();
    expect(await replicaRegions(second)).toEqual([B.region]); // A has not been told yet
    const after = await b.service.runDueWork();
    expect(after.deleted).toContain(`${second}/${B.region}`);
    expect(await replicaRegions(second)).toEqual([]);
    // Not scheduled at A: the primary stays usable, now without replicas.
    expect((await clientOfA().send(new DescribeKeyCommand({ KeyId: second }))).KeyMetadata!.KeyState).toBe('Enabled');
  }, 60_000);

  it("A's audit trail records the replica's deletion in B's Region", async () => {
    await a!.stop();
    const r = await runCli(['audit', 'query', '--key', second], A.dataDir, { P11KMS_REGION: A.region });
    expect(r.code, r.stderr).toBe(0);
    const events = r.stdout.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as { eventName: string; awsRegion: string });
    expect(events).toContainEqual(expect.objectContaining({ eventName: 'DeleteKey', awsRegion: B.region }));
  });
});
