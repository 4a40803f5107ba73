/**
 * Tamper evidence that survives deletion (issue 9, item 4): the chain registry in the metadata
 * store, the token's head object and the operator's digest copy (P11KMS_AUDIT_DIGEST_COPY) vouch
 * for the trail from outside audit/. Two service runs write two chains; each tampering kind is
 * applied to a fresh copy of the data dir and the real CLI (`node dist/src/cli.js audit verify`)
 * must exit 1 naming the problem, while the untampered trail verifies.
 */
import { createHash, generateKeyPairSync, sign } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { CreateKeyCommand, EncryptCommand, KMSClient } from '@aws-sdk/client-kms';
import { beforeAll, describe, expect, it } from 'vitest';
import { type DigestFile, sha256Hex, splitDigest, stringToSign } from '../src/audit/format.js';
import Database from 'better-sqlite3';
import { locateSoftHsmModule as findSoftHsmModule } from '../src/hsm/provision.js';
import { openHsm } from '../src/hsm/pkcs11-token.js';
import { startService } from '../src/service.js';
import { openSqliteStore } from '../src/store/sqlite/store.js';
import { runCli } from './helpers/process.js';
import { REGION, ROOT, tempDir, testConfig } from './helpers/service.js';

const verify = (dataDir: string, args: string[] = []) => runCli(['audit', 'verify', ...args], dataDir);

const auditDir = (dataDir: string) => path.join(dataDir, 'audit');
const digestDir = (dataDir: string) => path.join(dataDir, 'audit', 'digests');
const chainOf = (name: string) => name.replace(/_\d+\.jsonl?$/, '');
const digestNames = (dataDir: string) => fs.readdirSync(digestDir(dataDir)).filter((n) => n.endsWith('.json')).sort();
const recordNames = (dataDir: string) => fs.readdirSync(auditDir(dataDir)).filter((n) => n.endsWith('.jsonl')).sort();

/** Re-links record lines after an edit: each `prev` becomes the hash of the line before. */
function rechain(lines: string[], prev: string): string[] {
  return lines.map((line) => {
    const rec = JSON.parse(line) as { p11kmsChain: { prev: string } };
    rec.p11kmsChain.prev = prev;
    const out = JSON.stringify(rec);
    prev = sha256Hex(out);
    return out;
  });
}

describe('audit anchors outside the audit directory', () => {
  const dataDir = tempDir('p11kms-audit-anchors-');
  const copyDir = tempDir('p11kms-audit-digest-copy-');
  let chains: string[] = [];

  beforeAll(async () => {
    // Two runs: two chains, each sealed by a final digest at shutdown.
    for (let run = 0; run < 2; run++) {
      const service = await startService(testConfig(dataDir, { P11KMS_AUDIT_DIGEST_COPY: copyDir }));
      const client = new KMSClient({ endpoint: service.url, region: REGION, credentials: ROOT, maxAttempts: 1 });
      const keyId = (await client.send(new CreateKeyCommand({ Description: `run ${run}` }))).KeyMetadata!.KeyId!;
      for (let i = 0; i < 3; i++) await client.send(new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from(`run ${run} #${i}`) }));
      await service.audit.digestNow(); // a digest mid-chain, then the final one at close
      await client.send(new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from(`run ${run} last`) }));
      client.destroy();
      await service.close();
    }
    // Oldest first by opening time (IDs sort by start second only: both runs may share one).
    const store = await openSqliteStore(path.join(dataDir, 'p11kms.db'));
    chains = (await store.auditChains.listChains()).sort((a, b) => a.openedAt.getTime() - b.openedAt.getTime()).map((c) => c.chainId);
    await store.close();
    expect(new Set(recordNames(dataDir).map(chainOf))).toEqual(new Set(chains));
  });

  /** A fresh copy of the whole data dir (store, token config, audit/) to tamper with. */
  const copy = () => {
    const to = tempDir('p11kms-audit-anchors-copy-');
    fs.cpSync(dataDir, to, { recursive: true });
    return to;
  };

  it('keeps the registry, the token head and the digest copy current at every digest', async () => {
    expect(chains).toHaveLength(2);
    const store = await openSqliteStore(path.join(dataDir, 'p11kms.db'));
    const registry = await store.auditChains.listChains();
    await store.close();
    expect(registry.map((c) => c.chainId)).toEqual([...chains].sort());
    for (const head of registry) {
      const name = `${head.chainId}_${String(head.digestSequence).padStart(6, '0')}.json`;
      const bytes = fs.readFileSync(path.join(digestDir(dataDir), name));
      expect(head).toMatchObject({ digestSequence: 2, recordCount: 5, final: true, digestHash: sha256Hex(bytes) });
      expect(head.signingKeyFingerprint).toMatch(/^[0-9a-f]{64}$/);
    }
    // The token's head object names the same newest digests.
    const hsm = await openHsm(testConfig(dataDir).token, dataDir);
    const heads = await (await hsm.auditSigningKey!(false))!.readHeads();
    await hsm.close();
    expect(heads.sort((a, b) => (a.chainId < b.chainId ? -1 : 1))).toEqual(
      registry.map((c) => ({ chainId: c.chainId, digestSequence: 2, digestHash: c.digestHash, recordCount: 5, final: true })),
    );
    // The copy holds every digest, byte for byte, and the public key.
    const copied = fs.readdirSync(copyDir).sort();
    for (const name of digestNames(dataDir)) expect(fs.readFileSync(path.join(copyDir, name))).toEqual(fs.readFileSync(path.join(digestDir(dataDir), name)));
    expect(copied.filter((n) => n.endsWith('.json'))).toEqual(digestNames(dataDir));
    expect(copied.some((n) => /^public-key-[0-9a-f]{64}\.pem$/.test(n))).toBe(true);
    // Append-only: a digest in the copy is read-only and never overwritten.
    expect(fs.statSync(path.join(copyDir, digestNames(dataDir)[0]!)).mode & 0o222).toBe(0);
  });

  it('verifies the untampered trail against registry, token and copy', async () => {
    const { code, stdout, stderr } = await verify(dataDir);
    expect(stderr).toBe('');
    expect(code).toBe(0);
    expect(stdout).toMatch(/audit trail OK: 10 records in 2 chain\(s\), 4 signed digest\(s\)/);
    expect(stdout).toContain('signed by the audit key held in the token');
    const withCopy = await verify(dataDir, ['--check-token', '--digest-copy', copyDir]);
    expect(withCopy.code).toBe(0);
  });

  it('fails when the whole audit/ directory is deleted', async () => {
    const dir = copy();
    fs.rmSync(auditDir(dir), { recursive: true });
    const { code, stderr, stdout } = await verify(dir);
    expect(code).toBe(1);
    const firstListed = [...chains].sort()[0]!;
    expect(stderr).toMatch(new RegExp(`chain ${firstListed}: the chain registry names digest ${firstListed}_000002.json \\(records 1-5, final\\), which is missing from the trail \\(deleted\\)`));
    expect(stdout).toContain(`chain ${chains[1]}: the chain registry names`);
    expect(stdout).toContain("the token's head object names");
  });

  it('fails when the newest chain (records and digests) is deleted', async () => {
    const dir = copy();
    const newest = chains[1]!;
    for (const name of fs.readdirSync(auditDir(dir))) if (name.startsWith(newest)) fs.rmSync(path.join(auditDir(dir), name));
    for (const name of fs.readdirSync(digestDir(dir))) if (name.startsWith(newest)) fs.rmSync(path.join(digestDir(dir), name));
    const { code, stderr } = await verify(dir);
    expect(code).toBe(1);
    expect(stderr).toContain(`chain ${newest}: the chain registry names digest ${newest}_000002.json (records 1-5, final), which is missing from the trail (deleted)`);
    // Its registry row deleted too (SQLite needs no PIN): the token's head object still names it.
    const db = new Database(path.join(dir, 'p11kms.db'));
    db.prepare('DELETE FROM audit_chains WHERE chain_id = ?').run(newest);
    db.close();
    const noRow = await verify(dir);
    expect(noRow.code).toBe(1);
    expect(noRow.stderr).toContain(`chain ${newest}: the token's head object names digest ${newest}_000002.json (records 1-5, final), which is missing from the trail (deleted)`);
    // Even without registry and token, the operator's copy still knows the chain.
    const fromCopy = await verify(dir, ['--trail-only', '--digest-copy', copyDir]);
    expect(fromCopy.code).toBe(1);
    expect(fromCopy.stderr).toContain(`chain ${newest}: the digest copy in ${copyDir} names digest ${newest}_000001.json`);
  });

  it('fails when a made-up chain without a digest is added', async () => {
    const dir = copy();
    const made = '20261201T000000Z-p4242-abcdef';
    const template = fs.readFileSync(path.join(auditDir(dir), recordNames(dir)[0]!), 'utf8').split('\n')[0]!;
    const rec = JSON.parse(template) as { p11kmsChain: { chainId: string; seq: number; prev: string }; eventID: string };
    rec.p11kmsChain = { chainId: made, seq: 1, prev: '0'.repeat(64) };
    rec.eventID = '11111111-2222-3333-4444-555555555555';
    fs.writeFileSync(path.join(auditDir(dir), `${made}_00001.jsonl`), JSON.stringify(rec) + '\n');
    const { code, stderr } = await verify(dir);
    expect(code).toBe(1);
    expect(stderr).toContain(`chain ${made} is not in the chain registry of the metadata store`);
    // A registry row forged beside it (SQLite needs no PIN): the token still does not know it.
    const db = new Database(path.join(dir, 'p11kms.db'));
    db.prepare('INSERT INTO audit_chains (chain_id, opened_at, digest_sequence, record_count, final) VALUES (?, ?, 0, 0, 0)').run(made, Date.now());
    db.close();
    const forged = await verify(dir);
    expect(forged.code).toBe(1);
    expect(forged.stderr).toContain(`chain ${made} is unknown to the token's head object (added: no service process registered it)`);
  });

  it("fails when the newest chain's final digest is deleted and its records rewritten", async () => {
    const dir = copy();
    const newest = chains[1]!;
    const final = digestNames(dir).filter((n) => n.startsWith(newest)).at(-1)!;
    const previous = JSON.parse(fs.readFileSync(path.join(digestDir(dir), digestNames(dir).filter((n) => n.startsWith(newest))[0]!), 'utf8')) as DigestFile;
    fs.rmSync(path.join(digestDir(dir), final));
    // Rewrite the records after the remaining digest, hash chain intact: without the registry it
    // would pass as an unsigned tail of a killed process.
    const file = path.join(auditDir(dir), recordNames(dir).filter((n) => n.startsWith(newest)).at(-1)!);
    const lines = fs.readFileSync(file, 'utf8').split('\n').filter((l) => l.length > 0);
    const kept = lines.slice(0, previous.lastSequence);
    const rewritten = lines.slice(previous.lastSequence).map((l) => l.replace('"eventName":"Encrypt"', '"eventName":"GenerateRandom"'));
    fs.writeFileSync(file, [...kept, ...rechain(rewritten, previous.lastRecordHash)].join('\n') + '\n');
    const trailOnly = await verify(dir, ['--trail-only']);
    expect(trailOnly.code).toBe(0); // the files alone cannot tell: that is what the anchors are for
    const { code, stderr } = await verify(dir);
    expect(code).toBe(1);
    expect(stderr).toContain(`chain ${newest}: the chain registry names digest ${final} (records 1-5, final), which is missing from the trail (deleted)`);
  });

  describe('a trail re-signed with another key and its public-key file swapped', () => {
    let dir = '';
    beforeAll(() => {
      dir = copy();
      const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
      const spki = publicKey.export({ type: 'spki', format: 'der' });
      const fingerprint = createHash('sha256').update(spki).digest('hex');
      for (const name of fs.readdirSync(digestDir(dir))) if (name.endsWith('.pem')) fs.rmSync(path.join(digestDir(dir), name));
      fs.writeFileSync(path.join(digestDir(dir), `public-key-${fingerprint}.pem`), publicKey.export({ type: 'spki', format: 'pem' }));
      // Re-sign every digest in order, re-linking digests and the cross-chain anchors.
      const newHash = new Map<string, string>();
      let previous: { name: string; hash: string; signature: string } | undefined;
      // Oldest chain first: a chain's first digest names the newest digest of the older one.
      const ordered = digestNames(dir).sort((a, b) => chains.indexOf(chainOf(a)) - chains.indexOf(chainOf(b)) || (a < b ? -1 : 1));
      for (const name of ordered) {
        const { body } = splitDigest(JSON.parse(fs.readFileSync(path.join(digestDir(dir), name), 'utf8')) as DigestFile);
        if (body.digestSequence === 1) previous = undefined;
        body.digestPublicKeyFingerprint = fingerprint;
        body.previousDigestHashValue = previous?.hash ?? null;
        body.previousDigestSignature = previous?.signature ?? null;
        for (const k of body.knownChains ?? []) k.digestHashValue = newHash.get(k.digestFile) ?? k.digestHashValue;
        const signature = sign('sha256', Buffer.from(stringToSign(body)), { key: privateKey, dsaEncoding: 'ieee-p1363' }).toString('hex');
        const content = JSON.stringify({ ...body, digestSignature: signature }) + '\n';
        fs.writeFileSync(path.join(digestDir(dir), name), content);
        newHash.set(name, sha256Hex(content));
        previous = { name, hash: sha256Hex(content), signature };
      }
    });

    it('passes the files-only check (the forgery is self-consistent)', async () => {
      expect((await verify(dir, ['--trail-only'])).code).toBe(0);
    });

    it('fails plain verify: the token key and the registry disagree', async () => {
      const { code, stderr, stdout } = await verify(dir);
      expect(code).toBe(1);
      expect(stderr).toMatch(/is not the one the chain registry recorded \(replaced or re-signed\)/);
      expect(stdout).toMatch(/not by the token's audit key [0-9a-f]{64} \(re-signed, public key file swapped\)/);
    });

    it('fails without the token too: the registry pins the key', async () => {
      // An external token that is not reachable now (no such label in the module).
      const emptyConf = path.join(tempDir('p11kms-audit-anchors-nohsm-'), 'softhsm2.conf');
      fs.mkdirSync(path.join(path.dirname(emptyConf), 'tokens'));
      fs.writeFileSync(emptyConf, `directories.tokendir = ${path.join(path.dirname(emptyConf), 'tokens')}\nobjectstore.backend = file\n`);
      const external = { SOFTHSM2_CONF: emptyConf, P11KMS_PKCS11_MODULE: findSoftHsmModule(), P11KMS_TOKEN_LABEL: 'elsewhere', P11KMS_PIN: '1234' };
      const { code, stdout } = await runCli(['audit', 'verify'], dir, external);
      expect(code).toBe(1);
      expect(stdout).toMatch(/note: the token was not reached \(no token labelled 'elsewhere'/);
      expect(stdout).toMatch(/not by the key the chain registry names \([0-9a-f]{64}\)/);
      // --check-token insists on the token.
      const strict = await runCli(['audit', 'verify', '--check-token'], dir, external);
      expect(strict.stdout).toMatch(/finding: the token was not reached/);
    });

    it('fails when the self-provisioned token was deleted with it', async () => {
      const noToken = tempDir('p11kms-audit-anchors-notoken-');
      fs.cpSync(dir, noToken, { recursive: true });
      fs.rmSync(path.join(noToken, 'softhsm'), { recursive: true });
      const { code, stdout } = await verify(noToken);
      expect(code).toBe(1);
      expect(stdout).toMatch(/finding: the token was not reached \(no self-provisioned token under/);
    });
  });

  it('adopts the chains of a trail written before the registry existed, and only then', async () => {
    const dir = tempDir('p11kms-audit-adopt-');
    const run = async () => {
      const service = await startService(testConfig(dir));
      const client = new KMSClient({ endpoint: service.url, region: REGION, credentials: ROOT, maxAttempts: 1 });
      await client.send(new CreateKeyCommand({}));
      client.destroy();
      await service.close();
    };
    await run();
    // As after the upgrade that added migration 6: the trail exists, the registry is empty.
    const db = new Database(path.join(dir, 'p11kms.db'));
    db.exec('DELETE FROM audit_chains');
    db.close();
    expect((await verify(dir)).stderr).toMatch(/is not in the chain registry/);
    await run();
    const adopted = await verify(dir);
    expect(adopted.stderr).toBe('');
    expect(adopted.stdout).toMatch(/audit trail OK: 2 records in 2 chain\(s\)/);
    // A chain made up after that is not adopted by later starts.
    const first = recordNames(dir)[0]!;
    fs.copyFileSync(path.join(auditDir(dir), first), path.join(auditDir(dir), first.replace(/-p\d+-/, '-p1-')));
    await run();
    expect((await verify(dir)).stderr).toMatch(/-p1-[0-9a-f]+ is not in the chain registry/);
  });

  it('copies digests to syslog, and verify checks an exported log against the trail', async () => {
    const dir = tempDir('p11kms-audit-syslog-');
    const bin = tempDir('p11kms-audit-syslog-bin-');
    const syslog = path.join(bin, 'syslog.log');
    // Stands in for the syslog daemon (there is none here): logger(1) is called as
    // `logger -t TAG -- MESSAGE`; this one appends a syslog-style line to a file.
    fs.writeFileSync(path.join(bin, 'logger'), `#!/bin/sh\necho "$(date '+%b %e %T') host $2: $4" >> '${syslog}'\n`, { mode: 0o755 });
    const savedPath = process.env.PATH;
    process.env.PATH = `${bin}:${savedPath}`;
    try {
      const service = await startService(testConfig(dir, { P11KMS_AUDIT_DIGEST_COPY: 'syslog' }));
      const client = new KMSClient({ endpoint: service.url, region: REGION, credentials: ROOT, maxAttempts: 1 });
      await client.send(new CreateKeyCommand({}));
      await service.audit.digestNow();
      await client.send(new CreateKeyCommand({}));
      client.destroy();
      await service.close();
    } finally {
      process.env.PATH = savedPath;
    }
    const lines = fs.readFileSync(syslog, 'utf8').trim().split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[1]).toMatch(/ host p11kms-audit-digest: \{"chainId":"[^"]+","digestSequence":2,"digestHash":"[0-9a-f]{64}","recordCount":2,"final":true\}$/);
    const configured = await runCli(['audit', 'verify'], dir, { P11KMS_AUDIT_DIGEST_COPY: 'syslog' });
    expect(configured.code).toBe(0);
    expect(configured.stdout).toContain('note: digests are copied to syslog: pass --digest-copy <exported log file>');
    expect((await verify(dir, ['--digest-copy', syslog])).code).toBe(0);
    const final = digestNames(dir).at(-1)!;
    fs.rmSync(path.join(digestDir(dir), final));
    const removed = await verify(dir, ['--trail-only', '--digest-copy', syslog]);
    expect(removed.code).toBe(1);
    expect(removed.stderr).toContain(`the digest copy in ${syslog} names digest ${final} (records 1-2, final), which is missing from the trail (deleted)`);
  });
});
