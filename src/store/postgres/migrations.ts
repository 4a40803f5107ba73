/**
 * Versioned schema migrations for the PostgreSQL metadata store.
 *
 * Nodes starting together migrate once: the whole run holds a session advisory lock, each
 * migration runs in its own transaction and is recorded in `schema_migrations` in that same
 * transaction. A node refuses (SchemaTooNewError, nothing changed) a database migrated by a newer
 * p11kms. Migrations are append-only: never edit one that has shipped, add the next version.
 *
 * Tables mirror the SQLite store's (src/store/sqlite/migrations.ts) column for column, with
 * PostgreSQL types: timestamptz for dates, and COLLATE "C" on names that are paged by, so that
 * pagination orders bytes exactly as SQLite does.
 */
import type pg from 'pg';
import { assertStrictlyAscending, schemaTooNew } from '../schema-version.js';

export interface PostgresMigration {
  /** 1, 2, 3, ... in the order they must be applied. */
  version: number;
  description: string;
  /** Run inside the migration's transaction: no BEGIN/COMMIT. */
  sql: string;
}

/** The lock every migrating node takes (pg_advisory_lock's 64-bit key; any fixed number works). */
const MIGRATION_LOCK = 0x70_31_31_6b_6d_73_01n; // "p11kms" + 1

// What SQLite migrations 1-5 hold (keys, versions, aliases, tags, grants, key-material lifecycle,
// AES-GCM counts, last key use), as one first PostgreSQL version: no PostgreSQL database predates it.
const INITIAL_SCHEMA = `
CREATE TABLE keys (
  key_id                  TEXT COLLATE "C" NOT NULL PRIMARY KEY,
  account_id              TEXT        NOT NULL,
  region                  TEXT        NOT NULL,
  created_at              TIMESTAMPTZ NOT NULL,
  description             TEXT        NOT NULL,
  key_state               TEXT        NOT NULL,
  key_spec                TEXT        NOT NULL,
  key_usage               TEXT        NOT NULL,
  origin                  TEXT        NOT NULL,
  policy                  TEXT        NOT NULL,
  current_version         INTEGER     NOT NULL CHECK (current_version >= 1),
  deletion_date           TIMESTAMPTZ,
  pending_window_days     INTEGER,
  -- Key-material lifecycle (SQLite migration 3): NULL period = automatic rotation disabled;
  -- lifecycle_claim/_until is the expiring lease that makes one node rotate or sweep a key.
  rotation_period_days    INTEGER,
  next_rotation_date      TIMESTAMPTZ,
  lifecycle_claim         TEXT,
  lifecycle_claim_until   TIMESTAMPTZ,
  lifecycle_claim_started TIMESTAMPTZ,
  lifecycle_claim_kind    TEXT
);
CREATE INDEX keys_rotation_due ON keys (next_rotation_date) WHERE next_rotation_date IS NOT NULL;
CREATE INDEX keys_deletion_due ON keys (deletion_date) WHERE deletion_date IS NOT NULL;

CREATE TABLE key_versions (
  key_id               TEXT COLLATE "C" NOT NULL REFERENCES keys (key_id) ON DELETE CASCADE,
  version              INTEGER     NOT NULL CHECK (version >= 1),
  created_at           TIMESTAMPTZ NOT NULL,
  key_material_id      TEXT        NOT NULL,
  rotation_type        TEXT,
  rotated_at           TIMESTAMPTZ,
  import_state         TEXT,
  expiration_model     TEXT,
  valid_to             TIMESTAMPTZ,
  material_description TEXT,
  check_value          TEXT,
  custody              TEXT,
  gcm_encryptions      BIGINT      NOT NULL DEFAULT 0,
  PRIMARY KEY (key_id, version)
);
CREATE INDEX key_versions_expiry ON key_versions (valid_to) WHERE valid_to IS NOT NULL;

CREATE TABLE aliases (
  alias_name      TEXT COLLATE "C" NOT NULL PRIMARY KEY,
  target_key_id   TEXT COLLATE "C" NOT NULL REFERENCES keys (key_id) ON DELETE CASCADE,
  created_at      TIMESTAMPTZ NOT NULL,
  last_updated_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX aliases_by_target ON aliases (target_key_id, alias_name);

CREATE TABLE tags (
  key_id    TEXT COLLATE "C" NOT NULL REFERENCES keys (key_id) ON DELETE CASCADE,
  tag_key   TEXT COLLATE "C" NOT NULL,
  tag_value TEXT NOT NULL,
  PRIMARY KEY (key_id, tag_key)
);

-- Operations and constraints are JSON text: read whole, never queried (text keeps them byte-exact).
CREATE TABLE grants (
  grant_id           TEXT COLLATE "C" NOT NULL PRIMARY KEY,
  key_id             TEXT COLLATE "C" NOT NULL REFERENCES keys (key_id) ON DELETE CASCADE,
  name               TEXT,
  grantee_principal  TEXT        NOT NULL,
  retiring_principal TEXT,
  issuing_account    TEXT        NOT NULL,
  operations         TEXT        NOT NULL,
  constraints        TEXT,
  created_at         TIMESTAMPTZ NOT NULL
);
CREATE INDEX grants_by_key ON grants (key_id, grant_id);
CREATE INDEX grants_by_grantee ON grants (key_id, grantee_principal);
CREATE INDEX grants_by_retiring_principal ON grants (retiring_principal, grant_id);

-- No foreign key: the row must outlive its key until the sweeper has destroyed the token objects.
CREATE TABLE import_parameters (
  import_id          TEXT COLLATE "C" NOT NULL PRIMARY KEY,
  key_id             TEXT        NOT NULL,
  wrapping_algorithm TEXT        NOT NULL,
  wrapping_key_spec  TEXT        NOT NULL,
  created_at         TIMESTAMPTZ NOT NULL,
  valid_to           TIMESTAMPTZ NOT NULL
);
CREATE INDEX import_parameters_by_expiry ON import_parameters (valid_to);

CREATE TABLE key_last_usage (
  key_id     TEXT COLLATE "C" NOT NULL PRIMARY KEY REFERENCES keys (key_id) ON DELETE CASCADE,
  operation  TEXT        NOT NULL,
  used_at    TIMESTAMPTZ NOT NULL,
  request_id TEXT        NOT NULL,
  event_id   TEXT
);
`;

// The change log that keeps every node's caches within the consistency bound (changes.ts). Rows
// carry the writing transaction's 64-bit ID: a reader holding the snapshot of its last look asks
// for exactly the rows committed since, whatever order transactions committed in, without any
// lock shared by writers. p11kms_note_changes runs last in every transaction that changes
// something cached; its NOTIFY is delivered at commit.
const CHANGE_LOG_SCHEMA = `
CREATE TABLE change_log (
  xid       XID8        NOT NULL,
  kind      TEXT        NOT NULL,
  entity_id TEXT        NOT NULL,
  at        TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX change_log_by_xid ON change_log (xid);
CREATE INDEX change_log_by_age ON change_log (at);

CREATE FUNCTION p11kms_note_changes(kinds TEXT[], ids TEXT[]) RETURNS void LANGUAGE sql AS $$
  INSERT INTO change_log (xid, kind, entity_id) SELECT pg_current_xact_id(), k, i FROM unnest(kinds, ids) AS c (k, i);
  SELECT pg_notify('p11kms_changes', '');
$$;
`;

// The audit chain registry (every node's chains, newest digest of each) and the token binding: the
// same contracts as SQLite's migrations 6 and 7 (src/store/audit-chains.ts, token-binding.ts).
const ANCHORS_SCHEMA = `
CREATE TABLE audit_chains (
  chain_id                TEXT        NOT NULL PRIMARY KEY,
  opened_at               TIMESTAMPTZ NOT NULL,
  digest_sequence         INTEGER     NOT NULL CHECK (digest_sequence >= 0),
  digest_hash             TEXT,
  record_count            BIGINT      NOT NULL CHECK (record_count >= 0),
  final                   BOOLEAN     NOT NULL,
  signing_key_fingerprint TEXT
);
CREATE TABLE token_binding (
  id              INTEGER     NOT NULL PRIMARY KEY CHECK (id = 1),
  manufacturer_id TEXT        NOT NULL,
  model           TEXT        NOT NULL,
  serial_number   TEXT        NOT NULL,
  label           TEXT        NOT NULL,
  module          TEXT,
  identity        TEXT        NOT NULL,
  bound_at        TIMESTAMPTZ NOT NULL
);
`;

// SQLite migration 8: alias names unique per Region (an existing alias takes its key's Region);
// the primary Region of a multi-Region key on each of its rows.
const REGIONS_SCHEMA = `
ALTER TABLE aliases ADD COLUMN region TEXT COLLATE "C";
UPDATE aliases a SET region = k.region FROM keys k WHERE k.key_id = a.target_key_id;
ALTER TABLE aliases ALTER COLUMN region SET NOT NULL;
ALTER TABLE aliases DROP CONSTRAINT aliases_pkey;
ALTER TABLE aliases ADD PRIMARY KEY (region, alias_name);

ALTER TABLE keys ADD COLUMN primary_region TEXT;
`;

export const POSTGRES_MIGRATIONS: readonly PostgresMigration[] = [
  { version: 1, description: 'keys, versions, aliases, tags, grants, key material lifecycle, key uses', sql: INITIAL_SCHEMA },
  { version: 2, description: 'change log for the caches of several nodes', sql: CHANGE_LOG_SCHEMA },
  { version: 3, description: 'audit chain registry and token binding', sql: ANCHORS_SCHEMA },
  { version: 4, description: 'aliases unique per Region; the primary Region of multi-Region keys', sql: REGIONS_SCHEMA },
  {
    version: 5,
    description: 'key manager: AWS for AWS managed keys, CUSTOMER for every other key',
    sql: "ALTER TABLE keys ADD COLUMN key_manager TEXT NOT NULL DEFAULT 'CUSTOMER' CHECK (key_manager IN ('AWS', 'CUSTOMER'))",
  },
];

/** Highest applied version; 0 for a database that has never been migrated. */
export async function currentSchemaVersion(client: Pick<pg.ClientBase, 'query'>): Promise<number> {
  const exists = await client.query<{ t: string | null }>("SELECT to_regclass('schema_migrations')::text AS t");
  if (exists.rows[0]?.t == null) return 0;
  const { rows } = await client.query<{ v: number | null }>('SELECT MAX(version) AS v FROM schema_migrations');
  return rows[0]?.v ?? 0;
}

/**
 * Brings the database up to the latest of `migrations` under the migration lock; returns the
 * versions this call applied. Throws SchemaTooNewError, without changing anything, when the
 * database is newer than `migrations` knows.
 */
export async function applyPostgresMigrations(
  client: pg.ClientBase,
  database: string,
  migrations: readonly PostgresMigration[] = POSTGRES_MIGRATIONS,
): Promise<number[]> {
  assertStrictlyAscending(migrations);
  const latestKnown = migrations.at(-1)?.version ?? 0;
  await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK.toString()]);
  try {
    await client.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
      version    INTEGER     NOT NULL PRIMARY KEY,
      applied_at TIMESTAMPTZ NOT NULL
    )`);
    const found = await currentSchemaVersion(client);
    if (found > latestKnown) throw schemaTooNew(database, found, latestKnown);
    const applied: number[] = [];
    for (const migration of migrations) {
      if (migration.version <= found) continue;
      await client.query('BEGIN');
      try {
        await client.query(migration.sql);
        await client.query('INSERT INTO schema_migrations (version, applied_at) VALUES ($1, now())', [migration.version]);
        await client.query('COMMIT');
      } catch (err) {
        await client.query('ROLLBACK');
        throw err;
      }
      applied.push(migration.version);
    }
    return applied;
  } finally {
    await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK.toString()]);
  }
}
