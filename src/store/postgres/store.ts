/**
 * The metadata store on PostgreSQL: several service nodes share one database (README "Several
 * nodes"). Uniqueness (key IDs, alias names, grant IDs) is the database's: a race between nodes
 * ends in a unique violation, never in two rows. Key records, aliases and grants are cached per
 * node and kept within CONSISTENCY_BOUND_MS of other nodes' commits by the change feed.
 */
import type pg from 'pg';
import {
  StoreConflictError,
  type AliasRecord,
  type BackingKeyVersionRecord,
  type GrantRecord,
  type KeyRecord,
  type KeyState,
  type KeyUpdate,
  type KeyUseRecord,
  type MetadataStore,
  type TagRecord,
} from '../types.js';
import { MetadataCache, aliasCacheKey } from './cache.js';
import { ChangeFeed } from './changes.js';
import { Database, type DatabaseOptions, type Queryable, type Transaction } from './database.js';
import { PostgresAuditChainRegistry } from './audit-chains.js';
import { PostgresGrantTable } from './grants.js';
import { PostgresTokenBindingStore } from './token-binding.js';
import { PostgresKeyLifecycleStore } from './lifecycle.js';
import { applyPostgresMigrations } from './migrations.js';

export type PostgresStoreOptions = DatabaseOptions;

/** Connects, migrates (once across nodes) and starts following other nodes' changes. */
export async function openPostgresStore(url: string, options: PostgresStoreOptions = {}): Promise<MetadataStore> {
  const db = new Database(url, options);
  try {
    const client = await db.checkout();
    try {
      await applyPostgresMigrations(client, describeDatabase(url));
    } finally {
      client.release();
    }
    const store = new PostgresMetadataStore(db);
    await store.feed.start();
    return store;
  } catch (err) {
    await db.close().catch(() => undefined);
    throw err;
  }
}

/** host:port/database for messages: never the user name or password. */
export function describeDatabase(url: string): string {
  try {
    const u = new URL(url);
    return `postgresql://${u.host}${u.pathname}`;
  } catch {
    return 'postgresql database';
  }
}

const KEY_COLUMNS = `key_id, account_id, region, created_at, description, key_state, key_spec, key_usage, origin, policy,
  current_version, deletion_date, pending_window_days, primary_region, key_manager`;
interface KeyRow {
  key_id: string;
  account_id: string;
  region: string;
  created_at: Date;
  description: string;
  key_state: string;
  key_spec: string;
  key_usage: string;
  origin: string;
  policy: string;
  current_version: number;
  deletion_date: Date | null;
  pending_window_days: number | null;
  primary_region: string | null;
  key_manager: string;
}
const ALIAS_COLUMNS = 'region, alias_name, target_key_id, created_at, last_updated_at';
interface AliasRow {
  region: string;
  alias_name: string;
  target_key_id: string;
  created_at: Date;
  last_updated_at: Date;
}

/** The only columns updateKey may touch, by KeyUpdate member. */
const UPDATABLE_KEY_COLUMNS: Record<keyof KeyUpdate, string> = {
  description: 'description',
  keyState: 'key_state',
  deletionDate: 'deletion_date',
  pendingWindowInDays: 'pending_window_days',
  policy: 'policy',
  currentVersion: 'current_version',
};

const UNIQUE_VIOLATION = '23505';
const FOREIGN_KEY_VIOLATION = '23503';

class PostgresMetadataStore implements MetadataStore {
  readonly lifecycle: PostgresKeyLifecycleStore;
  readonly auditChains: PostgresAuditChainRegistry;
  readonly tokenBinding: PostgresTokenBindingStore;
  readonly feed: ChangeFeed;
  private readonly cache = new MetadataCache();
  private readonly grants = new PostgresGrantTable();
  private closed = false;

  constructor(private readonly db: Database) {
    this.lifecycle = new PostgresKeyLifecycleStore(db);
    this.auditChains = new PostgresAuditChainRegistry(db);
    this.tokenBinding = new PostgresTokenBindingStore(db);
    this.feed = new ChangeFeed(db, this.cache);
    db.onCommitted = (changes) => {
      if (changes.length > 0) this.cache.apply(changes);
    };
  }

  private query<R extends pg.QueryResultRow>(text: string, values?: unknown[]): Promise<pg.QueryResult<R>> {
    if (this.closed) return Promise.reject(new Error('the metadata store is closed'));
    return this.db.query<R>(text, values);
  }

  /** One statement that changes something cached, in its own transaction with its change log. */
  private write<T>(work: (tx: Transaction) => Promise<T>): Promise<T> {
    if (this.closed) return Promise.reject(new Error('the metadata store is closed'));
    return this.db.transaction('READ COMMITTED', work);
  }

  /** A cached read: served from the cache while the change feed is fresh, else from the database. */
  private async cached<K, V>(map: Map<K, V>, key: K, load: () => Promise<V>): Promise<V> {
    const fresh = this.feed.isFresh();
    if (fresh && map.has(key)) return map.get(key)!;
    const generation = this.cache.generation;
    const value = await load();
    if (fresh && generation === this.cache.generation) map.set(key, value);
    return value;
  }

  createKey(key: KeyRecord, version: BackingKeyVersionRecord, tags: TagRecord[]): Promise<void> {
    return this.insertKey(key, version, tags);
  }

  createRegionalKey(key: KeyRecord, tags: TagRecord[]): Promise<void> {
    return this.insertKey(key, undefined, tags);
  }

  /** The key row, its first backing version (none for a Region's row of a multi-Region key) and
   *  its tags, in one transaction. */
  private async insertKey(key: KeyRecord, version: BackingKeyVersionRecord | undefined, tags: TagRecord[]): Promise<void> {
    await this.write(async (tx) => {
      await insertKeyAndVersion(tx, key, version);
      // Plain INSERT: duplicate TagKeys in one request are a caller bug and must not pass silently.
      if (tags.length > 0) {
        await tx.query('INSERT INTO tags (key_id, tag_key, tag_value) SELECT $1, * FROM unnest($2::text[], $3::text[])', [
          key.keyId,
          tags.map((t) => t.TagKey),
          tags.map((t) => t.TagValue),
        ]);
      }
      tx.changed('key', key.keyId);
    });
  }

  async createKeyWithAlias(
    key: KeyRecord,
    version: BackingKeyVersionRecord,
    alias: AliasRecord,
    rotation: { periodInDays: number; nextRotationDate: Date },
  ): Promise<boolean> {
    try {
      await this.write(async (tx) => {
        await insertKeyAndVersion(tx, key, version);
        await tx.query('UPDATE keys SET rotation_period_days = $1, next_rotation_date = $2 WHERE key_id = $3', [
          rotation.periodInDays,
          checkedDate(rotation.nextRotationDate),
          key.keyId,
        ]);
        // A concurrent first use that committed the alias makes this insert a unique violation
        // (or wait for that transaction, then fail): the whole transaction rolls back.
        await tx.query(`INSERT INTO aliases (${ALIAS_COLUMNS}) VALUES ($1, $2, $3, $4, $5)`, [
          alias.region,
          alias.aliasName,
          alias.targetKeyId,
          checkedDate(alias.createdAt),
          checkedDate(alias.lastUpdatedAt),
        ]);
        tx.changed('key', key.keyId);
        tx.changed('alias', aliasCacheKey(alias.region, alias.aliasName));
      });
      return true;
    } catch (err) {
      if (codeOf(err) === UNIQUE_VIOLATION && !(err instanceof StoreConflictError)) return false;
      throw err;
    }
  }

  getKey(keyId: string): Promise<KeyRecord | undefined> {
    return this.cached(this.cache.keys, keyId, async () => {
      const { rows } = await this.query<KeyRow>(`SELECT ${KEY_COLUMNS} FROM keys WHERE key_id = $1`, [keyId]);
      return rows[0] && Object.freeze(rowToKey(rows[0]));
    });
  }

  async multiRegionKeys(keyId: string): Promise<KeyRecord[]> {
    // Rows "<keyId>/<Region>": every ID between "<keyId>/" and "<keyId>0" ('0' follows '/').
    const { rows } = await this.query<KeyRow>(`SELECT ${KEY_COLUMNS} FROM keys WHERE key_id > $1 AND key_id < $2 ORDER BY key_id`, [
      `${keyId}/`,
      `${keyId}0`,
    ]);
    return rows.map(rowToKey);
  }

  async setPrimaryRegion(keyId: string, primaryRegion: string): Promise<void> {
    await this.write(async (tx) => {
      const { rows } = await tx.query<{ key_id: string }>(
        'UPDATE keys SET primary_region = $1 WHERE key_id = $2 OR (key_id > $3 AND key_id < $4) RETURNING key_id',
        [primaryRegion, keyId, `${keyId}/`, `${keyId}0`],
      );
      for (const row of rows) tx.changed('key', row.key_id);
    });
  }

  async listKeys(afterKeyId: string | undefined, limit: number): Promise<KeyRecord[]> {
    assertValidLimit(limit);
    const { rows } = await this.query<KeyRow>(
      `SELECT ${KEY_COLUMNS} FROM keys WHERE $1::text IS NULL OR key_id > $1 ORDER BY key_id LIMIT $2`,
      [afterKeyId ?? null, limit],
    );
    return rows.map(rowToKey);
  }

  async countKeys(): Promise<number> {
    const { rows } = await this.query<{ n: number }>('SELECT COUNT(*)::int AS n FROM keys');
    return rows[0]!.n;
  }

  async updateKey(keyId: string, update: KeyUpdate): Promise<boolean> {
    const assignments: string[] = [];
    const values: unknown[] = [];
    // Walk the whitelist, not the caller's object: unknown members never reach the SQL text.
    for (const [member, column] of Object.entries(UPDATABLE_KEY_COLUMNS) as Array<[keyof KeyUpdate, string]>) {
      const value = update[member];
      if (value === undefined) continue; // absent; null is a real value (e.g. clearing deletionDate)
      values.push(value instanceof Date ? checkedDate(value) : value);
      assignments.push(`${column} = $${values.length}`);
    }
    if (assignments.length === 0) {
      const { rowCount } = await this.query('SELECT 1 FROM keys WHERE key_id = $1', [keyId]);
      return (rowCount ?? 0) > 0;
    }
    return this.write(async (tx) => {
      const { rowCount } = await tx.query(`UPDATE keys SET ${assignments.join(', ')} WHERE key_id = $${values.length + 1}`, [...values, keyId]);
      if (!rowCount) return false;
      tx.changed('key', keyId);
      return true;
    });
  }

  async deleteKey(keyId: string): Promise<void> {
    // key_versions, aliases, tags and grants go with it through ON DELETE CASCADE.
    await this.write(async (tx) => {
      await tx.query('DELETE FROM keys WHERE key_id = $1', [keyId]);
      tx.changed('key-deleted', keyId);
    });
  }

  async listVersions(keyId: string): Promise<BackingKeyVersionRecord[]> {
    const { rows } = await this.query<{ key_id: string; version: number; created_at: Date; key_material_id: string }>(
      'SELECT key_id, version, created_at, key_material_id FROM key_versions WHERE key_id = $1 ORDER BY version',
      [keyId],
    );
    return rows.map((r) => ({ keyId: r.key_id, version: r.version, createdAt: r.created_at, keyMaterialId: r.key_material_id }));
  }

  async listAllVersions(): Promise<Array<{ keyId: string; version: number }>> {
    // Imported material not (or no longer) in the token has no object to compare with.
    const { rows } = await this.query<{ key_id: string; version: number }>(
      "SELECT key_id, version FROM key_versions WHERE import_state IS DISTINCT FROM 'PENDING_IMPORT' ORDER BY key_id, version",
    );
    return rows.map((r) => ({ keyId: r.key_id, version: r.version }));
  }

  async createAlias(alias: AliasRecord): Promise<void> {
    await this.write(async (tx) => {
      try {
        await tx.query(`INSERT INTO aliases (${ALIAS_COLUMNS}) VALUES ($1, $2, $3, $4, $5)`, [
          alias.region,
          alias.aliasName,
          alias.targetKeyId,
          checkedDate(alias.createdAt),
          checkedDate(alias.lastUpdatedAt),
        ]);
      } catch (err) {
        if (codeOf(err) === UNIQUE_VIOLATION) throw new StoreConflictError(`alias ${alias.aliasName} already exists`);
        throw translateMissingKey(err, alias.targetKeyId);
      }
      tx.changed('alias', aliasCacheKey(alias.region, alias.aliasName));
    });
  }

  getAlias(region: string, aliasName: string): Promise<AliasRecord | undefined> {
    return this.cached(this.cache.aliases, aliasCacheKey(region, aliasName), async () => {
      const { rows } = await this.query<AliasRow>(`SELECT ${ALIAS_COLUMNS} FROM aliases WHERE region = $1 AND alias_name = $2`, [region, aliasName]);
      return rows[0] && Object.freeze(rowToAlias(rows[0]));
    });
  }

  async updateAlias(region: string, aliasName: string, targetKeyId: string, at: Date): Promise<boolean> {
    return this.write(async (tx) => {
      try {
        const { rowCount } = await tx.query('UPDATE aliases SET target_key_id = $1, last_updated_at = $2 WHERE region = $3 AND alias_name = $4', [
          targetKeyId,
          checkedDate(at),
          region,
          aliasName,
        ]);
        tx.changed('alias', aliasCacheKey(region, aliasName));
        return (rowCount ?? 0) > 0;
      } catch (err) {
        throw translateMissingKey(err, targetKeyId);
      }
    });
  }

  /** The alias moves only while it still points to the key its authorization was decided on: the
   *  condition is part of the one UPDATE, so a concurrent move on another node makes it a no-op. */
  async updateAliasIfTarget(region: string, aliasName: string, decidedKeyId: string, targetKeyId: string, at: Date): Promise<boolean> {
    return this.write(async (tx) => {
      try {
        const { rowCount } = await tx.query(
          'UPDATE aliases SET target_key_id = $1, last_updated_at = $2 WHERE region = $3 AND alias_name = $4 AND target_key_id = $5',
          [targetKeyId, checkedDate(at), region, aliasName, decidedKeyId],
        );
        tx.changed('alias', aliasCacheKey(region, aliasName));
        return (rowCount ?? 0) > 0;
      } catch (err) {
        throw translateMissingKey(err, targetKeyId);
      }
    });
  }

  async deleteAliasIfTarget(region: string, aliasName: string, decidedKeyId: string): Promise<boolean> {
    return this.write(async (tx) => {
      const { rowCount } = await tx.query('DELETE FROM aliases WHERE region = $1 AND alias_name = $2 AND target_key_id = $3', [
        region,
        aliasName,
        decidedKeyId,
      ]);
      tx.changed('alias', aliasCacheKey(region, aliasName));
      return (rowCount ?? 0) > 0;
    });
  }

  async deleteAlias(region: string, aliasName: string): Promise<boolean> {
    return this.write(async (tx) => {
      const { rowCount } = await tx.query('DELETE FROM aliases WHERE region = $1 AND alias_name = $2', [region, aliasName]);
      tx.changed('alias', aliasCacheKey(region, aliasName));
      return (rowCount ?? 0) > 0;
    });
  }

  async listAliases(filter: { region: string; targetKeyId?: string; afterAliasName?: string; limit: number }): Promise<AliasRecord[]> {
    assertValidLimit(filter.limit);
    const { rows } = await this.query<AliasRow>(
      `SELECT ${ALIAS_COLUMNS} FROM aliases
       WHERE region = $1 AND ($2::text IS NULL OR target_key_id = $2) AND ($3::text IS NULL OR alias_name > $3)
       ORDER BY alias_name LIMIT $4`,
      [filter.region, filter.targetKeyId ?? null, filter.afterAliasName ?? null, filter.limit],
    );
    return rows.map(rowToAlias);
  }

  async countAliasesForKey(keyId: string): Promise<number> {
    const { rows } = await this.query<{ n: number }>('SELECT COUNT(*)::int AS n FROM aliases WHERE target_key_id = $1', [keyId]);
    return rows[0]!.n;
  }

  async listTags(keyId: string): Promise<TagRecord[]> {
    const { rows } = await this.query<{ tag_key: string; tag_value: string }>(
      'SELECT tag_key, tag_value FROM tags WHERE key_id = $1 ORDER BY tag_key',
      [keyId],
    );
    return rows.map((r) => ({ TagKey: r.tag_key, TagValue: r.tag_value }));
  }

  async putTags(keyId: string, tags: TagRecord[]): Promise<void> {
    if (tags.length === 0) return;
    try {
      await this.query(
        `INSERT INTO tags (key_id, tag_key, tag_value) SELECT $1, * FROM unnest($2::text[], $3::text[])
         ON CONFLICT (key_id, tag_key) DO UPDATE SET tag_value = excluded.tag_value`,
        [keyId, tags.map((t) => t.TagKey), tags.map((t) => t.TagValue)],
      );
    } catch (err) {
      throw translateMissingKey(err, keyId);
    }
  }

  async removeTags(keyId: string, tagKeys: string[]): Promise<void> {
    await this.query('DELETE FROM tags WHERE key_id = $1 AND tag_key = ANY($2::text[])', [keyId, tagKeys]);
  }

  async createGrant(grant: GrantRecord): Promise<void> {
    await this.write(async (tx) => {
      try {
        await this.grants.create(tx, grant);
      } catch (err) {
        throw translateMissingKey(err, grant.keyId);
      }
      tx.changed('grants', grant.keyId);
    });
  }

  async getGrant(keyId: string, grantId: string): Promise<GrantRecord | undefined> {
    return this.grants.get(this.reader(), keyId, grantId);
  }

  async listGrants(filter: { keyId: string; grantId?: string; granteePrincipal?: string; afterGrantId?: string; limit: number }): Promise<GrantRecord[]> {
    assertValidLimit(filter.limit);
    return this.grants.list(this.reader(), filter);
  }

  grantsForGrantees(keyId: string, granteePrincipals: string[]): Promise<GrantRecord[]> {
    const grantees = granteePrincipals.join('\n');
    return this.cached(this.byGranteeCache(keyId), grantees, () => this.grants.forGrantees(this.reader(), keyId, granteePrincipals));
  }

  private byGranteeCache(keyId: string): Map<string, GrantRecord[]> {
    let perKey = this.cache.grants.get(keyId);
    if (!perKey) this.cache.grants.set(keyId, (perKey = new Map()));
    return perKey;
  }

  async listRetirableGrants(filter: { retiringPrincipal: string; afterGrantId?: string; limit: number }): Promise<GrantRecord[]> {
    assertValidLimit(filter.limit);
    return this.grants.retirable(this.reader(), filter);
  }

  async grantsNamed(keyId: string, name: string): Promise<GrantRecord[]> {
    return this.grants.named(this.reader(), keyId, name);
  }

  async countGrants(keyId: string): Promise<number> {
    return this.grants.count(this.reader(), keyId);
  }

  async deleteGrant(keyId: string, grantId: string): Promise<boolean> {
    return this.write(async (tx) => {
      const deleted = await this.grants.delete(tx, keyId, grantId);
      if (deleted) tx.changed('grants', keyId);
      return deleted;
    });
  }

  private reader(): Queryable {
    return { query: (text, values) => this.query(text, values) };
  }

  async recordKeyUses(uses: readonly KeyUseRecord[]): Promise<void> {
    // One row per key (ON CONFLICT may touch a row once per statement), in key order so that two
    // nodes flushing at once lock rows in the same order.
    const latest = new Map<string, KeyUseRecord>();
    for (const u of uses) if ((latest.get(u.keyId)?.at.getTime() ?? -Infinity) <= u.at.getTime()) latest.set(u.keyId, u);
    const rows = [...latest.values()].sort((a, b) => (a.keyId < b.keyId ? -1 : 1));
    if (rows.length === 0) return;
    // A key deleted by another node between the join and the insert fails the foreign key: the
    // statement is run again and skips it.
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.upsertKeyUses(rows);
      } catch (err) {
        if (codeOf(err) !== FOREIGN_KEY_VIOLATION || attempt >= 3) throw err;
      }
    }
  }

  private async upsertKeyUses(rows: readonly KeyUseRecord[]): Promise<void> {
    await this.db.transaction('READ COMMITTED', async (tx) => {
      await tx.query(
        `INSERT INTO key_last_usage (key_id, operation, used_at, request_id, event_id)
         SELECT u.key_id, u.operation, u.used_at, u.request_id, u.event_id
           FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[]) AS u (key_id, operation, used_at, request_id, event_id)
           JOIN keys k ON k.key_id = u.key_id
         ON CONFLICT (key_id) DO UPDATE SET operation = excluded.operation, used_at = excluded.used_at,
           request_id = excluded.request_id, event_id = excluded.event_id
         WHERE excluded.used_at >= key_last_usage.used_at`,
        [rows.map((u) => u.keyId), rows.map((u) => u.operation), rows.map((u) => checkedDate(u.at)), rows.map((u) => u.requestId), rows.map((u) => u.eventId ?? null)],
      );
    });
  }

  async getKeyUse(keyId: string): Promise<KeyUseRecord | undefined> {
    const { rows } = await this.query<{ operation: string; used_at: Date; request_id: string; event_id: string | null }>(
      'SELECT operation, used_at, request_id, event_id FROM key_last_usage WHERE key_id = $1',
      [keyId],
    );
    const row = rows[0];
    if (!row) return undefined;
    return { keyId, operation: row.operation, at: row.used_at, requestId: row.request_id, ...(row.event_id === null ? {} : { eventId: row.event_id }) };
  }

  async keyUseTrackingStart(): Promise<Date> {
    const { rows } = await this.query<{ applied_at: Date }>('SELECT applied_at FROM schema_migrations WHERE version = 1');
    return rows[0]?.applied_at ?? new Date(0);
  }

  async ping(): Promise<void> {
    await this.query('SELECT 1');
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.feed.close();
    await this.db.close();
  }
}

function codeOf(err: unknown): string | undefined {
  return (err as { code?: string } | undefined)?.code;
}

/** A foreign-key failure means the key referred to does not exist: say so in a plain Error. */
function translateMissingKey(err: unknown, keyId: string): unknown {
  if (codeOf(err) === FOREIGN_KEY_VIOLATION) return new Error(`key ${keyId} does not exist`, { cause: err });
  return err;
}

function assertValidLimit(limit: number): void {
  if (!Number.isInteger(limit) || limit < 0) throw new RangeError(`invalid page limit: ${limit}`);
}

export function checkedDate(date: Date): Date {
  if (Number.isNaN(date.getTime())) throw new RangeError('invalid Date');
  return date;
}

function keyToRow(key: KeyRecord): unknown[] {
  return [
    key.keyId,
    key.accountId,
    key.region,
    checkedDate(key.createdAt),
    key.description,
    key.keyState,
    key.keySpec,
    key.keyUsage,
    key.origin,
    key.policy,
    key.currentVersion,
    key.deletionDate === null ? null : checkedDate(key.deletionDate),
    key.pendingWindowInDays,
    key.primaryRegion ?? null,
    key.keyManager ?? 'CUSTOMER',
  ];
}

function rowToKey(r: KeyRow): KeyRecord {
  return {
    keyId: r.key_id,
    accountId: r.account_id,
    region: r.region,
    createdAt: r.created_at,
    description: r.description,
    keyState: r.key_state as KeyState,
    keySpec: r.key_spec,
    keyUsage: r.key_usage,
    origin: r.origin,
    policy: r.policy,
    currentVersion: r.current_version,
    deletionDate: r.deletion_date,
    pendingWindowInDays: r.pending_window_days,
    ...(r.primary_region === null ? {} : { primaryRegion: r.primary_region }),
    // Customer managed keys read back exactly as they were written (no keyManager member).
    ...(r.key_manager === 'AWS' ? { keyManager: 'AWS' as const } : {}),
  };
}

/** The key row and its first backing version (none for a Region's row of a multi-Region key):
 *  CreateKey, ReplicateKey and AWS managed keys. */
async function insertKeyAndVersion(tx: Transaction, key: KeyRecord, version: BackingKeyVersionRecord | undefined): Promise<void> {
  try {
    await tx.query(`INSERT INTO keys (${KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)`, keyToRow(key));
  } catch (err) {
    if (codeOf(err) === UNIQUE_VIOLATION) throw new StoreConflictError(`key ${key.keyId} already exists`);
    throw err;
  }
  if (!version) return;
  await tx.query('INSERT INTO key_versions (key_id, version, created_at, key_material_id) VALUES ($1, $2, $3, $4)', [
    version.keyId,
    version.version,
    checkedDate(version.createdAt),
    version.keyMaterialId,
  ]);
}

function rowToAlias(r: AliasRow): AliasRecord {
  return { region: r.region, aliasName: r.alias_name, targetKeyId: r.target_key_id, createdAt: r.created_at, lastUpdatedAt: r.last_updated_at };
}
