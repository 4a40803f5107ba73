/**
 * `p11kms usage`: a key is charged from its creation to now in the current month, and not at all
 * in a month before it existed.
 */
import path from 'node:path';
import { CreateKeyCommand } from '@aws-sdk/client-kms';
import { describe, expect, it } from 'vitest';
import { DATABASE_FILE } from '../src/service.js';
import { usageReport } from '../src/usage/report.js';
import { runCli } from './helpers/process.js';
import { startTestService } from './helpers/service.js';

describe('p11kms usage', () => {
  it('charges a key made today from its creation, not from the start of the month or to its end', async () => {
    const t = await startTestService();
    const created = Date.now();
    const keyId = (await t.client.send(new CreateKeyCommand({}))).KeyMetadata!.KeyId!;
    await t.stop();
    const month = new Date().toISOString().slice(0, 7);
    const report = await usageReport(t.dataDir, { kind: 'sqlite', file: path.join(t.dataDir, DATABASE_FILE) }, month, true);
    const key = report.keys.find((k) => k.key.endsWith(keyId))!;
    const monthMs = Date.UTC(Number(month.slice(0, 4)), Number(month.slice(5)), 1) - Date.UTC(Number(month.slice(0, 4)), Number(month.slice(5)) - 1, 1);
    expect(key.monthFraction).toBeGreaterThan(0);
    expect(key.monthFraction).toBeLessThanOrEqual((Date.now() - created + 1000) / monthMs);
    expect(report.estimate!.keyFees).toBe(0); // minutes of a $1/month key round to 0.00
    // An hour from now, an hour's worth.
    const later = await usageReport(t.dataDir, { kind: 'sqlite', file: path.join(t.dataDir, DATABASE_FILE) }, month, false, new Date(created + 3_600_000));
    expect(later.keys.find((k) => k.key.endsWith(keyId))!.monthFraction).toBeCloseTo(3_600_000 / monthMs, 4);

    const cli = await runCli(['usage'], t.dataDir);
    expect(cli.code).toBe(0);
    expect(cli.stdout).toMatch(/existed 0\.\d+% of the month so far/);
    const before = await runCli(['usage', '--month', '2020-01', '--json'], t.dataDir);
    expect(JSON.parse(before.stdout).keysInExistence).toBe(0);
  });
});
