/**
 * The end of ScheduleKeyDeletion's waiting period with a moved clock: the sweeper destroys every
 * token object of the key (checked on separate PKCS#11 sessions, and on a freshly opened token
 * after the service stopped), the key is NotFound and its ciphertexts are undecryptable;
 * CancelKeyDeletion before the date keeps everything.
 */
import {
  CancelKeyDeletionCommand,
  CreateKeyCommand,
  DecryptCommand,
  DescribeKeyCommand,
  EnableKeyCommand,
  EncryptCommand,
  ListKeysCommand,
  RotateKeyOnDemandCommand,
  ScheduleKeyDeletionCommand,
} from '@aws-sdk/client-kms';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.js';
import { inspectBackingKey, openHsm } from '../src/hsm/pkcs11-token.js';
import { DAY_MS, TestClock } from './helpers/clock.js';
import { errorOf, startTestService, tempDir, type TestService } from './helpers/service.js';

const clock = new TestClock();
const dataDir = tempDir('p11kms-deletion-');
let t: TestService;
beforeAll(async () => {
  t = await startTestService({ P11KMS_DATA_DIR: dataDir }, clock.now);
  clock.connect(t.service.url);
});
afterAll(async () => {
  await t?.stop();
});

const send = <T>(command: T) => clock.client.send(command as never) as Promise<any>;

async function keyWithVersions(count: number): Promise<string> {
  const keyId = (await send(new CreateKeyCommand({}))).KeyMetadata.KeyId;
  for (let i = 1; i < count; i++) await send(new RotateKeyOnDemandCommand({ KeyId: keyId }));
  return keyId;
}

async function tokenHas(keyId: string, version: number): Promise<boolean> {
  try {
    await inspectBackingKey(t.service.services.hsm, { keyId, version });
    return true;
  } catch {
    return false;
  }
}

describe('scheduled deletion', () => {
  let doomed: string;
  let kept: string;
  let doomedBlob: Buffer;
  let keptBlob: Buffer;

  it('CancelKeyDeletion before the date keeps the key, its token objects and its ciphertexts', async () => {
    kept = await keyWithVersions(2);
    keptBlob = Buffer.from((await send(new EncryptCommand({ KeyId: kept, Plaintext: Buffer.from('kept') }))).CiphertextBlob);
    await send(new ScheduleKeyDeletionCommand({ KeyId: kept, PendingWindowInDays: 7 }));
    clock.advanceDays(6);
    expect((await t.service.runDueWork()).deleted).toEqual([]);
    expect((await send(new CancelKeyDeletionCommand({ KeyId: kept }))).KeyId).toMatch(kept);
    await send(new EnableKeyCommand({ KeyId: kept }));
    clock.advanceDays(30);
    expect((await t.service.runDueWork()).deleted).toEqual([]);
    expect(await tokenHas(kept, 1)).toBe(true);
    expect(await tokenHas(kept, 2)).toBe(true);
    expect(Buffer.from((await send(new DecryptCommand({ CiphertextBlob: keptBlob }))).Plaintext).toString()).toBe('kept');
  });

  it('at the deletion date the key is gone for the API, and the sweep destroys every backing version', async () => {
    doomed = await keyWithVersions(3);
    doomedBlob = Buffer.from((await send(new EncryptCommand({ KeyId: doomed, Plaintext: Buffer.from('doomed') }))).CiphertextBlob);
    const { DeletionDate } = await send(new ScheduleKeyDeletionCommand({ KeyId: doomed, PendingWindowInDays: 7 }));
    expect(DeletionDate.getTime() - clock.now().getTime()).toBeGreaterThan(7 * DAY_MS - 60_000);
    for (const v of [1, 2, 3]) expect(await tokenHas(doomed, v)).toBe(true);

    clock.advanceDays(7);
    clock.advance(60_000);
    // Past the date the key no longer exists for callers, even before the sweeper ran.
    expect((await errorOf(send(new DescribeKeyCommand({ KeyId: doomed })))).name).toBe('NotFoundException');
    expect((await errorOf(send(new CancelKeyDeletionCommand({ KeyId: doomed })))).name).toBe('NotFoundException');

    expect((await t.service.runDueWork()).deleted).toEqual([doomed]);
    expect((await t.service.runDueWork()).deleted).toEqual([]); // swept once
    for (const v of [1, 2, 3]) expect(await tokenHas(doomed, v)).toBe(false);
    const listed = (await send(new ListKeysCommand({}))).Keys.map((k: any) => k.KeyId);
    expect(listed).not.toContain(doomed);
    expect(listed).toContain(kept);
    const denied = await errorOf(send(new DecryptCommand({ CiphertextBlob: doomedBlob })));
    expect(denied.name).toBe('AccessDeniedException');
  });

  it('sweeps deletions that came due while the service was stopped, and a fresh token session sees no object of them', async () => {
    const late = await keyWithVersions(2);
    await send(new ScheduleKeyDeletionCommand({ KeyId: late, PendingWindowInDays: 7 }));
    await t.stop();
    clock.advanceDays(8);
    t = await startTestService({ P11KMS_DATA_DIR: dataDir }, clock.now);
    clock.connect(t.service.url);
    await t.service.runDueWork(); // after the catch-up pass that start began
    expect((await errorOf(send(new DescribeKeyCommand({ KeyId: late })))).name).toBe('NotFoundException');
    await t.stop();

    const config = loadConfig({ P11KMS_DATA_DIR: dataDir });
    const hsm = await openHsm(config.token, config.dataDir);
    try {
      const keyIds = new Set((await hsm.listBackingKeys()).map((r) => r.keyId));
      expect(keyIds.has(late)).toBe(false);
      expect(keyIds.has(doomed)).toBe(false);
      expect(keyIds.has(kept)).toBe(true);
    } finally {
      await hsm.close();
    }
    t = await startTestService({ P11KMS_DATA_DIR: dataDir }, clock.now);
    clock.connect(t.service.url);
    expect(Buffer.from((await send(new DecryptCommand({ CiphertextBlob: keptBlob }))).Plaintext).toString()).toBe('kept');
  });
});
