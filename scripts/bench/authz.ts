/**
 * Phase "authz" (issue 4): what authorization costs end to end. One service process, two Encrypt
 * requests, alternating under wrk at 8 and 32 clients:
 *  (a) the account root on a key with the default key policy;
 *  (b) an IAM user of the principals file (2-statement identity policy) on a key whose policy has
 *      10 statements (one allowing the account root kms:*, so the identity policy counts; the
 *      others with conditions or other principals that do not match) and BENCH_GRANTS (100)
 *      grants to other principals.
 * The same setup as scripts/authorization-microbench.ts, through HTTP and SigV4.
 */
import fs from 'node:fs';
import path from 'node:path';
import { CreateGrantCommand, CreateKeyCommand, type KMSClient } from '@aws-sdk/client-kms';
import { appIdentityPolicy, tenStatementPolicy } from './authz-fixture.js';
import { alternately, medianRps, progress, type Settings } from './common.js';
import { WARM_UP_SECONDS, errorMessage, inputFor, signedWrkPoint, startService, stopService, type Target } from './kms.js';
import type { Credentials } from './sign.js';
import type { WrkResult } from './wrk.js';

export const AUTHZ_CLIENTS = [8, 32];
const ACCT = '111122223333';

interface BenchPrincipal extends Credentials {
  arn: string;
  policies: unknown[];
  tags: Record<string, string>;
}

const user = (name: string, n: number, policies: unknown[] = []): BenchPrincipal => ({
  arn: `arn:aws:iam::${ACCT}:user/${name}`,
  accessKeyId: `AKIAP11KMSBENCHUSR${String(n).padStart(2, '0')}`,
  secretAccessKey: `p11kms-bench-${name}-secret-0123456789abcdef`,
  policies,
  tags: { team: 'blue' },
});

/** The caller of case (b). */
const APP = user('bench-app', 1, [appIdentityPolicy(ACCT)]);
const ADMINS = [user('bench-admin', 2), user('bench-auditor', 3)];

export interface AuthzResult {
  keyPolicyStatements: number;
  identityPolicyStatements: number;
  grants: number;
  rounds: number;
  /** (a) root, default key policy. */
  root: WrkResult[];
  /** (b) IAM user, 10-statement key policy + identity policy, `grants` grants on the key. */
  user: WrkResult[];
}

async function createGrants(client: KMSClient, keyId: string, count: number): Promise<void> {
  let next = 0;
  const failures: string[] = [];
  const worker = async () => {
    while (next < count && failures.length === 0) {
      const i = next++;
      try {
        await client.send(
          new CreateGrantCommand({
            KeyId: keyId,
            GranteePrincipal: `arn:aws:iam::${ACCT}:user/someone-${i}`,
            Operations: ['Encrypt', 'Decrypt'],
            ...(i % 2 === 0 ? { Constraints: { EncryptionContextSubset: { app: 'billing' } } } : {}),
          }),
        );
      } catch (e) {
        failures.push(errorMessage(e));
      }
    }
  };
  await Promise.all(Array.from({ length: 4 }, worker));
  if (failures.length > 0) throw new Error(`CreateGrant failed: ${failures[0]}`);
}

export async function authzPhase(wrk: string, settings: Settings, work: string): Promise<AuthzResult> {
  progress(`authz: Encrypt as root (default policy) vs IAM user (10-statement key policy, ${settings.grants} grants)`);
  const principalsFile = path.join(work, 'authz-principals.json');
  fs.writeFileSync(principalsFile, JSON.stringify({ principals: [APP, ...ADMINS] }), { mode: 0o600 });
  const service = await startService('service-authz', path.join(work, 'authz-data'), work, settings, { P11KMS_PRINCIPALS_FILE: principalsFile, P11KMS_ACCOUNT_ID: ACCT });
  try {
    const plain = (await service.client.send(new CreateKeyCommand({ Description: 'p11kms bench authz: default policy' }))).KeyMetadata!.KeyId!;
    const policied = (await service.client.send(new CreateKeyCommand({ Description: 'p11kms bench authz: 10 statements', Policy: tenStatementPolicy(ACCT, ADMINS.map((a) => a.arn)) }))).KeyMetadata!.KeyId!;
    await createGrants(service.client, policied, settings.grants);
    // Both requests are sent once (must be 200) before wrk replays them: signedWrkPoint checks.

    const rootTarget: Target = { port: service.port, keyId: plain, ciphertext: '' };
    const userTarget: Target = { port: service.port, keyId: policied, ciphertext: '' };
    const root: WrkResult[] = [];
    const userPoints: WrkResult[] = [];
    for (let round = 0; round < settings.authzRounds; round++) {
      for (const clients of AUTHZ_CLIENTS) {
        const a = async () =>
          root.push(
            await signedWrkPoint(wrk, settings, work, {
              label: 'Encrypt, root, default policy',
              port: service.port,
              operation: 'Encrypt',
              input: inputFor('Encrypt', rootTarget),
              clients,
              fileTag: `r${round}`,
              warmUpSeconds: round === 0 && clients === AUTHZ_CLIENTS[0] ? WARM_UP_SECONDS : 0,
            }),
          );
        const b = async () =>
          userPoints.push(
            await signedWrkPoint(wrk, settings, work, {
              label: `Encrypt, IAM user, 10 stmts + ${settings.grants} grants`,
              port: service.port,
              operation: 'Encrypt',
              input: inputFor('Encrypt', userTarget),
              clients,
              credentials: APP,
              fileTag: `r${round}`,
              warmUpSeconds: round === 0 && clients === AUTHZ_CLIENTS[0] ? WARM_UP_SECONDS : 0,
            }),
          );
        await alternately(round, a, b);
      }
    }
    for (const clients of AUTHZ_CLIENTS) {
      const ra = medianRps(root, clients);
      const rb = medianRps(userPoints, clients);
      progress(`authz c=${clients}: user/root req/s = ${(rb / ra).toFixed(3)}`);
    }
    return { keyPolicyStatements: 10, identityPolicyStatements: 2, grants: settings.grants, rounds: settings.authzRounds, root, user: userPoints };
  } finally {
    await stopService(service);
  }
}
