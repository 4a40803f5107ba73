/**
 * `p11kms audit verify` and `p11kms audit query`, on the data dir the service uses
 * (P11KMS_DATA_DIR and the other P11KMS_* variables, read like the server does).
 *
 *   p11kms audit verify [--fingerprint <hex>] [--check-token] [--digest-copy <dir|file>] [--trail-only] [--json]
 *       exit 0 only for an intact trail; prints the record count and the last verified event ID.
 *       Exit 1 on any finding (the first one names the first altered/removed/reordered record),
 *       2 on usage or configuration errors. Cross-checks the chain registry in the metadata store,
 *       the token (its audit key and chain heads) whenever it can be opened (--check-token: it
 *       must be), and the digest copy (--digest-copy, or P11KMS_AUDIT_DIGEST_COPY when that is a
 *       directory). --trail-only checks the files alone (an archived copy of audit/).
 *   p11kms audit query [--from <ISO time>] [--to <ISO time>] [--key <key ID|ARN>]
 *                      [--principal <ARN|access key ID>] [--event <EventName>] [--limit <n>]
 *       prints matching records as JSON lines, oldest chain first.
 */
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import type { TrailAnchors } from '../audit/verify.js';
import { ConfigError, loadConfig, type Config } from '../config.js';

const USAGE = `usage: p11kms audit verify [--fingerprint <hex>] [--check-token] [--digest-copy <dir|file>] [--trail-only] [--deployment] [--json]
       p11kms audit query [--from <time>] [--to <time>] [--key <id|arn>] [--principal <arn|access key>] [--event <name>] [--limit <n>]`;

function config(): Config | undefined {
  try {
    return loadConfig();
  } catch (e) {
    if (e instanceof ConfigError) {
      console.error(`p11kms: ${e.message}`);
      return undefined;
    }
    throw e;
  }
}

export async function run(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === 'verify') return verify(rest);
  if (sub === 'query') return query(rest);
  (sub === undefined || sub === '--help' || sub === 'help' ? console.log : console.error)(USAGE);
  return sub === undefined || sub === '--help' || sub === 'help' ? 0 : 2;
}

async function verify(args: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        fingerprint: { type: 'string' },
        'check-token': { type: 'boolean' },
        'digest-copy': { type: 'string' },
        'trail-only': { type: 'boolean' },
        deployment: { type: 'boolean' },
        json: { type: 'boolean' },
      },
    }));
  } catch (e) {
    console.error(`p11kms audit verify: ${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  const cfg = config();
  if (!cfg) return 2;
  const { verifyAuditTrail } = await import('../audit/verify.js');
  const gathered = await gatherAnchors(cfg, { requireToken: values['check-token'] === true, digestCopy: values['digest-copy'], trailOnly: values['trail-only'] === true });
  // Nodes on one PostgreSQL database share its chain registry (and the token's head object): this
  // data dir holds only this node's chains unless every node's were collected here (--deployment).
  const otherNodesPossible = cfg.database.kind === 'postgres' && values.deployment !== true;
  const result = verifyAuditTrail(cfg.dataDir, { expectedFingerprint: values.fingerprint, retentionDays: cfg.audit.retentionDays, anchors: gathered.anchors, otherNodesPossible });
  // After the trail's own findings, so the first finding still names the first damaged record.
  result.findings.push(...gathered.findings);
  result.notes.push(...gathered.notes);
  if (gathered.anchors.token && result.findings.length === 0 && result.fingerprints.length > 0) result.notes.push('the digests were signed by the audit key held in the token');
  result.ok = result.findings.length === 0;
  if (values.json) {
    console.log(JSON.stringify(result));
    return result.ok ? 0 : 1;
  }
  for (const note of result.notes) console.log(`note: ${note}`);
  if (!result.ok) {
    // The report on stdout (with every finding); the verdict with the first finding on stderr.
    console.log(`audit trail FAILED verification: ${result.findings.length} finding(s) (${result.records} record(s) verified before them)`);
    for (const finding of result.findings) console.log(`finding: ${finding}`);
    console.error(`audit trail FAILED verification: ${result.findings[0]}`);
    return 1;
  }
  console.log(
    `audit trail OK: ${result.records} records in ${result.chains} chain(s), ${result.digests} signed digest(s); ` +
      `last verified event ID: ${result.lastVerifiedEventId ?? 'none'}${result.lastVerifiedEventTime ? ` (${result.lastVerifiedEventTime})` : ''}` +
      (result.fingerprints.length > 0 ? `; signing key ${result.fingerprints.join(', ')}` : ''),
  );
  return 0;
}

/**
 * Reads what vouches for the trail from outside its directory: the metadata store's chain
 * registry (required: the service always keeps one), the token (whenever it opens; required with
 * --check-token) and the digest copy (when named).
 */
async function gatherAnchors(
  cfg: Config,
  want: { requireToken: boolean; digestCopy: string | undefined; trailOnly: boolean },
): Promise<{ anchors: TrailAnchors; findings: string[]; notes: string[] }> {
  const anchors: TrailAnchors = {};
  const findings: string[] = [];
  const notes: string[] = [];
  if (want.trailOnly) {
    notes.push('--trail-only: the chain registry and the token were not consulted; a deleted newest chain or digest cannot be detected');
  } else {
    const db = cfg.database;
    if (db.kind === 'sqlite' && !fs.existsSync(db.file)) {
      findings.push(`no metadata store at ${db.file}: its chain registry cannot vouch for the trail (deleted? --trail-only checks an archived copy of audit/ alone)`);
    } else {
      const { openStore } = await import('../store/open.js');
      const store = await openStore(db);
      try {
        anchors.registry = await store.auditChains.listChains();
      } finally {
        await store.close();
      }
    }
    const token = await readToken(cfg);
    if ('problem' in token) {
      // The self-provisioned token lives in the data dir: gone while the registry names signed
      // digests, it was deleted (with it, the only check of a registry rewritten alongside).
      const deleted = token.missingSelfProvisioned && (anchors.registry ?? []).some((c) => c.signingKeyFingerprint !== null);
      (want.requireToken || deleted ? findings : notes).push(`the token was not reached (${token.problem}); the digests' key is checked against the chain registry instead`);
    } else anchors.token = token;
  }
  const copy = want.digestCopy ?? (cfg.audit.digestCopy !== 'syslog' ? cfg.audit.digestCopy : undefined);
  if (copy !== undefined) {
    if (!fs.existsSync(copy)) findings.push(`the digest copy ${copy} does not exist`);
    else {
      const { readDigestCopy } = await import('../audit/digest-copy.js');
      anchors.copy = { source: copy, ...readDigestCopy(copy) };
    }
  } else if (cfg.audit.digestCopy === 'syslog') {
    notes.push('digests are copied to syslog: pass --digest-copy <exported log file> to check them against it');
  }
  return { anchors, findings, notes };
}

/** The token's audit key fingerprint and chain heads, or why the token could not be read. */
async function readToken(cfg: Config): Promise<NonNullable<TrailAnchors['token']> | { problem: string; missingSelfProvisioned?: boolean }> {
  if (cfg.token.module === undefined) {
    const { softHsmPaths } = await import('../hsm/provision.js');
    // Never provision a fresh token here: that would hide a deleted one.
    if (!fs.existsSync(softHsmPaths(cfg.dataDir).userPinPath)) return { problem: `no self-provisioned token under ${softHsmPaths(cfg.dataDir).dir}`, missingSelfProvisioned: true };
  }
  try {
    const { openHsm } = await import('../hsm/pkcs11-token.js');
    // The service may be running: take the cross-process object lock its workers take. Never
    // provision: a missing token is a finding, not something to create.
    const hsm = await openHsm({ ...cfg.token, sharedAcrossProcesses: true }, cfg.dataDir, undefined, { provision: false });
    try {
      const key = await hsm.auditSigningKey?.(false);
      return { fingerprint: key?.fingerprint, heads: key ? await key.readHeads() : [] };
    } finally {
      await hsm.close();
    }
  } catch (e) {
    return { problem: e instanceof Error ? e.message : String(e) };
  }
}

function parseTime(value: string | undefined, name: string): Date | undefined {
  if (value === undefined) return undefined;
  const t = Date.parse(value);
  if (Number.isNaN(t)) throw new Error(`--${name} ${value} is not a time (use ISO 8601, e.g. 2026-11-01T00:00:00Z)`);
  return new Date(t);
}

async function query(args: string[]): Promise<number> {
  let values;
  let from: Date | undefined;
  let to: Date | undefined;
  let limit = Infinity;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        from: { type: 'string' },
        to: { type: 'string' },
        key: { type: 'string' },
        principal: { type: 'string' },
        event: { type: 'string' },
        limit: { type: 'string' },
      },
    }));
    from = parseTime(values.from, 'from');
    to = parseTime(values.to, 'to');
    if (values.limit !== undefined) {
      limit = Number(values.limit);
      if (!Number.isInteger(limit) || limit < 1) throw new Error(`--limit ${values.limit} is not a positive integer`);
    }
  } catch (e) {
    console.error(`p11kms audit query: ${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  const cfg = config();
  if (!cfg) return 2;
  const { queryAuditRecords } = await import('../audit/query.js');
  let n = 0;
  for await (const rec of queryAuditRecords(cfg.dataDir, { from, to, key: values.key, principal: values.principal, eventName: values.event })) {
    process.stdout.write(JSON.stringify(rec) + '\n');
    if (++n >= limit) break;
  }
  return 0;
}
