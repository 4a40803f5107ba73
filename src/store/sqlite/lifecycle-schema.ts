/**
 * Migration 3: what key-material lifecycle needs in the metadata store — automatic rotation
 * settings and the work claim on keys, per-material import and rotation facts on key_versions,
 * and the wrapping key pairs handed out by GetParametersForImport.
 */
export const LIFECYCLE_SCHEMA = `
-- NULL period: automatic rotation disabled. next_rotation_date is the due date the scheduler
-- claims; lifecycle_claim/_until is an expiring lease that makes exactly one process rotate or
-- sweep a key for a given due date.
ALTER TABLE keys ADD COLUMN rotation_period_days INTEGER;
ALTER TABLE keys ADD COLUMN next_rotation_date INTEGER;
ALTER TABLE keys ADD COLUMN lifecycle_claim TEXT;
ALTER TABLE keys ADD COLUMN lifecycle_claim_until INTEGER;
ALTER TABLE keys ADD COLUMN lifecycle_claim_started INTEGER;
ALTER TABLE keys ADD COLUMN lifecycle_claim_kind TEXT;

-- rotation_type/rotated_at: NULL for the first material; AUTOMATIC or ON_DEMAND and the date the
-- material became current for rotations (imported material can wait in PENDING_ROTATION).
-- import_state: NULL for material generated in the token; IMPORTED or PENDING_IMPORT otherwise.
-- check_value: SHA-256 of a known-answer encryption under the material, computed in the token;
-- recognises re-imports of the same material without ever reading it.
-- custody: 'software-oaep-unpadding' when the material passed through service memory because
-- the token lacked the unwrap mechanism; NULL when it entered through C_UnwrapKey.
ALTER TABLE key_versions ADD COLUMN rotation_type TEXT;
ALTER TABLE key_versions ADD COLUMN rotated_at INTEGER;
ALTER TABLE key_versions ADD COLUMN import_state TEXT;
ALTER TABLE key_versions ADD COLUMN expiration_model TEXT;
ALTER TABLE key_versions ADD COLUMN valid_to INTEGER;
ALTER TABLE key_versions ADD COLUMN material_description TEXT;
ALTER TABLE key_versions ADD COLUMN check_value TEXT;
ALTER TABLE key_versions ADD COLUMN custody TEXT;

CREATE INDEX keys_rotation_due ON keys (next_rotation_date) WHERE next_rotation_date IS NOT NULL;
CREATE INDEX keys_deletion_due ON keys (deletion_date) WHERE deletion_date IS NOT NULL;
CREATE INDEX key_versions_expiry ON key_versions (valid_to) WHERE valid_to IS NOT NULL;

-- One row per GetParametersForImport: its wrapping key pair lives in the token until valid_to.
-- No foreign key: the row must outlive its key until the sweeper has destroyed the token objects.
CREATE TABLE import_parameters (
  import_id          TEXT    NOT NULL PRIMARY KEY,
  key_id             TEXT    NOT NULL,
  wrapping_algorithm TEXT    NOT NULL,
  wrapping_key_spec  TEXT    NOT NULL,
  created_at         INTEGER NOT NULL,
  valid_to           INTEGER NOT NULL
) STRICT;
CREATE INDEX import_parameters_by_expiry ON import_parameters (valid_to);
`;
