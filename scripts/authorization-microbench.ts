/**
 * Microbenchmark of authorization alone: what KmsAuthorizer.authorize costs per Encrypt request,
 * against a real SQLite store (grants are read from it) and no token.
 *
 *   npx tsc -p tsconfig.json && node dist/scripts/authorization-microbench.js
 *
 * Cases: the account root with the default key policy; a user allowed through a 10-statement key
 * policy (account delegation) plus a 2-statement identity policy, with 100 grants on the key; the
 * same user's colleague allowed only by one of those grants; and a denied caller.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { AuthorizationRequest } from '../src/auth/authorize.js';
import { KmsAuthorizer } from '../src/auth/kms-authorizer.js';
import { PrincipalRegistry, type Principal } from '../src/auth/principals.js';
import { defaultKeyPolicy } from '../src/kms/policy-defaults.js';
import { openSqliteStore } from '../src/store/sqlite/store.js';
import type { KeyRecord } from '../src/store/types.js';
import { appIdentityPolicy, tenStatementPolicy } from './bench/authz-fixture.js';

const ACCT = '111122223333';
const KEY_ID = '1234abcd-12ab-34cd-56ef-1234567890ab';
const KEY_ARN = `arn:aws:kms:us-east-1:${ACCT}:key/${KEY_ID}`;

const user = (name: string, policies: unknown[] = []): Principal => ({ arn: `arn:aws:iam::${ACCT}:user/${name}`, accountId: ACCT, isRoot: false, policies, tags: { team: 'blue' } });
const root: Principal = { arn: `arn:aws:iam::${ACCT}:root`, accountId: ACCT, isRoot: true, policies: [], tags: {} };
const app = user('app', [appIdentityPolicy(ACCT)]);
const grantee = user('grantee');
const stranger = user('stranger');

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'p11kms-authz-bench-'));
  const store = await openSqliteStore(path.join(dir, 'bench.db'));
  const registry = new PrincipalRegistry();
  [root, app, grantee, stranger].forEach((p, i) => registry.add(p, `AKIABENCH${String(i).padStart(11, '0')}`, 'bench-secret-bench-secret'));
  const authorizer = new KmsAuthorizer({ store, principals: registry, accountId: ACCT });

  const key = (policy: string, keyId = KEY_ID): KeyRecord => ({
    keyId, accountId: ACCT, region: 'us-east-1', createdAt: new Date(), description: '', keyState: 'Enabled', keySpec: 'SYMMETRIC_DEFAULT',
    keyUsage: 'ENCRYPT_DECRYPT', origin: 'AWS_KMS', policy, currentVersion: 1, deletionDate: null, pendingWindowInDays: null,
  });
  const policied = key(tenStatementPolicy(ACCT, [grantee.arn, stranger.arn]));
  await store.createKey(policied, { keyId: KEY_ID, version: 1, createdAt: new Date(), keyMaterialId: '0'.repeat(64) }, []);
  for (let i = 0; i < 100; i++) {
    await store.createGrant({
      grantId: i.toString(16).padStart(64, '0'), keyId: KEY_ID, name: null,
      granteePrincipal: i === 99 ? grantee.arn : `arn:aws:iam::${ACCT}:user/someone-${i}`, retiringPrincipal: null,
      issuingAccount: `arn:aws:iam::${ACCT}:root`, operations: ['Encrypt', 'Decrypt'],
      constraints: i % 2 === 0 ? { EncryptionContextSubset: { app: 'billing' } } : null, createdAt: new Date(),
    });
  }
  const defaultKey = key(defaultKeyPolicy('aws', ACCT), '00000000-0000-4000-8000-000000000000');

  const request = (principal: Principal, k: KeyRecord): AuthorizationRequest => ({
    caller: { principal, accessKeyId: 'AKIA' }, action: 'kms:Encrypt', resource: `arn:aws:kms:us-east-1:${ACCT}:key/${k.keyId}`, key: k,
    operation: 'Encrypt', input: { KeyId: k.keyId, Plaintext: Buffer.alloc(32), EncryptionContext: { app: 'billing', tenant: '42' } },
    sourceIp: '::ffff:127.0.0.1', secureTransport: false, now: new Date(),
  });
  const cases: Array<[string, AuthorizationRequest, boolean]> = [
    ['root, default key policy', request(root, defaultKey), true],
    ['user: 10-statement key policy + 2-statement identity policy, 100 grants on the key', request(app, policied), true],
    ['user allowed by 1 of the 100 grants', request(grantee, policied), true],
    ['denied (no statement, no grant)', request(stranger, policied), false],
  ];
  void KEY_ARN;
  for (const [name, req, allowed] of cases) {
    const run = async (n: number) => {
      for (let i = 0; i < n; i++) {
        try {
          await authorizer.authorize(req);
          if (!allowed) throw new Error(`${name}: unexpectedly allowed`);
        } catch (e) {
          if (allowed) throw e;
        }
      }
    };
    await run(20_000); // warm-up
    const n = 100_000;
    const start = process.hrtime.bigint();
    await run(n);
    const ns = Number(process.hrtime.bigint() - start) / n;
    console.log(`${name.padEnd(85)} ${(ns / 1000).toFixed(2).padStart(7)} µs/request  ${Math.round(1e9 / ns).toLocaleString('en').padStart(10)} /s`);
  }
  await store.close();
  fs.rmSync(dir, { recursive: true, force: true });
}

await main();
