/**
 * The grants table of the SQLite store (migration 2). SqliteMetadataStore delegates its grant
 * methods here; statements are prepared once, with the store.
 */
import type Database from 'better-sqlite3';
import type { GrantConstraints, GrantRecord } from '../types.js';

const GRANT_COLUMN_NAMES = [
  'grant_id', 'key_id', 'name', 'grantee_principal', 'retiring_principal', 'issuing_account',
  'operations', 'constraints', 'created_at',
] as const;
type GrantRow = [
  grantId: string,
  keyId: string,
  name: string | null,
  granteePrincipal: string,
  retiringPrincipal: string | null,
  issuingAccount: string,
  operations: string,
  constraints: string | null,
  createdAt: number,
];

const COLUMNS = GRANT_COLUMN_NAMES.join(', ');

export class SqliteGrantTable {
  private readonly insertStmt;
  private readonly selectOneStmt;
  private readonly selectByKeyFirstStmt;
  private readonly selectByKeyAfterStmt;
  private readonly selectByGranteeStmt;
  private readonly selectByRetiringFirstStmt;
  private readonly selectByRetiringAfterStmt;
  private readonly selectByNameStmt;
  private readonly countStmt;
  private readonly deleteStmt;

  constructor(db: Database.Database) {
    this.insertStmt = db.prepare<GrantRow>(`INSERT INTO grants (${COLUMNS}) VALUES (${GRANT_COLUMN_NAMES.map(() => '?').join(', ')})`);
    const select = <Params extends unknown[]>(condition: string) => db.prepare<Params, GrantRow>(`SELECT ${COLUMNS} FROM grants ${condition}`).raw();
    this.selectOneStmt = select<[string, string]>('WHERE key_id = ? AND grant_id = ?');
    this.selectByKeyFirstStmt = select<[string, number]>('WHERE key_id = ? ORDER BY grant_id LIMIT ?');
    this.selectByKeyAfterStmt = select<[string, string, number]>('WHERE key_id = ? AND grant_id > ? ORDER BY grant_id LIMIT ?');
    this.selectByGranteeStmt = select<[string, string]>('WHERE key_id = ? AND grantee_principal = ?');
    this.selectByRetiringFirstStmt = select<[string, number]>('WHERE retiring_principal = ? ORDER BY grant_id LIMIT ?');
    this.selectByRetiringAfterStmt = select<[string, string, number]>('WHERE retiring_principal = ? AND grant_id > ? ORDER BY grant_id LIMIT ?');
    this.selectByNameStmt = select<[string, string]>('WHERE key_id = ? AND name = ?');
    this.countStmt = db.prepare<[string], number>('SELECT COUNT(*) FROM grants WHERE key_id = ?').pluck();
    this.deleteStmt = db.prepare<[string, string]>('DELETE FROM grants WHERE key_id = ? AND grant_id = ?');
  }

  create(grant: GrantRecord): void {
    this.insertStmt.run(...grantToRow(grant));
  }

  get(keyId: string, grantId: string): GrantRecord | undefined {
    const row = this.selectOneStmt.get(keyId, grantId);
    return row && rowToGrant(row);
  }

  list(filter: { keyId: string; grantId?: string; granteePrincipal?: string; afterGrantId?: string; limit: number }): GrantRecord[] {
    if (filter.grantId !== undefined) {
      const one = this.get(filter.keyId, filter.grantId);
      const matches = one && (filter.afterGrantId === undefined || one.grantId > filter.afterGrantId) && (filter.granteePrincipal === undefined || one.granteePrincipal === filter.granteePrincipal);
      return matches ? [one] : [];
    }
    if (filter.granteePrincipal !== undefined) {
      // A grantee rarely holds many grants on one key: filter and page in memory.
      return this.forGrantee(filter.keyId, filter.granteePrincipal)
        .filter((g) => filter.afterGrantId === undefined || g.grantId > filter.afterGrantId)
        .sort((a, b) => (a.grantId < b.grantId ? -1 : 1))
        .slice(0, filter.limit);
    }
    const rows =
      filter.afterGrantId === undefined
        ? this.selectByKeyFirstStmt.all(filter.keyId, filter.limit)
        : this.selectByKeyAfterStmt.all(filter.keyId, filter.afterGrantId, filter.limit);
    return rows.map(rowToGrant);
  }

  forGrantee(keyId: string, granteePrincipal: string): GrantRecord[] {
    return this.selectByGranteeStmt.all(keyId, granteePrincipal).map(rowToGrant);
  }

  retirable(filter: { retiringPrincipal: string; afterGrantId?: string; limit: number }): GrantRecord[] {
    const rows =
      filter.afterGrantId === undefined
        ? this.selectByRetiringFirstStmt.all(filter.retiringPrincipal, filter.limit)
        : this.selectByRetiringAfterStmt.all(filter.retiringPrincipal, filter.afterGrantId, filter.limit);
    return rows.map(rowToGrant);
  }

  named(keyId: string, name: string): GrantRecord[] {
    return this.selectByNameStmt.all(keyId, name).map(rowToGrant);
  }

  count(keyId: string): number {
    return this.countStmt.get(keyId) ?? 0;
  }

  delete(keyId: string, grantId: string): boolean {
    return this.deleteStmt.run(keyId, grantId).changes > 0;
  }
}

function grantToRow(g: GrantRecord): GrantRow {
  return [
    g.grantId,
    g.keyId,
    g.name,
    g.granteePrincipal,
    g.retiringPrincipal,
    g.issuingAccount,
    JSON.stringify(g.operations),
    g.constraints ? JSON.stringify(g.constraints) : null,
    g.createdAt.getTime(),
  ];
}

function rowToGrant(row: GrantRow): GrantRecord {
  const [grantId, keyId, name, granteePrincipal, retiringPrincipal, issuingAccount, operations, constraints, createdAt] = row;
  return {
    grantId,
    keyId,
    name,
    granteePrincipal,
    retiringPrincipal,
    issuingAccount,
    operations: JSON.parse(operations) as string[],
    constraints: constraints === null ? null : (JSON.parse(constraints) as GrantConstraints),
    createdAt: new Date(createdAt),
  };
}
