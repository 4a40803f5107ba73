/** AuditChainRegistry over the SQLite metadata database (table audit_chains, migration 6). */
import type Database from 'better-sqlite3';
import { AUDIT_CHAIN_COLUMNS, auditChainFromRow, type AuditChainHead, type AuditChainRegistry, type AuditChainRow } from '../audit-chains.js';

type ChainRow = AuditChainRow & { opened_at: number; final: number; record_count: number };

export class SqliteAuditChainRegistry implements AuditChainRegistry {
  private readonly registerStmt;
  private readonly advanceStmt;
  private readonly listStmt;

  constructor(db: Database.Database) {
    this.registerStmt = db.prepare<[string, number]>(
      `INSERT INTO audit_chains (chain_id, opened_at, digest_sequence, record_count, final)
       VALUES (?, ?, 0, 0, 0) ON CONFLICT (chain_id) DO NOTHING`,
    );
    this.advanceStmt = db.prepare<[ChainRow]>(
      `INSERT INTO audit_chains (chain_id, opened_at, digest_sequence, digest_hash, record_count, final, signing_key_fingerprint)
       VALUES (@chain_id, @opened_at, @digest_sequence, @digest_hash, @record_count, @final, @signing_key_fingerprint)
       ON CONFLICT (chain_id) DO UPDATE SET
         digest_sequence = excluded.digest_sequence, digest_hash = excluded.digest_hash,
         record_count = excluded.record_count, final = excluded.final,
         signing_key_fingerprint = excluded.signing_key_fingerprint
       WHERE excluded.digest_sequence > audit_chains.digest_sequence`,
    );
    this.listStmt = db.prepare<[], ChainRow>(
      `SELECT ${AUDIT_CHAIN_COLUMNS} FROM audit_chains ORDER BY chain_id`,
    );
  }

  async registerChain(chainId: string, openedAt: Date): Promise<void> {
    this.registerStmt.run(chainId, openedAt.getTime());
  }

  async recordDigest(head: AuditChainHead): Promise<void> {
    this.advanceStmt.run({
      chain_id: head.chainId,
      opened_at: head.openedAt.getTime(),
      digest_sequence: head.digestSequence,
      digest_hash: head.digestHash,
      record_count: head.recordCount,
      final: head.final ? 1 : 0,
      signing_key_fingerprint: head.signingKeyFingerprint,
    });
  }

  async listChains(): Promise<AuditChainHead[]> {
    return this.listStmt.all().map(auditChainFromRow);
  }
}
