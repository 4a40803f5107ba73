/**
 * The MetadataStore contract on a real PostgreSQL server started by this file, and what only
 * PostgreSQL has: migrations under an advisory lock with several nodes starting at once, TLS as
 * the URL asks, uniqueness and claims decided by the database across stores, the caches of
 * several stores within the consistency bound, and a database that goes away and comes back.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.js';
import { SchemaTooNewError } from '../src/store/open.js';
import { CONSISTENCY_BOUND_MS } from '../src/store/postgres/changes.js';
import { Database } from '../src/store/postgres/database.js';
import { POSTGRES_MIGRATIONS } from '../src/store/postgres/migrations.js';
import { openPostgresStore } from '../src/store/postgres/store.js';
import { StoreConflictError, StoreUnavailableError, type KeyRecord, type MetadataStore } from '../src/store/types.js';
import { startPostgres, type PostgresServer } from './helpers/postgres.js';
import { describeStoreContract } from './store/contract.js';

const REGION = 'eu-west-1';

let server: PostgresServer;
beforeAll(async () => {
  server = await startPostgres();
}, 120_000);
afterAll(async () => {
  await server?.stop();
});

async function withClient<T>(url: string, use: (c: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client(url);
  await client.connect();
  try {
    return await use(client);
  } finally {
    await client.end();
  }
}

describeStoreContract({
  name: 'PostgreSQL',
  otherStoreVisibleWithinMs: CONSISTENCY_BOUND_MS,
  latestSchemaVersion: POSTGRES_MIGRATIONS.length,
  async fresh() {
    const url = await server.createDatabase();
    const sql = (text: string, values?: unknown[]) => withClient(url, (c) => c.query(text, values));
    return {
      store: await openPostgresStore(url),
      openAnother: () => openPostgresStore(url),
      insertVersionRow: async (keyId, version, createdAt, keyMaterialId) =>
        void (await sql('INSERT INTO key_versions (key_id, version, created_at, key_material_id) VALUES ($1, $2, $3, $4)', [keyId, version, new Date(createdAt), keyMaterialId])),
      countRows: async (table, keyId) =>
        (await sql(`SELECT COUNT(*)::int AS n FROM ${table} WHERE ${table === 'aliases' ? 'target_key_id' : 'key_id'} = $1`, [keyId])).rows[0].n as number,
      recordSchemaVersion: async (version) => void (await sql('INSERT INTO schema_migrations (version, applied_at) VALUES ($1, now())', [version])),
      schemaVersion: async () => (await sql('SELECT MAX(version) AS v FROM schema_migrations')).rows[0].v as number,
      dispose: async () => {},
    };
  },
});

function makeKey(keyId: string, overrides: Partial<KeyRecord> = {}): KeyRecord {
  return {
    keyId,
    accountId: '111122223333',
    region: 'us-east-1',
    createdAt: new Date(1_700_000_000_123),
    description: `key ${keyId}`,
    keyState: 'Enabled',
    keySpec: 'SYMMETRIC_DEFAULT',
    keyUsage: 'ENCRYPT_DECRYPT',
    origin: 'AWS_KMS',
    policy: '{}',
    currentVersion: 1,
    deletionDate: null,
    pendingWindowInDays: null,
    ...overrides,
  };
}
const version1 = (keyId: string) => ({ keyId, version: 1, createdAt: new Date(1_700_000_000_456), keyMaterialId: 'a'.repeat(64) });

async function openNodes(url: string, n: number): Promise<MetadataStore[]> {
  return Promise.all(Array.from({ length: n }, () => openPostgresStore(url)));
}
const closeAll = (stores: MetadataStore[]) => Promise.all(stores.map((s) => s.close()));

describe('PostgreSQL migrations', () => {
  it('several nodes starting together on an empty database migrate it exactly once', async () => {
    const url = await server.createDatabase();
    const nodes = await openNodes(url, 4);
    try {
      const rows = await withClient(url, async (c) => (await c.query('SELECT version FROM schema_migrations ORDER BY version')).rows);
      expect(rows.map((r) => r.version)).toEqual(POSTGRES_MIGRATIONS.map((m) => m.version));
    } finally {
      await closeAll(nodes);
    }
  });

  it('a failing migration leaves no trace and the next start applies it', async () => {
    const url = await server.createDatabase();
    const { applyPostgresMigrations } = await import('../src/store/postgres/migrations.js');
    const broken = { version: POSTGRES_MIGRATIONS.length + 1, description: 'fails half way', sql: 'CREATE TABLE half_done (x INT); INSERT INTO no_such_table VALUES (1);' };
    await withClient(url, async (c) => {
      await expect(applyPostgresMigrations(c, 'test', [...POSTGRES_MIGRATIONS, broken])).rejects.toThrow(/no_such_table/);
      expect((await c.query("SELECT to_regclass('half_done') AS t")).rows[0].t).toBeNull();
      expect((await c.query('SELECT MAX(version) AS v FROM schema_migrations')).rows[0].v).toBe(POSTGRES_MIGRATIONS.length);
      const fixed = { ...broken, sql: 'CREATE TABLE half_done (x INT)' };
      expect(await applyPostgresMigrations(c, 'test', [...POSTGRES_MIGRATIONS, fixed])).toEqual([fixed.version]);
      expect(await applyPostgresMigrations(c, 'test', [...POSTGRES_MIGRATIONS, fixed])).toEqual([]);
      // The migration lock is a session lock: it must have been released.
      expect((await c.query("SELECT COUNT(*)::int AS n FROM pg_locks WHERE locktype = 'advisory'")).rows[0].n).toBe(0);
    });
  });

  it("migration 4 gives every existing alias its key's Region, then names may repeat across Regions", async () => {
    const url = await server.createDatabase();
    const { applyPostgresMigrations } = await import('../src/store/postgres/migrations.js');
    await withClient(url, async (c) => {
      await applyPostgresMigrations(c, 'test', POSTGRES_MIGRATIONS.filter((m) => m.version <= 3));
      await c.query(
        `INSERT INTO keys (key_id, account_id, region, created_at, description, key_state, key_spec, key_usage, origin, policy, current_version)
         VALUES ('k-eu', '111122223333', 'eu-west-1', now(), '', 'Enabled', 'SYMMETRIC_DEFAULT', 'ENCRYPT_DECRYPT', 'AWS_KMS', '{}', 1)`,
      );
      await c.query("INSERT INTO aliases (alias_name, target_key_id, created_at, last_updated_at) VALUES ('alias/old', 'k-eu', now(), now())");
      expect(await applyPostgresMigrations(c, 'test', POSTGRES_MIGRATIONS)).toEqual(POSTGRES_MIGRATIONS.filter((m) => m.version >= 4).map((m) => m.version));
    });
    const upgraded = await openPostgresStore(url);
    try {
      expect(await upgraded.getAlias('eu-west-1', 'alias/old')).toMatchObject({ region: 'eu-west-1', targetKeyId: 'k-eu' });
      expect(await upgraded.getAlias('us-east-1', 'alias/old')).toBeUndefined();
      await upgraded.createAlias({ region: 'us-east-1', aliasName: 'alias/old', targetKeyId: 'k-eu', createdAt: new Date(), lastUpdatedAt: new Date() });
      expect((await upgraded.getAlias('us-east-1', 'alias/old'))?.targetKeyId).toBe('k-eu');
    } finally {
      await upgraded.close();
    }
  });

  it('refuses a schema newer than this code, leaving it as it is', async () => {
    const url = await server.createDatabase();
    await (await openPostgresStore(url)).close();
    await withClient(url, (c) => c.query('INSERT INTO schema_migrations (version, applied_at) VALUES (99, now())'));
    await expect(openPostgresStore(url)).rejects.toBeInstanceOf(SchemaTooNewError);
    await expect(openPostgresStore(url)).rejects.toThrow(/schema version 99/);
  });
});

describe('configuration', () => {
  it('P11KMS_DATABASE_URL or _FILE selects PostgreSQL; a bad value is refused without repeating it', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'p11kms-dburl-'));
    try {
      const file = path.join(dir, 'url');
      fs.writeFileSync(file, 'postgresql://kms:s3cret@db.internal:5432/kms\n', { mode: 0o600 });
      const fromFile = loadConfig({ P11KMS_DATA_DIR: dir, P11KMS_DATABASE_URL_FILE: file });
      expect(fromFile.database).toEqual({ kind: 'postgres', url: 'postgresql://kms:s3cret@db.internal:5432/kms' });
      expect(fromFile.token.sharedAcrossProcesses).toBe(true); // nodes on one database share one token
      expect(loadConfig({ P11KMS_DATA_DIR: dir }).database).toEqual({ kind: 'sqlite', file: path.join(dir, 'p11kms.db') });

      const refusal = (env: Record<string, string>) => {
        try {
          loadConfig({ P11KMS_DATA_DIR: dir, ...env });
        } catch (e) {
          return (e as Error).message;
        }
        throw new Error('accepted');
      };
      const bad = refusal({ P11KMS_DATABASE_URL: 'mysql://kms:s3cret@db/kms' });
      expect(bad).toMatch(/P11KMS_DATABASE_URL/);
      expect(bad).not.toContain('s3cret');
      expect(refusal({ P11KMS_DATABASE_URL: 'postgres://a@b/c', P11KMS_DATABASE_URL_FILE: file })).toMatch(/not both/);
      fs.writeFileSync(file, 'http://kms:s3cret@db/kms');
      const badFile = refusal({ P11KMS_DATABASE_URL_FILE: file });
      expect(badFile).toMatch(/P11KMS_DATABASE_URL_FILE/);
      expect(badFile).not.toContain('s3cret');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('connection settings', () => {
  it('honours sslmode: a URL asking for TLS refuses a server without it', async () => {
    const url = await server.createDatabase();
    const failure = await openPostgresStore(`${url}?sslmode=require`).then(
      (s) => s.close().then(() => undefined),
      (e: unknown) => e as Error,
    );
    expect(failure).toBeInstanceOf(Error);
    expect(failure!.message).toMatch(/SSL/i);
    await (await openPostgresStore(`${url}?sslmode=disable`)).close();
  });

  it('a database that cannot be reached is StoreUnavailableError, without the password in the message', async () => {
    const url = (await server.createDatabase()).replace(`:${server.port}/`, ':1/');
    const failure = await openPostgresStore(url).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(failure).toBeInstanceOf(StoreUnavailableError);
    const password = new URL(url).password;
    expect(failure!.message).not.toContain(password);
  });
});

describe('several nodes on one database', () => {
  it('concurrent CreateAlias of one name on three nodes: exactly one wins', async () => {
    const url = await server.createDatabase();
    const nodes = await openNodes(url, 3);
    try {
      await nodes[0]!.createKey(makeKey('k1'), version1('k1'), []);
      for (let round = 0; round < 10; round++) {
        const name = `alias/race-${round}`;
        const results = await Promise.allSettled(
          nodes.map((n) => n.createAlias({ region: REGION, aliasName: name, targetKeyId: 'k1', createdAt: new Date(), lastUpdatedAt: new Date() })),
        );
        expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
        for (const r of results) if (r.status === 'rejected') expect(r.reason).toBeInstanceOf(StoreConflictError);
      }
    } finally {
      await closeAll(nodes);
    }
  });

  it('claims: three nodes claiming due work at once never get the same key; a lapsed claim is taken over', async () => {
    const url = await server.createDatabase();
    const nodes = await openNodes(url, 3);
    try {
      const past = new Date(Date.now() - 1000);
      for (let i = 0; i < 60; i++) {
        const keyId = `k${String(i).padStart(2, '0')}`;
        await nodes[0]!.createKey(makeKey(keyId, { keyState: 'PendingDeletion', deletionDate: past }), version1(keyId), []);
      }
      const now = new Date();
      const claims = await Promise.all(
        nodes.map((n, i) => n.lifecycle.claimDue('deletion', { id: `node-${i}`, now, until: new Date(now.getTime() + 60_000) }, 25)),
      );
      const all = claims.flat();
      expect(new Set(all).size).toBe(all.length);
      expect(all.length).toBe(60);
      // Nothing is left for a fourth claimant while the leases run...
      expect(await nodes[0]!.lifecycle.claimDue('deletion', { id: 'late', now, until: new Date(now.getTime() + 60_000) }, 100)).toEqual([]);
      // ...and once they lapse (the claimants died), the work is handed out again, once.
      const later = new Date(now.getTime() + 61_000);
      const retaken = await Promise.all(nodes.map((n, i) => n.lifecycle.claimDue('deletion', { id: `again-${i}`, now: later, until: new Date(later.getTime() + 60_000) }, 100)));
      expect(retaken.flat().sort()).toEqual([...all].sort());
      // A lapsed claimant can no longer delete under its old claim.
      expect(await nodes[0]!.lifecycle.deleteKeyUnderClaim(claims[0]![0]!, 'node-0')).toBe(false);
    } finally {
      await closeAll(nodes);
    }
  });

  it('a rotation is committed once when two nodes race for one key', async () => {
    const url = await server.createDatabase();
    const nodes = await openNodes(url, 3);
    try {
      await nodes[0]!.createKey(makeKey('k1'), version1('k1'), []);
      const now = new Date();
      const until = new Date(now.getTime() + 60_000);
      const won = await Promise.all(nodes.map((n, i) => n.lifecycle.claimKey('k1', 'rotation', { id: `c${i}`, now, until })));
      expect(won.filter(Boolean)).toHaveLength(1);
      const winner = won.indexOf(true);
      const material = { ...version1('k1'), version: 2, keyMaterialId: 'b'.repeat(64), rotationType: 'ON_DEMAND' as const, rotatedAt: now, importState: null, expirationModel: null, validTo: null, description: null, checkValue: null, custody: null };
      const commits = await Promise.all(nodes.map((n, i) => n.lifecycle.commitRotation('k1', `c${i}`, 1, material)));
      expect(commits).toEqual(nodes.map((_, i) => i === winner));
      expect((await nodes[2]!.listVersions('k1')).map((v) => v.version)).toEqual([1, 2]);
    } finally {
      await closeAll(nodes);
    }
  });

  it('AES-GCM counts added by several nodes at once all count', async () => {
    const url = await server.createDatabase();
    const nodes = await openNodes(url, 3);
    try {
      await nodes[0]!.createKey(makeKey('k1'), version1('k1'), []);
      await nodes[0]!.createKey(makeKey('k2'), version1('k2'), []);
      await Promise.all(
        nodes.flatMap((n) =>
          Array.from({ length: 10 }, () => n.lifecycle.addGcmEncryptions([{ keyId: 'k2', version: 1, count: 3 }, { keyId: 'k1', version: 1, count: 1 }])),
        ),
      );
      const totals = await nodes[0]!.lifecycle.addGcmEncryptions([{ keyId: 'k1', version: 1, count: 0 }, { keyId: 'k2', version: 1, count: 0 }]);
      expect(totals).toEqual([{ keyId: 'k1', version: 1, count: 30 }, { keyId: 'k2', version: 1, count: 90 }]);
    } finally {
      await closeAll(nodes);
    }
  });

  it("a change on one node reaches the others' caches well within the bound (NOTIFY), misses included", async () => {
    const url = await server.createDatabase();
    const [a, b] = await openNodes(url, 2);
    try {
      await a!.createKey(makeKey('k1'), version1('k1'), []);
      expect((await b!.getKey('k1'))?.keyState).toBe('Enabled'); // cached on b
      expect(await b!.getAlias(REGION, 'alias/x')).toBeUndefined(); // a cached miss
      const grantee = 'arn:aws:iam::111122223333:user/alice';
      expect(await b!.grantsForGrantees('k1', [grantee])).toEqual([]);

      await a!.updateKey('k1', { keyState: 'Disabled' });
      await a!.createAlias({ region: REGION, aliasName: 'alias/x', targetKeyId: 'k1', createdAt: new Date(), lastUpdatedAt: new Date() });
      await a!.createGrant({ grantId: 'g'.repeat(64), keyId: 'k1', name: null, granteePrincipal: grantee, retiringPrincipal: null, issuingAccount: 'arn:aws:iam::111122223333:root', operations: ['Decrypt'], constraints: null, createdAt: new Date() });
      const changedAt = performance.now();
      for (;;) {
        const key = await b!.getKey('k1');
        const alias = await b!.getAlias(REGION, 'alias/x');
        const grants = await b!.grantsForGrantees('k1', [grantee]);
        if (key?.keyState === 'Disabled' && alias !== undefined && grants.length === 1) break;
        expect(performance.now() - changedAt).toBeLessThan(CONSISTENCY_BOUND_MS);
        await new Promise((r) => setTimeout(r, 5));
      }
      console.log(`change seen on the other node after ${(performance.now() - changedAt).toFixed(1)} ms`);
      // Deleting the key takes its aliases and grants with it, on every node.
      await a!.deleteKey('k1');
      await new Promise((r) => setTimeout(r, CONSISTENCY_BOUND_MS));
      expect(await b!.getKey('k1')).toBeUndefined();
      expect(await b!.getAlias(REGION, 'alias/x')).toBeUndefined();
      expect(await b!.grantsForGrantees('k1', [grantee])).toEqual([]);
    } finally {
      await closeAll([a!, b!]);
    }
  });

  it('without notifications (LISTEN connection killed), the poll still brings changes within the bound', async () => {
    const url = await server.createDatabase();
    const [a, b] = await openNodes(url, 2);
    try {
      await a!.createKey(makeKey('k1'), version1('k1'), []);
      expect((await b!.getKey('k1'))?.keyState).toBe('Enabled');
      // Terminate every LISTEN connection on this database: notifications are lost until they reconnect.
      const dbName = new URL(url).pathname.slice(1);
      await withClient(server.adminUrl, (c) =>
        c.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND query = 'LISTEN p11kms_changes'", [dbName]),
      );
      await a!.updateKey('k1', { keyState: 'Disabled' });
      const changedAt = performance.now();
      while ((await b!.getKey('k1'))?.keyState !== 'Disabled') {
        expect(performance.now() - changedAt).toBeLessThan(CONSISTENCY_BOUND_MS);
        await new Promise((r) => setTimeout(r, 5));
      }
    } finally {
      await closeAll([a!, b!]);
    }
  });
});

describe('the database going away', () => {
  it('cached reads stop being served after the bound; requests fail as unavailable; the store reconnects by itself', async () => {
    const own = await startPostgres({ durable: true }); // an immediate stop must not lose commits
    try {
      const url = await own.createDatabase();
      const store = await openPostgresStore(url);
      try {
        await store.createKey(makeKey('k1'), version1('k1'), []);
        expect(await store.getKey('k1')).toBeDefined();
        own.stopServer('immediate');
        const stoppedAt = performance.now();
        // Within the bound the cached record still answers (Encrypt of a known key keeps working)...
        expect(await store.getKey('k1')).toBeDefined();
        // ...after it, the store must ask the database, which is down: retryable, never stale.
        await new Promise((r) => setTimeout(r, CONSISTENCY_BOUND_MS + 50 - (performance.now() - stoppedAt)));
        await expect(store.getKey('k1')).rejects.toBeInstanceOf(StoreUnavailableError);
        await expect(store.ping()).rejects.toBeInstanceOf(StoreUnavailableError);
        await expect(store.updateKey('k1', { description: 'x' })).rejects.toBeInstanceOf(StoreUnavailableError);

        own.startServer();
        const restartedAt = performance.now();
        for (;;) {
          try {
            await store.ping();
            break;
          } catch {
            expect(performance.now() - restartedAt).toBeLessThan(10_000);
            await new Promise((r) => setTimeout(r, 50));
          }
        }
        expect(await store.updateKey('k1', { description: 'after the restart' })).toBe(true);
        expect((await store.getKey('k1'))?.description).toBe('after the restart');
        console.log(`store usable again ${(performance.now() - restartedAt).toFixed(0)} ms after the server restarted`);

        // A connection that drops while checked out between two statements of a transaction must
        // not end the process (an unhandled 'error' event on its client would), only fail.
        const db = new Database(url);
        try {
          const client = await db.checkout();
          await client.query('BEGIN');
          own.stopServer('immediate');
          await new Promise((r) => setTimeout(r, 300));
          await expect(client.query('SELECT 1')).rejects.toThrow();
          client.release(true);
          own.startServer();
        } finally {
          await db.close();
        }
      } finally {
        await store.close();
      }
    } finally {
      await own.stop();
    }
  });

  it('a transaction on a pooled connection that stopped answering, with the database still unreachable, fails as unavailable', async () => {
    const own = await startPostgres();
    try {
      const db = new Database(await own.createDatabase(), { queryTimeoutMs: 300 });
      try {
        await db.transaction('READ COMMITTED', (tx) => tx.query('SELECT 1')); // leaves a pooled connection
        own.freeze();
        try {
          // BEGIN times out on the pooled connection and a fresh one cannot be had either: the
          // dead connection is discarded once and the caller hears "retry", not an internal error.
          await expect(db.transaction('READ COMMITTED', (tx) => tx.query('SELECT 1'))).rejects.toBeInstanceOf(StoreUnavailableError);
        } finally {
          own.thaw();
        }
        const after = await db.transaction('READ COMMITTED', (tx) => tx.query<{ n: number }>('SELECT 1 AS n'));
        expect(after.rows[0]!.n).toBe(1);
      } finally {
        await db.close();
      }
    } finally {
      await own.stop();
    }
  });
});
