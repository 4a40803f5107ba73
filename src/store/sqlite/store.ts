/**
 * The embedded metadata store: one SQLite file, possibly shared by several p11kms processes.
 *
 * better-sqlite3 is synchronous; the methods are async only to satisfy the MetadataStore contract
 * that PostgreSQL also implements. Every statement is prepared once, at open.
 */
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { applyMigrations } from './migrations.js';
import { SqliteAuditChainRegistry } from './audit-chains.js';
import { SqliteKeyLifecycleStore } from './lifecycle.js';
import { SqliteGrantTable } from './grants.js';
import { SqliteTokenBindingStore } from './token-binding.js';
import {
  StoreConflictError,
  type AliasRecord,
  type GrantRecord,
  type BackingKeyVersionRecord,
  type KeyRecord,
  type KeyState,
  type KeyUpdate,
  type KeyUseRecord,
  type MetadataStore,
  type TagRecord,
} from '../types.js';

export { SchemaTooNewError } from './migrations.js';

/** How long a writer waits for another process's write lock before failing with SQLITE_BUSY. */
export const BUSY_TIMEOUT_MS = 5000;
/** Bound on how late getKey sees a commit by another process (P11KMS_WORKERS > 1, CLI tools). */
const KEY_CACHE_RECHECK_MS = 20;
const KEY_CACHE_SIZE = 10_000;

/** Opens (creating and migrating if needed) the store at `file`. */
export async function openSqliteStore(file: string): Promise<MetadataStore> {
  const db = openSqliteDatabase(file);
  try {
    return new SqliteMetadataStore(db);
  } catch (err) {
    db.close();
    throw err;
  }
}

/**
 * Creates the parent directory (0700) and the file (0600) when missing, opens the connection with
 * the store's PRAGMAs and applies pending migrations. Exported for tests and maintenance tools.
 */
export function openSqliteDatabase(file: string): Database.Database {
  createPrivateFileIfMissing(file);
  const db = new Database(file, { timeout: BUSY_TIMEOUT_MS });
  try {
    configureConnection(db);
    applyMigrations(db);
    return db;
  } catch (err) {
    db.close();
    throw err;
  }
}

function createPrivateFileIfMissing(file: string): void {
  const dir = path.dirname(path.resolve(file));
  if (!fs.existsSync(dir)) fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  try {
    // Create it ourselves so it never exists with the umask's wider mode; SQLite gives the -wal and
    // -shm files the same mode as the database file.
    fs.closeSync(fs.openSync(file, 'wx', 0o600));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
}

function configureConnection(db: Database.Database): void {
  db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
  // WAL lets readers in other processes proceed while one process writes.
  const journalMode = db.pragma('journal_mode = WAL', { simple: true });
  if (journalMode !== 'wal') {
    throw new Error(`could not put ${db.name} in WAL mode (got "${String(journalMode)}"); is it on a network filesystem?`);
  }
  // FULL in WAL mode fsyncs the WAL at every commit: a CreateKey is durable before it is acknowledged.
  db.pragma('synchronous = FULL');
  // Off by default in SQLite, per connection: the cascades and the alias → key check depend on it.
  db.pragma('foreign_keys = ON');
}

// Row shapes as SQLite returns them (dates are epoch milliseconds). Keys and aliases are read on
// every Encrypt, so their statements run in raw mode: rows come back as arrays in column order,
// which spares better-sqlite3 building a keyed object per row (about a quarter of getKey's time).
// KeyRow and AliasRow list their members in the order of the *_COLUMN_NAMES next to them.
const KEY_COLUMN_NAMES = [
  'key_id', 'account_id', 'region', 'created_at', 'description', 'key_state', 'key_spec',
  'key_usage', 'origin', 'policy', 'current_version', 'deletion_date', 'pending_window_days',
  'primary_region',
  'key_manager',
] as const;
type KeyRow = [
  keyId: string,
  accountId: string,
  region: string,
  createdAt: number,
  description: string,
  keyState: string,
  keySpec: string,
  keyUsage: string,
  origin: string,
  policy: string,
  currentVersion: number,
  deletionDate: number | null,
  pendingWindowInDays: number | null,
  primaryRegion: string | null,
  keyManager: string,
];

const ALIAS_COLUMN_NAMES = ['region', 'alias_name', 'target_key_id', 'created_at', 'last_updated_at'] as const;
type AliasRow = [region: string, aliasName: string, targetKeyId: string, createdAt: number, lastUpdatedAt: number];

interface VersionRow {
  key_id: string;
  version: number;
  created_at: number;
  key_material_id: string;
}

interface TagRow {
  tag_key: string;
  tag_value: string;
}

type SqlValue = string | number | null;

const KEY_COLUMNS = KEY_COLUMN_NAMES.join(', ');
const ALIAS_COLUMNS = ALIAS_COLUMN_NAMES.join(', ');
const placeholdersFor = (columns: readonly string[]): string => columns.map(() => '?').join(', ');

/** The only columns updateKey may touch, by KeyUpdate member. */
const UPDATABLE_KEY_COLUMNS: Record<keyof KeyUpdate, string> = {
  description: 'description',
  keyState: 'key_state',
  deletionDate: 'deletion_date',
  pendingWindowInDays: 'pending_window_days',
  policy: 'policy',
  currentVersion: 'current_version',
};

class SqliteMetadataStore implements MetadataStore {
  private readonly insertKeyStmt;
  private readonly selectKeyStmt;
  private readonly selectKeysFirstPageStmt;
  private readonly selectKeysAfterStmt;
  private readonly countKeysStmt;
  private readonly keyExistsStmt;
  private readonly deleteKeyStmt;
  /** UPDATE statements by the list of columns they set; at most 2^6 of them. */
  private readonly updateKeyStmts = new Map<string, Database.Statement<SqlValue[]>>();

  private readonly insertVersionStmt;
  private readonly selectVersionsStmt;
  private readonly selectAllVersionsStmt;

  private readonly insertAliasStmt;
  private readonly selectAliasStmt;
  private readonly updateAliasStmt;
  private readonly deleteAliasStmt;
  private readonly updateAliasIfTargetStmt;
  private readonly deleteAliasIfTargetStmt;
  private readonly selectAliasesFirstPageStmt;
  private readonly selectAliasesAfterStmt;
  private readonly selectKeyAliasesFirstPageStmt;
  private readonly selectKeyAliasesAfterStmt;
  private readonly countAliasesForKeyStmt;

  private readonly insertTagStmt;
  private readonly upsertTagStmt;
  private readonly deleteTagStmt;
  private readonly selectTagsStmt;

  private readonly selectOneStmt;
  private readonly grants: SqliteGrantTable;

  private readonly createKeyTx;
  private readonly selectRegionalRowsStmt;
  private readonly setPrimaryRegionStmt;
  private readonly createKeyWithAliasTx;
  private readonly putTagsTx;
  private readonly removeTagsTx;

  readonly lifecycle: SqliteKeyLifecycleStore;
  readonly auditChains: SqliteAuditChainRegistry;
  readonly tokenBinding: SqliteTokenBindingStore;

  /**
   * Decoded key rows by key ID (getKey runs on every Encrypt: ~5-10 us of read transaction, WAL
   * shm locks and row decoding). Valid while this connection made no change (total_changes(), no
   * read transaction, ~0.05 us) and no other connection committed (PRAGMA data_version, checked at
   * most every KEY_CACHE_RECHECK_MS: another process's write is seen that late at most).
   */
  private readonly keyCache = new Map<string, KeyRecord | undefined>();
  private readonly totalChangesStmt;
  private readonly dataVersionStmt;
  private cachedTotalChanges = -1;
  private cachedDataVersion = -1;
  private dataVersionCheckedAt = -Infinity;

  constructor(private readonly db: Database.Database) {
    this.lifecycle = new SqliteKeyLifecycleStore(db);
    this.auditChains = new SqliteAuditChainRegistry(db);
    this.tokenBinding = new SqliteTokenBindingStore(db);
    this.totalChangesStmt = db.prepare<[], number>('SELECT total_changes()').pluck();
    this.dataVersionStmt = db.prepare<[], number>('PRAGMA data_version').pluck();
    this.insertKeyStmt = db.prepare<KeyRow>(
      `INSERT INTO keys (${KEY_COLUMNS}) VALUES (${placeholdersFor(KEY_COLUMN_NAMES)})`,
    );
    const selectKeys = <Params extends unknown[]>(condition: string) =>
      db.prepare<Params, KeyRow>(`SELECT ${KEY_COLUMNS} FROM keys ${condition}`).raw();
    this.selectKeyStmt = selectKeys<[string]>('WHERE key_id = ?');
    this.selectKeysFirstPageStmt = selectKeys<[number]>('ORDER BY key_id LIMIT ?');
    this.selectKeysAfterStmt = selectKeys<[string, number]>('WHERE key_id > ? ORDER BY key_id LIMIT ?');
    this.countKeysStmt = db.prepare<[], number>('SELECT COUNT(*) FROM keys').pluck();
    this.keyExistsStmt = db.prepare<[string], number>('SELECT 1 FROM keys WHERE key_id = ?').pluck();
    this.deleteKeyStmt = db.prepare<[string]>('DELETE FROM keys WHERE key_id = ?');

    this.insertVersionStmt = db.prepare<[VersionRow]>(`INSERT INTO key_versions
      (key_id, version, created_at, key_material_id)
      VALUES (@key_id, @version, @created_at, @key_material_id)`);
    this.selectVersionsStmt = db.prepare<[string], VersionRow>(`SELECT key_id, version, created_at, key_material_id
      FROM key_versions WHERE key_id = ? ORDER BY version`);
    this.selectAllVersionsStmt = db.prepare<[], Pick<VersionRow, 'key_id' | 'version'>>(
      // Imported material not (or no longer) in the token has no object to compare with.
      "SELECT key_id, version FROM key_versions WHERE import_state IS NOT 'PENDING_IMPORT' ORDER BY key_id, version",
    );

    this.insertAliasStmt = db.prepare<AliasRow>(
      `INSERT INTO aliases (${ALIAS_COLUMNS}) VALUES (${placeholdersFor(ALIAS_COLUMN_NAMES)})`,
    );
    const selectAliases = <Params extends unknown[]>(condition: string) =>
      db.prepare<Params, AliasRow>(`SELECT ${ALIAS_COLUMNS} FROM aliases ${condition}`).raw();
    this.selectAliasStmt = selectAliases<[string, string]>('WHERE region = ? AND alias_name = ?');
    this.updateAliasStmt = db.prepare<[string, number, string, string]>(
      'UPDATE aliases SET target_key_id = ?, last_updated_at = ? WHERE region = ? AND alias_name = ?',
    );
    this.deleteAliasStmt = db.prepare<[string, string]>('DELETE FROM aliases WHERE region = ? AND alias_name = ?');
    this.updateAliasIfTargetStmt = db.prepare<[string, number, string, string, string]>(
      'UPDATE aliases SET target_key_id = ?, last_updated_at = ? WHERE region = ? AND alias_name = ? AND target_key_id = ?',
    );
    this.deleteAliasIfTargetStmt = db.prepare<[string, string, string]>(
      'DELETE FROM aliases WHERE region = ? AND alias_name = ? AND target_key_id = ?',
    );
    this.selectAliasesFirstPageStmt = selectAliases<[string, number]>('WHERE region = ? ORDER BY alias_name LIMIT ?');
    this.selectAliasesAfterStmt = selectAliases<[string, string, number]>(
      'WHERE region = ? AND alias_name > ? ORDER BY alias_name LIMIT ?',
    );
    this.selectKeyAliasesFirstPageStmt = selectAliases<[string, string, number]>(
      'WHERE target_key_id = ? AND region = ? ORDER BY alias_name LIMIT ?',
    );
    this.selectKeyAliasesAfterStmt = selectAliases<[string, string, string, number]>(
      'WHERE target_key_id = ? AND region = ? AND alias_name > ? ORDER BY alias_name LIMIT ?',
    );
    this.countAliasesForKeyStmt = db
      .prepare<[string], number>('SELECT COUNT(*) FROM aliases WHERE target_key_id = ?')
      .pluck();

    this.insertTagStmt = db.prepare<[string, string, string]>(
      'INSERT INTO tags (key_id, tag_key, tag_value) VALUES (?, ?, ?)',
    );
    this.upsertTagStmt = db.prepare<[string, string, string]>(`INSERT INTO tags (key_id, tag_key, tag_value)
      VALUES (?, ?, ?) ON CONFLICT (key_id, tag_key) DO UPDATE SET tag_value = excluded.tag_value`);
    this.deleteTagStmt = db.prepare<[string, string]>('DELETE FROM tags WHERE key_id = ? AND tag_key = ?');
    this.selectTagsStmt = db.prepare<[string], TagRow>(
      'SELECT tag_key, tag_value FROM tags WHERE key_id = ? ORDER BY tag_key',
    );

    this.selectOneStmt = db.prepare<[], number>('SELECT 1').pluck();
    this.grants = new SqliteGrantTable(db);

    // The key row, its first backing version (none for a Region's row of a multi-Region key), its tags.
    this.createKeyTx = db.transaction((key: KeyRecord, version: BackingKeyVersionRecord | undefined, tags: TagRecord[]) => {
      try {
        this.insertKeyStmt.run(...keyToRow(key));
      } catch (err) {
        if (isConstraintError(err, 'SQLITE_CONSTRAINT_PRIMARYKEY')) {
          throw new StoreConflictError(`key ${key.keyId} already exists`);
        }
        throw err;
      }
      if (version) this.insertVersionStmt.run(versionToRow(version));
      // Plain INSERT: duplicate TagKeys in one request are a caller bug and must not pass silently.
      for (const tag of tags) this.insertTagStmt.run(key.keyId, tag.TagKey, tag.TagValue);
    });
    this.selectRegionalRowsStmt = selectKeys<[string, string]>('WHERE key_id > ? AND key_id < ? ORDER BY key_id');
    this.setPrimaryRegionStmt = db.prepare<[string, string, string, string]>(
      'UPDATE keys SET primary_region = ? WHERE key_id = ? OR (key_id > ? AND key_id < ?)',
    );
    const setRotationStmt = db.prepare<[number, number, string]>('UPDATE keys SET rotation_period_days = ?, next_rotation_date = ? WHERE key_id = ?');
    this.createKeyWithAliasTx = db.transaction(
      (key: KeyRecord, version: BackingKeyVersionRecord, alias: AliasRecord, rotation: { periodInDays: number; nextRotationDate: Date }): boolean => {
        // The alias first: when it exists, nothing else has been written and nothing needs undoing.
        if (this.selectAliasStmt.get(alias.region, alias.aliasName)) return false;
        this.createKeyTx(key, version, []);
        setRotationStmt.run(rotation.periodInDays, toMillis(rotation.nextRotationDate), key.keyId);
        this.insertAliasStmt.run(...aliasToRow(alias));
        return true;
      },
    );
    this.putTagsTx = db.transaction((keyId: string, tags: TagRecord[]) => {
      for (const tag of tags) this.upsertTagStmt.run(keyId, tag.TagKey, tag.TagValue);
    });
    this.removeTagsTx = db.transaction((keyId: string, tagKeys: string[]) => {
      for (const tagKey of tagKeys) this.deleteTagStmt.run(keyId, tagKey);
    });
  }

  async createKey(key: KeyRecord, version: BackingKeyVersionRecord, tags: TagRecord[]): Promise<void> {
    // IMMEDIATE takes the write lock at BEGIN (waiting up to the busy timeout for other processes),
    // so a transaction never has to upgrade a read snapshot another writer has made stale.
    this.createKeyTx.immediate(key, version, tags);
  }

  async createKeyWithAlias(
    key: KeyRecord,
    version: BackingKeyVersionRecord,
    alias: AliasRecord,
    rotation: { periodInDays: number; nextRotationDate: Date },
  ): Promise<boolean> {
    // IMMEDIATE: the write lock is held from the alias check to the commit, so two processes
    // cannot both find the alias missing.
    return this.createKeyWithAliasTx.immediate(key, version, alias, rotation);
  }

  async getKey(keyId: string): Promise<KeyRecord | undefined> {
    this.validateKeyCache();
    if (this.keyCache.has(keyId)) return this.keyCache.get(keyId);
    const row = this.selectKeyStmt.get(keyId);
    const key = row && Object.freeze(rowToKey(row));
    if (this.keyCache.size >= KEY_CACHE_SIZE) this.keyCache.delete(this.keyCache.keys().next().value!);
    // Misses are not cached: a key created by another process must not stay "not found".
    if (key) this.keyCache.set(keyId, key);
    return key;
  }

  private validateKeyCache(): void {
    const changes = this.totalChangesStmt.get()!;
    if (changes !== this.cachedTotalChanges) {
      this.keyCache.clear();
      this.cachedTotalChanges = changes;
    }
    const now = performance.now();
    if (now - this.dataVersionCheckedAt >= KEY_CACHE_RECHECK_MS) {
      this.dataVersionCheckedAt = now;
      const version = this.dataVersionStmt.get()!;
      if (version !== this.cachedDataVersion) {
        this.keyCache.clear();
        this.cachedDataVersion = version;
      }
    }
  }

  async createRegionalKey(key: KeyRecord, tags: TagRecord[]): Promise<void> {
    this.createKeyTx.immediate(key, undefined, tags);
  }

  async multiRegionKeys(keyId: string): Promise<KeyRecord[]> {
    // Rows "<keyId>/<Region>": every ID between "<keyId>/" and "<keyId>0" ('0' follows '/').
    return this.selectRegionalRowsStmt.all(`${keyId}/`, `${keyId}0`).map(rowToKey);
  }

  async setPrimaryRegion(keyId: string, primaryRegion: string): Promise<void> {
    this.setPrimaryRegionStmt.run(primaryRegion, keyId, `${keyId}/`, `${keyId}0`);
  }

  async listKeys(afterKeyId: string | undefined, limit: number): Promise<KeyRecord[]> {
    assertValidLimit(limit);
    const rows =
      afterKeyId === undefined
        ? this.selectKeysFirstPageStmt.all(limit)
        : this.selectKeysAfterStmt.all(afterKeyId, limit);
    return rows.map(rowToKey);
  }

  async countKeys(): Promise<number> {
    return this.countKeysStmt.get() ?? 0;
  }

  async updateKey(keyId: string, update: KeyUpdate): Promise<boolean> {
    const columns: string[] = [];
    const values: SqlValue[] = [];
    // Walk the whitelist, not the caller's object: unknown members never reach the SQL text.
    for (const [member, column] of Object.entries(UPDATABLE_KEY_COLUMNS) as Array<[keyof KeyUpdate, string]>) {
      const value = update[member];
      if (value === undefined) continue; // absent; null is a real value (e.g. clearing deletionDate)
      columns.push(column);
      values.push(value instanceof Date ? toMillis(value) : value);
    }
    if (columns.length === 0) return this.keyExistsStmt.get(keyId) !== undefined;
    return this.updateKeyStatement(columns).run(...values, keyId).changes > 0;
  }

  private updateKeyStatement(columns: string[]): Database.Statement<SqlValue[]> {
    const cacheKey = columns.join(',');
    let statement = this.updateKeyStmts.get(cacheKey);
    if (!statement) {
      const assignments = columns.map((column) => `${column} = ?`).join(', ');
      statement = this.db.prepare<SqlValue[]>(`UPDATE keys SET ${assignments} WHERE key_id = ?`);
      this.updateKeyStmts.set(cacheKey, statement);
    }
    return statement;
  }

  async deleteKey(keyId: string): Promise<void> {
    // key_versions, aliases and tags go with it through ON DELETE CASCADE.
    this.deleteKeyStmt.run(keyId);
  }

  async listVersions(keyId: string): Promise<BackingKeyVersionRecord[]> {
    return this.selectVersionsStmt.all(keyId).map(rowToVersion);
  }

  async listAllVersions(): Promise<Array<{ keyId: string; version: number }>> {
    return this.selectAllVersionsStmt.all().map((row) => ({ keyId: row.key_id, version: row.version }));
  }

  async createAlias(alias: AliasRecord): Promise<void> {
    try {
      this.insertAliasStmt.run(...aliasToRow(alias));
    } catch (err) {
      if (isConstraintError(err, 'SQLITE_CONSTRAINT_PRIMARYKEY')) {
        throw new StoreConflictError(`alias ${alias.aliasName} already exists`);
      }
      throw translateMissingKey(err, alias.targetKeyId);
    }
  }

  async getAlias(region: string, aliasName: string): Promise<AliasRecord | undefined> {
    const row = this.selectAliasStmt.get(region, aliasName);
    return row && rowToAlias(row);
  }

  async updateAlias(region: string, aliasName: string, targetKeyId: string, at: Date): Promise<boolean> {
    try {
      return this.updateAliasStmt.run(targetKeyId, toMillis(at), region, aliasName).changes > 0;
    } catch (err) {
      throw translateMissingKey(err, targetKeyId);
    }
  }

  async deleteAlias(region: string, aliasName: string): Promise<boolean> {
    return this.deleteAliasStmt.run(region, aliasName).changes > 0;
  }

  async updateAliasIfTarget(region: string, aliasName: string, decidedKeyId: string, targetKeyId: string, at: Date): Promise<boolean> {
    try {
      return this.updateAliasIfTargetStmt.run(targetKeyId, toMillis(at), region, aliasName, decidedKeyId).changes > 0;
    } catch (err) {
      throw translateMissingKey(err, targetKeyId);
    }
  }

  async deleteAliasIfTarget(region: string, aliasName: string, decidedKeyId: string): Promise<boolean> {
    return this.deleteAliasIfTargetStmt.run(region, aliasName, decidedKeyId).changes > 0;
  }

  async listAliases(filter: { region: string; targetKeyId?: string; afterAliasName?: string; limit: number }): Promise<AliasRecord[]> {
    const { region, targetKeyId, afterAliasName, limit } = filter;
    assertValidLimit(limit);
    let rows: AliasRow[];
    if (targetKeyId === undefined) {
      rows =
        afterAliasName === undefined
          ? this.selectAliasesFirstPageStmt.all(region, limit)
          : this.selectAliasesAfterStmt.all(region, afterAliasName, limit);
    } else {
      rows =
        afterAliasName === undefined
          ? this.selectKeyAliasesFirstPageStmt.all(targetKeyId, region, limit)
          : this.selectKeyAliasesAfterStmt.all(targetKeyId, region, afterAliasName, limit);
    }
    return rows.map(rowToAlias);
  }

  async countAliasesForKey(keyId: string): Promise<number> {
    return this.countAliasesForKeyStmt.get(keyId) ?? 0;
  }

  async listTags(keyId: string): Promise<TagRecord[]> {
    return this.selectTagsStmt.all(keyId).map((row) => ({ TagKey: row.tag_key, TagValue: row.tag_value }));
  }

  async putTags(keyId: string, tags: TagRecord[]): Promise<void> {
    try {
      this.putTagsTx.immediate(keyId, tags);
    } catch (err) {
      throw translateMissingKey(err, keyId);
    }
  }

  async removeTags(keyId: string, tagKeys: string[]): Promise<void> {
    this.removeTagsTx.immediate(keyId, tagKeys);
  }

  async createGrant(grant: GrantRecord): Promise<void> {
    try {
      this.grants.create(grant);
    } catch (err) {
      throw translateMissingKey(err, grant.keyId);
    }
  }

  async getGrant(keyId: string, grantId: string): Promise<GrantRecord | undefined> {
    return this.grants.get(keyId, grantId);
  }

  async listGrants(filter: { keyId: string; grantId?: string; granteePrincipal?: string; afterGrantId?: string; limit: number }): Promise<GrantRecord[]> {
    assertValidLimit(filter.limit);
    return this.grants.list(filter);
  }

  async grantsForGrantees(keyId: string, granteePrincipals: string[]): Promise<GrantRecord[]> {
    return granteePrincipals.flatMap((grantee) => this.grants.forGrantee(keyId, grantee));
  }

  async listRetirableGrants(filter: { retiringPrincipal: string; afterGrantId?: string; limit: number }): Promise<GrantRecord[]> {
    assertValidLimit(filter.limit);
    return this.grants.retirable(filter);
  }

  async grantsNamed(keyId: string, name: string): Promise<GrantRecord[]> {
    return this.grants.named(keyId, name);
  }

  async countGrants(keyId: string): Promise<number> {
    return this.grants.count(keyId);
  }

  async deleteGrant(keyId: string, grantId: string): Promise<boolean> {
    return this.grants.delete(keyId, grantId);
  }

  async recordKeyUses(uses: readonly KeyUseRecord[]): Promise<void> {
    const upsert = this.db.prepare(
      `INSERT INTO key_last_usage (key_id, operation, used_at, request_id, event_id)
       SELECT @keyId, @operation, @at, @requestId, @eventId WHERE EXISTS (SELECT 1 FROM keys WHERE key_id = @keyId)
       ON CONFLICT (key_id) DO UPDATE SET operation = excluded.operation, used_at = excluded.used_at,
         request_id = excluded.request_id, event_id = excluded.event_id
       WHERE excluded.used_at >= key_last_usage.used_at`,
    );
    this.db.transaction(() => {
      for (const u of uses) upsert.run({ keyId: u.keyId, operation: u.operation, at: u.at.getTime(), requestId: u.requestId, eventId: u.eventId ?? null });
    }).immediate();
  }

  async getKeyUse(keyId: string): Promise<KeyUseRecord | undefined> {
    const row = this.db
      .prepare<[string], { operation: string; used_at: number; request_id: string; event_id: string | null }>(
        'SELECT operation, used_at, request_id, event_id FROM key_last_usage WHERE key_id = ?',
      )
      .get(keyId);
    if (!row) return undefined;
    return { keyId, operation: row.operation, at: new Date(row.used_at), requestId: row.request_id, ...(row.event_id === null ? {} : { eventId: row.event_id }) };
  }

  async keyUseTrackingStart(): Promise<Date> {
    const appliedAt = this.db.prepare<[], number>('SELECT applied_at FROM schema_migrations WHERE version = 5').pluck().get();
    return new Date(appliedAt ?? 0);
  }

  async ping(): Promise<void> {
    this.selectOneStmt.get();
  }

  async close(): Promise<void> {
    if (this.db.open) this.db.close();
  }
}

function isConstraintError(err: unknown, code: string): boolean {
  return err instanceof Database.SqliteError && err.code === code;
}

/** A foreign-key failure means the key referred to does not exist: say so in a plain Error. */
function translateMissingKey(err: unknown, keyId: string): unknown {
  if (isConstraintError(err, 'SQLITE_CONSTRAINT_FOREIGNKEY')) {
    return new Error(`key ${keyId} does not exist`, { cause: err });
  }
  return err;
}

function assertValidLimit(limit: number): void {
  // SQLite reads a negative LIMIT as "no limit"; never let that through by accident.
  if (!Number.isInteger(limit) || limit < 0) throw new RangeError(`invalid page limit: ${limit}`);
}

function toMillis(date: Date): number {
  const millis = date.getTime();
  if (Number.isNaN(millis)) throw new RangeError('invalid Date');
  return millis;
}

function keyToRow(key: KeyRecord): KeyRow {
  return [
    key.keyId,
    key.accountId,
    key.region,
    toMillis(key.createdAt),
    key.description,
    key.keyState,
    key.keySpec,
    key.keyUsage,
    key.origin,
    key.policy,
    key.currentVersion,
    key.deletionDate === null ? null : toMillis(key.deletionDate),
    key.pendingWindowInDays,
    key.primaryRegion ?? null,
    key.keyManager ?? 'CUSTOMER',
  ];
}

function rowToKey([
  keyId,
  accountId,
  region,
  createdAt,
  description,
  keyState,
  keySpec,
  keyUsage,
  origin,
  policy,
  currentVersion,
  deletionDate,
  pendingWindowInDays,
  primaryRegion,
  keyManager,
]: KeyRow): KeyRecord {
  return {
    keyId,
    accountId,
    region,
    createdAt: new Date(createdAt),
    description,
    keyState: keyState as KeyState,
    keySpec,
    keyUsage,
    origin,
    policy,
    currentVersion,
    deletionDate: deletionDate === null ? null : new Date(deletionDate),
    pendingWindowInDays,
    ...(primaryRegion === null ? {} : { primaryRegion }),
    // Customer managed keys read back exactly as they were written (no keyManager member).
    ...(keyManager === 'AWS' ? { keyManager: 'AWS' as const } : {}),
  };
}

function versionToRow(version: BackingKeyVersionRecord): VersionRow {
  return {
    key_id: version.keyId,
    version: version.version,
    created_at: toMillis(version.createdAt),
    key_material_id: version.keyMaterialId,
  };
}

function rowToVersion(row: VersionRow): BackingKeyVersionRecord {
  return {
    keyId: row.key_id,
    version: row.version,
    createdAt: new Date(row.created_at),
    keyMaterialId: row.key_material_id,
  };
}

function aliasToRow(alias: AliasRecord): AliasRow {
  return [alias.region, alias.aliasName, alias.targetKeyId, toMillis(alias.createdAt), toMillis(alias.lastUpdatedAt)];
}

function rowToAlias([region, aliasName, targetKeyId, createdAt, lastUpdatedAt]: AliasRow): AliasRecord {
  return { region, aliasName, targetKeyId, createdAt: new Date(createdAt), lastUpdatedAt: new Date(lastUpdatedAt) };
}
