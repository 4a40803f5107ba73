/**
 * Keeps this node's caches (key records, aliases, grants) within CONSISTENCY_BOUND_MS of what
 * other nodes commit.
 *
 * Every transaction that changes something cached writes change_log rows (kind, id) before its
 * COMMIT and notifies channel p11kms_changes (database.ts). This node reads the log on every
 * notification (a dedicated LISTEN connection: milliseconds) and at least every POLL_INTERVAL_MS
 * (notifications are lost while that connection is down). Each read asks for the rows committed
 * since the previous read's snapshot, so rows are never missed whatever order transactions commit
 * in. A cached entry is served only while the last completed read began less than
 * CONSISTENCY_BOUND_MS ago: what a node answers from its cache reflects every commit made before
 * that moment, also when the database is down (then entries stop being served after the bound,
 * and requests go to the database and fail as unavailable).
 */
import pg from 'pg';
import { connectionSettings, type Change, type Database } from './database.js';

/** How stale a cached answer may be, at most (README "Several nodes"). */
export const CONSISTENCY_BOUND_MS = 1000;
const POLL_INTERVAL_MS = 200;
/** Change log rows older than this are deleted (by whichever node gets there). */
const CHANGE_LOG_RETENTION_MS = 60 * 60 * 1000;
/** After this long without a read the log may have been pruned past us: start from scratch. */
const RESYNC_AFTER_MS = CHANGE_LOG_RETENTION_MS / 2;
const PRUNE_EVERY_MS = 60_000;
const LISTEN_RETRY_MS = 500;

/** What the change feed invalidates; the store's caches implement it. */
export interface Invalidation {
  apply(changes: readonly Change[]): void;
  clear(): void;
}

export class ChangeFeed {
  /** Snapshot (pg_snapshot text) as of the last completed read of the log. */
  private snapshot: string | undefined;
  /** performance.now() at which the last completed read was sent. */
  private freshAsOf = -Infinity;
  private reading: Promise<void> | undefined;
  private readAgain = false;
  private timer: NodeJS.Timeout | undefined;
  private listener: pg.Client | undefined;
  private listenRetry: NodeJS.Timeout | undefined;
  private lastPrune = 0;
  private closed = false;
  /** Why the last read failed, while it does (health checks). */
  problem: string | undefined;

  constructor(
    private readonly db: Database,
    private readonly caches: Invalidation,
  ) {}

  async start(): Promise<void> {
    await this.read();
    if (this.problem) throw new Error(this.problem);
    this.timer = setInterval(() => void this.readSoon(), POLL_INTERVAL_MS);
    this.timer.unref();
    await this.listen();
  }

  /** True while cached entries may be served (the last read is recent enough). */
  isFresh(): boolean {
    return performance.now() - this.freshAsOf < CONSISTENCY_BOUND_MS;
  }

  /** Reads the log now (coalesced with a read in progress); resolves when a read started after
   *  this call has finished. */
  readSoon(): Promise<void> {
    if (this.closed) return Promise.resolve();
    if (this.reading) {
      this.readAgain = true;
      return this.reading;
    }
    this.reading = this.read().finally(() => {
      this.reading = undefined;
      if (this.readAgain) {
        this.readAgain = false;
        void this.readSoon();
      }
    });
    return this.reading;
  }

  private async read(): Promise<void> {
    const sentAt = performance.now();
    try {
      if (this.snapshot === undefined || sentAt - this.freshAsOf > RESYNC_AFTER_MS) {
        const { rows } = await this.db.query<{ snap: string }>('SELECT pg_current_snapshot()::text AS snap');
        this.caches.clear();
        this.snapshot = rows[0]!.snap;
      } else {
        // One statement, one snapshot: the rows invisible to the previous snapshot but visible
        // to this one are exactly the transactions that committed in between.
        const { rows } = await this.db.query<{ snap: string; kind: Change['kind'] | null; entity_id: string | null }>(
          `WITH now AS (SELECT pg_current_snapshot() AS snap)
           SELECT now.snap::text AS snap, c.kind, c.entity_id FROM now LEFT JOIN change_log c
             ON c.xid >= pg_snapshot_xmin($1::pg_snapshot) AND NOT pg_visible_in_snapshot(c.xid, $1::pg_snapshot)`,
          [this.snapshot],
        );
        const changes = rows.filter((r) => r.kind !== null).map((r) => ({ kind: r.kind!, id: r.entity_id! }));
        if (changes.length > 0) this.caches.apply(changes);
        this.snapshot = rows[0]!.snap;
      }
      this.freshAsOf = sentAt;
      this.problem = undefined;
      if (Date.now() - this.lastPrune > PRUNE_EVERY_MS) await this.prune();
    } catch (err) {
      this.problem = `change feed: ${err instanceof Error ? err.message : String(err)}`;
    }
  }

  private async prune(): Promise<void> {
    this.lastPrune = Date.now();
    await this.db.query('DELETE FROM change_log WHERE at < now() - $1::interval', [`${CHANGE_LOG_RETENTION_MS} milliseconds`]);
  }

  /** A dedicated connection LISTENing on p11kms_changes; reconnects by itself. */
  private async listen(): Promise<void> {
    if (this.closed) return;
    const client = new pg.Client(connectionSettings(this.db.url));
    const retry = () => {
      if (this.listener === client) this.listener = undefined;
      client.end().catch(() => undefined);
      if (this.closed || this.listenRetry) return;
      this.listenRetry = setTimeout(() => {
        this.listenRetry = undefined;
        void this.listen();
      }, LISTEN_RETRY_MS);
      this.listenRetry.unref();
    };
    client.on('error', retry);
    client.on('end', retry);
    client.on('notification', () => void this.readSoon());
    try {
      await client.connect();
      await client.query('LISTEN p11kms_changes');
      this.listener = client;
      // Whatever was committed while not listening: read now rather than at the next poll.
      void this.readSoon();
    } catch {
      retry();
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    clearTimeout(this.listenRetry);
    await this.reading?.catch(() => undefined);
    await this.listener?.end().catch(() => undefined);
  }
}
