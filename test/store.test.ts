import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { applyMigrations, currentSchemaVersion, MIGRATIONS } from '../src/store/sqlite/migrations.js';
import { holdWriteLock } from '../src/store/sqlite/lock-holder.js';
import { openSqliteDatabase, openSqliteStore } from '../src/store/sqlite/store.js';
import type { AliasRecord, BackingKeyVersionRecord, KeyRecord, MetadataStore, TagRecord } from '../src/store/types.js';
import { describeStoreContract } from './store/contract.js';

// The contract every backend meets, here on a fresh SQLite file per test.
describeStoreContract({
  name: 'SQLite',
  otherStoreVisibleWithinMs: 50,
  latestSchemaVersion: MIGRATIONS.length,
  async fresh() {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'p11kms-store-'));
    const file = path.join(dir, 'data', 'metadata.db');
    const raw = <T>(use: (db: Database.Database) => T): T => {
      const db = new Database(file, { timeout: 5000 });
      try {
        return use(db);
      } finally {
        db.close();
      }
    };
    return {
      store: await openSqliteStore(file),
      openAnother: () => openSqliteStore(file),
      insertVersionRow: async (keyId, version, createdAt, keyMaterialId) =>
        void raw((db) => db.prepare('INSERT INTO key_versions (key_id, version, created_at, key_material_id) VALUES (?, ?, ?, ?)').run(keyId, version, createdAt, keyMaterialId)),
      countRows: async (table, keyId) =>
        raw((db) => db.prepare(`SELECT COUNT(*) FROM ${table} WHERE ${table === 'aliases' ? 'target_key_id' : 'key_id'} = ?`).pluck().get(keyId) as number),
      recordSchemaVersion: async (version) => void raw((db) => db.prepare('INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)').run(version, Date.now())),
      schemaVersion: async () => raw((db) => currentSchemaVersion(db)),
      dispose: async () => fs.rmSync(dir, { recursive: true, force: true }),
    };
  },
});

// What only the SQLite file has: file modes, PRAGMAs, its migration runner, query plans.

const REGION = 'eu-west-1';
const repoRoot = fileURLToPath(new URL('..', import.meta.url));

let tempDir: string;
let dbFile: string;
let store: MetadataStore;

beforeEach(async () => {
  tempDir = fs.mkdtempSync(path.join(os.tmpdir(), 'p11kms-store-'));
  dbFile = path.join(tempDir, 'data', 'metadata.db');
  store = await openSqliteStore(dbFile);
});

afterEach(async () => {
  await store.close();
  fs.rmSync(tempDir, { recursive: true, force: true });
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


/** A second, independent connection to the same file, for looking behind the store's back. */
function rawConnection(): Database.Database {
  return new Database(dbFile, { timeout: 5000 });
}

function withRawConnection<T>(use: (db: Database.Database) => T): T {
  const db = rawConnection();
  try {
    return use(db);
  } finally {
    db.close();
  }
}

const readMigrationRows = (): unknown[] =>
  withRawConnection((db) => db.prepare('SELECT version, applied_at FROM schema_migrations ORDER BY version').all());
describe('opening', () => {
  it('creates the parent directory 0700 and the database file (and its WAL) 0600', async () => {
    await createKey('k1'); // forces a WAL write
    expect(fs.statSync(path.dirname(dbFile)).mode & 0o777).toBe(0o700);
    expect(fs.statSync(dbFile).mode & 0o777).toBe(0o600);
    expect(fs.statSync(`${dbFile}-wal`).mode & 0o777).toBe(0o600);
  });

  it('sets WAL, synchronous=FULL, foreign keys and the busy timeout on its connection', () => {
    const db = openSqliteDatabase(dbFile);
    try {
      expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
      expect(db.pragma('synchronous', { simple: true })).toBe(2); // FULL
      expect(db.pragma('foreign_keys', { simple: true })).toBe(1);
      expect(db.pragma('busy_timeout', { simple: true })).toBe(5000);
    } finally {
      db.close();
    }
  });
});

describe('migrations', () => {
  it('records every migration once with its time of application', () => {
    const db = rawConnection();
    try {
      const rows = db.prepare('SELECT version, applied_at FROM schema_migrations ORDER BY version').all() as Array<{
        version: number;
        applied_at: number;
      }>;
      expect(rows.map((row) => row.version)).toEqual(MIGRATIONS.map((migration) => migration.version));
      for (const row of rows) expect(Math.abs(Date.now() - row.applied_at)).toBeLessThan(60_000);
    } finally {
      db.close();
    }
  });

  it('a store opens on a current schema while another process holds the write lock (a backup, a sqlite3 shell)', async () => {
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'p11kms-locked-')), 'metadata.db');
    await (await openSqliteStore(file)).close();
    const lock = await holdWriteLock(file);
    try {
      // No migration is due, so opening takes no write lock (it used to wait for it, then fail).
      const store = await openSqliteStore(file);
      try {
        expect(lock.released).toBe(false);
        expect(await store.countKeys()).toBe(0);
      } finally {
        await store.close();
      }
    } finally {
      await lock.release();
    }
  });

  it('applying the migrations again to an already-migrated file is a no-op', async () => {
    await createKey('k1');
    const before = readMigrationRows();
    expect(withRawConnection((db) => applyMigrations(db))).toEqual([]);
    expect(readMigrationRows()).toEqual(before);
  });

  it('applies a new migration exactly once to an existing database', () => {
    const next = { version: MIGRATIONS.length + 1, description: 'test column', sql: 'ALTER TABLE keys ADD COLUMN extra TEXT' };
    const db = rawConnection();
    try {
      expect(applyMigrations(db, [...MIGRATIONS, next])).toEqual([next.version]);
      expect(applyMigrations(db, [...MIGRATIONS, next])).toEqual([]); // would fail: duplicate column
      expect(currentSchemaVersion(db)).toBe(next.version);
    } finally {
      db.close();
    }
  });

  it('migration 8 gives every existing alias its key\'s Region, then names may repeat across Regions', async () => {
    const old = path.join(path.dirname(dbFile), 'v7.db');
    const db = new Database(old);
    try {
      db.pragma('foreign_keys = ON');
      applyMigrations(db, MIGRATIONS.filter((m) => m.version <= 7));
      db.prepare(
        `INSERT INTO keys (key_id, account_id, region, created_at, description, key_state, key_spec, key_usage, origin, policy, current_version)
         VALUES ('k-eu', '111122223333', 'eu-west-1', 0, '', 'Enabled', 'SYMMETRIC_DEFAULT', 'ENCRYPT_DECRYPT', 'AWS_KMS', '{}', 1)`,
      ).run();
      db.prepare("INSERT INTO aliases (alias_name, target_key_id, created_at, last_updated_at) VALUES ('alias/old', 'k-eu', 1, 2)").run();
      expect(applyMigrations(db)).toEqual(MIGRATIONS.filter((m) => m.version >= 8).map((m) => m.version));
    } finally {
      db.close();
    }
    const upgraded = await openSqliteStore(old);
    try {
      expect(await upgraded.getAlias('eu-west-1', 'alias/old')).toEqual({ region: 'eu-west-1', aliasName: 'alias/old', targetKeyId: 'k-eu', createdAt: new Date(1), lastUpdatedAt: new Date(2) });
      expect(await upgraded.getAlias('us-east-1', 'alias/old')).toBeUndefined();
      await upgraded.createAlias({ region: 'us-east-1', aliasName: 'alias/old', targetKeyId: 'k-eu', createdAt: new Date(3), lastUpdatedAt: new Date(3) });
      expect((await upgraded.getKey('k-eu'))?.primaryRegion).toBeUndefined();
    } finally {
      await upgraded.close();
    }
  });

  it('runs each migration in its own transaction: a failing one leaves no trace', () => {
    const broken = {
      version: MIGRATIONS.length + 1,
      description: 'fails half way',
      sql: 'CREATE TABLE half_done (x INTEGER); INSERT INTO no_such_table VALUES (1);',
    };
    const db = rawConnection();
    try {
      expect(() => applyMigrations(db, [...MIGRATIONS, broken])).toThrow(/no_such_table/);
      expect(currentSchemaVersion(db)).toBe(MIGRATIONS.length);
      expect(db.prepare("SELECT name FROM sqlite_schema WHERE name = 'half_done'").get()).toBeUndefined();
    } finally {
      db.close();
    }
  });

  it('rejects a list of migrations that is not numbered 1, 2, 3, ...', () => {
    const db = rawConnection();
    try {
      const skipping = [...MIGRATIONS, { version: MIGRATIONS.length + 2, description: 'gap', sql: 'SELECT 1' }];
      expect(() => applyMigrations(db, skipping)).toThrow(/numbered 1, 2, 3/);
    } finally {
      db.close();
    }
  });
});

describe('durability', () => {
  it('a created key is visible to a fresh process, while the store is still open', async () => {
    const key = await createKey('durable-key', [{ TagKey: 't', TagValue: 'v' }]);
    const script = `
      const Database = require('better-sqlite3');
      const db = new Database(process.argv[1], { readonly: true, fileMustExist: true });
      const row = db.prepare('SELECT key_id, created_at, description FROM keys WHERE key_id = ?').get(process.argv[2]);
      const tags = db.prepare('SELECT COUNT(*) AS n FROM tags WHERE key_id = ?').get(process.argv[2]);
      process.stdout.write(JSON.stringify({ row, tags: tags.n }));
    `;
    const output = execFileSync(process.execPath, ['-e', script, dbFile, 'durable-key'], {
      cwd: repoRoot,
      encoding: 'utf8',
    });
    expect(JSON.parse(output)).toEqual({
      row: { key_id: 'durable-key', created_at: key.createdAt.getTime(), description: key.description },
      tags: 1,
    });
  });
});

describe('hot path', () => {
  it('every lookup and page is an index search, never a scan or a sort', () => {
    const plans = withRawConnection((db) => {
      const planOf = (sql: string, ...params: unknown[]): string =>
        (db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all(...params) as Array<{ detail: string }>)
          .map((row) => row.detail)
          .join(' | ');
      return [
        planOf('SELECT * FROM keys WHERE key_id = ?', 'k'),
        planOf('SELECT * FROM keys WHERE key_id > ? ORDER BY key_id LIMIT ?', 'k', 10),
        planOf('SELECT * FROM keys WHERE key_id > ? AND key_id < ? ORDER BY key_id', 'mrk-1/', 'mrk-10'),
        planOf('SELECT * FROM aliases WHERE region = ? AND alias_name = ?', 'r', 'a'),
        planOf('SELECT * FROM aliases WHERE region = ? AND alias_name > ? ORDER BY alias_name LIMIT ?', 'r', 'a', 10),
        planOf('SELECT * FROM aliases WHERE target_key_id = ? AND region = ? AND alias_name > ? ORDER BY alias_name LIMIT ?', 'k', 'r', 'a', 10),
        planOf('SELECT COUNT(*) FROM aliases WHERE target_key_id = ?', 'k'),
        planOf('SELECT * FROM tags WHERE key_id = ? ORDER BY tag_key', 'k'),
        planOf('SELECT * FROM key_versions WHERE key_id = ? ORDER BY version', 'k'),
      ];
    });
    for (const plan of plans) {
      expect(plan).toMatch(/^SEARCH /);
      expect(plan).not.toMatch(/TEMP B-TREE/);
    }
  });
});
