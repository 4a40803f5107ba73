/**
 * The grants table of the PostgreSQL store. PostgresMetadataStore delegates here with the
 * connection or transaction to use (and caches grantsForGrantees itself).
 */
import type { Queryable } from './database.js';
import type { GrantConstraints, GrantRecord } from '../types.js';

const COLUMNS = 'grant_id, key_id, name, grantee_principal, retiring_principal, issuing_account, operations, constraints, created_at';
interface GrantRow {
  grant_id: string;
  key_id: string;
  name: string | null;
  grantee_principal: string;
  retiring_principal: string | null;
  issuing_account: string;
  operations: string;
  constraints: string | null;
  created_at: Date;
}

export class PostgresGrantTable {
  async create(q: Queryable, g: GrantRecord): Promise<void> {
    await q.query(`INSERT INTO grants (${COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`, [
      g.grantId,
      g.keyId,
      g.name,
      g.granteePrincipal,
      g.retiringPrincipal,
      g.issuingAccount,
      JSON.stringify(g.operations),
      g.constraints ? JSON.stringify(g.constraints) : null,
      g.createdAt,
    ]);
  }

  async get(q: Queryable, keyId: string, grantId: string): Promise<GrantRecord | undefined> {
    const { rows } = await q.query<GrantRow>(`SELECT ${COLUMNS} FROM grants WHERE key_id = $1 AND grant_id = $2`, [keyId, grantId]);
    return rows[0] && rowToGrant(rows[0]);
  }

  async list(q: Queryable, f: { keyId: string; grantId?: string; granteePrincipal?: string; afterGrantId?: string; limit: number }): Promise<GrantRecord[]> {
    const { rows } = await q.query<GrantRow>(
      `SELECT ${COLUMNS} FROM grants WHERE key_id = $1 AND ($2::text IS NULL OR grant_id = $2)
         AND ($3::text IS NULL OR grantee_principal = $3) AND ($4::text IS NULL OR grant_id > $4)
       ORDER BY grant_id LIMIT $5`,
      [f.keyId, f.grantId ?? null, f.granteePrincipal ?? null, f.afterGrantId ?? null, f.limit],
    );
    return rows.map(rowToGrant);
  }

  async forGrantees(q: Queryable, keyId: string, granteePrincipals: string[]): Promise<GrantRecord[]> {
    const { rows } = await q.query<GrantRow>(`SELECT ${COLUMNS} FROM grants WHERE key_id = $1 AND grantee_principal = ANY($2::text[])`, [
      keyId,
      granteePrincipals,
    ]);
    return rows.map(rowToGrant);
  }

  async retirable(q: Queryable, f: { retiringPrincipal: string; afterGrantId?: string; limit: number }): Promise<GrantRecord[]> {
    const { rows } = await q.query<GrantRow>(
      `SELECT ${COLUMNS} FROM grants WHERE retiring_principal = $1 AND ($2::text IS NULL OR grant_id > $2) ORDER BY grant_id LIMIT $3`,
      [f.retiringPrincipal, f.afterGrantId ?? null, f.limit],
    );
    return rows.map(rowToGrant);
  }

  async named(q: Queryable, keyId: string, name: string): Promise<GrantRecord[]> {
    const { rows } = await q.query<GrantRow>(`SELECT ${COLUMNS} FROM grants WHERE key_id = $1 AND name = $2`, [keyId, name]);
    return rows.map(rowToGrant);
  }

  async count(q: Queryable, keyId: string): Promise<number> {
    const { rows } = await q.query<{ n: number }>('SELECT COUNT(*)::int AS n FROM grants WHERE key_id = $1', [keyId]);
    return rows[0]!.n;
  }

  async delete(q: Queryable, keyId: string, grantId: string): Promise<boolean> {
    const { rowCount } = await q.query('DELETE FROM grants WHERE key_id = $1 AND grant_id = $2', [keyId, grantId]);
    return (rowCount ?? 0) > 0;
  }
}

function rowToGrant(r: GrantRow): GrantRecord {
  return {
    grantId: r.grant_id,
    keyId: r.key_id,
    name: r.name,
    granteePrincipal: r.grantee_principal,
    retiringPrincipal: r.retiring_principal,
    issuingAccount: r.issuing_account,
    operations: JSON.parse(r.operations) as string[],
    constraints: r.constraints === null ? null : (JSON.parse(r.constraints) as GrantConstraints),
    createdAt: r.created_at,
  };
}
