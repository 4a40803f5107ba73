/**
 * The metadata store contract. Asynchronous so that SQLite (embedded default) and PostgreSQL
 * (several service nodes on one database) can both satisfy it. It holds metadata only: never key
 * material, plaintext or secrets.
 */
import type { AuditChainRegistry } from './audit-chains.js';
import type { KeyLifecycleStore } from './lifecycle.js';
import type { TokenBindingStore } from './token-binding.js';

export type KeyState =
  | 'Creating'
  | 'Enabled'
  | 'Disabled'
  | 'PendingDeletion'
  | 'PendingImport'
  | 'PendingReplicaDeletion'
  | 'Unavailable'
  | 'Updating';

export interface KeyRecord {
  keyId: string;
  accountId: string;
  region: string;
  createdAt: Date;
  description: string;
  keyState: KeyState;
  keySpec: string;
  keyUsage: string;
  origin: string;
  /** The key policy document as the caller gave it (or the default policy). */
  policy: string;
  /** Backing-key version that new ciphertexts use. */
  currentVersion: number;
  deletionDate: Date | null;
  pendingWindowInDays: number | null;
  /** Multi-Region keys only: the Region of the primary key, the same on every Region's row of
   *  the key (absent for single-Region keys). */
  primaryRegion?: string;
  /** AWS for an AWS managed key (alias/aws/<service>, kms/managed-keys.ts); absent means CUSTOMER. */
  keyManager?: 'AWS' | 'CUSTOMER';
}

export interface BackingKeyVersionRecord {
  keyId: string;
  version: number;
  createdAt: Date;
  /** 64 hex characters, as AWS's KeyMaterialId. */
  keyMaterialId: string;
}

/** An alias is unique per (Region, name), as in AWS: the same name can exist in every Region. */
export interface AliasRecord {
  region: string;
  aliasName: string;
  targetKeyId: string;
  createdAt: Date;
  lastUpdatedAt: Date;
}

export interface TagRecord {
  TagKey: string;
  TagValue: string;
}

/** A grant's encryption-context constraints (CreateGrant's Constraints). */
export interface GrantConstraints {
  EncryptionContextEquals?: Record<string, string>;
  EncryptionContextSubset?: Record<string, string>;
}

export interface GrantRecord {
  /** 64 hex characters. */
  grantId: string;
  keyId: string;
  name: string | null;
  granteePrincipal: string;
  retiringPrincipal: string | null;
  /** ARN of the account root that owns the key (GrantListEntry.IssuingAccount). */
  issuingAccount: string;
  /** Grant operation names, e.g. "Encrypt", "ReEncryptFrom". */
  operations: string[];
  constraints: GrantConstraints | null;
  createdAt: Date;
}

export type KeyUpdate = Partial<Pick<KeyRecord, 'description' | 'keyState' | 'deletionDate' | 'pendingWindowInDays' | 'policy' | 'currentVersion'>>;

export class StoreConflictError extends Error {}

/** The database cannot be reached right now (down, failing over, refusing connections); the
 *  request may be retried. Messages name the cause, never credentials. */
export class StoreUnavailableError extends Error {
  override name = 'StoreUnavailableError';
}

/** The last successful cryptographic operation with a key (GetKeyLastUsage). */
export interface KeyUseRecord {
  keyId: string;
  operation: string;
  at: Date;
  requestId: string;
  /** The audit record's eventID; absent when the audit trail is off. */
  eventId?: string;
}

export interface MetadataStore {
  /** Rotation, imports, expiry and work claims (key-material lifecycle). */
  readonly lifecycle: KeyLifecycleStore;
  /** The audit chains and their newest digests (anchors the audit trail outside its directory). */
  readonly auditChains: AuditChainRegistry;
  /** Which PKCS#11 token the keys live in. */
  readonly tokenBinding: TokenBindingStore;
  /** Inserts the key, its first backing version and its tags in one transaction, durable on return. */
  createKey(key: KeyRecord, version: BackingKeyVersionRecord, tags: TagRecord[]): Promise<void>;
  getKey(keyId: string): Promise<KeyRecord | undefined>;
  /** Keys ordered by keyId, strictly after `afterKeyId` when given. */
  listKeys(afterKeyId: string | undefined, limit: number): Promise<KeyRecord[]>;
  countKeys(): Promise<number>;
  /** Applies `update` to the key; returns false when the key does not exist. */
  updateKey(keyId: string, update: KeyUpdate): Promise<boolean>;
  /** A key row without backing versions and its tags (one Region's row of a multi-Region key,
   *  src/kms/regional-store.ts); StoreConflictError when the row exists. */
  createRegionalKey(key: KeyRecord, tags: TagRecord[]): Promise<void>;
  /** The Regions' rows of the multi-Region key `keyId` (rows `<keyId>/<Region>`), by row ID. */
  multiRegionKeys(keyId: string): Promise<KeyRecord[]>;
  /** Sets primaryRegion on the material row `keyId` and on every Region's row of it, at once. */
  setPrimaryRegion(keyId: string, primaryRegion: string): Promise<void>;
  /** Removes a key and everything that hangs off it (versions, aliases, tags). */
  deleteKey(keyId: string): Promise<void>;

  listVersions(keyId: string): Promise<BackingKeyVersionRecord[]>;
  /** Every (keyId, version) in the store, for the token/database consistency check. */
  listAllVersions(): Promise<Array<{ keyId: string; version: number }>>;

  /** Inserts the key, its first backing version, its automatic rotation schedule and an alias to it
   *  in one transaction, durable on return; false, with nothing written, when the alias exists
   *  (AWS managed keys: concurrent first uses leave one key). */
  createKeyWithAlias(
    key: KeyRecord,
    version: BackingKeyVersionRecord,
    alias: AliasRecord,
    rotation: { periodInDays: number; nextRotationDate: Date },
  ): Promise<boolean>;
  /** Throws StoreConflictError when the alias name exists in the alias's Region. */
  createAlias(alias: AliasRecord): Promise<void>;
  getAlias(region: string, aliasName: string): Promise<AliasRecord | undefined>;
  /** Returns false when the alias does not exist. */
  updateAlias(region: string, aliasName: string, targetKeyId: string, at: Date): Promise<boolean>;
  /** Returns false when the alias does not exist. */
  deleteAlias(region: string, aliasName: string): Promise<boolean>;
  /** updateAlias and deleteAlias, done only while the alias still points to `decidedKeyId` (the
   *  key its authorization was decided on); false when it does not, or does not exist. */
  updateAliasIfTarget(region: string, aliasName: string, decidedKeyId: string, targetKeyId: string, at: Date): Promise<boolean>;
  deleteAliasIfTarget(region: string, aliasName: string, decidedKeyId: string): Promise<boolean>;
  /** Aliases of one Region ordered by name, strictly after `afterAliasName`, optionally only those
   *  of one key. */
  listAliases(filter: { region: string; targetKeyId?: string; afterAliasName?: string; limit: number }): Promise<AliasRecord[]>;
  countAliasesForKey(keyId: string): Promise<number>;

  /** Tags ordered by TagKey. */
  listTags(keyId: string): Promise<TagRecord[]>;
  /** Adds or overwrites tags. */
  putTags(keyId: string, tags: TagRecord[]): Promise<void>;
  removeTags(keyId: string, tagKeys: string[]): Promise<void>;

  createGrant(grant: GrantRecord): Promise<void>;
  getGrant(keyId: string, grantId: string): Promise<GrantRecord | undefined>;
  /** Grants of one key ordered by grantId, strictly after `afterGrantId`, optionally filtered. */
  listGrants(filter: { keyId: string; grantId?: string; granteePrincipal?: string; afterGrantId?: string; limit: number }): Promise<GrantRecord[]>;
  /** The grants on a key whose grantee is one of `granteePrincipals` (authorization). */
  grantsForGrantees(keyId: string, granteePrincipals: string[]): Promise<GrantRecord[]>;
  /** Grants on any key with this retiring principal, ordered by grantId. */
  listRetirableGrants(filter: { retiringPrincipal: string; afterGrantId?: string; limit: number }): Promise<GrantRecord[]>;
  /** Grants on a key with this name (CreateGrant's idempotency). */
  grantsNamed(keyId: string, name: string): Promise<GrantRecord[]>;
  countGrants(keyId: string): Promise<number>;
  /** Returns false when the grant does not exist. */
  deleteGrant(keyId: string, grantId: string): Promise<boolean>;

  /** Keeps, per key, the latest of the uses given and the one stored; keys since deleted are skipped. */
  recordKeyUses(uses: readonly KeyUseRecord[]): Promise<void>;
  getKeyUse(keyId: string): Promise<KeyUseRecord | undefined>;
  /** When the store began recording key uses (the migration that added them). */
  keyUseTrackingStart(): Promise<Date>;

  /** A real round trip to the database (health checks). */
  ping(): Promise<void>;
  close(): Promise<void>;
}
