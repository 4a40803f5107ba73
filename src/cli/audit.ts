/**
 * `p11kms audit verify` and `p11kms audit query`, on the data dir the service uses
 * (P11KMS_DATA_DIR and the other P11KMS_* variables, read like the server does).
 *
 *   p11kms audit verify [--fingerprint <hex>] [--check-token] [--json]
 *       exit 0 only for an intact trail; prints the record count and the last verified event ID.
 *       Exit 1 on any finding (the first one names the first altered/removed/reordered record),
 *       2 on usage or configuration errors.
 *   p11kms audit query [--from <ISO time>] [--to <ISO time>] [--key <key ID|ARN>]
 *                      [--principal <ARN|access key ID>] [--event <EventName>] [--limit <n>]
 *       prints matching records as JSON lines, oldest chain first.
 */
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig, type Config } from '../config.js';

const USAGE = `usage: p11kms audit verify [--fingerprint <hex>] [--check-token] [--json]
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
    ({ values } = parseArgs({ args, options: { fingerprint: { type: 'string' }, 'check-token': { type: 'boolean' }, json: { type: 'boolean' } } }));
  } catch (e) {
    console.error(`p11kms audit verify: ${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  const cfg = config();
  if (!cfg) return 2;
  const { verifyAuditTrail } = await import('../audit/verify.js');
  const result = verifyAuditTrail(cfg.dataDir, { expectedFingerprint: values.fingerprint, retentionDays: cfg.audit.retentionDays });
  if (values['check-token']) {
    const tokenFinding = await checkTokenKey(cfg, result.fingerprints);
    if (tokenFinding) result.findings.push(tokenFinding);
    else result.notes.push('the digests were signed by the audit key held in the token');
    result.ok = result.findings.length === 0;
  }
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

/** Opens the token and compares its audit key with the fingerprints the digests name. */
async function checkTokenKey(cfg: Config, fingerprints: string[]): Promise<string | undefined> {
  const { openHsm } = await import('../hsm/pkcs11-token.js');
  const hsm = await openHsm(cfg.token, cfg.dataDir, undefined, { provision: false });
  try {
    const key = await hsm.auditSigningKey?.(false);
    if (!key) return 'the token holds no audit signing key';
    const foreign = fingerprints.filter((f) => f !== key.fingerprint);
    return foreign.length > 0 ? `digests are signed by key(s) ${foreign.join(', ')}, not by the token's audit key ${key.fingerprint}` : undefined;
  } finally {
    await hsm.close();
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
