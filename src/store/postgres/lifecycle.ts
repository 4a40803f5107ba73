/**
 * KeyLifecycleStore over PostgreSQL (see ../lifecycle.ts). Claims are single atomic statements
 * (a claim is taken only where none is live, and FOR UPDATE SKIP LOCKED hands each due key to
 * one node), so nodes racing for the same rotation or sweep never both win; a claim whose node
 * died lapses at its `until` and the next pass of any node takes the work over.
 */
import type {
  Claim,
  ClaimKind,
  GcmEncryptionCount,
  ImportParametersRecord,
  KeyLifecycleStore,
  MaterialRecord,
  MaterialUpdate,
  RotationSchedule,
} from '../lifecycle.js';
import type { Database, Queryable } from './database.js';

const MATERIAL_COLUMNS = `key_id, version, created_at, key_material_id, rotation_type, rotated_at, import_state,
  expiration_model, valid_to, material_description, check_value, custody`;
interface MaterialRow {
  key_id: string;
  version: number;
  created_at: Date;
  key_material_id: string;
  rotation_type: string | null;
  rotated_at: Date | null;
  import_state: string | null;
  expiration_model: string | null;
  valid_to: Date | null;
  material_description: string | null;
  check_value: string | null;
  custody: string | null;
}
interface ImportParametersRow {
  import_id: string;
  key_id: string;
  wrapping_algorithm: string;
  wrapping_key_spec: string;
  created_at: Date;
  valid_to: Date;
}

/** MaterialUpdate member → column; the only columns updateMaterial touches. */
const UPDATABLE_MATERIAL_COLUMNS: Record<keyof MaterialUpdate, string> = {
  importState: 'import_state',
  expirationModel: 'expiration_model',
  validTo: 'valid_to',
  description: 'material_description',
  checkValue: 'check_value',
  custody: 'custody',
  keyMaterialId: 'key_material_id',
};

/** A claim is free when there is none or it has lapsed ($now is the claimant's clock). */
const CLAIM_FREE = '(lifecycle_claim IS NULL OR lifecycle_claim_until < $2)';
const DUE_CONDITION: Record<'rotation' | 'deletion', string> = {
  // Disabled keys are not rotated; they become due again as soon as they are re-enabled.
  rotation: `rotation_period_days IS NOT NULL AND next_rotation_date <= $2 AND key_state = 'Enabled'`,
  deletion: `key_state = 'PendingDeletion' AND deletion_date <= $2`,
};
const SET_CLAIM = 'lifecycle_claim = $1, lifecycle_claim_started = $2, lifecycle_claim_until = $3, lifecycle_claim_kind = $4';
const CLEAR_CLAIM = 'lifecycle_claim = NULL, lifecycle_claim_until = NULL, lifecycle_claim_started = NULL, lifecycle_claim_kind = NULL';

export class PostgresKeyLifecycleStore implements KeyLifecycleStore {
  constructor(private readonly db: Database) {}

  async rotationSchedule(keyId: string, now: Date): Promise<RotationSchedule | undefined> {
    const { rows } = await this.db.query<{ p: number | null; n: Date | null; c: string | null; u: Date | null; s: Date | null; k: string | null }>(
      `SELECT rotation_period_days AS p, next_rotation_date AS n, lifecycle_claim AS c, lifecycle_claim_until AS u,
              lifecycle_claim_started AS s, lifecycle_claim_kind AS k FROM keys WHERE key_id = $1`,
      [keyId],
    );
    const row = rows[0];
    if (!row) return undefined;
    const live = row.c !== null && row.u !== null && row.u.getTime() >= now.getTime();
    return {
      periodInDays: row.p,
      nextRotationDate: row.n,
      claim: live ? { kind: row.k as ClaimKind, startedAt: row.s ?? row.u!, until: row.u! } : null,
    };
  }

  async setRotationSchedule(keyId: string, periodInDays: number | null, nextRotationDate: Date | null): Promise<void> {
    await this.db.query('UPDATE keys SET rotation_period_days = $1, next_rotation_date = $2 WHERE key_id = $3', [periodInDays, nextRotationDate, keyId]);
  }

  async listMaterials(keyId: string): Promise<MaterialRecord[]> {
    const { rows } = await this.db.query<MaterialRow>(`SELECT ${MATERIAL_COLUMNS} FROM key_versions WHERE key_id = $1 ORDER BY version`, [keyId]);
    return rows.map(rowToMaterial);
  }

  async addMaterial(material: MaterialRecord): Promise<void> {
    await insertMaterial(this.db, material);
  }

  async updateMaterial(keyId: string, version: number, update: MaterialUpdate): Promise<void> {
    const assignments: string[] = [];
    const values: unknown[] = [];
    for (const [member, column] of Object.entries(UPDATABLE_MATERIAL_COLUMNS) as Array<[keyof MaterialUpdate, string]>) {
      const value = update[member];
      if (value === undefined) continue;
      values.push(value);
      assignments.push(`${column} = $${values.length}`);
    }
    if (assignments.length === 0) return;
    await this.db.query(`UPDATE key_versions SET ${assignments.join(', ')} WHERE key_id = $${values.length + 1} AND version = $${values.length + 2}`, [
      ...values,
      keyId,
      version,
    ]);
  }

  async expiredMaterials(now: Date, limit: number): Promise<MaterialRecord[]> {
    const { rows } = await this.db.query<MaterialRow>(
      `SELECT ${MATERIAL_COLUMNS} FROM key_versions
       WHERE valid_to IS NOT NULL AND valid_to <= $1 AND import_state = 'IMPORTED' ORDER BY valid_to LIMIT $2`,
      [now, limit],
    );
    return rows.map(rowToMaterial);
  }

  async claimKey(keyId: string, kind: ClaimKind, claim: Claim): Promise<boolean> {
    // Under READ COMMITTED a second node's UPDATE waits for the first and re-checks CLAIM_FREE
    // against the row the first committed: exactly one of them claims.
    const { rowCount } = await this.db.query(`UPDATE keys SET ${SET_CLAIM} WHERE key_id = $5 AND ${CLAIM_FREE}`, [
      claim.id,
      claim.now,
      claim.until,
      kind,
      keyId,
    ]);
    return (rowCount ?? 0) > 0;
  }

  async claimDue(kind: 'rotation' | 'deletion', claim: Claim, limit: number): Promise<string[]> {
    const { rows } = await this.db.query<{ key_id: string }>(
      `UPDATE keys SET ${SET_CLAIM} WHERE key_id IN (
         SELECT key_id FROM keys WHERE ${DUE_CONDITION[kind]} AND ${CLAIM_FREE} ORDER BY key_id LIMIT $5 FOR UPDATE SKIP LOCKED)
       RETURNING key_id`,
      [claim.id, claim.now, claim.until, kind, limit],
    );
    return rows.map((r) => r.key_id).sort();
  }

  async releaseClaim(keyId: string, claimId: string): Promise<void> {
    await this.db.query(`UPDATE keys SET ${CLEAR_CLAIM} WHERE key_id = $1 AND lifecycle_claim = $2`, [keyId, claimId]);
  }

  async commitRotation(keyId: string, claimId: string, expectedCurrent: number, material: MaterialRecord, nextRotationDate?: Date): Promise<boolean> {
    // REPEATABLE READ: a concurrent change to the key row (another node's DisableKey, a lapsed
    // claim taken over) fails this transaction with 40001, and the retry re-checks the claim.
    return this.db.transaction('REPEATABLE READ', async (tx) => {
      const held = await tx.query('SELECT 1 FROM keys WHERE key_id = $1 AND lifecycle_claim = $2 AND current_version = $3 FOR UPDATE', [
        keyId,
        claimId,
        expectedCurrent,
      ]);
      if (!held.rowCount) return false;
      const exists = await tx.query('SELECT 1 FROM key_versions WHERE key_id = $1 AND version = $2', [keyId, material.version]);
      if (!exists.rowCount) {
        await insertMaterial(tx, material);
      } else {
        await tx.query('UPDATE key_versions SET rotation_type = $1, rotated_at = $2 WHERE key_id = $3 AND version = $4', [
          material.rotationType,
          material.rotatedAt,
          keyId,
          material.version,
        ]);
      }
      await tx.query(`UPDATE keys SET current_version = $1, next_rotation_date = COALESCE($2, next_rotation_date), ${CLEAR_CLAIM} WHERE key_id = $3`, [
        material.version,
        nextRotationDate ?? null,
        keyId,
      ]);
      tx.changed('key', keyId);
      return true;
    });
  }

  async deleteKeyUnderClaim(keyId: string, claimId: string): Promise<boolean> {
    // key_versions, aliases, tags and grants go with it through ON DELETE CASCADE.
    return this.db.transaction('READ COMMITTED', async (tx) => {
      const { rowCount } = await tx.query('DELETE FROM keys WHERE key_id = $1 AND lifecycle_claim = $2', [keyId, claimId]);
      if (!rowCount) return false;
      tx.changed('key-deleted', keyId);
      return true;
    });
  }

  async addGcmEncryptions(counts: readonly GcmEncryptionCount[]): Promise<GcmEncryptionCount[]> {
    // Rows in one order on every node: two nodes flushing at once cannot deadlock.
    const ordered = [...counts].sort((a, b) => (a.keyId === b.keyId ? a.version - b.version : a.keyId < b.keyId ? -1 : 1));
    return this.db.transaction('READ COMMITTED', async (tx) => {
      const totals: GcmEncryptionCount[] = [];
      for (const { keyId, version, count } of ordered) {
        const { rows } = await tx.query<{ total: string }>(
          'UPDATE key_versions SET gcm_encryptions = gcm_encryptions + $1 WHERE key_id = $2 AND version = $3 RETURNING gcm_encryptions AS total',
          [count, keyId, version],
        );
        if (rows[0]) totals.push({ keyId, version, count: Number(rows[0].total) });
      }
      return totals;
    });
  }

  async addImportParameters(r: ImportParametersRecord): Promise<void> {
    await this.db.query(
      `INSERT INTO import_parameters (import_id, key_id, wrapping_algorithm, wrapping_key_spec, created_at, valid_to)
       VALUES ($1, $2, $3, $4, $5, $6)`,
      [r.importId, r.keyId, r.wrappingAlgorithm, r.wrappingKeySpec, r.createdAt, r.validTo],
    );
  }

  async getImportParameters(importId: string): Promise<ImportParametersRecord | undefined> {
    const { rows } = await this.db.query<ImportParametersRow>('SELECT * FROM import_parameters WHERE import_id = $1', [importId]);
    return rows[0] && rowToImportParameters(rows[0]);
  }

  async listImportParameters(): Promise<ImportParametersRecord[]> {
    const { rows } = await this.db.query<ImportParametersRow>('SELECT * FROM import_parameters ORDER BY import_id');
    return rows.map(rowToImportParameters);
  }

  async staleImportParameters(now: Date, limit: number): Promise<ImportParametersRecord[]> {
    const { rows } = await this.db.query<ImportParametersRow>(
      `SELECT * FROM import_parameters p WHERE p.valid_to < $1 OR NOT EXISTS (SELECT 1 FROM keys k WHERE k.key_id = p.key_id)
       ORDER BY valid_to LIMIT $2`,
      [now, limit],
    );
    return rows.map(rowToImportParameters);
  }

  async deleteImportParameters(importId: string): Promise<boolean> {
    const { rowCount } = await this.db.query('DELETE FROM import_parameters WHERE import_id = $1', [importId]);
    return (rowCount ?? 0) > 0;
  }
}

async function insertMaterial(q: Queryable, m: MaterialRecord): Promise<void> {
  await q.query(`INSERT INTO key_versions (${MATERIAL_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`, [
    m.keyId,
    m.version,
    m.createdAt,
    m.keyMaterialId,
    m.rotationType,
    m.rotatedAt,
    m.importState,
    m.expirationModel,
    m.validTo,
    m.description,
    m.checkValue,
    m.custody,
  ]);
}

function rowToMaterial(r: MaterialRow): MaterialRecord {
  return {
    keyId: r.key_id,
    version: r.version,
    createdAt: r.created_at,
    keyMaterialId: r.key_material_id,
    rotationType: r.rotation_type as MaterialRecord['rotationType'],
    rotatedAt: r.rotated_at,
    importState: r.import_state as MaterialRecord['importState'],
    expirationModel: r.expiration_model as MaterialRecord['expirationModel'],
    validTo: r.valid_to,
    description: r.material_description,
    checkValue: r.check_value,
    custody: r.custody,
  };
}

function rowToImportParameters(r: ImportParametersRow): ImportParametersRecord {
  return {
    importId: r.import_id,
    keyId: r.key_id,
    wrappingAlgorithm: r.wrapping_algorithm,
    wrappingKeySpec: r.wrapping_key_spec,
    createdAt: r.created_at,
    validTo: r.valid_to,
  };
}
