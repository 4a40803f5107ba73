/**
 * The PostgreSQL connection pool and transactions for the store: isolation levels, retries on
 * serialization failures and deadlocks, the change log written in the same transaction as the
 * change (changes.ts reads it), and the translation of connection failures into
 * StoreUnavailableError.
 */
import pg from 'pg';
import { StoreUnavailableError } from '../types.js';

/** A connection, the pool or a transaction: something to send one statement to. */
export interface Queryable {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  query<R extends pg.QueryResultRow = any>(text: string, values?: unknown[]): Promise<pg.QueryResult<R>>;
}
export type Isolation = 'READ COMMITTED' | 'REPEATABLE READ' | 'SERIALIZABLE';

/** What one transaction changed, by cache: the change log rows it writes and what this node
 *  invalidates at once after the commit. */
export type ChangeKind = 'key' | 'key-deleted' | 'alias' | 'grants';
export interface Change {
  kind: ChangeKind;
  id: string;
}

export interface Transaction extends Queryable {
  /** Records that the transaction changed something other nodes may have cached. */
  changed(kind: ChangeKind, id: string): void;
}

/** SQLSTATEs after which the whole transaction is simply run again. */
const RETRYABLE = new Set(['40001', '40P01']); // serialization_failure, deadlock_detected
const MAX_ATTEMPTS = 8;

/** Error codes (node's and PostgreSQL's) that mean "the database is not reachable right now". */
const UNAVAILABLE_ERRNOS = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN', 'ENOENT']);
const UNAVAILABLE_SQLSTATES = new Set([
  '57P01', // admin_shutdown
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now (starting up, recovering)
  '53300', // too_many_connections
  '25006', // read_only_sql_transaction: connected to a standby during a failover
]);

export function isUnavailable(err: unknown): boolean {
  if (err instanceof StoreUnavailableError) return true;
  if (!(err instanceof Error)) return false;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' && (UNAVAILABLE_ERRNOS.has(code) || UNAVAILABLE_SQLSTATES.has(code) || code.startsWith('08'))) return true;
  // node-postgres' own wording for a dropped connection or a pool that could not connect in time.
  return /Connection terminated|connection timeout|timeout exceeded when trying to connect|Client has encountered a connection error|Query read timeout/i.test(err.message);
}

/** Connection failures become StoreUnavailableError (retryable); anything else passes unchanged. */
export function translateUnavailable(err: unknown): unknown {
  if (err instanceof StoreUnavailableError || !isUnavailable(err)) return err;
  return new StoreUnavailableError(`metadata database unavailable: ${(err as Error).message}`, { cause: err });
}

export interface DatabaseOptions {
  /** Connections in the pool. */
  poolSize?: number;
  /** How long a query may take before the store gives up on it (a partitioned database). */
  queryTimeoutMs?: number;
}

export class Database {
  readonly pool: pg.Pool;
  /** Called after every commit with what it changed (the cache invalidates at once). */
  onCommitted: (changes: readonly Change[]) => void = () => {};

  constructor(
    readonly url: string,
    options: DatabaseOptions = {},
  ) {
    this.pool = new pg.Pool({
      ...connectionSettings(url),
      max: options.poolSize ?? 10,
      connectionTimeoutMillis: 3000,
      idleTimeoutMillis: 30_000,
      query_timeout: options.queryTimeoutMs ?? 10_000,
    });
    // An idle connection dropped by the server (restart, failover) must not crash the process;
    // the pool replaces it on the next checkout.
    this.pool.on('error', () => {});
  }

  async query<R extends pg.QueryResultRow = pg.QueryResultRow>(text: string, values?: unknown[]): Promise<pg.QueryResult<R>> {
    try {
      return await this.pool.query<R>(text, values);
    } catch (err) {
      // A pooled connection the server dropped (restart, failover) may only show it now; a read
      // is safely sent once more, on a fresh connection. A write may have committed: never resent.
      if (isUnavailable(err) && /^\s*(SELECT|WITH)\b/i.test(text) && !/\bFOR UPDATE\b|\b(INSERT|UPDATE|DELETE)\b/i.test(text)) {
        try {
          return await this.pool.query<R>(text, values);
        } catch (again) {
          throw translateUnavailable(again);
        }
      }
      throw translateUnavailable(err);
    }
  }

  /**
   * Runs `work` in one transaction at `isolation`, again from the start on a serialization
   * failure or a deadlock (with a short random pause, so racing nodes fall out of step). The
   * change log rows and the NOTIFY go in the same transaction, so other nodes learn of the change
   * exactly when it commits.
   */
  async transaction<T>(isolation: Isolation, work: (tx: Transaction) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      const client = await this.begin(isolation);
      const changes: Change[] = [];
      const tx: Transaction = {
        query: (text, values) => client.query(text, values),
        changed: (kind, id) => void changes.push({ kind, id }),
      };
      let broken = false;
      try {
        const result = await work(tx);
        if (changes.length > 0) await noteChanges(client, changes);
        await client.query('COMMIT');
        this.onCommitted(changes);
        return result;
      } catch (err) {
        broken = isUnavailable(err);
        if (!broken) await client.query('ROLLBACK').catch(() => (broken = true));
        const code = (err as { code?: string }).code;
        if (code !== undefined && RETRYABLE.has(code) && attempt < MAX_ATTEMPTS) {
          await sleep(Math.random() * 5 * attempt);
          continue;
        }
        throw translateUnavailable(err);
      } finally {
        client.release(broken);
      }
    }
  }

  /**
   * A pooled connection with a transaction begun on it. Nothing is done yet when BEGIN fails, so
   * a pooled connection the server dropped is discarded and BEGIN sent once more on a fresh one.
   * A connection is released here only when the caller never receives it.
   */
  private async begin(isolation: Isolation): Promise<pg.PoolClient> {
    for (let attempt = 1; ; attempt++) {
      const client = await this.checkout();
      try {
        await client.query(`BEGIN ISOLATION LEVEL ${isolation}`);
        return client;
      } catch (err) {
        const unavailable = isUnavailable(err);
        client.release(unavailable);
        if (!unavailable || attempt >= 2) throw translateUnavailable(err);
      }
    }
  }

  /**
   * A pooled connection for several statements. One that drops while checked out (between two
   * statements) emits 'error' on its client, which would end the process without a listener;
   * the next statement on it fails instead and is handled where it is sent.
   */
  async checkout(): Promise<pg.PoolClient> {
    let client: pg.PoolClient;
    try {
      client = await this.pool.connect();
    } catch (err) {
      throw translateUnavailable(err);
    }
    if (!guarded.has(client)) {
      guarded.add(client);
      client.on('error', () => {});
    }
    return client;
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}

/** Pooled clients that already carry checkout()'s error listener (one each, however often used). */
const guarded = new WeakSet<pg.PoolClient>();

/** The change log row(s) and the notification, in the transaction that made the change. */
async function noteChanges(client: Queryable, changes: readonly Change[]): Promise<void> {
  await client.query('SELECT p11kms_note_changes($1::text[], $2::text[])', [changes.map((c) => c.kind), changes.map((c) => c.id)]);
}

/**
 * pg's settings from the URL. `sslmode` in the URL is honoured by pg's own parser
 * (pg-connection-string): disable, prefer/require/verify-ca/verify-full, sslrootcert, sslcert,
 * sslkey. The application name shows p11kms nodes in pg_stat_activity.
 */
export function connectionSettings(url: string): pg.ClientConfig {
  return { connectionString: url, application_name: 'p11kms', keepAlive: true };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
