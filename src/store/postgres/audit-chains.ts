/** AuditChainRegistry on PostgreSQL (table audit_chains, migration 3): every node's chains in the
 *  one database, so `p11kms audit verify` sees a node's missing chain. */
import { AUDIT_CHAIN_COLUMNS, auditChainFromRow, type AuditChainHead, type AuditChainRegistry, type AuditChainRow } from '../audit-chains.js';
import type { Queryable } from './database.js';

export class PostgresAuditChainRegistry implements AuditChainRegistry {
  constructor(private readonly db: Queryable) {}

  async registerChain(chainId: string, openedAt: Date): Promise<void> {
    await this.db.query(
      `INSERT INTO audit_chains (chain_id, opened_at, digest_sequence, record_count, final) VALUES ($1, $2, 0, 0, false)
       ON CONFLICT (chain_id) DO NOTHING`,
      [chainId, openedAt],
    );
  }

  async recordDigest(head: AuditChainHead): Promise<void> {
    // One statement: the head only moves forward, whichever node writes.
    await this.db.query(
      `INSERT INTO audit_chains (chain_id, opened_at, digest_sequence, digest_hash, record_count, final, signing_key_fingerprint)
       VALUES ($1, $2, $3, $4, $5, $6, $7)
       ON CONFLICT (chain_id) DO UPDATE SET
         digest_sequence = excluded.digest_sequence, digest_hash = excluded.digest_hash, record_count = excluded.record_count,
         final = excluded.final, signing_key_fingerprint = excluded.signing_key_fingerprint
       WHERE excluded.digest_sequence > audit_chains.digest_sequence`,
      [head.chainId, head.openedAt, head.digestSequence, head.digestHash, head.recordCount, head.final, head.signingKeyFingerprint],
    );
  }

  async listChains(): Promise<AuditChainHead[]> {
    const { rows } = await this.db.query<AuditChainRow>(`SELECT ${AUDIT_CHAIN_COLUMNS} FROM audit_chains ORDER BY chain_id`);
    return rows.map(auditChainFromRow);
  }
}
