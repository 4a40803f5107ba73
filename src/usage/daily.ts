/** Successful requests per key, operation and UTC day of a month, from the audit trail (the
 *  console's usage chart). */
import { queryAuditRecords } from '../audit/query.js';
import { NO_KEY, monthRange } from './report.js';

export interface DailyCount {
  day: string;
  key: string;
  operation: string;
  requests: number;
}

export async function dailyUsage(dataDir: string, month: string): Promise<DailyCount[]> {
  const { from, to } = monthRange(month);
  const counts = new Map<string, DailyCount>();
  for await (const rec of queryAuditRecords(dataDir, { from, to })) {
    if (rec.eventType === 'AwsServiceEvent' || rec.errorCode) continue;
    const day = rec.eventTime.slice(0, 10);
    const key = rec.resources?.[0]?.ARN ?? NO_KEY;
    const id = `${day}|${key}|${rec.eventName}`;
    const entry = counts.get(id);
    if (entry) entry.requests++;
    else counts.set(id, { day, key, operation: rec.eventName, requests: 1 });
  }
  return [...counts.values()].sort((a, b) => (a.day + a.key + a.operation < b.day + b.key + b.operation ? -1 : 1));
}
