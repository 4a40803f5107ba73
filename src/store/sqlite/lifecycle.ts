/**
 * KeyLifecycleStore over the SQLite metadata database (see lifecycle.ts and lifecycle-schema.ts).
 * Claims and commits run in IMMEDIATE transactions, so two processes on one file serialise on the
 * write lock and exactly one of them wins each claim.
 */
import type Database from 'better-sqlite3';
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

interface MaterialRow {
  key_id: string;
  version: number;
  created_at: number;
  key_material_id: string;
  rotation_type: string | null;
  rotated_at: number | null;
  import_state: string | null;
  expiration_model: string | null;
  valid_to: number | null;
  material_description: string | null;
  check_value: string | null;
  custody: string | null;
}

interface ImportParametersRow {
  import_id: string;
  key_id: string;
  wrapping_algorithm: string;
  wrapping_key_spec: string;
  created_at: number;
  valid_to: number;
}

const MATERIAL_COLUMNS = `key_id, version, created_at, key_material_id, rotation_type, rotated_at, import_state,
  expiration_model, valid_to, material_description, check_value, custody`;

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

/** A claim is free when there is none or it has lapsed. */
const CLAIM_FREE = '(lifecycle_claim IS NULL OR lifecycle_claim_until < @now)';

const DUE_CONDITION: Record<'rotation' | 'deletion', string> = {
  // Disabled keys are not rotated; they become due again as soon as they are re-enabled.
  rotation: `rotation_period_days IS NOT NULL AND next_rotation_date <= @now AND key_state = 'Enabled'`,
  deletion: `key_state = 'PendingDeletion' AND deletion_date <= @now`,
};

export class SqliteKeyLifecycleStore implements KeyLifecycleStore {
  /** Prepared statements by SQL text, compiled on first use. */
  private readonly statements = new Map<string, Database.Statement>();

  constructor(private readonly db: Database.Database) {}

  private stmt<P extends unknown[] | object = unknown[], R = unknown>(sql: string): Database.Statement<P, R> {
    let statement = this.statements.get(sql);
    if (!statement) {
      statement = this.db.prepare(sql);
      this.statements.set(sql, statement);
    }
    return statement as unknown as Database.Statement<P, R>;
  }

  async rotationSchedule(keyId: string, now: Date): Promise<RotationSchedule | undefined> {
    const row = this.stmt<[string], { p: number | null; n: number | null; c: string | null; u: number | null; s: number | null; k: string | null }>(
        `SELECT rotation_period_days AS p, next_rotation_date AS n, lifecycle_claim AS c, lifecycle_claim_until AS u,
                lifecycle_claim_started AS s, lifecycle_claim_kind AS k FROM keys WHERE key_id = ?`,
      )
      .get(keyId);
    if (!row) return undefined;
    const live = row.c !== null && row.u !== null && row.u >= now.getTime();
    return {
      periodInDays: row.p,
      nextRotationDate: row.n === null ? null : new Date(row.n),
      claim: live ? { kind: row.k as ClaimKind, startedAt: new Date(row.s ?? row.u!), until: new Date(row.u!) } : null,
    };
  }

  async setRotationSchedule(keyId: string, periodInDays: number | null, nextRotationDate: Date | null): Promise<void> {
    this.stmt('UPDATE keys SET rotation_period_days = ?, next_rotation_date = ? WHERE key_id = ?')
      .run(periodInDays, nextRotationDate?.getTime() ?? null, keyId);
  }

  async listMaterials(keyId: string): Promise<MaterialRecord[]> {
    return this.stmt<[string], MaterialRow>(`SELECT ${MATERIAL_COLUMNS} FROM key_versions WHERE key_id = ? ORDER BY version`)
      .all(keyId)
      .map(rowToMaterial);
  }

  async addMaterial(material: MaterialRecord): Promise<void> {
    this.insertMaterial(material);
  }

  private insertMaterial(m: MaterialRecord): void {
    this.stmt(
        `INSERT INTO key_versions (${MATERIAL_COLUMNS}) VALUES (@key_id, @version, @created_at, @key_material_id,
         @rotation_type, @rotated_at, @import_state, @expiration_model, @valid_to, @material_description, @check_value, @custody)`,
      )
      .run(materialToRow(m));
  }

  async updateMaterial(keyId: string, version: number, update: MaterialUpdate): Promise<void> {
    const assignments: string[] = [];
    const values: Array<string | number | null> = [];
    for (const [member, column] of Object.entries(UPDATABLE_MATERIAL_COLUMNS) as Array<[keyof MaterialUpdate, string]>) {
      const value = update[member];
      if (value === undefined) continue;
      assignments.push(`${column} = ?`);
      values.push(value instanceof Date ? value.getTime() : value);
    }
    if (assignments.length === 0) return;
    this.stmt(`UPDATE key_versions SET ${assignments.join(', ')} WHERE key_id = ? AND version = ?`).run(...values, keyId, version);
  }

  async expiredMaterials(now: Date, limit: number): Promise<MaterialRecord[]> {
    return this.stmt<[number, number], MaterialRow>(
        `SELECT ${MATERIAL_COLUMNS} FROM key_versions
         WHERE valid_to IS NOT NULL AND valid_to <= ? AND import_state = 'IMPORTED' ORDER BY valid_to LIMIT ?`,
      )
      .all(now.getTime(), limit)
      .map(rowToMaterial);
  }

  async claimKey(keyId: string, kind: ClaimKind, claim: Claim): Promise<boolean> {
    const result = this.stmt(
        `UPDATE keys SET lifecycle_claim = @id, lifecycle_claim_until = @until, lifecycle_claim_started = @now,
         lifecycle_claim_kind = @kind WHERE key_id = @keyId AND ${CLAIM_FREE}`,
      )
      .run({ ...claimParams(claim), kind, keyId });
    return result.changes > 0;
  }

  async claimDue(kind: 'rotation' | 'deletion', claim: Claim, limit: number): Promise<string[]> {
    const params = { ...claimParams(claim), kind, limit };
    const claimAll = this.db.transaction((): string[] => {
      const due = this.stmt<typeof params, string>(`SELECT key_id FROM keys WHERE ${DUE_CONDITION[kind]} AND ${CLAIM_FREE} ORDER BY key_id LIMIT @limit`)
        .pluck()
        .all(params);
      const mark = this.stmt(
        `UPDATE keys SET lifecycle_claim = @id, lifecycle_claim_until = @until, lifecycle_claim_started = @now,
         lifecycle_claim_kind = @kind WHERE key_id = @keyId`,
      );
      for (const keyId of due) mark.run({ ...params, keyId });
      return due;
    });
    return claimAll.immediate();
  }

  async releaseClaim(keyId: string, claimId: string): Promise<void> {
    this.stmt(
        `UPDATE keys SET lifecycle_claim = NULL, lifecycle_claim_until = NULL, lifecycle_claim_started = NULL,
         lifecycle_claim_kind = NULL WHERE key_id = ? AND lifecycle_claim = ?`,
      )
      .run(keyId, claimId);
  }

  async commitRotation(keyId: string, claimId: string, expectedCurrent: number, material: MaterialRecord, nextRotationDate?: Date): Promise<boolean> {
    const commit = this.db.transaction((): boolean => {
      const held = this.stmt<[string, string, number], number>('SELECT 1 FROM keys WHERE key_id = ? AND lifecycle_claim = ? AND current_version = ?')
        .pluck()
        .get(keyId, claimId, expectedCurrent);
      if (held === undefined) return false;
      const exists = this.stmt<[string, number], number>('SELECT 1 FROM key_versions WHERE key_id = ? AND version = ?')
        .pluck()
        .get(keyId, material.version);
      if (exists === undefined) {
        this.insertMaterial(material);
      } else {
        this.stmt('UPDATE key_versions SET rotation_type = ?, rotated_at = ? WHERE key_id = ? AND version = ?')
          .run(material.rotationType, material.rotatedAt?.getTime() ?? null, keyId, material.version);
      }
      this.stmt(
          `UPDATE keys SET current_version = ?, next_rotation_date = COALESCE(?, next_rotation_date), lifecycle_claim = NULL,
           lifecycle_claim_until = NULL, lifecycle_claim_started = NULL, lifecycle_claim_kind = NULL WHERE key_id = ?`,
        )
        .run(material.version, nextRotationDate?.getTime() ?? null, keyId);
      return true;
    });
    return commit.immediate();
  }

  async addGcmEncryptions(counts: readonly GcmEncryptionCount[]): Promise<GcmEncryptionCount[]> {
    const add = this.db.transaction((): GcmEncryptionCount[] => {
      const totals: GcmEncryptionCount[] = [];
      for (const { keyId, version, count } of counts) {
        const total = this.stmt<[number, string, number], number>(
          'UPDATE key_versions SET gcm_encryptions = gcm_encryptions + ? WHERE key_id = ? AND version = ? RETURNING gcm_encryptions',
        )
          .pluck()
          .get(count, keyId, version);
        if (total !== undefined) totals.push({ keyId, version, count: total });
      }
      return totals;
    });
    return add.immediate();
  }

  async deleteKeyUnderClaim(keyId: string, claimId: string): Promise<boolean> {
    // key_versions, aliases, tags and grants go with it through ON DELETE CASCADE.
    return this.stmt('DELETE FROM keys WHERE key_id = ? AND lifecycle_claim = ?').run(keyId, claimId).changes > 0;
  }

  async addImportParameters(r: ImportParametersRecord): Promise<void> {
    this.stmt(
        `INSERT INTO import_parameters (import_id, key_id, wrapping_algorithm, wrapping_key_spec, created_at, valid_to)
         VALUES (?, ?, ?, ?, ?, ?)`,
      )
      .run(r.importId, r.keyId, r.wrappingAlgorithm, r.wrappingKeySpec, r.createdAt.getTime(), r.validTo.getTime());
  }

  async getImportParameters(importId: string): Promise<ImportParametersRecord | undefined> {
    const row = this.stmt<[string], ImportParametersRow>('SELECT * FROM import_parameters WHERE import_id = ?').get(importId);
    return row && rowToImportParameters(row);
  }

  async listImportParameters(): Promise<ImportParametersRecord[]> {
    return this.stmt<[], ImportParametersRow>('SELECT * FROM import_parameters ORDER BY import_id').all().map(rowToImportParameters);
  }

  async staleImportParameters(now: Date, limit: number): Promise<ImportParametersRecord[]> {
    return this.stmt<[number, number], ImportParametersRow>(
        `SELECT * FROM import_parameters p WHERE p.valid_to < ? OR NOT EXISTS (SELECT 1 FROM keys k WHERE k.key_id = p.key_id)
         ORDER BY valid_to LIMIT ?`,
      )
      .all(now.getTime(), limit)
      .map(rowToImportParameters);
  }

  async deleteImportParameters(importId: string): Promise<boolean> {
    return this.stmt('DELETE FROM import_parameters WHERE import_id = ?').run(importId).changes > 0;
  }
}

function claimParams(claim: Claim) {
  return { id: claim.id, now: claim.now.getTime(), until: claim.until.getTime() };
}

function rowToMaterial(row: MaterialRow): MaterialRecord {
  const date = (ms: number | null) => (ms === null ? null : new Date(ms));
  return {
    keyId: row.key_id,
    version: row.version,
    createdAt: new Date(row.created_at),
    keyMaterialId: row.key_material_id,
    rotationType: row.rotation_type as MaterialRecord['rotationType'],
    rotatedAt: date(row.rotated_at),
    importState: row.import_state as MaterialRecord['importState'],
    expirationModel: row.expiration_model as MaterialRecord['expirationModel'],
    validTo: date(row.valid_to),
    description: row.material_description,
    checkValue: row.check_value,
    custody: row.custody,
  };
}

function materialToRow(m: MaterialRecord): MaterialRow {
  return {
    key_id: m.keyId,
    version: m.version,
    created_at: m.createdAt.getTime(),
    key_material_id: m.keyMaterialId,
    rotation_type: m.rotationType,
    rotated_at: m.rotatedAt?.getTime() ?? null,
    import_state: m.importState,
    expiration_model: m.expirationModel,
    valid_to: m.validTo?.getTime() ?? null,
    material_description: m.description,
    check_value: m.checkValue,
    custody: m.custody,
  };
}

function rowToImportParameters(row: ImportParametersRow): ImportParametersRecord {
  return {
    importId: row.import_id,
    keyId: row.key_id,
    wrappingAlgorithm: row.wrapping_algorithm,
    wrappingKeySpec: row.wrapping_key_spec,
    createdAt: new Date(row.created_at),
    validTo: new Date(row.valid_to),
  };
}
