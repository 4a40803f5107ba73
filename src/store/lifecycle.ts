/**
 * The part of the metadata store that key-material lifecycle uses: per-material facts (rotation,
 * import, expiry), the automatic rotation schedule, work claims that let several service
 * processes share one database without doing the same rotation or sweep twice, and the wrapping
 * key pairs of GetParametersForImport. Metadata only: never key material.
 */
import type { BackingKeyVersionRecord } from './types.js';

export type RotationType = 'AUTOMATIC' | 'ON_DEMAND';
export type ImportState = 'IMPORTED' | 'PENDING_IMPORT';
export type ExpirationModel = 'KEY_MATERIAL_EXPIRES' | 'KEY_MATERIAL_DOES_NOT_EXPIRE';

/** One key material (backing-key version) with everything AWS reports about it. */
export interface MaterialRecord extends BackingKeyVersionRecord {
  /** Null for the key's first material. */
  rotationType: RotationType | null;
  /** When the material became current through a rotation; null for the first material and for
   *  imported material still pending rotation. */
  rotatedAt: Date | null;
  /** Null for material generated in the token. */
  importState: ImportState | null;
  expirationModel: ExpirationModel | null;
  validTo: Date | null;
  description: string | null;
  /** SHA-256 hex of a known-answer encryption under the material (imported material only). */
  checkValue: string | null;
  /** Non-null when the material passed through service memory on its way into the token. */
  custody: string | null;
}

export type MaterialUpdate = Partial<
  Pick<MaterialRecord, 'importState' | 'expirationModel' | 'validTo' | 'description' | 'checkValue' | 'custody' | 'keyMaterialId'>
>;

export type ClaimKind = 'rotation' | 'on-demand-rotation' | 'deletion' | 'material-import';

export interface LiveClaim {
  kind: ClaimKind;
  startedAt: Date;
  until: Date;
}

export interface RotationSchedule {
  /** Null when automatic rotation is disabled. */
  periodInDays: number | null;
  nextRotationDate: Date | null;
  /** The claim on the key, if one is live at the time asked. */
  claim: LiveClaim | null;
}

/** A claim request: `id` identifies the claimant; the claim lapses at `until` if not released. */
export interface Claim {
  id: string;
  now: Date;
  until: Date;
}

export interface GcmEncryptionCount {
  keyId: string;
  version: number;
  count: number;
}

export interface ImportParametersRecord {
  importId: string;
  keyId: string;
  wrappingAlgorithm: string;
  wrappingKeySpec: string;
  createdAt: Date;
  validTo: Date;
}

export interface KeyLifecycleStore {
  rotationSchedule(keyId: string, now: Date): Promise<RotationSchedule | undefined>;
  setRotationSchedule(keyId: string, periodInDays: number | null, nextRotationDate: Date | null): Promise<void>;

  /** Materials ordered by version. */
  listMaterials(keyId: string): Promise<MaterialRecord[]>;
  /** Adds a material that is not current (an import pending rotation). */
  addMaterial(material: MaterialRecord): Promise<void>;
  updateMaterial(keyId: string, version: number, update: MaterialUpdate): Promise<void>;
  /** Imported materials whose ValidTo has passed and that are still IMPORTED. */
  expiredMaterials(now: Date, limit: number): Promise<MaterialRecord[]>;

  /** Claims one key for `kind` unless a live claim exists; false when someone else holds it. */
  claimKey(keyId: string, kind: ClaimKind, claim: Claim): Promise<boolean>;
  /** Atomically claims up to `limit` keys whose rotation (or deletion) is due; returns their IDs. */
  claimDue(kind: 'rotation' | 'deletion', claim: Claim, limit: number): Promise<string[]>;
  releaseClaim(keyId: string, claimId: string): Promise<void>;
  /**
   * Under the claim: makes `material` the current material of the key, provided the current
   * version is still `expectedCurrent` (inserting the material row unless it already exists as a
   * pending import), sets the next automatic rotation date when given, and releases the claim.
   * False when the claim or the expected version no longer hold.
   */
  commitRotation(keyId: string, claimId: string, expectedCurrent: number, material: MaterialRecord, nextRotationDate?: Date): Promise<boolean>;
  /** Deletes the key's metadata if the claim still holds. */
  deleteKeyUnderClaim(keyId: string, claimId: string): Promise<boolean>;

  /** Adds AES-GCM encryption counts to backing versions (several processes add their own, in one
   *  transaction) and returns each version's new total; versions since deleted are left out. */
  addGcmEncryptions(counts: readonly GcmEncryptionCount[]): Promise<GcmEncryptionCount[]>;

  addImportParameters(record: ImportParametersRecord): Promise<void>;
  getImportParameters(importId: string): Promise<ImportParametersRecord | undefined>;
  listImportParameters(): Promise<ImportParametersRecord[]>;
  /** Parameters whose validity ended before `now`, or whose key is gone. */
  staleImportParameters(now: Date, limit: number): Promise<ImportParametersRecord[]>;
  /** True for the one caller that removed the row (and so destroys its token objects). */
  deleteImportParameters(importId: string): Promise<boolean>;
}
