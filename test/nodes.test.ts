/**
 * Three service nodes (the built service, separate processes on separate ports) on one real
 * PostgreSQL server and one operator-configured SoftHSM2 token, driven by the AWS SDK, as README
 * "Several nodes" describes: a key created on one node is used on the others; changes reach the
 * other nodes within the consistency bound, security-relevant ones included; the database
 * decides races; lifecycle work is done once and taken over after a dead node's lease; a node
 * killed under load loses nothing acknowledged; a restarted database is rejoined by itself.
 */
import fs from 'node:fs';
import path from 'node:path';
import {
  CreateAliasCommand,
  CreateGrantCommand,
  CreateKeyCommand,
  DecryptCommand,
  DescribeKeyCommand,
  DisableKeyCommand,
  EnableKeyRotationCommand,
  EncryptCommand,
  GenerateDataKeyCommand,
  KMSClient,
  ListKeyRotationsCommand,
  RevokeGrantCommand,
  ScheduleKeyDeletionCommand,
  UpdateAliasCommand,
} from '@aws-sdk/client-kms';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.js';
import { openHsm } from '../src/hsm/pkcs11-token.js';
import { locateSoftHsmModule, softHsmPaths } from '../src/hsm/provision.js';
import { CONSISTENCY_BOUND_MS } from '../src/store/postgres/changes.js';
import { startPostgres, type PostgresServer } from './helpers/postgres.js';
import { credentials, testUser, writePrincipalsFile } from './helpers/principals.js';
import { freePort, runCli, spawnService, waitHealthy, type ServiceProcess } from './helpers/process.js';
import { REGION, ROOT, errorOf, tempDir } from './helpers/service.js';

const LABEL = 'nodes';
const alice = testUser('alice');
/** An on-prem object store acting as S3 (README "AWS managed keys and integrated services"). */
const objectStore = { ...testUser('objectstore'), arn: 'arn:aws:iam::111122223333:role/object-store', integratedService: 's3' };

interface Node {
  name: string;
  url: string;
  dataDir: string;
  proc: ServiceProcess;
  client: KMSClient;
  as(principal: typeof alice): KMSClient;
}

let server: PostgresServer;
let databaseUrl: string;
let nodeEnv: Record<string, string>;
const nodes: Node[] = [];
const extraClients: KMSClient[] = [];

async function startNode(name: string, dataDir = tempDir(`p11kms-node-${name}-`)): Promise<Node> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const proc = spawnService({ ...nodeEnv, P11KMS_DATA_DIR: dataDir, P11KMS_PORT: String(port) });
  await waitHealthy(url, proc, 60_000);
  const client = new KMSClient({ endpoint: url, region: REGION, credentials: ROOT, maxAttempts: 1 });
  const as = (principal: typeof alice) => {
    const c = new KMSClient({ endpoint: url, region: REGION, credentials: credentials(principal), maxAttempts: 1 });
    extraClients.push(c);
    return c;
  };
  return { name, url, dataDir, proc, client, as };
}

async function sql<R extends pg.QueryResultRow>(text: string, values?: unknown[]): Promise<R[]> {
  const client = new pg.Client(databaseUrl);
  await client.connect();
  try {
    return (await client.query<R>(text, values)).rows;
  } finally {
    await client.end();
  }
}

/** Polls `check` until it holds; returns how long that took (fails past `withinMs`). */
async function within(withinMs: number, check: () => Promise<boolean>): Promise<number> {
  const start = performance.now();
  for (;;) {
    if (await check()) return performance.now() - start;
    if (performance.now() - start > withinMs) throw new Error(`not seen within ${withinMs} ms`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const nameOf = async (p: Promise<unknown>) => (await errorOf(p)).name;

beforeAll(async () => {
  server = await startPostgres({ durable: true }); // restarted under load below: commits must survive
  databaseUrl = await server.createDatabase();
  const secrets = tempDir('p11kms-node-secrets-');
  const urlFile = path.join(secrets, 'database-url');
  fs.writeFileSync(urlFile, `${databaseUrl}\n`, { mode: 0o600 });

  // The operator's SoftHSM2 token: initialised once (here through p11kms's own provisioning in a
  // scratch dir), then handed to every node as an external module, label and PIN file.
  const tokenHome = tempDir('p11kms-node-token-');
  const provisioning = await openHsm({ label: LABEL, poolSize: 1, symmetricCalls: 'sync' }, tokenHome);
  await provisioning.close();
  const token = softHsmPaths(tokenHome);
  nodeEnv = {
    P11KMS_DATABASE_URL_FILE: urlFile,
    P11KMS_PKCS11_MODULE: locateSoftHsmModule(),
    P11KMS_TOKEN_LABEL: LABEL,
    P11KMS_PIN_FILE: token.userPinPath,
    SOFTHSM2_CONF: token.confPath,
    P11KMS_ROOT_ACCESS_KEY_ID: ROOT.accessKeyId,
    P11KMS_ROOT_SECRET_ACCESS_KEY: ROOT.secretAccessKey,
    P11KMS_PRINCIPALS_FILE: writePrincipalsFile([alice, objectStore]),
    P11KMS_LIFECYCLE_INTERVAL_MS: '100',
    P11KMS_LOG_LEVEL: 'info',
  };
  // Started one after the other on purpose only for the first: the others start together.
  nodes.push(await startNode('a'));
  nodes.push(...(await Promise.all([startNode('b'), startNode('c')])));
}, 180_000);

afterAll(async () => {
  for (const c of extraClients) c.destroy();
  for (const n of nodes) {
    n.client.destroy();
    await n.proc.stop();
    // Kept beside the node's data for a post-mortem (the data dirs stay under the temp dir).
    fs.writeFileSync(path.join(n.dataDir, 'node-output.log'), n.proc.output());
  }
  await server?.stop();
});

const [A, B, C] = [0, 1, 2].map((i) => () => nodes[i]!);

describe('three nodes on one PostgreSQL and one SoftHSM2 token', () => {
  it('a key created on A encrypts on B and decrypts on C', async () => {
    const keyId = (await A().client.send(new CreateKeyCommand({}))).KeyMetadata!.KeyId!;
    const blob = (await B().client.send(new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from('made on B') }))).CiphertextBlob!;
    const out = await C().client.send(new DecryptCommand({ CiphertextBlob: blob }));
    expect(Buffer.from(out.Plaintext!).toString()).toBe('made on B');
    expect(out.KeyId).toContain(keyId);
  });

  it('an alias moved on A is followed by B within the bound', async () => {
    const k1 = (await A().client.send(new CreateKeyCommand({}))).KeyMetadata!.KeyId!;
    const k2 = (await A().client.send(new CreateKeyCommand({}))).KeyMetadata!.KeyId!;
    await A().client.send(new CreateAliasCommand({ AliasName: 'alias/moving', TargetKeyId: k1 }));
    const encryptOnB = () => B().client.send(new EncryptCommand({ KeyId: 'alias/moving', Plaintext: Buffer.from('x') }));
    await within(CONSISTENCY_BOUND_MS, async () => (await encryptOnB()).KeyId!.endsWith(k1));
    await A().client.send(new UpdateAliasCommand({ AliasName: 'alias/moving', TargetKeyId: k2 }));
    const took = await within(CONSISTENCY_BOUND_MS, async () => (await encryptOnB()).KeyId!.endsWith(k2));
    console.log(`alias change seen on B after ${took.toFixed(0)} ms`);
  });

  it('DisableKey and ScheduleKeyDeletion on B are refused on C within the bound', async () => {
    const keyId = (await A().client.send(new CreateKeyCommand({}))).KeyMetadata!.KeyId!;
    const encryptOnC = () => C().client.send(new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from('x') }));
    await encryptOnC(); // cached on C now
    await B().client.send(new DisableKeyCommand({ KeyId: keyId }));
    const disabledAfter = await within(CONSISTENCY_BOUND_MS, async () => (await nameOf(encryptOnC()).catch(() => 'ok')) === 'DisabledException');

    const doomed = (await A().client.send(new CreateKeyCommand({}))).KeyMetadata!.KeyId!;
    const blob = (await C().client.send(new EncryptCommand({ KeyId: doomed, Plaintext: Buffer.from('x') }))).CiphertextBlob!;
    await B().client.send(new ScheduleKeyDeletionCommand({ KeyId: doomed, PendingWindowInDays: 7 }));
    const pendingAfter = await within(CONSISTENCY_BOUND_MS, async () => {
      try {
        await C().client.send(new DecryptCommand({ CiphertextBlob: blob }));
        return false;
      } catch (e) {
        return (e as Error).name === 'KMSInvalidStateException';
      }
    });
    console.log(`DisableKey refused on C after ${disabledAfter.toFixed(0)} ms, ScheduleKeyDeletion after ${pendingAfter.toFixed(0)} ms`);
  });

  it('a grant revoked on A stops working on C within the bound', async () => {
    const keyId = (await A().client.send(new CreateKeyCommand({}))).KeyMetadata!.KeyId!;
    const aliceOnC = C().as(alice);
    const encrypt = () => aliceOnC.send(new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from('x') }));
    expect(await nameOf(encrypt())).toBe('AccessDeniedException'); // the miss is cached on C too
    const { GrantId } = await A().client.send(new CreateGrantCommand({ KeyId: keyId, GranteePrincipal: alice.arn, Operations: ['Encrypt'] }));
    await within(CONSISTENCY_BOUND_MS, async () => !!(await encrypt().catch(() => undefined)));
    await A().client.send(new RevokeGrantCommand({ KeyId: keyId, GrantId }));
    const took = await within(CONSISTENCY_BOUND_MS, async () => (await nameOf(encrypt()).catch(() => 'ok')) === 'AccessDeniedException');
    console.log(`grant revocation seen on C after ${took.toFixed(0)} ms`);
  });

  it('CreateAlias of one name on all three nodes at once: exactly one wins', async () => {
    const keyId = (await A().client.send(new CreateKeyCommand({}))).KeyMetadata!.KeyId!;
    for (let round = 0; round < 5; round++) {
      const results = await Promise.allSettled(nodes.map((n) => n.client.send(new CreateAliasCommand({ AliasName: `alias/race-${round}`, TargetKeyId: keyId }))));
      expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
      for (const r of results) if (r.status === 'rejected') expect((r.reason as Error).name).toBe('AlreadyExistsException');
    }
  });

  it('the first use of alias/aws/s3 on all three nodes at once creates one AWS managed key', async () => {
    const viaS3 = nodes.map((n) => {
      const c = new KMSClient({ endpoint: n.url, region: REGION, credentials: credentials(objectStore), maxAttempts: 1 });
      c.middlewareStack.add(
        (next) => async (args) => {
          (args.request as { headers: Record<string, string> }).headers['X-P11kms-On-Behalf-Of'] = alice.arn;
          return next(args);
        },
        { step: 'build' },
      );
      extraClients.push(c);
      return c;
    });
    const generated = await Promise.all(viaS3.map((c) => c.send(new GenerateDataKeyCommand({ KeyId: 'alias/aws/s3', KeySpec: 'AES_256' }))));
    expect(new Set(generated.map((g) => g.KeyId)).size).toBe(1);
    expect(await sql("SELECT key_id FROM keys WHERE key_manager = 'AWS'")).toHaveLength(1);
    // Each node opens what another made with the one key.
    for (const [i, g] of generated.entries()) {
      const opened = await viaS3[(i + 1) % viaS3.length]!.send(new DecryptCommand({ CiphertextBlob: g.CiphertextBlob }));
      expect(Buffer.from(opened.Plaintext!)).toEqual(Buffer.from(g.Plaintext!));
    }
  });

  it('due rotations and deletions are done once across the nodes; a dead node’s claim is taken over after its lease', async () => {
    const rotating: string[] = [];
    for (let i = 0; i < 6; i++) {
      const keyId = (await nodes[i % 3]!.client.send(new CreateKeyCommand({}))).KeyMetadata!.KeyId!;
      await nodes[i % 3]!.client.send(new EnableKeyRotationCommand({ KeyId: keyId, RotationPeriodInDays: 90 }));
      rotating.push(keyId);
    }
    const doomed = (await B().client.send(new CreateKeyCommand({}))).KeyMetadata!.KeyId!;
    await B().client.send(new ScheduleKeyDeletionCommand({ KeyId: doomed, PendingWindowInDays: 7 }));
    const blob = (await C().client.send(new EncryptCommand({ KeyId: rotating[0], Plaintext: Buffer.from('before') }))).CiphertextBlob!;
    const orphaned = rotating[5]!;
    const logged = (pattern: RegExp, keyId: string) => nodes.map((n) => n.proc.output().split('\n').filter((l) => pattern.test(l) && l.includes(keyId)).length).reduce((a, b) => a + b, 0);

    // Due now; the last key is held by a node that died mid-rotation: its lease ends in 15 s.
    const LEASE_MS = 15_000;
    // (The claim first: once due, a live node's pass could claim the key before the dead one.)
    await sql(`UPDATE keys SET lifecycle_claim = 'dead-node', lifecycle_claim_kind = 'rotation', lifecycle_claim_started = now(),
      lifecycle_claim_until = now() + $2::interval WHERE key_id = $1`, [orphaned, `${LEASE_MS} milliseconds`]);
    await sql(`UPDATE keys SET next_rotation_date = now() - interval '1 second' WHERE key_id = ANY($1)`, [rotating]);
    await sql(`UPDATE keys SET deletion_date = now() - interval '1 second' WHERE key_id = $1`, [doomed]);
    const leaseSetAt = performance.now();

    const rotations = async (keyId: string) => ((await A().client.send(new ListKeyRotationsCommand({ KeyId: keyId }))).Rotations ?? []).map((r) => r.RotationType);
    await within(LEASE_MS, async () => (await Promise.all(rotating.slice(0, 5).map(rotations))).every((r) => r.length > 0));
    // (The key is NotFound as soon as its date passed; the sweep that destroys it comes with a pass.)
    expect(await nameOf(C().client.send(new DescribeKeyCommand({ KeyId: doomed })))).toBe('NotFoundException');
    await within(LEASE_MS, async () => (await sql('SELECT 1 FROM keys WHERE key_id = $1', [doomed])).length === 0);
    expect(await rotations(orphaned)).toEqual([]); // still under the dead node's lease...
    expect(performance.now() - leaseSetAt).toBeLessThan(LEASE_MS); // ...as the lease had not ended yet
    await new Promise((r) => setTimeout(r, 1000)); // ten more passes on each node: nothing is done twice
    for (const keyId of rotating.slice(0, 5)) expect(await rotations(keyId)).toEqual(['AUTOMATIC']);
    expect(logged(/key deleted at the end of its waiting period/, doomed)).toBe(1);

    // After the lease, a live node takes the work over (a pass, or a read of the rotation state:
    // ListKeyRotations rotates a due key itself, under the same claim), once.
    await within(LEASE_MS + 15_000, async () => (await rotations(orphaned)).length === 1);
    await new Promise((r) => setTimeout(r, 1000));
    expect(await rotations(orphaned)).toEqual(['AUTOMATIC']);
    const versions = await sql<{ key_id: string; n: number }>('SELECT key_id, COUNT(*)::int AS n FROM key_versions WHERE key_id = ANY($1) GROUP BY key_id', [rotating]);
    expect(versions.map((v) => v.n)).toEqual(rotating.map(() => 2));
    // Nothing generated twice in the token either: no backing key without metadata, none missing.
    const doctor = await runCli(['doctor', '--json'], tempDir('p11kms-node-doctor-'), { ...nodeEnv });
    const report = JSON.parse(doctor.stdout) as { consistent: boolean; report: { orphanObjects: unknown[]; missingObjects: unknown[] } };
    expect(report.report.orphanObjects).toEqual([]);
    expect(report.report.missingObjects).toEqual([]);
    expect(Buffer.from((await B().client.send(new DecryptCommand({ CiphertextBlob: blob }))).Plaintext!).toString()).toBe('before');
    for (const n of nodes) expect(n.proc.output()).not.toMatch(/rotation failed|deletion failed|lifecycle pass failed/);
  });

  it('SIGKILL of one node under mixed load: the others keep answering and nothing acknowledged is lost', async () => {
    const victim = C();
    const keys: string[] = [];
    for (const n of nodes) keys.push((await n.client.send(new CreateKeyCommand({}))).KeyMetadata!.KeyId!);
    const acknowledged: Array<{ blob: Uint8Array; plaintext: string; via: string }> = [];
    const created: Array<{ keyId: string; via: string }> = [];
    const failuresAfterKill: Record<string, number> = {};
    let killedAt = Infinity;
    let stop = false;
    const worker = async (n: Node, w: number) => {
      for (let i = 0; !stop; i++) {
        try {
          if (i % 10 === 9) {
            created.push({ keyId: (await n.client.send(new CreateKeyCommand({}))).KeyMetadata!.KeyId!, via: n.name });
          } else {
            const plaintext = `${n.name}-${w}-${i}`;
            const blob = (await n.client.send(new EncryptCommand({ KeyId: keys[i % keys.length], Plaintext: Buffer.from(plaintext) }))).CiphertextBlob!;
            acknowledged.push({ blob, plaintext, via: n.name });
          }
        } catch (e) {
          if (n === victim) return; // the dead node's requests fail; none of them were acknowledged
          if (performance.now() > killedAt) failuresAfterKill[(e as Error).name] = (failuresAfterKill[(e as Error).name] ?? 0) + 1;
        }
      }
    };
    const load = nodes.flatMap((n) => [0, 1].map((w) => worker(n, w)));
    await new Promise((r) => setTimeout(r, 1500));
    const madeByVictim = acknowledged.filter((a) => a.via === victim.name).length;
    victim.proc.child.kill('SIGKILL');
    killedAt = performance.now();
    const countAtKill = acknowledged.length;
    await new Promise((r) => setTimeout(r, 1500));
    stop = true;
    await Promise.all(load);
    await victim.proc.exited;

    expect(madeByVictim).toBeGreaterThan(0);
    expect(acknowledged.length).toBeGreaterThan(countAtKill + 20); // A and B kept answering
    expect(failuresAfterKill).toEqual({});
    for (const [i, a] of acknowledged.entries()) {
      const survivor = nodes[i % 2]!;
      const out = await survivor.client.send(new DecryptCommand({ CiphertextBlob: a.blob }));
      expect(Buffer.from(out.Plaintext!).toString()).toBe(a.plaintext);
    }
    for (const c of created) expect((await A().client.send(new DescribeKeyCommand({ KeyId: c.keyId }))).KeyMetadata!.KeyState).toBe('Enabled');
    console.log(`mixed load: ${acknowledged.length} encryptions (${madeByVictim} through the killed node before the kill), ${created.length} keys created; all decrypt/describe on the survivors`);

    // The node comes back on its own data dir (its audit chain continues) and serves at once.
    nodes[2] = await startNode('c', victim.dataDir);
    const blob = acknowledged.find((a) => a.via === 'c')!;
    expect(Buffer.from((await C().client.send(new DecryptCommand({ CiphertextBlob: blob.blob }))).Plaintext!).toString()).toBe(blob.plaintext);
  });

  it('PostgreSQL restarted under load: retryable errors meanwhile, /healthz says why, the nodes recover without a restart', async () => {
    const keyId = (await A().client.send(new CreateKeyCommand({}))).KeyMetadata!.KeyId!;
    const errors: Record<string, number> = {};
    let ok = 0;
    let stop = false;
    const worker = async (n: Node) => {
      for (let i = 0; !stop; i++) {
        try {
          if (i % 5 === 4) await n.client.send(new CreateKeyCommand({}));
          else await n.client.send(new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from('x') }));
          ok++;
        } catch (e) {
          errors[(e as Error).name] = (errors[(e as Error).name] ?? 0) + 1;
          await new Promise((r) => setTimeout(r, 20));
        }
      }
    };
    const load = nodes.map((n) => worker(n));
    await new Promise((r) => setTimeout(r, 500));
    server.stopServer('immediate');
    await new Promise((r) => setTimeout(r, CONSISTENCY_BOUND_MS + 1000));
    const health = await fetch(`${B().url}/healthz`);
    const healthBody = (await health.json()) as { reason?: string };
    server.startServer();
    const restartedAt = performance.now();
    const recoveredAfter = await within(15_000, async () => {
      const answers = await Promise.all(nodes.map((n) => n.client.send(new CreateKeyCommand({})).then(() => true, () => false)));
      return answers.every(Boolean);
    });
    stop = true;
    await Promise.all(load);
    console.log(`database restart: all nodes create keys again ${(performance.now() - restartedAt).toFixed(0)} ms after it came back (${recoveredAfter.toFixed(0)} ms of polling); ${ok} requests ok, errors ${JSON.stringify(errors)}`);

    const internals = nodes.flatMap((n) => n.proc.output().split('\n').filter((l) => /internal error|audit record could not|token call failed/.test(l)));
    if (internals.length > 0) console.log(`failures the nodes logged:\n${internals.join('\n')}`);
    expect(health.status).toBe(503);
    expect(healthBody.reason).toMatch(/metadata database unavailable/);
    expect(healthBody.reason).not.toContain(new URL(databaseUrl).password);
    // What failed, failed as AWS's retryable dependency error (503), never as a client fault.
    expect(Object.keys(errors).filter((name) => name !== 'DependencyTimeoutException')).toEqual([]);
    expect(errors.DependencyTimeoutException).toBeGreaterThan(0);
    for (const n of nodes) expect((await fetch(`${n.url}/healthz`)).status).toBe(200);
  });

  it('the logs name the database without its credentials', () => {
    const { password, host, pathname } = new URL(databaseUrl);
    for (const n of nodes) {
      expect(n.proc.output()).toContain(`"store":"postgresql://${host}${pathname}"`);
      expect(n.proc.output()).not.toContain(password);
    }
  });

  it('each node keeps its own audit chain, and each verifies; the deployment verifies with every node\'s chains collected', async () => {
    for (const n of nodes) {
      const result = await runCli(['audit', 'verify', '--json'], n.dataDir, { ...nodeEnv });
      const report = JSON.parse(result.stdout) as { ok: boolean; records: number; notes: string[] };
      expect(result.code, result.stdout + result.stderr).toBe(0);
      expect(report.ok).toBe(true);
      // The shared registry names the other nodes' chains: said, not taken for deletions.
      expect(report.notes.join('\n')).toMatch(/other nodes' chains/);
    }
    // Every node's audit files collected in one directory: the registry's every chain must be there.
    const collected = tempDir('p11kms-audit-collected-');
    const collectedAudit = path.join(collected, 'audit');
    fs.mkdirSync(path.join(collectedAudit, 'digests'), { recursive: true });
    for (const n of nodes) fs.cpSync(path.join(n.dataDir, 'audit'), collectedAudit, { recursive: true });
    const whole = await runCli(['audit', 'verify', '--deployment', '--json'], collected, { ...nodeEnv, P11KMS_DATA_DIR: collected });
    expect(whole.code, whole.stdout + whole.stderr).toBe(0);
    const wholeReport = JSON.parse(whole.stdout) as { chains: number };
    expect(wholeReport.chains).toBeGreaterThanOrEqual(nodes.length);
    // One node's chain missing from the collection is a finding.
    const victim = fs.readdirSync(path.join(nodes[1]!.dataDir, 'audit')).find((f) => f.endsWith('.jsonl'))!;
    const chainId = victim.slice(0, victim.lastIndexOf('_'));
    for (const f of fs.readdirSync(collectedAudit)) if (f.startsWith(chainId)) fs.rmSync(path.join(collectedAudit, f));
    for (const f of fs.readdirSync(path.join(collectedAudit, 'digests'))) if (f.startsWith(chainId)) fs.rmSync(path.join(collectedAudit, 'digests', f));
    const missing = await runCli(['audit', 'verify', '--deployment', '--json'], collected, { ...nodeEnv, P11KMS_DATA_DIR: collected });
    expect(missing.code, missing.stdout).toBe(1);
    expect(JSON.parse(missing.stdout).findings.join('\n')).toContain(chainId);
  });
});
