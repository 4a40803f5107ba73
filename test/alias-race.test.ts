/**
 * UpdateAlias and DeleteAlias decide on the key an alias points to, then change the alias only if
 * it still points there. Here the alias is moved by another request between the decision and the
 * write (the store is the real SQLite store, wrapped to let that request in at exactly that
 * moment): the handler decides again, on the key the alias points to now, and is refused. Also the
 * store's conditional writes themselves.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { KmsAuthorizer } from '../src/auth/kms-authorizer.js';
import { PrincipalRegistry, type Principal } from '../src/auth/principals.js';
import type { Hsm } from '../src/hsm/types.js';
import type { RequestContext, Services } from '../src/kms/context.js';
import { aliasOperations } from '../src/kms/operations/aliases.js';
import { defaultKeyPolicy } from '../src/kms/policy-defaults.js';
import { openSqliteStore } from '../src/store/sqlite/store.js';
import type { KeyRecord, MetadataStore } from '../src/store/types.js';

const REGION = 'us-east-1';
const ACCT = '111122223333';
const account = { partition: 'aws', region: REGION, accountId: ACCT };
const attacker: Principal = {
  arn: `arn:aws:iam::${ACCT}:user/attacker`,
  accountId: ACCT,
  isRoot: false,
  policies: [{ Version: '2012-10-17', Statement: [{ Effect: 'Allow', Action: 'kms:*', Resource: '*' }] }],
  tags: {},
};
const victimPolicy = JSON.stringify({
  Version: '2012-10-17',
  Statement: [
    { Effect: 'Allow', Principal: { AWS: `arn:aws:iam::${ACCT}:root` }, Action: 'kms:*', Resource: '*' },
    { Effect: 'Deny', Principal: { AWS: attacker.arn }, Action: 'kms:*', Resource: '*' },
  ],
});
const keyIds = { victim: '11111111-1111-4111-8111-111111111111', attacker: '22222222-2222-4222-8222-222222222222', spare: '33333333-3333-4333-8333-333333333333' };

/** Alias operations never reach the token. */
const noToken = new Proxy({}, { get: () => { throw new Error('alias operations must not use the token'); } }) as Hsm;

let dir: string;
let store: MetadataStore;

beforeEach(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'p11kms-alias-race-'));
  store = await openSqliteStore(path.join(dir, 'metadata.db'));
  const key = (keyId: string, policy: string): KeyRecord => ({
    keyId, accountId: ACCT, region: 'us-east-1', createdAt: new Date(0), description: '', keyState: 'Enabled', keySpec: 'SYMMETRIC_DEFAULT',
    keyUsage: 'ENCRYPT_DECRYPT', origin: 'AWS_KMS', policy, currentVersion: 1, deletionDate: null, pendingWindowInDays: null,
  });
  for (const [keyId, policy] of [[keyIds.victim, victimPolicy], [keyIds.attacker, defaultKeyPolicy('aws', ACCT)], [keyIds.spare, defaultKeyPolicy('aws', ACCT)]] as const) {
    await store.createKey(key(keyId, policy), { keyId, version: 1, createdAt: new Date(0), keyMaterialId: 'a'.repeat(64) }, []);
  }
  await store.createAlias({ region: REGION, aliasName: 'alias/shared', targetKeyId: keyIds.spare, createdAt: new Date(0), lastUpdatedAt: new Date(0) });
});

afterEach(async () => {
  await store.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

/** The real store, with `concurrently` run just before the first write to an alias. */
function storeWithInterleaving(concurrently: () => Promise<unknown>): MetadataStore {
  let pending = true;
  const beforeWrite = async () => {
    if (pending) {
      pending = false;
      await concurrently();
    }
  };
  return new Proxy(store, {
    get(target, name, receiver) {
      if (name === 'updateAliasIfTarget' || name === 'deleteAliasIfTarget') {
        return async (...args: unknown[]) => {
          await beforeWrite();
          return (target[name] as (...a: unknown[]) => Promise<boolean>).apply(target, args);
        };
      }
      const value = Reflect.get(target, name, receiver);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}

function attackerCall(svcStore: MetadataStore, operation: 'UpdateAlias' | 'DeleteAlias', input: Record<string, unknown>) {
  const registry = new PrincipalRegistry();
  registry.add(attacker, 'AKIATESTATTACKER0001', 'attacker-secret-attacker-secret');
  const svc: Services = { account, store: svcStore, hsm: noToken, authorizer: new KmsAuthorizer({ store, principals: registry, accountId: ACCT }), now: () => new Date() };
  const ctx: RequestContext = {
    requestId: 'r', eventId: 'e', caller: { principal: attacker, accessKeyId: 'AKIATESTATTACKER0001' }, sourceIp: '127.0.0.1', userAgent: 'test',
    secureTransport: false, operation, input,
  };
  return aliasOperations[operation](input, ctx, svc);
}

const victimsMove = () => store.updateAlias(REGION, 'alias/shared', keyIds.victim, new Date());

describe('an alias moved to a victim key between the decision and the write', () => {
  it('UpdateAlias decides again on the new current key and is refused', async () => {
    const racing = storeWithInterleaving(victimsMove);
    await expect(attackerCall(racing, 'UpdateAlias', { AliasName: 'alias/shared', TargetKeyId: keyIds.attacker })).rejects.toMatchObject({
      type: 'AccessDeniedException',
      message: expect.stringContaining(`key/${keyIds.victim} with an explicit deny in a resource-based policy`),
    });
    expect((await store.getAlias(REGION, 'alias/shared'))?.targetKeyId).toBe(keyIds.victim);
  });

  it('DeleteAlias likewise', async () => {
    const racing = storeWithInterleaving(victimsMove);
    await expect(attackerCall(racing, 'DeleteAlias', { AliasName: 'alias/shared' })).rejects.toMatchObject({ type: 'AccessDeniedException' });
    expect((await store.getAlias(REGION, 'alias/shared'))?.targetKeyId).toBe(keyIds.victim);
  });

  it('without the race, the same calls succeed', async () => {
    await attackerCall(store, 'UpdateAlias', { AliasName: 'alias/shared', TargetKeyId: keyIds.attacker });
    expect((await store.getAlias(REGION, 'alias/shared'))?.targetKeyId).toBe(keyIds.attacker);
    await attackerCall(store, 'DeleteAlias', { AliasName: 'alias/shared' });
    expect(await store.getAlias(REGION, 'alias/shared')).toBeUndefined();
  });
});

describe("the store's conditional alias writes", () => {
  it('change or delete an alias only while it points to the key decided on', async () => {
    const at = new Date(1_700_000_003_000);
    expect(await store.updateAliasIfTarget(REGION, 'alias/shared', keyIds.victim, keyIds.attacker, at)).toBe(false);
    expect((await store.getAlias(REGION, 'alias/shared'))?.targetKeyId).toBe(keyIds.spare);
    expect(await store.updateAliasIfTarget(REGION, 'alias/shared', keyIds.spare, keyIds.attacker, at)).toBe(true);
    expect(await store.getAlias(REGION, 'alias/shared')).toMatchObject({ targetKeyId: keyIds.attacker, lastUpdatedAt: at });
    expect(await store.deleteAliasIfTarget(REGION, 'alias/shared', keyIds.spare)).toBe(false);
    expect((await store.getAlias(REGION, 'alias/shared'))?.targetKeyId).toBe(keyIds.attacker);
    expect(await store.deleteAliasIfTarget(REGION, 'alias/shared', keyIds.attacker)).toBe(true);
    expect(await store.getAlias(REGION, 'alias/shared')).toBeUndefined();
    expect(await store.updateAliasIfTarget(REGION, 'alias/none', keyIds.spare, keyIds.attacker, at)).toBe(false);
  });
});
