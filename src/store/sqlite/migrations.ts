/**
 * Versioned schema migrations for the SQLite metadata store.
 *
 * Each migration runs in its own IMMEDIATE transaction (so the write lock is taken up front) and is
 * recorded in `schema_migrations` in that same transaction, so it is applied exactly once even when
 * several processes open the same file at the same moment. Migrations are append-only: never edit
 * one that has shipped, add a new one with the next version instead.
 */
import type Database from 'better-sqlite3';
import { assertStrictlyAscending, schemaTooNew } from '../schema-version.js';
import { LIFECYCLE_SCHEMA } from './lifecycle-schema.js';

export { SchemaTooNewError } from '../schema-version.js';

export interface Migration {
  /** 1, 2, 3, ... in the order they must be applied. */
  version: number;
  description: string;
  /**
   * Run inside the migration's transaction, with foreign keys enforced: no BEGIN/COMMIT, and a
   * table rebuild must use `PRAGMA defer_foreign_keys = ON` (foreign_keys cannot change mid-transaction).
   */
  sql: string;
}

// Dates are INTEGER milliseconds since the epoch (UTC). STRICT tables make SQLite reject values of
// the wrong type instead of silently storing them. Child tables are WITHOUT ROWID: their composite
// primary key is the clustered key, which also serves the foreign-key lookups of ON DELETE CASCADE.
const INITIAL_SCHEMA = `
CREATE TABLE keys (
  key_id              TEXT    NOT NULL PRIMARY KEY,
  account_id          TEXT    NOT NULL,
  region              TEXT    NOT NULL,
  created_at          INTEGER NOT NULL,
  description         TEXT    NOT NULL,
  key_state           TEXT    NOT NULL,
  key_spec            TEXT    NOT NULL,
  key_usage           TEXT    NOT NULL,
  origin              TEXT    NOT NULL,
  policy              TEXT    NOT NULL,
  current_version     INTEGER NOT NULL CHECK (current_version >= 1),
  deletion_date       INTEGER,
  pending_window_days INTEGER
) STRICT;

CREATE TABLE key_versions (
  key_id          TEXT    NOT NULL REFERENCES keys (key_id) ON DELETE CASCADE,
  version         INTEGER NOT NULL CHECK (version >= 1),
  created_at      INTEGER NOT NULL,
  key_material_id TEXT    NOT NULL,
  PRIMARY KEY (key_id, version)
) STRICT, WITHOUT ROWID;

CREATE TABLE aliases (
  alias_name      TEXT    NOT NULL PRIMARY KEY,
  target_key_id   TEXT    NOT NULL REFERENCES keys (key_id) ON DELETE CASCADE,
  created_at      INTEGER NOT NULL,
  last_updated_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- Serves "aliases of one key, ordered by name" and the cascade from keys.
CREATE INDEX aliases_by_target ON aliases (target_key_id, alias_name);

CREATE TABLE tags (
  key_id    TEXT NOT NULL REFERENCES keys (key_id) ON DELETE CASCADE,
  tag_key   TEXT NOT NULL,
  tag_value TEXT NOT NULL,
  PRIMARY KEY (key_id, tag_key)
) STRICT, WITHOUT ROWID;
`;

// Grants (issue 4). Operations and constraints are JSON text: they are read whole, never queried.
const GRANTS_SCHEMA = `
CREATE TABLE grants (
  grant_id           TEXT    NOT NULL PRIMARY KEY,
  key_id             TEXT    NOT NULL REFERENCES keys (key_id) ON DELETE CASCADE,
  name               TEXT,
  grantee_principal  TEXT    NOT NULL,
  retiring_principal TEXT,
  issuing_account    TEXT    NOT NULL,
  operations         TEXT    NOT NULL,
  constraints        TEXT,
  created_at         INTEGER NOT NULL
) STRICT;

-- ListGrants pages by key; evaluation looks a caller's grants up on one key.
CREATE INDEX grants_by_key ON grants (key_id, grant_id);
CREATE INDEX grants_by_grantee ON grants (key_id, grantee_principal);
CREATE INDEX grants_by_retiring_principal ON grants (retiring_principal, grant_id);
`;

const KEY_USAGE_SCHEMA = `
CREATE TABLE key_last_usage (
  key_id      TEXT    NOT NULL PRIMARY KEY REFERENCES keys (key_id) ON DELETE CASCADE,
  operation   TEXT    NOT NULL,
  used_at     INTEGER NOT NULL,
  request_id  TEXT    NOT NULL,
  event_id    TEXT
) STRICT, WITHOUT ROWID;
`;

// The audit chain registry (issue 9): one row per audit chain, its newest digest's hash.
const AUDIT_CHAINS_SCHEMA = `
CREATE TABLE audit_chains (
  chain_id                TEXT    NOT NULL PRIMARY KEY,
  opened_at               INTEGER NOT NULL,
  digest_sequence         INTEGER NOT NULL CHECK (digest_sequence >= 0),
  digest_hash             TEXT,
  record_count            INTEGER NOT NULL CHECK (record_count >= 0),
  final                   INTEGER NOT NULL CHECK (final IN (0, 1)),
  signing_key_fingerprint TEXT
) STRICT, WITHOUT ROWID;
`;

// One row: which token this store's keys live in (src/kms/token-binding.ts).
const TOKEN_BINDING_SCHEMA = `
CREATE TABLE token_binding (
  id              INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
  manufacturer_id TEXT    NOT NULL,
  model           TEXT    NOT NULL,
  serial_number   TEXT    NOT NULL,
  label           TEXT    NOT NULL,
  module          TEXT,
  identity        TEXT    NOT NULL,
  bound_at        INTEGER NOT NULL
) STRICT;
`;

// Issue 16: alias names are unique per Region, as in AWS (the table is rebuilt: its primary key
// changes; an existing alias takes its key's Region), and a multi-Region key's rows name the
// Region of its primary.
const REGIONS_SCHEMA = `
PRAGMA defer_foreign_keys = ON;
CREATE TABLE aliases_by_region (
  region          TEXT    NOT NULL,
  alias_name      TEXT    NOT NULL,
  target_key_id   TEXT    NOT NULL REFERENCES keys (key_id) ON DELETE CASCADE,
  created_at      INTEGER NOT NULL,
  last_updated_at INTEGER NOT NULL,
  PRIMARY KEY (region, alias_name)
) STRICT, WITHOUT ROWID;
INSERT INTO aliases_by_region (region, alias_name, target_key_id, created_at, last_updated_at)
  SELECT k.region, a.alias_name, a.target_key_id, a.created_at, a.last_updated_at
  FROM aliases a JOIN keys k ON k.key_id = a.target_key_id;
DROP TABLE aliases;
ALTER TABLE aliases_by_region RENAME TO aliases;
CREATE INDEX aliases_by_target ON aliases (target_key_id, alias_name);

ALTER TABLE keys ADD COLUMN primary_region TEXT;
`;

export const MIGRATIONS: readonly Migration[] = [
  { version: 1, description: 'keys, backing-key versions, aliases, tags', sql: INITIAL_SCHEMA },
  { version: 2, description: 'grants', sql: GRANTS_SCHEMA },
  { version: 3, description: 'key material lifecycle: rotation, imports, work claims', sql: LIFECYCLE_SCHEMA },
  {
    version: 4,
    description: 'AES-GCM encryptions per backing version (random-IV invocation limit)',
    sql: 'ALTER TABLE key_versions ADD COLUMN gcm_encryptions INTEGER NOT NULL DEFAULT 0;',
  },
  { version: 5, description: 'last cryptographic use of each key (GetKeyLastUsage)', sql: KEY_USAGE_SCHEMA },
  { version: 6, description: 'audit chain registry (newest digest of every audit chain)', sql: AUDIT_CHAINS_SCHEMA },
  { version: 7, description: 'token binding: the PKCS#11 token the keys live in', sql: TOKEN_BINDING_SCHEMA },
  { version: 8, description: 'aliases unique per Region; the primary Region of multi-Region keys', sql: REGIONS_SCHEMA },
  {
    version: 9,
    description: 'key manager: AWS for AWS managed keys, CUSTOMER for every other key',
    sql: "ALTER TABLE keys ADD COLUMN key_manager TEXT NOT NULL DEFAULT 'CUSTOMER' CHECK (key_manager IN ('AWS', 'CUSTOMER'));",
  },
];

/** Highest applied version; 0 for a database that has never been migrated. */
export function currentSchemaVersion(db: Database.Database): number {
  const hasTable = db
    .prepare("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'schema_migrations'")
    .get();
  if (!hasTable) return 0;
  const version = db.prepare('SELECT MAX(version) FROM schema_migrations').pluck().get();
  return typeof version === 'number' ? version : 0;
}

/**
 * Brings the database up to the latest version in `migrations`. Returns the versions applied by this
 * call (empty when the database was already current). Throws SchemaTooNewError, without changing
 * anything, when the database is newer than `migrations` knows.
 */
export function applyMigrations(
  db: Database.Database,
  migrations: readonly Migration[] = MIGRATIONS,
): number[] {
  assertStrictlyAscending(migrations);
  const latestKnown = migrations.at(-1)?.version ?? 0;
  const assertNotNewer = (): void => {
    const found = currentSchemaVersion(db);
    if (found > latestKnown) throw schemaTooNew(db.name, found, latestKnown);
  };

  ensureMigrationsTable(db);
  assertNotNewer();
  const recordVersion = db.prepare('INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)');
  const applied: number[] = [];
  for (const migration of migrations) {
    // Only a migration still to apply takes the write lock: a start beside a process that holds
    // it (a backup, an operator's sqlite3 shell) must not wait for a schema that is current.
    if (currentSchemaVersion(db) >= migration.version) continue;
    const applyOnce = db.transaction((): boolean => {
      // Re-read under the write lock: another process may have applied it while we waited.
      if (currentSchemaVersion(db) >= migration.version) return false;
      db.exec(migration.sql);
      recordVersion.run(migration.version, Date.now());
      return true;
    });
    if (applyOnce.immediate()) applied.push(migration.version);
  }
  // A newer process may have migrated past us between our first check and now.
  assertNotNewer();
  return applied;
}

function ensureMigrationsTable(db: Database.Database): void {
  if (db.prepare("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'schema_migrations'").get()) return;
  db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER NOT NULL PRIMARY KEY,
    applied_at INTEGER NOT NULL
  ) STRICT`);
}
