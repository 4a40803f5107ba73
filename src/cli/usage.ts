/**
 * `p11kms usage --month 2026-11 [--prices] [--json]`: requests per key per operation in a month
 * (from the audit trail), keys in existence, and with --prices a chargeback estimate at AWS's KMS
 * list prices (src/usage/prices.ts).
 */
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig, type Config } from '../config.js';

const USAGE = 'usage: p11kms usage --month YYYY-MM [--prices] [--json]';

export async function run(args: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({ args, options: { month: { type: 'string' }, prices: { type: 'boolean' }, json: { type: 'boolean' } } }));
  } catch (e) {
    console.error(`p11kms usage: ${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  const month = values.month ?? new Date().toISOString().slice(0, 7);
  let dataDir: string;
  let database: Config['database'];
  try {
    ({ dataDir, database } = loadConfig());
  } catch (e) {
    if (e instanceof ConfigError) {
      console.error(`p11kms: ${e.message}`);
      return 2;
    }
    throw e;
  }
  const { usageReport, monthRange } = await import('../usage/report.js');
  try {
    monthRange(month);
  } catch (e) {
    console.error(`p11kms usage: ${(e as Error).message}`);
    return 2;
  }
  const report = await usageReport(dataDir, database, month, values.prices === true);
  if (values.json) {
    console.log(JSON.stringify(report, null, 2));
    return 0;
  }
  const soFar = Date.parse(report.to) > Date.now();
  console.log(`KMS usage for ${report.month} (${report.from} to ${soFar ? `now, ${new Date().toISOString()}` : report.to})`);
  console.log(`keys in existence: ${report.keysInExistence}; successful requests: ${report.totalRequests}\n`);
  for (const k of report.keys) {
    const ops = Object.entries(k.requests).sort(([a], [b]) => (a < b ? -1 : 1));
    const failed = Object.values(k.failed).reduce((a, b) => a + b, 0);
    const existed = k.monthFraction > 0 ? ` existed ${(k.monthFraction * 100).toFixed(k.monthFraction < 0.001 ? 3 : 1)}% of the month${soFar ? ' so far' : ''}` : '';
    console.log(`${k.key}${k.keySpec ? ` [${k.keySpec}]` : ''}${existed}`);
    for (const [op, n] of ops) console.log(`    ${op.padEnd(36)} ${String(n).padStart(10)}`);
    if (failed > 0) console.log(`    ${'(failed or denied)'.padEnd(36)} ${String(failed).padStart(10)}`);
  }
  if (report.estimate) {
    const e = report.estimate;
    console.log(`\nestimate at AWS list prices (${e.source}, as of ${e.asOf}):`);
    console.log(`  key fees      ${e.currency} ${e.keyFees.toFixed(2)}`);
    console.log(`  request fees  ${e.currency} ${e.requestFees.toFixed(2)}`);
    console.log(`  total         ${e.currency} ${e.total.toFixed(2)}`);
  }
  return 0;
}
