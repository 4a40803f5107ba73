/**
 * Rotation through the real AWS SDK with a moved clock: automatic rotation when due and after
 * downtime, on-demand rotation and its limits, and old and new ciphertexts.
 */
import path from 'node:path';
import {
  CreateKeyCommand,
  DecryptCommand,
  DescribeKeyCommand,
  DisableKeyCommand,
  DisableKeyRotationCommand,
  EnableKeyCommand,
  EnableKeyRotationCommand,
  EncryptCommand,
  GetKeyRotationStatusCommand,
  ListKeyRotationsCommand,
  RotateKeyOnDemandCommand,
  ScheduleKeyDeletionCommand,
  CancelKeyDeletionCommand,
} from '@aws-sdk/client-kms';
import { afterAll, describe, expect, it } from 'vitest';
import { parseBlob } from '../src/kms/ciphertext.js';
import { openSqliteStore } from '../src/store/sqlite/store.js';
import { DATABASE_FILE } from '../src/service.js';
import { DAY_MS, TestClock } from './helpers/clock.js';
import { errorOf, startTestService, tempDir, type TestService } from './helpers/service.js';

const clock = new TestClock();
const dataDir = tempDir('p11kms-rotation-');
let t: TestService;

async function start(): Promise<void> {
  t = await startTestService({ P11KMS_DATA_DIR: dataDir }, clock.now);
  clock.connect(t.service.url);
}

afterAll(async () => {
  await t?.stop();
});

async function createKey(): Promise<string> {
  const { KeyMetadata } = await clock.client.send(new CreateKeyCommand({}));
  return KeyMetadata!.KeyId!;
}

async function encrypt(keyId: string, text: string): Promise<Uint8Array> {
  return (await clock.client.send(new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from(text) }))).CiphertextBlob!;
}

async function decrypt(blob: Uint8Array): Promise<string> {
  return Buffer.from((await clock.client.send(new DecryptCommand({ CiphertextBlob: blob }))).Plaintext!).toString();
}

const versionOf = (blob: Uint8Array) => parseBlob(Buffer.from(blob)).version;

describe('automatic rotation', () => {
  let keyId: string;
  let first: Uint8Array;

  it('is off by default and enabled with the default period of 365 days', async () => {
    await start();
    keyId = await createKey();
    expect(await clock.client.send(new GetKeyRotationStatusCommand({ KeyId: keyId }))).toMatchObject({ KeyRotationEnabled: false });
    await clock.client.send(new EnableKeyRotationCommand({ KeyId: keyId }));
    const status = await clock.client.send(new GetKeyRotationStatusCommand({ KeyId: keyId }));
    expect(status.KeyRotationEnabled).toBe(true);
    expect(status.RotationPeriodInDays).toBe(365);
    expect(status.KeyId).toMatch(/^arn:aws:kms:us-east-1:111122223333:key\//);
    expect(Math.abs(status.NextRotationDate!.getTime() - (clock.now().getTime() + 365 * DAY_MS))).toBeLessThan(5_000);
    expect(status.OnDemandRotationStartDate).toBeUndefined();
  });

  it('refuses periods outside 90..2560 days', async () => {
    expect((await errorOf(clock.client.send(new EnableKeyRotationCommand({ KeyId: keyId, RotationPeriodInDays: 89 })))).name).toBe('ValidationException');
    expect((await errorOf(clock.client.send(new EnableKeyRotationCommand({ KeyId: keyId, RotationPeriodInDays: 2561 })))).name).toBe('ValidationException');
  });

  it('does nothing before the due date', async () => {
    first = await encrypt(keyId, 'before rotation');
    clock.advanceDays(364);
    expect((await t.service.runDueWork()).rotated).not.toContain(keyId);
    expect(versionOf(await encrypt(keyId, 'x'))).toBe(1);
  });

  it('rotates once when due: new ciphertexts use the new material, old ones still decrypt', async () => {
    const before = (await clock.client.send(new DescribeKeyCommand({ KeyId: keyId }))).KeyMetadata!.CurrentKeyMaterialId;
    clock.advanceDays(2);
    expect((await t.service.runDueWork()).rotated).toEqual([keyId]);
    expect((await t.service.runDueWork()).rotated).toEqual([]); // same due date: never twice
    const after = (await clock.client.send(new DescribeKeyCommand({ KeyId: keyId }))).KeyMetadata!.CurrentKeyMaterialId;
    expect(after).toMatch(/^[0-9a-f]{64}$/);
    expect(after).not.toBe(before);
    const second = await encrypt(keyId, 'after rotation');
    expect(versionOf(first)).toBe(1);
    expect(versionOf(second)).toBe(2);
    expect(await decrypt(first)).toBe('before rotation');
    expect(await decrypt(second)).toBe('after rotation');
    const decrypted = await clock.client.send(new DecryptCommand({ CiphertextBlob: first }));
    expect(decrypted.KeyMaterialId).toBe(before);

    const rotations = await clock.client.send(new ListKeyRotationsCommand({ KeyId: keyId }));
    expect(rotations.Rotations).toHaveLength(1);
    expect(rotations.Rotations![0]).toMatchObject({ RotationType: 'AUTOMATIC', KeyMaterialId: after, KeyMaterialState: 'CURRENT' });
    const all = await clock.client.send(new ListKeyRotationsCommand({ KeyId: keyId, IncludeKeyMaterial: 'ALL_KEY_MATERIAL' }));
    expect(all.Rotations!.map((r) => r.KeyMaterialState)).toEqual(['NON_CURRENT', 'CURRENT']);
    expect(all.Rotations![0]!.RotationDate).toBeUndefined();

    const status = await clock.client.send(new GetKeyRotationStatusCommand({ KeyId: keyId }));
    expect(Math.abs(status.NextRotationDate!.getTime() - (clock.now().getTime() + 365 * DAY_MS))).toBeLessThan(60_000);
  });

  it('does not rotate disabled keys, and catches up once re-enabled', async () => {
    await clock.client.send(new DisableKeyCommand({ KeyId: keyId }));
    clock.advanceDays(366);
    expect((await t.service.runDueWork()).rotated).toEqual([]);
    await clock.client.send(new EnableKeyCommand({ KeyId: keyId }));
    expect((await t.service.runDueWork()).rotated).toEqual([keyId]);
  });

  it('catches up after downtime with one rotation, and ciphertexts survive the restart', async () => {
    const beforeStop = await encrypt(keyId, 'across restart');
    await t.stop();
    clock.advanceDays(365 * 3); // three periods missed while stopped
    await start();
    await t.service.runDueWork(); // waits for the catch-up pass that start began
    const rotations = await clock.client.send(new ListKeyRotationsCommand({ KeyId: keyId }));
    expect(rotations.Rotations!.map((r) => r.RotationType)).toEqual(['AUTOMATIC', 'AUTOMATIC', 'AUTOMATIC']);
    expect(await decrypt(first)).toBe('before rotation');
    expect(await decrypt(beforeStop)).toBe('across restart');
    expect(versionOf(await encrypt(keyId, 'y'))).toBe(4);
  });

  it('keeps the schedule through pending deletion, reading false meanwhile', async () => {
    await clock.client.send(new ScheduleKeyDeletionCommand({ KeyId: keyId, PendingWindowInDays: 7 }));
    expect((await clock.client.send(new GetKeyRotationStatusCommand({ KeyId: keyId }))).KeyRotationEnabled).toBe(false);
    expect((await errorOf(clock.client.send(new EnableKeyRotationCommand({ KeyId: keyId })))).name).toBe('KMSInvalidStateException');
    await clock.client.send(new CancelKeyDeletionCommand({ KeyId: keyId }));
    await clock.client.send(new EnableKeyCommand({ KeyId: keyId }));
    expect((await clock.client.send(new GetKeyRotationStatusCommand({ KeyId: keyId }))).KeyRotationEnabled).toBe(true);
    await clock.client.send(new DisableKeyRotationCommand({ KeyId: keyId }));
    expect((await clock.client.send(new GetKeyRotationStatusCommand({ KeyId: keyId }))).KeyRotationEnabled).toBe(false);
  });
});

describe('RotateKeyOnDemand', () => {
  it('rotates at once, at most 25 times per key, and every ciphertext still decrypts', async () => {
    const keyId = await createKey();
    const blobs = [await encrypt(keyId, 'v1')];
    for (let i = 0; i < 25; i++) {
      expect((await clock.client.send(new RotateKeyOnDemandCommand({ KeyId: keyId }))).KeyId).toMatch(/:key\//);
      blobs.push(await encrypt(keyId, `v${i + 2}`));
    }
    const limit = await errorOf(clock.client.send(new RotateKeyOnDemandCommand({ KeyId: keyId })));
    expect(limit.name).toBe('LimitExceededException');
    for (const [i, blob] of blobs.entries()) expect(await decrypt(blob)).toBe(`v${i + 1}`);
    expect(versionOf(blobs.at(-1)!)).toBe(26);

    // Pagination over the 25 rotations.
    const seen: string[] = [];
    let marker: string | undefined;
    do {
      const page = await clock.client.send(new ListKeyRotationsCommand({ KeyId: keyId, Limit: 10, Marker: marker }));
      expect(page.Rotations!.length).toBeLessThanOrEqual(10);
      for (const r of page.Rotations!) {
        expect(r.RotationType).toBe('ON_DEMAND');
        seen.push(r.KeyMaterialId!);
      }
      marker = page.Truncated ? page.NextMarker : undefined;
    } while (marker);
    expect(new Set(seen).size).toBe(25);
  });

  it('does not move the automatic schedule, and conflicts with an automatic rotation due within 20 minutes', async () => {
    const keyId = await createKey();
    await clock.client.send(new EnableKeyRotationCommand({ KeyId: keyId, RotationPeriodInDays: 90 }));
    const before = (await clock.client.send(new GetKeyRotationStatusCommand({ KeyId: keyId }))).NextRotationDate;
    await clock.client.send(new RotateKeyOnDemandCommand({ KeyId: keyId }));
    expect((await clock.client.send(new GetKeyRotationStatusCommand({ KeyId: keyId }))).NextRotationDate).toEqual(before);
    clock.advance(90 * DAY_MS - 10 * 60_000);
    expect((await errorOf(clock.client.send(new RotateKeyOnDemandCommand({ KeyId: keyId })))).name).toBe('ConflictException');
    clock.advance(11 * 60_000);
    await t.service.runDueWork();
  });

  it('follows the key-state table', async () => {
    const keyId = await createKey();
    await clock.client.send(new DisableKeyCommand({ KeyId: keyId }));
    expect((await errorOf(clock.client.send(new RotateKeyOnDemandCommand({ KeyId: keyId })))).name).toBe('DisabledException');
    expect((await errorOf(clock.client.send(new EnableKeyRotationCommand({ KeyId: keyId })))).name).toBe('DisabledException');
    await clock.client.send(new ScheduleKeyDeletionCommand({ KeyId: keyId, PendingWindowInDays: 7 }));
    expect((await errorOf(clock.client.send(new RotateKeyOnDemandCommand({ KeyId: keyId })))).name).toBe('KMSInvalidStateException');
  });

  it('refuses keys that cannot rotate', async () => {
    const external = (await clock.client.send(new CreateKeyCommand({ Origin: 'EXTERNAL' }))).KeyMetadata!.KeyId!;
    expect((await errorOf(clock.client.send(new EnableKeyRotationCommand({ KeyId: external })))).name).toBe('UnsupportedOperationException');
    expect((await clock.client.send(new GetKeyRotationStatusCommand({ KeyId: external }))).KeyRotationEnabled).toBe(false);
    expect((await errorOf(clock.client.send(new RotateKeyOnDemandCommand({ KeyId: external })))).name).toBe('KMSInvalidStateException');
    const hmac = (await clock.client.send(new CreateKeyCommand({ KeySpec: 'HMAC_256', KeyUsage: 'GENERATE_VERIFY_MAC' }))).KeyMetadata!.KeyId!;
    for (const command of [new EnableKeyRotationCommand({ KeyId: hmac }), new RotateKeyOnDemandCommand({ KeyId: hmac }), new ListKeyRotationsCommand({ KeyId: hmac })]) {
      expect((await errorOf(clock.client.send(command as never))).name).toBe('UnsupportedOperationException');
    }
  });
});

describe('work claims', () => {
  it('give each due key to exactly one of several processes sharing the database', async () => {
    const a = await openSqliteStore(path.join(dataDir, DATABASE_FILE));
    const b = await openSqliteStore(path.join(dataDir, DATABASE_FILE));
    try {
      for (let i = 0; i < 6; i++) {
        const keyId = await createKey();
        await clock.client.send(new EnableKeyRotationCommand({ KeyId: keyId, RotationPeriodInDays: 90 }));
      }
      const now = new Date(clock.now().getTime() + 91 * DAY_MS);
      const claim = (id: string) => ({ id, now, until: new Date(now.getTime() + 60_000) });
      const [fromA, fromB] = await Promise.all([a.lifecycle.claimDue('rotation', claim('a'), 4), b.lifecycle.claimDue('rotation', claim('b'), 100)]);
      expect(fromA.filter((k) => fromB.includes(k))).toEqual([]);
      expect(fromA.length + fromB.length).toBeGreaterThanOrEqual(6);
      expect(await a.lifecycle.claimDue('rotation', claim('c'), 100)).toEqual([]);
      for (const k of fromA) await a.lifecycle.releaseClaim(k, 'a');
      for (const k of fromB) await b.lifecycle.releaseClaim(k, 'b');
    } finally {
      await a.close();
      await b.close();
    }
  });
});

describe('reading rotation state', () => {
  it('shows a due rotation at once, before any lifecycle pass, and only once', async () => {
    const keyId = await createKey();
    await clock.client.send(new EnableKeyRotationCommand({ KeyId: keyId, RotationPeriodInDays: 90 }));
    clock.advanceDays(91);
    const rotations = await clock.client.send(new ListKeyRotationsCommand({ KeyId: keyId }));
    expect(rotations.Rotations!.map((r) => r.RotationType)).toEqual(['AUTOMATIC']);
    const status = await clock.client.send(new GetKeyRotationStatusCommand({ KeyId: keyId }));
    expect(status.NextRotationDate!.getTime()).toBeGreaterThan(clock.now().getTime() + 89 * DAY_MS);
    expect((await t.service.runDueWork()).rotated).not.toContain(keyId);
    expect(versionOf(await encrypt(keyId, 'z'))).toBe(2);
  });
});
