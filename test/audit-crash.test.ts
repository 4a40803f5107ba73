/**
 * Crash consistency of the audit trail: a service process killed with SIGKILL in the middle of a
 * load leaves a chain that `audit verify` accepts up to its last durable record, and every
 * request a client saw acknowledged has its record. A restart on the same data dir starts a new
 * chain, and after a clean stop everything verifies again.
 */
import fs from 'node:fs';
import path from 'node:path';
import { CreateKeyCommand, EncryptCommand, KMSClient } from '@aws-sdk/client-kms';
import { describe, expect, it } from 'vitest';
import { freePort, runCli, spawnService, waitHealthy } from './helpers/process.js';
import { REGION, ROOT, tempDir } from './helpers/service.js';

const SECRET = 'CRASH-PLAINTEXT-5e1b7c03';

const verify = (dataDir: string) => runCli(['audit', 'verify'], dataDir);

function recordedRequestIds(dataDir: string): Set<string> {
  const dir = path.join(dataDir, 'audit');
  const ids = new Set<string>();
  for (const f of fs.readdirSync(dir).filter((n) => n.endsWith('.jsonl'))) {
    for (const line of fs.readFileSync(path.join(dir, f), 'utf8').split('\n')) {
      if (!line) continue;
      try {
        ids.add((JSON.parse(line) as { requestID: string }).requestID);
      } catch {
        // a torn last line: never acknowledged
      }
    }
  }
  return ids;
}

describe('audit trail after a crash', () => {
  it('verifies up to the last acknowledged request, and every acknowledged request has its record', async () => {
    const dataDir = tempDir('p11kms-audit-crash-');
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const env = {
      P11KMS_DATA_DIR: dataDir,
      P11KMS_PORT: String(port),
      P11KMS_ROOT_ACCESS_KEY_ID: ROOT.accessKeyId,
      P11KMS_ROOT_SECRET_ACCESS_KEY: ROOT.secretAccessKey,
      P11KMS_AUDIT_DIGEST_SECONDS: '1',
      P11KMS_LOG_LEVEL: 'debug',
    };
    const proc = spawnService(env);
    await waitHealthy(url, proc);
    const client = new KMSClient({ endpoint: url, region: REGION, credentials: ROOT, maxAttempts: 1 });
    const keyId = (await client.send(new CreateKeyCommand({}))).KeyMetadata!.KeyId!;

    const acknowledged: string[] = [];
    let stop = false;
    const worker = async () => {
      while (!stop) {
        try {
          const out = await client.send(new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from(SECRET) }));
          acknowledged.push(out.$metadata.requestId!);
        } catch {
          return; // the service is gone
        }
      }
    };
    const workers = Array.from({ length: 16 }, () => worker());
    await new Promise((r) => setTimeout(r, 2500));
    proc.child.kill('SIGKILL');
    await proc.exited;
    stop = true;
    await Promise.all(workers);
    client.destroy();
    expect(acknowledged.length).toBeGreaterThan(50);

    const afterCrash = await verify(dataDir);
    expect(afterCrash.stderr).toBe('');
    expect(afterCrash.code).toBe(0);
    expect(afterCrash.stdout).toMatch(/not yet covered by a signed digest|audit trail OK/);
    const ids = recordedRequestIds(dataDir);
    const missing = acknowledged.filter((id) => !ids.has(id));
    expect(missing).toEqual([]);
    const digests = fs.readdirSync(path.join(dataDir, 'audit', 'digests')).filter((d) => d.endsWith('.json'));
    expect(digests.length).toBeGreaterThan(0); // signed while the load ran

    // A restart writes a new chain; a clean stop seals it; the whole trail verifies.
    const again = spawnService(env);
    await waitHealthy(url, again);
    const client2 = new KMSClient({ endpoint: url, region: REGION, credentials: ROOT, maxAttempts: 1 });
    await client2.send(new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from(SECRET) }));
    client2.destroy();
    expect(await again.stop()).toBe(0);
    const final = await verify(dataDir);
    expect(final.code).toBe(0);
    expect(final.stdout).toMatch(/audit trail OK: \d+ records in 2 chain\(s\)/);

    // Removing the crashed chain's newest digest would leave it looking like an unsigned tail;
    // the restarted chain's first digest vouches for that file, so the removal is a finding.
    const copy = tempDir('p11kms-audit-crash-copy-');
    fs.cpSync(path.join(dataDir, 'audit'), path.join(copy, 'audit'), { recursive: true });
    const digestDir = path.join(copy, 'audit', 'digests');
    const crashedChain = fs.readdirSync(path.join(dataDir, 'audit')).filter((n) => n.endsWith('.jsonl')).sort()[0]!.replace(/_\d{5}\.jsonl$/, '');
    const newest = fs.readdirSync(digestDir).filter((n) => n.startsWith(crashedChain) && n.endsWith('.json')).sort().at(-1)!;
    fs.rmSync(path.join(digestDir, newest));
    const removed = await verify(copy);
    expect(removed.code).toBe(1);
    expect(removed.stderr).toContain(`digest ${newest} is missing`);

    // Nothing the load sent is on disk or in the service's logs.
    const walk = (dir: string): string[] => fs.readdirSync(dir, { withFileTypes: true }).flatMap((d) => (d.isDirectory() ? walk(path.join(dir, d.name)) : [path.join(dir, d.name)]));
    for (const file of walk(dataDir)) expect(fs.readFileSync(file).includes(Buffer.from(SECRET)), file).toBe(false);
    expect(proc.output() + again.output()).not.toContain(SECRET);
    expect(proc.output() + again.output()).not.toContain(Buffer.from(SECRET).toString('base64'));
  });
});
