/**
 * The audit chain registry: what the metadata store knows about every audit chain, kept outside
 * the audit directory so that `p11kms audit verify` can tell a chain or digest that was deleted
 * from one that never existed (with PostgreSQL it lives on another machine). Each service process
 * registers its chain when it opens it and advances the head at every digest it signs.
 * Metadata only: hashes and counts, never record contents.
 */
export interface AuditChainHead {
  chainId: string;
  /** When the chain's process opened it. */
  openedAt: Date;
  /** The newest digest's sequence number; 0 before the chain's first digest. */
  digestSequence: number;
  /** Lower-case hex SHA-256 of the newest digest file's bytes; null before the first digest. */
  digestHash: string | null;
  /** Records the newest digest covers (its lastSequence). */
  recordCount: number;
  /** The newest digest is the chain's final one (clean shutdown). */
  final: boolean;
  /** SHA-256 of the SPKI of the key that signed the newest digest; null when unsigned. */
  signingKeyFingerprint: string | null;
}

export interface AuditChainRegistry {
  /** Registers a chain with no digest yet; does nothing when it is already registered. */
  registerChain(chainId: string, openedAt: Date): Promise<void>;
  /** Advances a chain's head (registering the chain if needed); never moves it backwards
   *  (a head whose digestSequence is not above the stored one is ignored). */
  recordDigest(head: AuditChainHead): Promise<void>;
  /** Every registered chain, ordered by chainId. */
  listChains(): Promise<AuditChainHead[]>;
}

/** The audit_chains table's row, as both stores keep it (opened_at: epoch ms in SQLite, a
 *  timestamp in PostgreSQL; final: 0/1 or a boolean; record_count: a bigint arrives as text). */
export interface AuditChainRow {
  chain_id: string;
  opened_at: number | Date;
  digest_sequence: number;
  digest_hash: string | null;
  record_count: number | string;
  final: number | boolean;
  signing_key_fingerprint: string | null;
}

export const AUDIT_CHAIN_COLUMNS = 'chain_id, opened_at, digest_sequence, digest_hash, record_count, final, signing_key_fingerprint';

export function auditChainFromRow(r: AuditChainRow): AuditChainHead {
  return {
    chainId: r.chain_id,
    openedAt: new Date(r.opened_at),
    digestSequence: r.digest_sequence,
    digestHash: r.digest_hash,
    recordCount: Number(r.record_count),
    final: r.final === true || r.final === 1,
    signingKeyFingerprint: r.signing_key_fingerprint,
  };
}
