/**
 * Phase "audit" (issue 6): what the audit trail costs. Two services run side by side, one with
 * the audit sink on (the default: a durable, hash-chained record before every response) and one
 * with P11KMS_AUDIT=off; Encrypt at 1, 8 and 32 clients alternates between them point by point
 * (on/off, then off/on in the next round), BENCH_AUDIT_ROUNDS rounds, median reported.
 */
import path from 'node:path';
import { alternately, medianRps, progress, type Settings } from './common.js';
import { WARM_UP_SECONDS, firstKeys, startService, stopService, wrkPoint, type Service, type Target } from './kms.js';
import type { WrkResult } from './wrk.js';

export const AUDIT_CLIENTS = [1, 8, 32];

export interface AuditResult {
  rounds: number;
  on: WrkResult[];
  off: WrkResult[];
}

export async function auditPhase(wrk: string, settings: Settings, work: string): Promise<AuditResult> {
  progress(`audit: Encrypt with the audit sink on vs P11KMS_AUDIT=off (${settings.auditRounds} rounds)`);
  let on: Service | undefined;
  let off: Service | undefined;
  try {
    on = await startService('service-audit-on', path.join(work, 'audit-on-data'), work, settings, { P11KMS_AUDIT: 'on' });
    off = await startService('service-audit-off', path.join(work, 'audit-off-data'), work, settings, { P11KMS_AUDIT: 'off' });
    const onTarget: Target = { port: on.port, keyId: (await firstKeys(on.client, 1))[0]!, ciphertext: '' };
    const offTarget: Target = { port: off.port, keyId: (await firstKeys(off.client, 1))[0]!, ciphertext: '' };
    const result: AuditResult = { rounds: settings.auditRounds, on: [], off: [] };
    for (let round = 0; round < settings.auditRounds; round++) {
      for (const clients of AUDIT_CLIENTS) {
        const warm = round === 0 && clients === AUDIT_CLIENTS[0] ? WARM_UP_SECONDS : 0;
        const a = async () => result.on.push(await wrkPoint(wrk, settings, work, 'Encrypt, audit on', 'Encrypt', onTarget, clients, `r${round}`, warm));
        const b = async () => result.off.push(await wrkPoint(wrk, settings, work, 'Encrypt, audit off', 'Encrypt', offTarget, clients, `r${round}`, warm));
        await alternately(round, a, b);
      }
    }
    for (const clients of AUDIT_CLIENTS) {
      const rOn = medianRps(result.on, clients);
      const rOff = medianRps(result.off, clients);
      progress(`audit c=${clients}: on/off req/s = ${(rOn / rOff).toFixed(3)}`);
    }
    return result;
  } finally {
    if (on) await stopService(on);
    if (off) await stopService(off);
  }
}
