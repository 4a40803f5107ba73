/**
 * Reading audit records back: every chain's files under <data dir>/audit, filtered by time range,
 * key, principal and event name (`p11kms audit query`, the usage report). Files whose last write
 * is older than the range's start are skipped without being read.
 */
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { AUDIT_DIR, CHAIN_MEMBER, parseRecordFileName } from './format.js';

export interface AuditQuery {
  /** Inclusive, ISO 8601. */
  from?: Date;
  /** Exclusive, ISO 8601. */
  to?: Date;
  /** Key ID or key ARN: matches resources[].ARN and requestParameters key members. */
  key?: string;
  /** Principal ARN, access key ID or principalId. */
  principal?: string;
  eventName?: string;
}

export type StoredRecord = Record<string, unknown> & {
  eventTime: string;
  eventName: string;
  eventType?: string;
  errorCode?: string;
  userIdentity?: { arn?: string; accessKeyId?: string; principalId?: string; type?: string };
  resources?: { ARN: string }[];
  requestParameters?: Record<string, unknown> | null;
};

/** Record files in chain and part order. */
export function listRecordFiles(dataDir: string): string[] {
  const dir = path.join(dataDir, AUDIT_DIR);
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir)
    .map((name) => ({ name, parsed: parseRecordFileName(name) }))
    .filter((f) => f.parsed !== undefined)
    .sort((a, b) => (a.parsed!.chainId < b.parsed!.chainId ? -1 : a.parsed!.chainId > b.parsed!.chainId ? 1 : a.parsed!.part - b.parsed!.part))
    .map((f) => path.join(dir, f.name));
}

function matches(rec: StoredRecord, q: AuditQuery, fromText: string | undefined, toText: string | undefined): boolean {
  if (fromText !== undefined && rec.eventTime < fromText) return false;
  if (toText !== undefined && rec.eventTime >= toText) return false;
  if (q.eventName !== undefined && rec.eventName !== q.eventName) return false;
  if (q.principal !== undefined) {
    const u = rec.userIdentity ?? {};
    if (u.arn !== q.principal && u.accessKeyId !== q.principal && u.principalId !== q.principal) return false;
  }
  if (q.key !== undefined) {
    const k = q.key;
    const keyOf = (arn: string) => arn.slice(arn.lastIndexOf('/') + 1);
    const inResources = (rec.resources ?? []).some((r) => r.ARN === k || keyOf(r.ARN) === k);
    const params = rec.requestParameters ?? {};
    const inParams = ['keyId', 'targetKeyId', 'sourceKeyId', 'destinationKeyId'].some((m) => params[m] === k);
    if (!inResources && !inParams) return false;
  }
  return true;
}

/** Yields matching records (without the chain member unless `withChain`), file by file. */
export async function* queryAuditRecords(dataDir: string, q: AuditQuery, withChain = false): AsyncGenerator<StoredRecord> {
  const fromText = q.from ? q.from.toISOString().slice(0, 19) + 'Z' : undefined;
  const toText = q.to ? q.to.toISOString().slice(0, 19) + 'Z' : undefined;
  for (const file of listRecordFiles(dataDir)) {
    if (q.from && fs.statSync(file).mtimeMs < q.from.getTime() - 1000) continue;
    const lines = readline.createInterface({ input: fs.createReadStream(file, 'utf8'), crlfDelay: Infinity });
    for await (const line of lines) {
      if (line.length === 0) continue;
      let rec: StoredRecord;
      try {
        rec = JSON.parse(line) as StoredRecord;
      } catch {
        continue; // a torn last line after a crash; `audit verify` reports it
      }
      if (!matches(rec, q, fromText, toText)) continue;
      if (!withChain) delete rec[CHAIN_MEMBER];
      yield rec;
    }
  }
}
