/**
 * Service configuration from environment variables, validated with zod. A bad value stops
 * start-up with a message naming the variable.
 */
import fs from 'node:fs';
import path from 'node:path';
import { z } from 'zod';

/** IAM's access key ID shape (the generated ones are AKIA + 16). Test set-ups often use short
 *  IDs such as "test", so only the character set and the 128 limit are enforced. */
export const accessKeyIdSchema = z.string().regex(/^\w{1,128}$/, 'must be 1-128 letters, digits or underscores');
export const secretAccessKeySchema = z.string().regex(/^\S{1,128}$/, 'must be 1-128 characters without white space');

const postgresUrl = z.string().regex(/^postgres(ql)?:\/\/\S+$/, 'must be a postgres:// or postgresql:// URL');

const bool = z.enum(['true', 'false', '1', '0']).transform((v) => v === 'true' || v === '1');

const envSchema = z.object({
  P11KMS_HOST: z.string().min(1).default('127.0.0.1'),
  P11KMS_PORT: z.coerce.number().int().min(0).max(65535).default(8080),
  P11KMS_DATA_DIR: z.string().min(1).default('./data'),
  P11KMS_PKCS11_MODULE: z.string().min(1).optional(),
  P11KMS_TOKEN_LABEL: z.string().min(1).max(32).optional(),
  P11KMS_PIN: z.string().min(1).optional(),
  P11KMS_PIN_FILE: z.string().min(1).optional(),
  P11KMS_ACCOUNT_ID: z.string().regex(/^\d{12}$/, 'must be a 12-digit AWS account ID').default('111122223333'),
  P11KMS_REGION: z.string().regex(/^([a-z]+-){2,3}\d+$/, 'must look like an AWS region, e.g. us-east-1').default('us-east-1'),
  P11KMS_ROOT_ACCESS_KEY_ID: accessKeyIdSchema.optional(),
  P11KMS_ROOT_SECRET_ACCESS_KEY: secretAccessKeySchema.optional(),
  P11KMS_PRINCIPALS_FILE: z.string().min(1).optional(),
  /** How many PKCS#11 sessions the pool may open. */
  P11KMS_SESSION_POOL_SIZE: z.coerce.number().int().min(1).max(256).default(8),
  /** Cheap symmetric token calls (AES-GCM, random) run synchronously on a local token (fastest:
   *  a thread-pool hop costs more than the call); 'async' suits network HSMs where every call is
   *  a round trip. Key generation and RSA always run async. */
  P11KMS_SYMMETRIC_CALLS: z.enum(['sync', 'async']).default('sync'),
  /** Service processes sharing the port (node:cluster); each opens the token and the store. */
  P11KMS_WORKERS: z.coerce.number().int().min(1).max(64).default(1),
  P11KMS_LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  /** SigV4 clock-skew tolerance. */
  P11KMS_MAX_CLOCK_SKEW_SECONDS: z.coerce.number().int().min(1).max(3600).default(300),
  /** Audit trail (src/audit). 'off' exists for benchmarks and for operators who accept running
   *  without an audit trail; every request is then unaudited. */
  P11KMS_AUDIT: z.enum(['on', 'off']).default('on'),
  /** Audit files whose newest record is older than this many days are deleted; unset: keep all. */
  P11KMS_AUDIT_RETENTION_DAYS: z.coerce.number().int().min(1).max(36500).optional(),
  /** How often the audit chain's digest is signed with the token key (and always at shutdown). */
  P11KMS_AUDIT_DIGEST_SECONDS: z.coerce.number().int().min(1).max(86400).default(300),
  /** An audit file rolls over at this size (and at each UTC day). */
  P11KMS_AUDIT_FILE_MAX_MB: z.coerce.number().int().min(1).max(4096).default(64),
  /** Refuse imports that the token cannot unwrap itself (e.g. OAEP-SHA-256 on SoftHSM2), instead
   *  of removing the padding in the service. */
  P11KMS_STRICT_KEY_CUSTODY: bool.default(false),
  /** Encryptions under one backing version after which a generated key rotates (AES-GCM with
   *  random IVs: NIST's bound is 2^32 per key; the default is half of it). */
  P11KMS_GCM_ROTATE_AFTER: z.coerce.number().int().min(1).max(2 ** 32).default(2 ** 31),
  /** JSON or YAML seed file applied at start (keys with fixed IDs, aliases, imported material). */
  P11KMS_SEED_FILE: z.string().min(1).optional(),
  /** How often rotations, deletion sweeps and import expiry are checked (also once at start). */
  P11KMS_LIFECYCLE_INTERVAL_MS: z.coerce.number().int().min(10).max(86_400_000).default(60_000),
  /** PostgreSQL instead of the embedded SQLite file: several service nodes on one database. The
   *  messages never repeat the value (it may hold a password). */
  P11KMS_DATABASE_URL: postgresUrl.optional(),
  /** A file holding the URL, so that the password need not sit in the environment. */
  P11KMS_DATABASE_URL_FILE: z.string().min(1).optional(),
  /** The cross-process lock file for token object writes on a shared SoftHSM2 token; default:
   *  a file in SoftHSM2's token directory (see src/hsm/provision.ts). */
  P11KMS_TOKEN_LOCK_FILE: z.string().min(1).optional(),
});

export interface TokenConfig {
  /** Absent: self-provision a SoftHSM2 token under <dataDir>/softhsm. */
  module?: string;
  label: string;
  pin?: string;
  pinFile?: string;
  poolSize: number;
  symmetricCalls: 'sync' | 'async';
  /** Several service processes use the token (P11KMS_WORKERS > 1): SoftHSM2 then needs object
   *  writes and scans serialised across processes (see src/hsm/pkcs11-hsm.ts tokenWrite). */
  sharedAcrossProcesses?: boolean;
  /** Overrides where a shared SoftHSM2 token's object-write lock lives (P11KMS_TOKEN_LOCK_FILE). */
  objectWriteLockFile?: string;
}

/** Where metadata lives: the embedded SQLite file, or PostgreSQL shared by several nodes. */
export type DatabaseConfig = { kind: 'sqlite'; file: string } | { kind: 'postgres'; url: string };

/** The SQLite file under the data dir when no database URL is given. */
export const DATABASE_FILE = 'p11kms.db';

export interface Config {
  host: string;
  port: number;
  dataDir: string;
  accountId: string;
  region: string;
  partition: string;
  rootCredentials?: { accessKeyId: string; secretAccessKey: string };
  principalsFile?: string;
  token: TokenConfig;
  database: DatabaseConfig;
  logLevel: z.infer<typeof envSchema>['P11KMS_LOG_LEVEL'];
  workers: number;
  maxClockSkewSeconds: number;
  audit: AuditConfig;
  lifecycle: LifecycleConfig;
}

export interface LifecycleConfig {
  strictKeyCustody: boolean;
  seedFile?: string;
  intervalMs: number;
  gcmRotateAfter: number;
}

export interface AuditConfig {
  enabled: boolean;
  retentionDays?: number;
  digestIntervalSeconds: number;
  fileMaxBytes: number;
}

export class ConfigError extends Error {}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const parsed = envSchema.safeParse(
    Object.fromEntries(Object.entries(env).filter(([k, v]) => k.startsWith('P11KMS_') && v !== '')),
  );
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
    throw new ConfigError(`invalid configuration:\n  ${problems.join('\n  ')}`);
  }
  const e = parsed.data;
  if ((e.P11KMS_ROOT_ACCESS_KEY_ID === undefined) !== (e.P11KMS_ROOT_SECRET_ACCESS_KEY === undefined)) {
    throw new ConfigError('invalid configuration: P11KMS_ROOT_ACCESS_KEY_ID and P11KMS_ROOT_SECRET_ACCESS_KEY must be set together');
  }
  if (e.P11KMS_PKCS11_MODULE !== undefined) {
    if (e.P11KMS_TOKEN_LABEL === undefined) throw new ConfigError('invalid configuration: P11KMS_TOKEN_LABEL is required with P11KMS_PKCS11_MODULE');
    if (e.P11KMS_PIN === undefined && e.P11KMS_PIN_FILE === undefined) {
      throw new ConfigError('invalid configuration: P11KMS_PIN or P11KMS_PIN_FILE is required with P11KMS_PKCS11_MODULE');
    }
  }
  const database = databaseConfig(e.P11KMS_DATABASE_URL, e.P11KMS_DATABASE_URL_FILE, path.resolve(e.P11KMS_DATA_DIR));
  return {
    host: e.P11KMS_HOST,
    port: e.P11KMS_PORT,
    dataDir: path.resolve(e.P11KMS_DATA_DIR),
    accountId: e.P11KMS_ACCOUNT_ID,
    region: e.P11KMS_REGION,
    partition: e.P11KMS_REGION.startsWith('cn-') ? 'aws-cn' : e.P11KMS_REGION.startsWith('us-gov-') ? 'aws-us-gov' : 'aws',
    rootCredentials:
      e.P11KMS_ROOT_ACCESS_KEY_ID && e.P11KMS_ROOT_SECRET_ACCESS_KEY
        ? { accessKeyId: e.P11KMS_ROOT_ACCESS_KEY_ID, secretAccessKey: e.P11KMS_ROOT_SECRET_ACCESS_KEY }
        : undefined,
    principalsFile: e.P11KMS_PRINCIPALS_FILE,
    token: {
      module: e.P11KMS_PKCS11_MODULE,
      label: e.P11KMS_TOKEN_LABEL ?? 'p11kms',
      pin: e.P11KMS_PIN,
      pinFile: e.P11KMS_PIN_FILE,
      poolSize: e.P11KMS_SESSION_POOL_SIZE,
      symmetricCalls: e.P11KMS_SYMMETRIC_CALLS,
      // Nodes on one database share one token: a SoftHSM2 token then needs the object-write lock.
      sharedAcrossProcesses: e.P11KMS_WORKERS > 1 || database.kind === 'postgres',
      objectWriteLockFile: e.P11KMS_TOKEN_LOCK_FILE,
    },
    database,
    logLevel: e.P11KMS_LOG_LEVEL,
    workers: e.P11KMS_WORKERS,
    maxClockSkewSeconds: e.P11KMS_MAX_CLOCK_SKEW_SECONDS,
    audit: {
      enabled: e.P11KMS_AUDIT === 'on',
      retentionDays: e.P11KMS_AUDIT_RETENTION_DAYS,
      digestIntervalSeconds: e.P11KMS_AUDIT_DIGEST_SECONDS,
      fileMaxBytes: e.P11KMS_AUDIT_FILE_MAX_MB * 1024 * 1024,
    },
    lifecycle: {
      strictKeyCustody: e.P11KMS_STRICT_KEY_CUSTODY,
      seedFile: e.P11KMS_SEED_FILE,
      intervalMs: e.P11KMS_LIFECYCLE_INTERVAL_MS,
      gcmRotateAfter: e.P11KMS_GCM_ROTATE_AFTER,
    },
  };
}

function databaseConfig(url: string | undefined, urlFile: string | undefined, dataDir: string): DatabaseConfig {
  if (url !== undefined && urlFile !== undefined) {
    throw new ConfigError('invalid configuration: set P11KMS_DATABASE_URL or P11KMS_DATABASE_URL_FILE, not both');
  }
  if (urlFile !== undefined) {
    let text: string;
    try {
      text = fs.readFileSync(urlFile, 'utf8').trim();
    } catch (err) {
      throw new ConfigError(`invalid configuration: P11KMS_DATABASE_URL_FILE: cannot read ${urlFile} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    }
    const parsed = postgresUrl.safeParse(text);
    if (!parsed.success) throw new ConfigError(`invalid configuration: P11KMS_DATABASE_URL_FILE: ${urlFile} ${parsed.error.issues[0]?.message}`);
    return { kind: 'postgres', url: parsed.data };
  }
  if (url !== undefined) return { kind: 'postgres', url };
  return { kind: 'sqlite', file: path.join(dataDir, DATABASE_FILE) };
}
