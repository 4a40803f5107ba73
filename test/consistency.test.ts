/**
 * Token/database consistency of the spine: keys created through the API are non-extractable
 * token objects, a failed metadata write leaves no orphan in the token, start-up reports
 * divergence, and /healthz answers 503 with a reason when the token is gone.
 */
import { Writable } from 'node:stream';
import { CreateKeyCommand } from '@aws-sdk/client-kms';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.js';
import { inspectBackingKey } from '../src/hsm/pkcs11-token.js';
import { createLogger } from '../src/log.js';
import { startService } from '../src/service.js';
import { ROOT, errorOf, startTestService, tempDir, type TestService } from './helpers/service.js';

let t: TestService | undefined;
afterAll(async () => {
  await t?.stop();
});

describe('keys created through the API', () => {
  it('are sensitive, non-extractable token objects that refuse CKA_VALUE and C_WrapKey', async () => {
    t = await startTestService();
    const { KeyMetadata } = await t.client.send(new CreateKeyCommand({}));
    const inspection = await inspectBackingKey(t.service.services.hsm, { keyId: KeyMetadata!.KeyId!, version: 1 });
    expect(inspection.objectCount).toBe(1);
    expect(inspection.attributes).toMatchObject({ token: true, private: true, sensitive: true, extractable: false, neverExtractable: true, alwaysSensitive: true });
    expect(inspection.readValueResult).toBe('CKR_ATTRIBUTE_SENSITIVE');
    expect(inspection.wrapResult).toBe('CKR_KEY_UNEXTRACTABLE');
  });

  it('leave no orphan token object when the metadata write fails', async () => {
    const svc = t!.service.services;
    const before = new Set((await svc.hsm.listBackingKeys()).map((r) => r.keyId));
    const createKey = svc.store.createKey.bind(svc.store);
    svc.store.createKey = async () => {
      throw new Error('disk full (simulated)');
    };
    try {
      const err = await errorOf(t!.client.send(new CreateKeyCommand({})));
      expect(err).toMatchObject({ name: 'KMSInternalException', status: 500 });
      expect(err.message).not.toContain('disk full');
    } finally {
      svc.store.createKey = createKey;
    }
    const after = (await svc.hsm.listBackingKeys()).map((r) => r.keyId);
    expect(after.filter((id) => !before.has(id))).toEqual([]);
  });

});

describe('start-up consistency report', () => {
  it('names token objects without metadata and metadata without token objects', async () => {
    await t?.stop();
    t = undefined;
    const dataDir = tempDir('p11kms-divergence-');
    const env = { P11KMS_DATA_DIR: dataDir, P11KMS_PORT: '0', P11KMS_ROOT_ACCESS_KEY_ID: ROOT.accessKeyId, P11KMS_ROOT_SECRET_ACCESS_KEY: ROOT.secretAccessKey };
    const first = await startService(loadConfig({ ...env, P11KMS_LOG_LEVEL: 'silent' }));
    const orphan = { keyId: '0badc0de-0000-4000-8000-000000000001', version: 1 };
    await first.services.hsm.generateAesKey(orphan);
    const now = new Date();
    const dangling = '0badc0de-0000-4000-8000-000000000002';
    await first.services.store.createKey(
      { keyId: dangling, accountId: '111122223333', region: 'us-east-1', createdAt: now, description: '', keyState: 'Enabled', keySpec: 'SYMMETRIC_DEFAULT', keyUsage: 'ENCRYPT_DECRYPT', origin: 'AWS_KMS', policy: '{}', currentVersion: 1, deletionDate: null, pendingWindowInDays: null },
      { keyId: dangling, version: 1, createdAt: now, keyMaterialId: '0'.repeat(64) },
      [],
    );
    await first.close();

    const lines: string[] = [];
    const sink = new Writable({ write: (chunk, _enc, done) => (lines.push(String(chunk)), done()) });
    const second = await startService(loadConfig(env), { log: createLogger('info', sink) });
    await second.close();
    const records = lines.join('').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    const orphans = records.find((r) => String(r.msg).includes('without metadata'));
    const missing = records.find((r) => String(r.msg).includes('token objects are missing'));
    expect(orphans?.objects).toContain(`${orphan.keyId}#1`);
    expect(missing?.versions).toContain(`${dangling}#1`);
  });
});

describe('health', () => {
  it('healthz answers 503 with a reason once the token is unreachable', async () => {
    const dataDir = tempDir('p11kms-health-');
    const local = await startTestService({ P11KMS_DATA_DIR: dataDir });
    try {
      expect((await fetch(`${local.service.url}/healthz`)).status).toBe(200);
      await local.service.services.hsm.close();
      // The deep check's result is cached for at most 10 s.
      let res = await fetch(`${local.service.url}/healthz`);
      for (const deadline = Date.now() + 12_000; res.status === 200 && Date.now() < deadline; ) {
        await new Promise((r) => setTimeout(r, 250));
        res = await fetch(`${local.service.url}/healthz`);
      }
      expect(res.status).toBe(503);
      const body = (await res.json()) as { status: string; reason: string };
      expect(body.status).toBe('unavailable');
      expect(body.reason.length).toBeGreaterThan(0);
    } finally {
      await local.stop().catch(() => undefined);
    }
  });
});
