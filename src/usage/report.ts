/**
 * The monthly usage report: requests per key per operation (from the audit trail, so it counts
 * exactly what was recorded, on every service process), keys in existence during the month (from
 * the metadata store, plus keys deleted since, from their audit records), and an optional
 * chargeback estimate at AWS's list prices (prices.ts).
 */
import { queryAuditRecords } from '../audit/query.js';
import type { DatabaseConfig } from '../config.js';
import { openStore } from '../store/open.js';
import { KMS_PRICE_LIST, priceClassOf, type RequestPriceClass } from './prices.js';

export const NO_KEY = '(no key)';

export interface KeyUsage {
  key: string;
  keySpec?: string;
  /** Successful requests per operation. */
  requests: Record<string, number>;
  /** Failed or denied requests per operation (not charged by this estimate). */
  failed: Record<string, number>;
  /** Fraction of the month the key existed (1 = whole month). */
  monthFraction: number;
  rotations: number;
}

export interface UsageReport {
  month: string;
  from: string;
  to: string;
  keys: KeyUsage[];
  keysInExistence: number;
  totalRequests: number;
  estimate?: {
    currency: string;
    source: string;
    asOf: string;
    keyFees: number;
    requestFees: number;
    total: number;
    requestsByClass: Record<RequestPriceClass, number>;
  };
}

export function monthRange(month: string): { from: Date; to: Date } {
  const m = /^(\d{4})-(\d{2})$/.exec(month);
  if (!m || Number(m[2]) < 1 || Number(m[2]) > 12) throw new Error(`--month ${month} is not YYYY-MM`);
  const from = new Date(Date.UTC(Number(m[1]), Number(m[2]) - 1, 1));
  const to = new Date(Date.UTC(Number(m[1]), Number(m[2]), 1));
  return { from, to };
}

/** Key fees accrue from a key's creation (or the month's start) to its deletion, the month's end
 *  or `now`, whichever comes first: in the current month, a key made today has existed minutes. */
export async function usageReport(dataDir: string, database: DatabaseConfig, month: string, withPrices: boolean, now: Date = new Date()): Promise<UsageReport> {
  const { from, to } = monthRange(month);
  const monthMs = to.getTime() - from.getTime();
  const until = Math.min(to.getTime(), now.getTime());
  const byKey = new Map<string, KeyUsage>();
  const entry = (key: string) => {
    let e = byKey.get(key);
    if (!e) {
      e = { key, requests: {}, failed: {}, monthFraction: 0, rotations: 0 };
      byKey.set(key, e);
    }
    return e;
  };
  const classes: Record<RequestPriceClass, number> = { symmetric: 0, asymmetric: 0, eccGenerateDataKeyPair: 0, rsaGenerateDataKeyPair: 0 };
  const pending: { key: string; eventName: string; keyPairSpec: unknown }[] = [];
  const deletedAt = new Map<string, number>();
  const createdAt = new Map<string, number>();
  let total = 0;
  for await (const rec of queryAuditRecords(dataDir, { from, to })) {
    const key = rec.resources?.[0]?.ARN ?? NO_KEY;
    if (rec.eventType === 'AwsServiceEvent') {
      if (rec.eventName === 'DeleteKey' && key !== NO_KEY) deletedAt.set(key, Date.parse(rec.eventTime));
      continue;
    }
    const e = entry(key);
    const bucket = rec.errorCode ? e.failed : e.requests;
    bucket[rec.eventName] = (bucket[rec.eventName] ?? 0) + 1;
    if (!rec.errorCode) {
      total++;
      pending.push({ key, eventName: rec.eventName, keyPairSpec: rec.requestParameters?.keyPairSpec });
      if (rec.eventName === 'CreateKey' && key !== NO_KEY) createdAt.set(key, Date.parse(rec.eventTime));
    }
  }
  // Keys in existence: the store's keys, and keys the audit trail saw created or deleted.
  const store = await openStore(database);
  const specs = new Map<string, string>();
  try {
    let after: string | undefined;
    for (;;) {
      const page = await store.listKeys(after, 1000);
      if (page.length === 0) break;
      for (const k of page) {
        const arn = `arn:${partitionOf(k.region)}:kms:${k.region}:${k.accountId}:key/${k.keyId}`;
        specs.set(arn, k.keySpec);
        const start = Math.max(from.getTime(), k.createdAt.getTime());
        if (k.createdAt.getTime() >= until) continue;
        const e = entry(arn);
        e.keySpec = k.keySpec;
        e.monthFraction = Math.max(0, (until - start) / monthMs);
        e.rotations = Math.min(Math.max(0, k.currentVersion - 1), KMS_PRICE_LIST.maxChargedRotations);
      }
      after = page[page.length - 1]!.keyId;
      if (page.length < 1000) break;
    }
  } finally {
    await store.close();
  }
  for (const [arn, at] of deletedAt) {
    const e = entry(arn);
    const start = Math.max(from.getTime(), createdAt.get(arn) ?? from.getTime());
    e.monthFraction = Math.max(0, (at - start) / monthMs);
  }
  for (const p of pending) classes[priceClassOf(specs.get(p.key), p.eventName, p.keyPairSpec)]++;
  const keys = [...byKey.values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  const report: UsageReport = {
    month,
    from: from.toISOString(),
    to: to.toISOString(),
    keys,
    keysInExistence: keys.filter((k) => k.monthFraction > 0).length,
    totalRequests: total,
  };
  if (withPrices) {
    const p = KMS_PRICE_LIST;
    const keyFees = keys.reduce((sum, k) => sum + k.monthFraction * (p.keyPerMonth + k.rotations * p.rotationPerMonth), 0);
    const billable = { ...classes, symmetric: Math.max(0, classes.symmetric - p.freeRequestsPerMonth) };
    let requestFees = 0;
    for (const c of Object.keys(billable) as RequestPriceClass[]) requestFees += (billable[c] / 10_000) * p.per10kRequests[c];
    const round = (n: number) => Math.round(n * 100) / 100;
    report.estimate = { currency: p.currency, source: p.source, asOf: p.asOf, keyFees: round(keyFees), requestFees: round(requestFees), total: round(keyFees + requestFees), requestsByClass: classes };
  }
  return report;
}

function partitionOf(region: string): string {
  return region.startsWith('cn-') ? 'aws-cn' : region.startsWith('us-gov-') ? 'aws-us-gov' : 'aws';
}
