/**
 * The SQLite store off the event loop: another process (src/store/sqlite/lock-holder.ts, a child
 * node with the same better-sqlite3, in BEGIN IMMEDIATE) holds the file's write lock. Reads the
 * requests need go on from the event loop's WAL reader; writes wait on the store thread, then
 * either land after the release or fail, retryably, at their bound, leaving nothing behind; and
 * the event loop keeps turning all along. First on the store itself, then through a real service
 * with the SDK. Every "meanwhile" is checked structurally: the lock is still held and the write
 * still pending when the read completes.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import {
  CreateAliasCommand,
  CreateKeyCommand,
  DecryptCommand,
  DescribeKeyCommand,
  EncryptCommand,
  ListKeysCommand,
} from '@aws-sdk/client-kms';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { DATABASE_FILE } from '../src/config.js';
import { checkConsistency, isConsistent } from '../src/kms/lifecycle/consistency.js';
import { holdWriteLock, type HeldWriteLock } from '../src/store/sqlite/lock-holder.js';
import { BUSY_TIMEOUT_MS, openSqliteStore } from '../src/store/sqlite/store.js';
import { READS_ON_EVENT_LOOP } from '../src/store/sqlite/store-thread.js';
import { StoreUnavailableError, type KeyRecord, type MetadataStore } from '../src/store/types.js';
import { errorOf, tempDir, useTestService } from './helpers/service.js';

/** Counts event-loop turns: it only advances while the loop is free to run timers. */
function loopTicker(): { readonly ticks: number; turns(n: number): Promise<void>; stop(): void } {
  let ticks = 0;
  const waiters: Array<{ at: number; resolve(): void }> = [];
  const timer = setInterval(() => {
    ticks++;
    for (const w of waiters.filter((w) => ticks >= w.at)) {
      waiters.splice(waiters.indexOf(w), 1);
      w.resolve();
    }
  }, 5);
  return {
    get ticks() {
      return ticks;
    },
    turns: (n) => new Promise((resolve) => waiters.push({ at: ticks + n, resolve })),
    stop: () => clearInterval(timer),
  };
}

/** A promise with its outcome readable at any moment. */
function tracked<T>(p: Promise<T>): { promise: Promise<T>; readonly settled: boolean } {
  let settled = false;
  const promise = p.finally(() => (settled = true));
  promise.catch(() => undefined); // observed by the test later
  return {
    promise,
    get settled() {
      return settled;
    },
  };
}

let lock: HeldWriteLock | undefined;
afterEach(async () => {
  await lock?.release();
  lock = undefined;
});

describe('SQLite store: another process holds the write lock', () => {
  let store: MetadataStore;
  let file: string;

  const key = (keyId: string): KeyRecord => ({
    keyId, accountId: '111122223333', region: 'eu-west-1', createdAt: new Date(1_700_000_000_000), description: keyId,
    keyState: 'Enabled', keySpec: 'SYMMETRIC_DEFAULT', keyUsage: 'ENCRYPT_DECRYPT', origin: 'AWS_KMS',
    policy: '{}', currentVersion: 1, deletionDate: null, pendingWindowInDays: null,
  });
  const version = (keyId: string) => ({ keyId, version: 1, createdAt: new Date(1_700_000_000_001), keyMaterialId: 'b'.repeat(64) });
  const grant = {
    grantId: 'c'.repeat(64), keyId: 'known', name: null, granteePrincipal: 'arn:aws:iam::111122223333:role/app',
    retiringPrincipal: null, issuingAccount: 'arn:aws:iam::111122223333:root', operations: ['Encrypt'], constraints: null,
    createdAt: new Date(1_700_000_000_002),
  };

  beforeAll(async () => {
    file = path.join(tempDir('p11kms-write-lock-'), 'data', 'metadata.db');
    store = await openSqliteStore(file);
    await store.createKey(key('known'), version('known'), []);
    await store.createAlias({ region: 'eu-west-1', aliasName: 'alias/known', targetKeyId: 'known', createdAt: new Date(0), lastUpdatedAt: new Date(0) });
    await store.createGrant(grant);
  });
  afterAll(async () => {
    await store.close();
  });

  it('serves on the event loop only methods the store has', () => {
    for (const name of READS_ON_EVENT_LOOP) {
      const [first, second] = name.split('.') as [string, string?];
      const owner = second === undefined ? store : (store as unknown as Record<string, object>)[first]!;
      expect(typeof (owner as Record<string, unknown>)[second ?? first], name).toBe('function');
    }
  });

  it('reads go on while a write waits for the lock, and the write lands once it is released', async () => {
    const ticker = loopTicker();
    try {
      await store.getKey('known'); // cached before the hold, like a hot key
      lock = await holdWriteLock(file);
      const write = tracked(store.createKey(key('queued'), version('queued'), [{ TagKey: 't', TagValue: 'v' }]));

      await ticker.turns(10);
      expect(await store.getKey('known')).toMatchObject({ keyId: 'known', keyState: 'Enabled' });
      expect(await store.getAlias('eu-west-1', 'alias/known')).toMatchObject({ targetKeyId: 'known' });
      expect((await store.grantsForGrantees('known', [grant.granteePrincipal])).map((g) => g.grantId)).toEqual([grant.grantId]);
      expect((await store.listVersions('known')).map((v) => v.version)).toEqual([1]);
      expect(await store.getKey('queued')).toBeUndefined();
      // All of that happened while the lock was held and the write was waiting for it.
      expect(lock.released).toBe(false);
      expect(write.settled).toBe(false);

      await lock.release();
      await write.promise;
      expect(await store.getKey('queued')).toMatchObject({ keyId: 'queued' });
      expect(await store.listTags('queued')).toEqual([{ TagKey: 't', TagValue: 'v' }]);
    } finally {
      ticker.stop();
    }
  });

  it('another store opens on the current schema while the lock is held, and reads at once', async () => {
    lock = await holdWriteLock(file);
    try {
      const another = await openSqliteStore(file); // no migration to apply: no write lock needed
      try {
        expect(lock.released).toBe(false);
        expect(await another.getKey('known')).toMatchObject({ keyId: 'known' });
      } finally {
        await another.close();
      }
    } finally {
      await lock.release();
    }
  });

  it(`a write still locked out after ${BUSY_TIMEOUT_MS} ms fails with StoreUnavailableError and leaves nothing`, async () => {
    const ticker = loopTicker();
    try {
      lock = await holdWriteLock(file, 'EXCLUSIVE');
      const write = tracked(store.createKey(key('too-late'), version('too-late'), [{ TagKey: 't', TagValue: 'v' }]));
      const queuedBehind = tracked(store.updateKey('known', { description: 'changed' }));
      const ticksBefore = ticker.ticks;
      await expect(write.promise).rejects.toBeInstanceOf(StoreUnavailableError);
      await expect(queuedBehind.promise).rejects.toBeInstanceOf(StoreUnavailableError);
      expect(lock.released).toBe(false);
      // The loop kept turning during the wait (a 5 ms timer, for seconds).
      expect(ticker.ticks - ticksBefore).toBeGreaterThan(20);

      await lock.release();
      expect(await store.getKey('too-late')).toBeUndefined();
      expect(await store.listVersions('too-late')).toEqual([]);
      expect(await store.listTags('too-late')).toEqual([]);
      expect((await store.getKey('known'))?.description).toBe('known');
      // Nothing half-written stands in the way of doing it again.
      await store.createKey(key('too-late'), version('too-late'), []);
      expect(await store.getKey('too-late')).toMatchObject({ keyId: 'too-late' });
    } finally {
      ticker.stop();
    }
  });

  it('a write answered is visible to the next read at once (the event loop cache is told)', async () => {
    await store.getKey('known');
    await store.updateKey('known', { keyState: 'Disabled' });
    expect((await store.getKey('known'))?.keyState).toBe('Disabled');
    await store.updateKey('known', { keyState: 'Enabled' });
    expect((await store.getKey('known'))?.keyState).toBe('Enabled');
  });
});

describe('a process with a write in flight', () => {
  // The built store (dist/, as the CLI tools run it): a script that writes and never closes.
  const BUILT_STORE = path.resolve(import.meta.dirname, '../dist/src/store/sqlite/store.js');
  const SCRIPT = `
    const { openSqliteStore } = await import(process.argv[2]);
    const store = await openSqliteStore(process.argv[3]);
    const keyId = 'written-by-a-script';
    const key = { keyId, accountId: '111122223333', region: 'eu-west-1', createdAt: new Date(0), description: '', keyState: 'Enabled',
      keySpec: 'SYMMETRIC_DEFAULT', keyUsage: 'ENCRYPT_DECRYPT', origin: 'AWS_KMS', policy: '{}', currentVersion: 1, deletionDate: null, pendingWindowInDays: null };
    console.log('open');
    process.stdin.once('data', () => {
      process.stdin.destroy(); // from here on, only the write may keep the process alive
      store.createKey(key, { keyId, version: 1, createdAt: new Date(0), keyMaterialId: 'd'.repeat(64) }, []).then(() => console.log('committed'));
      console.log('sent');
    });
  `;

  it('stays alive until its write is answered, and exits by itself afterwards', async () => {
    const dir = tempDir('p11kms-write-exit-');
    const file = path.join(dir, 'metadata.db');
    const script = path.join(dir, 'write.mjs');
    fs.writeFileSync(script, SCRIPT);
    const child = spawn(process.execPath, [script, BUILT_STORE, file], { stdio: ['pipe', 'pipe', 'inherit'] });
    let stdout = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    const ticker = loopTicker();
    const said = async (line: string) => {
      while (!stdout.includes(line) && child.exitCode === null) await ticker.turns(1);
    };
    await said('open');
    lock = await holdWriteLock(file);
    child.stdin.end('go\n');
    await said('sent');
    await ticker.turns(20); // the script has nothing left to do but wait for its write
    ticker.stop();
    expect(child.exitCode).toBeNull();
    expect(stdout).not.toContain('committed');

    await lock.release();
    expect(await exited).toBe(0);
    expect(stdout).toContain('committed');
    const check = await openSqliteStore(file);
    try {
      expect(await check.getKey('written-by-a-script')).toMatchObject({ keyId: 'written-by-a-script' });
    } finally {
      await check.close();
    }
  });
});

describe('service: another process holds the write lock', () => {
  const t = useTestService();
  const file = () => path.join(t.dataDir, DATABASE_FILE);
  const plaintext = new TextEncoder().encode('32 bytes of data, known key here');

  async function knownKey(): Promise<{ keyId: string; ciphertext: Uint8Array }> {
    const { KeyMetadata } = await t.client.send(new CreateKeyCommand({}));
    await t.client.send(new CreateAliasCommand({ AliasName: `alias/known-${KeyMetadata!.KeyId!.slice(0, 8)}`, TargetKeyId: KeyMetadata!.KeyId! }));
    const { CiphertextBlob } = await t.client.send(new EncryptCommand({ KeyId: KeyMetadata!.KeyId!, Plaintext: plaintext }));
    return { keyId: KeyMetadata!.KeyId!, ciphertext: CiphertextBlob! };
  }

  it('Encrypt and Decrypt of known keys go on while 8 CreateKey wait for the lock; the CreateKeys succeed after release', async () => {
    const known = await knownKey();
    const alias = `alias/known-${known.keyId.slice(0, 8)}`;
    const hsm = t.service.services.hsm;
    const objectsBefore = (await hsm.listBackingKeys()).length;
    const ticker = loopTicker();
    try {
      lock = await holdWriteLock(file());
      const creates = Array.from({ length: 8 }, (_, i) => tracked(t.client.send(new CreateKeyCommand({ Description: `queued ${i}` }))));
      // Each CreateKey makes its token object first: once all 8 are there, all 8 wait in the store write.
      while ((await hsm.listBackingKeys()).length < objectsBefore + 8 && !creates.some((c) => c.settled)) await ticker.turns(4);
      expect(await Promise.all(creates.filter((c) => c.settled).map((c) => errorOf(c.promise)))).toEqual([]);

      for (let i = 0; i < 10; i++) {
        const { CiphertextBlob } = await t.client.send(new EncryptCommand({ KeyId: i % 2 ? alias : known.keyId, Plaintext: plaintext }));
        const { Plaintext, KeyId } = await t.client.send(new DecryptCommand({ CiphertextBlob: i % 2 ? CiphertextBlob : known.ciphertext }));
        expect(Buffer.from(Plaintext!)).toEqual(Buffer.from(plaintext));
        expect(KeyId).toContain(known.keyId);
      }
      await ticker.turns(10);
      expect(lock.released).toBe(false);
      expect(creates.filter((c) => c.settled)).toEqual([]);

      await lock.release();
      const created = await Promise.all(creates.map((c) => c.promise));
      for (const { KeyMetadata } of created) {
        const { KeyMetadata: described } = await t.client.send(new DescribeKeyCommand({ KeyId: KeyMetadata!.KeyId! }));
        expect(described).toMatchObject({ KeyId: KeyMetadata!.KeyId, KeyState: 'Enabled' });
      }
    } finally {
      ticker.stop();
    }
  });

  it(`CreateKey still locked out after ${BUSY_TIMEOUT_MS} ms fails with DependencyTimeoutException and leaves nothing half-written`, async () => {
    const known = await knownKey();
    const keysBefore = await listKeyIds();
    lock = await holdWriteLock(file());
    const failed = errorOf(t.client.send(new CreateKeyCommand({ Description: 'locked out' })));
    // Meanwhile the known key keeps working.
    await t.client.send(new EncryptCommand({ KeyId: known.keyId, Plaintext: plaintext }));
    expect(await failed).toMatchObject({ name: 'DependencyTimeoutException', status: 503 });
    expect(lock.released).toBe(false);
    await lock.release();

    expect(await listKeyIds()).toEqual(keysBefore);
    // The token object CreateKey made before its store write was destroyed with the failure.
    const report = await checkConsistency(t.service.services.hsm, t.service.services.store);
    expect(report.orphanObjects).toEqual([]);
    expect(isConsistent(report)).toBe(true);
  });

  async function listKeyIds(): Promise<string[]> {
    const { Keys } = await t.client.send(new ListKeysCommand({ Limit: 1000 }));
    return Keys!.map((k) => k.KeyId!).sort();
  }
});
