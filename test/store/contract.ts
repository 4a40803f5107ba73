/**
 * The MetadataStore contract, as tests: every backend (test/store.test.ts for SQLite,
 * test/store-postgres.test.ts for PostgreSQL) runs this same suite against a fresh, empty
 * database per test. What a backend must offer for looking behind the store's back is in
 * StoreBackend; everything else goes through the contract.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SchemaTooNewError } from '../../src/store/open.js';
import {
  StoreConflictError,
  type AliasRecord,
  type BackingKeyVersionRecord,
  type KeyRecord,
  type MetadataStore,
  type TagRecord,
} from '../../src/store/types.js';

/** The Region of makeKey's keys and makeAlias's aliases. */
export const REGION = 'eu-west-1';

/** One empty database of a backend, and raw access to it. */
export interface StoreUnderTest {
  store: MetadataStore;
  /** Another store on the same database (another process or node). */
  openAnother(): Promise<MetadataStore>;
  /** Inserts a key_versions row directly (ordering tests, not rotation). */
  insertVersionRow(keyId: string, version: number, createdAt: number, keyMaterialId: string): Promise<void>;
  countRows(table: 'tags' | 'key_versions' | 'aliases', keyId: string): Promise<number>;
  /** Records a schema version beyond what this code knows. */
  recordSchemaVersion(version: number): Promise<void>;
  schemaVersion(): Promise<number>;
  dispose(): Promise<void>;
}

export interface StoreBackend {
  name: string;
  fresh(): Promise<StoreUnderTest>;
  /** How long another store's commit may take to reach this store's cached reads. */
  otherStoreVisibleWithinMs: number;
  latestSchemaVersion: number;
}

export function describeStoreContract(backend: StoreBackend): void {
describe(`MetadataStore contract: ${backend.name}`, () => {
let db: StoreUnderTest;
let store: MetadataStore;

beforeEach(async () => {
  db = await backend.fresh();
  store = db.store;
});

afterEach(async () => {
  await store.close();
  await db.dispose();
});

function makeKey(keyId: string, overrides: Partial<KeyRecord> = {}): KeyRecord {
  return {
    keyId,
    accountId: '111122223333',
    region: 'eu-west-1',
    createdAt: new Date(1_700_000_000_123),
    description: `key ${keyId}`,
    keyState: 'Enabled',
    keySpec: 'SYMMETRIC_DEFAULT',
    keyUsage: 'ENCRYPT_DECRYPT',
    origin: 'AWS_KMS',
    policy: '{"Version":"2012-10-17","Statement":[]}',
    currentVersion: 1,
    deletionDate: null,
    pendingWindowInDays: null,
    ...overrides,
  };
}

function makeVersion(keyId: string, version = 1): BackingKeyVersionRecord {
  return {
    keyId,
    version,
    createdAt: new Date(1_700_000_000_456 + version),
    keyMaterialId: `${version}`.padStart(64, 'a'),
  };
}

async function createKey(keyId: string, tags: TagRecord[] = [], overrides: Partial<KeyRecord> = {}): Promise<KeyRecord> {
  const key = makeKey(keyId, overrides);
  await store.createKey(key, makeVersion(keyId), tags);
  return key;
}

function makeAlias(aliasName: string, targetKeyId: string, region = REGION): AliasRecord {
  return {
    region,
    aliasName,
    targetKeyId,
    createdAt: new Date(1_700_000_001_000),
    lastUpdatedAt: new Date(1_700_000_001_000),
  };
}


describe('opening', () => {
  it('ping makes a round trip, close is idempotent, and a closed store refuses work', async () => {
    await expect(store.ping()).resolves.toBeUndefined();
    await store.close();
    await store.close();
    await expect(store.ping()).rejects.toThrow();
  });

  it('reopening an already-migrated database is a no-op and keeps the data', async () => {
    await createKey('k1');
    const version = await db.schemaVersion();
    const again = await db.openAnother();
    try {
      expect(await db.schemaVersion()).toBe(version);
      expect((await again.getKey('k1'))?.description).toBe('key k1');
    } finally {
      await again.close();
    }
  });

  it('refuses a database whose schema is newer than this code, without touching it', async () => {
    const futureVersion = backend.latestSchemaVersion + 7;
    await db.recordSchemaVersion(futureVersion);

    const opening = db.openAnother();
    await expect(opening).rejects.toBeInstanceOf(SchemaTooNewError);
    await expect(opening).rejects.toThrow(new RegExp(`schema version ${futureVersion}`));
    expect(await db.schemaVersion()).toBe(futureVersion);
  });
});

describe('keys', () => {
  it('round-trips every field, dates to the millisecond', async () => {
    const key = await createKey('k1', [], {
      keyState: 'PendingDeletion',
      deletionDate: new Date(1_800_000_000_789),
      pendingWindowInDays: 7,
      currentVersion: 1,
    });
    const read = await store.getKey('k1');
    expect(read).toEqual(key);
    expect(read?.createdAt).toBeInstanceOf(Date);
    expect(read?.createdAt.getTime()).toBe(1_700_000_000_123);
    expect(read?.deletionDate?.getTime()).toBe(1_800_000_000_789);
  });

  it('returns undefined for an unknown key', async () => {
    await createKey('k1');
    expect(await store.getKey('k2')).toBeUndefined();
  });

  it('refuses a duplicate key id with StoreConflictError and keeps the original', async () => {
    await createKey('k1');
    await expect(store.createKey(makeKey('k1', { description: 'other' }), makeVersion('k1'), [])).rejects.toBeInstanceOf(
      StoreConflictError,
    );
    expect((await store.getKey('k1'))?.description).toBe('key k1');
  });

  it('creates key, version and tags in one transaction: a failing tag rolls back the key', async () => {
    const duplicateTags = [
      { TagKey: 'team', TagValue: 'a' },
      { TagKey: 'team', TagValue: 'b' },
    ];
    await expect(store.createKey(makeKey('k1'), makeVersion('k1'), duplicateTags)).rejects.toThrow();
    expect(await store.getKey('k1')).toBeUndefined();
    expect(await store.listVersions('k1')).toEqual([]);
    expect(await store.countKeys()).toBe(0);
  });

  it('counts keys', async () => {
    expect(await store.countKeys()).toBe(0);
    await createKey('k1');
    await createKey('k2');
    expect(await store.countKeys()).toBe(2);
  });

  it('rejects an invalid Date instead of storing garbage', async () => {
    await expect(createKey('k1', [], { createdAt: new Date(Number.NaN) })).rejects.toThrow(RangeError);
    expect(await store.countKeys()).toBe(0);
  });
});

describe('listKeys pagination', () => {
  it('returns nothing from an empty store', async () => {
    expect(await store.listKeys(undefined, 10)).toEqual([]);
  });

  it('pages in key order, strictly after the given id, with a short last page', async () => {
    for (const id of ['k3', 'k1', 'k5', 'k2', 'k4']) await createKey(id);
    const ids = async (after: string | undefined): Promise<string[]> =>
      (await store.listKeys(after, 2)).map((key) => key.keyId);
    expect(await ids(undefined)).toEqual(['k1', 'k2']);
    expect(await ids('k2')).toEqual(['k3', 'k4']);
    expect(await ids('k4')).toEqual(['k5']);
    expect(await ids('k5')).toEqual([]);
    // The marker need not exist: the page starts after where it would sort.
    expect(await ids('k2a')).toEqual(['k3', 'k4']);
  });

  it('at an exact page boundary the next page is empty', async () => {
    for (const id of ['k1', 'k2', 'k3', 'k4']) await createKey(id);
    expect((await store.listKeys(undefined, 2)).map((key) => key.keyId)).toEqual(['k1', 'k2']);
    expect((await store.listKeys('k2', 2)).map((key) => key.keyId)).toEqual(['k3', 'k4']);
    expect(await store.listKeys('k4', 2)).toEqual([]);
  });

  it('returns full records, and refuses a negative limit', async () => {
    const key = await createKey('k1');
    expect(await store.listKeys(undefined, 1)).toEqual([key]);
    expect(await store.listKeys(undefined, 0)).toEqual([]);
    await expect(store.listKeys(undefined, -1)).rejects.toThrow(RangeError);
  });
});

describe('key record cache (getKey)', () => {
  it("sees this store's writes at once and another store's within the backend's bound", async () => {
    const key = await createKey('k1');
    expect(await store.getKey('k1')).toEqual(key); // now cached
    await store.updateKey('k1', { keyState: 'Disabled' });
    expect((await store.getKey('k1'))?.keyState).toBe('Disabled');

    // Another process (here: another connection) changes the row behind the cache.
    const other = await db.openAnother();
    try {
      expect(await store.getKey('missing')).toBeUndefined();
      await other.updateKey('k1', { keyState: 'Enabled', description: 'changed elsewhere' });
      await other.createKey(makeKey('missing'), makeVersion('missing'), []);
      await new Promise((r) => setTimeout(r, backend.otherStoreVisibleWithinMs));
      expect(await store.getKey('k1')).toMatchObject({ keyState: 'Enabled', description: 'changed elsewhere' });
      expect(await store.getKey('missing')).toBeDefined();
    } finally {
      await other.close();
    }
  });

  it('hands out records that callers cannot change for each other', async () => {
    await createKey('k1');
    const read = await store.getKey('k1');
    expect(() => {
      (read as { keyState: string }).keyState = 'Disabled';
    }).toThrow(TypeError);
    expect((await store.getKey('k1'))?.keyState).toBe('Enabled');
  });
});

describe('updateKey', () => {
  it('changes only the members present and leaves the rest alone', async () => {
    const key = await createKey('k1');
    expect(await store.updateKey('k1', { description: 'renamed', keyState: 'Disabled' })).toBe(true);
    expect(await store.getKey('k1')).toEqual({ ...key, description: 'renamed', keyState: 'Disabled' });
  });

  it('sets and clears dates and numbers', async () => {
    const key = await createKey('k1');
    const deletionDate = new Date(1_900_000_000_001);
    await store.updateKey('k1', { keyState: 'PendingDeletion', deletionDate, pendingWindowInDays: 30 });
    expect(await store.getKey('k1')).toEqual({ ...key, keyState: 'PendingDeletion', deletionDate, pendingWindowInDays: 30 });

    await store.updateKey('k1', { keyState: 'Enabled', deletionDate: null, pendingWindowInDays: null });
    expect(await store.getKey('k1')).toEqual(key);

    await store.updateKey('k1', { policy: '{"new":true}', currentVersion: 2 });
    expect(await store.getKey('k1')).toMatchObject({ policy: '{"new":true}', currentVersion: 2 });
  });

  it('returns false for a missing key, with or without members', async () => {
    await createKey('k1');
    expect(await store.updateKey('nope', { description: 'x' })).toBe(false);
    expect(await store.updateKey('nope', {})).toBe(false);
    expect(await store.updateKey('k1', {})).toBe(true);
  });

  it('ignores members outside the whitelist', async () => {
    const key = await createKey('k1');
    const sneaky = { description: 'ok', accountId: '999999999999', keyId: 'k2' } as unknown as Parameters<
      MetadataStore['updateKey']
    >[1];
    expect(await store.updateKey('k1', sneaky)).toBe(true);
    expect(await store.getKey('k1')).toEqual({ ...key, description: 'ok' });
    expect(await store.getKey('k2')).toBeUndefined();
  });
});

describe('backing-key versions', () => {
  it('lists the first version written by createKey', async () => {
    await createKey('k1');
    expect(await store.listVersions('k1')).toEqual([makeVersion('k1', 1)]);
    expect(await store.listVersions('nope')).toEqual([]);
  });

  it('lists versions in order, per key and across keys', async () => {
    await createKey('k2');
    await createKey('k1');
    // Raw rows: this test is about ordering, not about rotation.
    await db.insertVersionRow('k1', 3, 1_700_000_000_999, 'c'.repeat(64));
    await db.insertVersionRow('k1', 2, 1_700_000_000_998, 'b'.repeat(64));

    expect((await store.listVersions('k1')).map((version) => version.version)).toEqual([1, 2, 3]);
    expect((await store.listVersions('k1'))[2]?.createdAt.getTime()).toBe(1_700_000_000_999);
    expect(await store.listAllVersions()).toEqual([
      { keyId: 'k1', version: 1 },
      { keyId: 'k1', version: 2 },
      { keyId: 'k1', version: 3 },
      { keyId: 'k2', version: 1 },
    ]);
  });
});

describe('aliases', () => {
  it('round-trips an alias, dates included', async () => {
    await createKey('k1');
    const alias = makeAlias('alias/app', 'k1');
    await store.createAlias(alias);
    expect(await store.getAlias(REGION, 'alias/app')).toEqual(alias);
    expect(await store.getAlias(REGION, 'alias/other')).toBeUndefined();
  });

  it('refuses a duplicate name with StoreConflictError and keeps the original', async () => {
    await createKey('k1');
    await createKey('k2');
    await store.createAlias(makeAlias('alias/app', 'k1'));
    await expect(store.createAlias(makeAlias('alias/app', 'k2'))).rejects.toBeInstanceOf(StoreConflictError);
    expect((await store.getAlias(REGION, 'alias/app'))?.targetKeyId).toBe('k1');
  });

  it('keys alias names by Region: one name in two Regions names two keys, each Region lists its own', async () => {
    await createKey('k1');
    await createKey('k2', [], { region: 'us-east-1' });
    await store.createAlias(makeAlias('alias/app', 'k1'));
    await store.createAlias(makeAlias('alias/app', 'k2', 'us-east-1'));
    expect((await store.getAlias(REGION, 'alias/app'))?.targetKeyId).toBe('k1');
    expect(await store.getAlias('us-east-1', 'alias/app')).toMatchObject({ region: 'us-east-1', targetKeyId: 'k2' });
    expect((await store.listAliases({ region: 'us-east-1', limit: 10 })).map((a) => a.targetKeyId)).toEqual(['k2']);
    // A duplicate in the same Region is still a conflict.
    await expect(store.createAlias(makeAlias('alias/app', 'k2', 'us-east-1'))).rejects.toBeInstanceOf(StoreConflictError);
    // Changing or deleting it in one Region leaves the other Region's alias alone.
    expect(await store.deleteAlias('us-east-1', 'alias/app')).toBe(true);
    expect((await store.getAlias(REGION, 'alias/app'))?.targetKeyId).toBe('k1');
    expect(await store.updateAliasIfTarget('us-east-1', 'alias/app', 'k1', 'k2', new Date())).toBe(false);
    expect((await store.getAlias(REGION, 'alias/app'))?.targetKeyId).toBe('k1');
  });

  it('refuses an alias to a missing key with a plain Error, not a conflict', async () => {
    const failure = await store.createAlias(makeAlias('alias/app', 'nope')).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(failure).toBeInstanceOf(Error);
    expect(failure).not.toBeInstanceOf(StoreConflictError);
    expect((failure as Error).message).toMatch(/nope/);
    expect(await store.getAlias(REGION, 'alias/app')).toBeUndefined();
  });

  it('updates the target and last-updated time, keeping the creation time', async () => {
    await createKey('k1');
    await createKey('k2');
    const alias = makeAlias('alias/app', 'k1');
    await store.createAlias(alias);
    const at = new Date(1_700_000_002_345);
    expect(await store.updateAlias(REGION, 'alias/app', 'k2', at)).toBe(true);
    expect(await store.getAlias(REGION, 'alias/app')).toEqual({ ...alias, targetKeyId: 'k2', lastUpdatedAt: at });
    expect(await store.updateAlias(REGION, 'alias/none', 'k2', at)).toBe(false);
  });

  it('refuses to point an alias at a missing key and leaves it unchanged', async () => {
    await createKey('k1');
    await store.createAlias(makeAlias('alias/app', 'k1'));
    await expect(store.updateAlias(REGION, 'alias/app', 'nope', new Date())).rejects.toThrow(/nope/);
    expect((await store.getAlias(REGION, 'alias/app'))?.targetKeyId).toBe('k1');
  });

  it('deletes, reporting whether the alias existed', async () => {
    await createKey('k1');
    await store.createAlias(makeAlias('alias/app', 'k1'));
    expect(await store.deleteAlias(REGION, 'alias/app')).toBe(true);
    expect(await store.getAlias(REGION, 'alias/app')).toBeUndefined();
    expect(await store.deleteAlias(REGION, 'alias/app')).toBe(false);
  });

  it('lists and counts, all or per key, paginated by name', async () => {
    expect(await store.listAliases({ region: REGION, limit: 10 })).toEqual([]);
    await createKey('k1');
    await createKey('k2');
    for (const name of ['alias/d', 'alias/a', 'alias/c']) await store.createAlias(makeAlias(name, 'k1'));
    for (const name of ['alias/b', 'alias/e']) await store.createAlias(makeAlias(name, 'k2'));
    const names = async (filter: Omit<Parameters<MetadataStore['listAliases']>[0], 'region'>): Promise<string[]> =>
      (await store.listAliases({ region: REGION, ...filter })).map((alias) => alias.aliasName);

    expect(await names({ limit: 2 })).toEqual(['alias/a', 'alias/b']);
    expect(await names({ limit: 2, afterAliasName: 'alias/b' })).toEqual(['alias/c', 'alias/d']);
    expect(await names({ limit: 2, afterAliasName: 'alias/d' })).toEqual(['alias/e']);
    expect(await names({ limit: 2, afterAliasName: 'alias/e' })).toEqual([]);

    expect(await names({ targetKeyId: 'k1', limit: 2 })).toEqual(['alias/a', 'alias/c']);
    expect(await names({ targetKeyId: 'k1', limit: 2, afterAliasName: 'alias/c' })).toEqual(['alias/d']);
    // k2 has exactly one full page: the next one is empty.
    expect(await names({ targetKeyId: 'k2', limit: 2 })).toEqual(['alias/b', 'alias/e']);
    expect(await names({ targetKeyId: 'k2', limit: 2, afterAliasName: 'alias/e' })).toEqual([]);
    expect(await names({ targetKeyId: 'nope', limit: 2 })).toEqual([]);

    expect(await store.countAliasesForKey('k1')).toBe(3);
    expect(await store.countAliasesForKey('k2')).toBe(2);
    expect(await store.countAliasesForKey('nope')).toBe(0);
  });
});

describe('multi-Region key rows', () => {
  const MRK = 'mrk-0123456789abcdef0123456789abcdef';
  it('creates Regions\' rows without versions, lists them by key ID, and moves the primary Region on all of them', async () => {
    await createKey(MRK, [], { region: '', primaryRegion: 'us-east-1' });
    await createKey('mrk-0123456789abcdef0123456789abcdee', [], { primaryRegion: 'us-east-1' }); // a neighbour ID
    const primary = makeKey(`${MRK}/us-east-1`, { region: 'us-east-1', primaryRegion: 'us-east-1' });
    const replica = makeKey(`${MRK}/eu-west-1`, { region: 'eu-west-1', primaryRegion: 'us-east-1', description: 'replica' });
    await store.createRegionalKey(primary, [{ TagKey: 'site', TagValue: 'a' }]);
    await store.createRegionalKey(replica, []);
    await expect(store.createRegionalKey(replica, [])).rejects.toBeInstanceOf(StoreConflictError);
    expect(await store.getKey(`${MRK}/eu-west-1`)).toEqual(replica);
    expect(await store.listVersions(`${MRK}/eu-west-1`)).toEqual([]);
    expect(await store.listTags(`${MRK}/us-east-1`)).toEqual([{ TagKey: 'site', TagValue: 'a' }]);
    expect((await store.multiRegionKeys(MRK)).map((k) => k.keyId)).toEqual([`${MRK}/eu-west-1`, `${MRK}/us-east-1`]);

    await store.setPrimaryRegion(MRK, 'eu-west-1');
    expect((await store.multiRegionKeys(MRK)).map((k) => k.primaryRegion)).toEqual(['eu-west-1', 'eu-west-1']);
    expect((await store.getKey(MRK))?.primaryRegion).toBe('eu-west-1');
    expect((await store.getKey('mrk-0123456789abcdef0123456789abcdee'))?.primaryRegion).toBe('us-east-1');
    expect((await store.getKey('k-none'))?.primaryRegion).toBeUndefined();
  });

  it('leaves primaryRegion absent on single-Region keys', async () => {
    const key = await createKey('k1');
    expect(await store.getKey('k1')).toEqual(key);
    expect(Object.hasOwn((await store.getKey('k1'))!, 'primaryRegion')).toBe(false);
  });
});

describe('createKeyWithAlias (AWS managed keys)', () => {
  const rotation = { periodInDays: 365, nextRotationDate: new Date(1_731_536_000_123) };

  it('writes key, first version, rotation schedule and alias at once, and keyManager round-trips', async () => {
    const key = makeKey('m1', { keyManager: 'AWS' });
    expect(await store.createKeyWithAlias(key, makeVersion('m1'), makeAlias('alias/aws/s3', 'm1'), rotation)).toBe(true);
    expect(await store.getKey('m1')).toEqual(key);
    expect((await store.listVersions('m1')).map((v) => v.version)).toEqual([1]);
    expect(await store.getAlias(REGION, 'alias/aws/s3')).toEqual(makeAlias('alias/aws/s3', 'm1'));
    const schedule = await store.lifecycle.rotationSchedule('m1', new Date(1_700_000_002_000));
    expect(schedule).toMatchObject({ periodInDays: 365, nextRotationDate: rotation.nextRotationDate });
    // Customer managed keys read back without the member, as they were written.
    await createKey('c1');
    expect(await store.getKey('c1')).not.toHaveProperty('keyManager');
    const reopened = await db.openAnother();
    try {
      expect((await reopened.getKey('m1'))?.keyManager).toBe('AWS');
    } finally {
      await reopened.close();
    }
  });

  it('returns false and writes nothing when the alias exists', async () => {
    await store.createKeyWithAlias(makeKey('m1', { keyManager: 'AWS' }), makeVersion('m1'), makeAlias('alias/aws/s3', 'm1'), rotation);
    expect(await store.createKeyWithAlias(makeKey('m2', { keyManager: 'AWS' }), makeVersion('m2'), makeAlias('alias/aws/s3', 'm2'), rotation)).toBe(false);
    expect(await store.getKey('m2')).toBeUndefined();
    expect(await db.countRows('key_versions', 'm2')).toBe(0);
    expect((await store.getAlias(REGION, 'alias/aws/s3'))?.targetKeyId).toBe('m1');
    expect(await store.countKeys()).toBe(1);
  });

  it('concurrent creations from two stores on one database leave exactly one key behind the alias', async () => {
    const other = await db.openAnother();
    try {
      const attempts = Array.from({ length: 6 }, (_, i) =>
        (i % 2 === 0 ? store : other).createKeyWithAlias(makeKey(`m${i}`, { keyManager: 'AWS' }), makeVersion(`m${i}`), makeAlias('alias/aws/ebs', `m${i}`), rotation),
      );
      const won = await Promise.all(attempts);
      expect(won.filter(Boolean)).toHaveLength(1);
      expect(await store.countKeys()).toBe(1);
      expect((await store.getAlias(REGION, 'alias/aws/ebs'))?.targetKeyId).toBe(`m${won.indexOf(true)}`);
    } finally {
      await other.close();
    }
  });
});

describe('tags', () => {
  it('lists tags ordered by key', async () => {
    await createKey('k1', [
      { TagKey: 'b', TagValue: '2' },
      { TagKey: 'a', TagValue: '1' },
    ]);
    expect(await store.listTags('k1')).toEqual([
      { TagKey: 'a', TagValue: '1' },
      { TagKey: 'b', TagValue: '2' },
    ]);
    expect(await store.listTags('nope')).toEqual([]);
  });

  it('putTags adds new tags and overwrites existing values', async () => {
    await createKey('k1', [{ TagKey: 'team', TagValue: 'red' }]);
    await store.putTags('k1', [
      { TagKey: 'team', TagValue: 'blue' },
      { TagKey: 'env', TagValue: 'prod' },
    ]);
    expect(await store.listTags('k1')).toEqual([
      { TagKey: 'env', TagValue: 'prod' },
      { TagKey: 'team', TagValue: 'blue' },
    ]);
  });

  it('putTags on a missing key fails and writes nothing', async () => {
    await expect(store.putTags('nope', [{ TagKey: 'a', TagValue: '1' }])).rejects.toThrow(/nope/);
    expect(await store.listTags('nope')).toEqual([]);
  });

  it('removeTags removes the named tags and ignores absent ones', async () => {
    await createKey('k1', [
      { TagKey: 'a', TagValue: '1' },
      { TagKey: 'b', TagValue: '2' },
      { TagKey: 'c', TagValue: '3' },
    ]);
    await store.removeTags('k1', ['a', 'c', 'not-there']);
    expect(await store.listTags('k1')).toEqual([{ TagKey: 'b', TagValue: '2' }]);
  });
});

describe('deleteKey', () => {
  it('cascades to versions, aliases and tags of that key only', async () => {
    await createKey('k1', [{ TagKey: 'a', TagValue: '1' }]);
    await createKey('k2', [{ TagKey: 'a', TagValue: '2' }]);
    await store.createAlias(makeAlias('alias/one', 'k1'));
    await store.createAlias(makeAlias('alias/two', 'k2'));

    await store.deleteKey('k1');

    expect(await store.getKey('k1')).toBeUndefined();
    expect(await store.listVersions('k1')).toEqual([]);
    expect(await store.listTags('k1')).toEqual([]);
    expect(await store.getAlias(REGION, 'alias/one')).toBeUndefined();
    expect(await store.countAliasesForKey('k1')).toBe(0);

    expect(await store.getKey('k2')).toBeDefined();
    expect(await store.listTags('k2')).toEqual([{ TagKey: 'a', TagValue: '2' }]);
    expect((await store.getAlias(REGION, 'alias/two'))?.targetKeyId).toBe('k2');
    expect(await store.listAllVersions()).toEqual([{ keyId: 'k2', version: 1 }]);

    expect(await db.countRows('tags', 'k1')).toBe(0);
    expect(await db.countRows('key_versions', 'k1')).toBe(0);
    expect(await db.countRows('aliases', 'k1')).toBe(0);
  });

  it('deleting a missing key is not an error', async () => {
    await expect(store.deleteKey('nope')).resolves.toBeUndefined();
  });
});

describe('hot path', () => {
  it('getKey and getAlias take microseconds with 2,000 keys', async () => {
    const keyIds = Array.from({ length: 2000 }, (_, i) => `bench-${String(i).padStart(4, '0')}`);
    for (const keyId of keyIds) await createKey(keyId);
    for (const keyId of keyIds.slice(0, 500)) await store.createAlias(makeAlias(`alias/${keyId}`, keyId));

    const microsPerCall = async (call: (i: number) => Promise<unknown>, calls: number): Promise<number> => {
      for (let i = 0; i < 2000; i++) await call(i); // warm up the JIT and SQLite's page cache
      const start = process.hrtime.bigint();
      for (let i = 0; i < calls; i++) await call(i);
      return Number(process.hrtime.bigint() - start) / 1000 / calls;
    };
    const getKeyMicros = await microsPerCall((i) => store.getKey(keyIds[(i * 7919) % keyIds.length]!), 20_000);
    const getAliasMicros = await microsPerCall((i) => store.getAlias(REGION, `alias/${keyIds[(i * 7919) % 500]!}`), 20_000);
    console.log(`getKey ${getKeyMicros.toFixed(2)} µs/call, getAlias ${getAliasMicros.toFixed(2)} µs/call`);

    expect((await store.getKey(keyIds[1234]!))?.keyId).toBe(keyIds[1234]);
    // The query plans above are the real guard; this loose bound only catches something
    // pathological (a prepare per call, a scan) without flaking on a busy CI machine.
    expect(getKeyMicros).toBeLessThan(200);
    expect(getAliasMicros).toBeLessThan(200);
  });
});

});
}
