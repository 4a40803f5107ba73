/**
 * Service configuration from environment variables, validated with zod. A bad value stops
 * start-up with a message naming the variable.
 */
import fs from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { xksAccessKeyIdSchema, xksSecretAccessKeySchema } from './auth/xks-credentials.js';
import { PROFILE_NAMES } from './hsm/profiles.js';

/** IAM's access key ID shape (the generated ones are AKIA + 16). Test set-ups often use short
 *  IDs such as "test", so only the character set and the 128 limit are enforced. */
export const accessKeyIdSchema = z.string().regex(/^\w{1,128}$/, 'must be 1-128 letters, digits or underscores');
export const secretAccessKeySchema = z.string().regex(/^\S{1,128}$/, 'must be 1-128 characters without white space');

const postgresUrl = z.string().regex(/^postgres(ql)?:\/\/\S+$/, 'must be a postgres:// or postgresql:// URL');

const bool = z.enum(['true', 'false', '1', '0']).transform((v) => v === 'true' || v === '1');

const regionSchema = z.string().regex(/^([a-z]+-){2,3}\d+$/, 'must look like an AWS region, e.g. us-east-1');

const envSchema = z.object({
  P11KMS_HOST: z.string().min(1).default('127.0.0.1'),
  P11KMS_PORT: z.coerce.number().int().min(0).max(65535).default(8080),
  P11KMS_DATA_DIR: z.string().min(1).default('./data'),
  P11KMS_PKCS11_MODULE: z.string().min(1).optional(),
  P11KMS_TOKEN_LABEL: z.string().min(1).max(32).optional(),
  P11KMS_PIN: z.string().min(1).optional(),
  P11KMS_PIN_FILE: z.string().min(1).optional(),
  /** Bind the metadata store to the token found even though its keys live in another one. */
  P11KMS_REBIND_TOKEN: bool.default(false),
  P11KMS_ACCOUNT_ID: z.string().regex(/^\d{12}$/, 'must be a 12-digit AWS account ID').default('111122223333'),
  P11KMS_REGION: regionSchema.optional(),
  /** The Regions this deployment serves (comma list); a request's Region is its SigV4 scope's. */
  P11KMS_REGIONS: z
    .string()
    .transform((v) => v.split(',').map((r) => r.trim()))
    .pipe(z.array(regionSchema).min(1))
    .refine((list) => new Set(list).size === list.length, 'names a Region twice')
    .optional(),
  P11KMS_ROOT_ACCESS_KEY_ID: accessKeyIdSchema.optional(),
  P11KMS_ROOT_SECRET_ACCESS_KEY: secretAccessKeySchema.optional(),
  P11KMS_PRINCIPALS_FILE: z.string().min(1).optional(),
  /** Peer deployments (other sites) multi-Region keys replicate to (src/kms/peers.ts). */
  P11KMS_PEERS_FILE: z.string().min(1).optional(),
  /** How many PKCS#11 sessions the pool may open. */
  P11KMS_SESSION_POOL_SIZE: z.coerce.number().int().min(1).max(256).default(8),
  /** Cheap symmetric token calls (AES-GCM, random) run synchronously on a local token (fastest:
   *  a thread hop costs more than the call); 'async' (network HSMs, where every call is a round
   *  trip) runs every request-path token call on worker threads. Unset: 'sync' for a local
   *  software token, 'async' for anything else (src/hsm/profiles.ts). */
  P11KMS_SYMMETRIC_CALLS: z.enum(['sync', 'async']).optional(),
  /** The token family's dialect (src/hsm/profiles.ts); unset: detected from C_GetInfo/C_GetTokenInfo. */
  P11KMS_HSM_PROFILE: z.enum(PROFILE_NAMES as [string, ...string[]]).optional(),
  /** Deadline of one request-path token call in async mode (DependencyTimeoutException past it). */
  P11KMS_HSM_CALL_TIMEOUT_MS: z.coerce.number().int().min(10).max(600_000).default(5000),
  /** Threads of the slow lane (src/hsm/slow-lane.ts): key generation and private-key operations
   *  running at once; libuv's four-thread pool never sees them. Default: src/hsm/slow-lane.ts. */
  P11KMS_SLOW_CALL_THREADS: z.coerce.number().int().min(1).max(64).optional(),
  /** Slow calls that may wait for a slow-lane thread; one more is refused (ThrottlingException). */
  P11KMS_SLOW_CALL_QUEUE_MAX: z.coerce.number().int().min(0).max(100_000).default(64),
  /** Deadline of one slow-lane call (an RSA-4096 generation takes seconds). */
  P11KMS_SLOW_CALL_TIMEOUT_MS: z.coerce.number().int().min(100).max(3_600_000).default(60_000),
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
  /** A second, append-only copy of every audit digest: `syslog`, or a directory (another mount). */
  P11KMS_AUDIT_DIGEST_COPY: z
    .string()
    .min(1)
    .refine((v) => v === 'syslog' || path.isAbsolute(v), 'must be `syslog` or an absolute directory path')
    .optional(),
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
  /** Serves the AWS KMS External Key Store proxy API under this path prefix (src/http/xks).
   *  AWS's XksProxyUriPath is this prefix + /kms/xks/v1: at most 128 characters of a-z, A-Z,
   *  0-9, /, - and _. */
  P11KMS_XKS_URI_PREFIX: z
    .string()
    .regex(/^(\/[A-Za-z0-9_-]+)*\/?$/, 'must be a path such as /xks/v1prefix (letters, digits, -, _ and /)')
    .max(128 - '/kms/xks/v1'.length, 'with /kms/xks/v1 appended it must fit AWS\'s 128-character XksProxyUriPath')
    .optional(),
  P11KMS_XKS_ACCESS_KEY_ID: xksAccessKeyIdSchema.optional(),
  P11KMS_XKS_SECRET_ACCESS_KEY: xksSecretAccessKeySchema.optional(),
  /** JSON {"credentials":[{accessKeyId, secretAccessKey}, …]}: one or two pairs (rotation),
   *  re-read when it changes. */
  P11KMS_XKS_CREDENTIALS_FILE: z.string().min(1).optional(),
  /** Secondary authorization rules for XKS requests (src/kms/xks/authorization.ts). */
  P11KMS_XKS_AUTHORIZATION_FILE: z.string().min(1).optional(),
  /** HTTPS on P11KMS_PORT (PEM; the cert file may hold the chain). Both or neither. */
  P11KMS_TLS_CERT_FILE: z.string().min(1).optional(),
  P11KMS_TLS_KEY_FILE: z.string().min(1).optional(),
  /** Mutual TLS: clients must present a certificate chaining to this CA bundle (PEM). */
  P11KMS_TLS_CLIENT_CA_FILE: z.string().min(1).optional(),
  /** Request quotas: off, AWS's documented defaults, or a JSON/YAML quota file (src/kms/quotas/). */
  P11KMS_QUOTAS: z.string().min(1).default('off'),
  /** Callers queued for a PKCS#11 session beyond which requests are throttled (back-pressure). */
  P11KMS_SESSION_QUEUE_MAX: z.coerce.number().int().min(0).max(1_000_000).default(256),
  /** A client must send the complete request head within this time (slow-header connections). */
  P11KMS_HEADERS_TIMEOUT_MS: z.coerce.number().int().min(100).max(600_000).default(10_000),
  /** ... and the complete request (head and body) within this time. */
  P11KMS_REQUEST_TIMEOUT_MS: z.coerce.number().int().min(100).max(3_600_000).default(30_000),
  /** An idle keep-alive connection is closed after this time (above the usual 60 s of load balancers). */
  P11KMS_KEEP_ALIVE_TIMEOUT_MS: z.coerce.number().int().min(100).max(3_600_000).default(65_000),
  /** Open connections at most (further ones are closed on accept). */
  P11KMS_MAX_CONNECTIONS: z.coerce.number().int().min(1).max(1_000_000).default(4096),
  /** Open connections from one source address at most. */
  P11KMS_MAX_CONNECTIONS_PER_SOURCE: z.coerce.number().int().min(1).max(1_000_000).default(512),
  /** KMS API requests being processed at once at most (further ones: ThrottlingException). */
  P11KMS_MAX_REQUESTS_IN_FLIGHT: z.coerce.number().int().min(1).max(1_000_000).default(1024),
  /** On SIGTERM: how long /readyz answers 503 before the listener closes (load balancers notice). */
  P11KMS_SHUTDOWN_DELAY_MS: z.coerce.number().int().min(0).max(600_000).default(0),
  /** On SIGTERM: how long in-flight requests may take to finish before connections are cut. */
  P11KMS_SHUTDOWN_TIMEOUT_MS: z.coerce.number().int().min(0).max(600_000).default(10_000),
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
  /** Undefined: chosen from the vendor profile (sync for a local software token). */
  symmetricCalls?: 'sync' | 'async';
  /** A profile name from src/hsm/profiles.ts; undefined: detected. */
  profile?: string;
  /** Deadline of one request-path token call in async mode; default 5000. */
  callTimeoutMs?: number;
  /** Callers that may wait for a busy session; one more is refused (HsmError 'busy'). */
  sessionQueueMax?: number;
  /** The slow lane (src/hsm/slow-lane.ts); undefined: its defaults. */
  slowLane?: { threads?: number; queueMax: number; deadlineMs: number };
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
  /** The home Region (P11KMS_REGION): the console's, STS's, the XKS proxy's, the audit trail's. */
  region: string;
  /** Every Region served (P11KMS_REGIONS), the home Region among them. */
  regions: string[];
  partition: string;
  rootCredentials?: { accessKeyId: string; secretAccessKey: string };
  principalsFile?: string;
  /** JSON or YAML file naming the peer deployments (other sites) of multi-Region keys. */
  peersFile?: string;
  token: TokenConfig;
  /** P11KMS_REBIND_TOKEN (src/kms/token-binding.ts). */
  rebindToken: boolean;
  database: DatabaseConfig;
  logLevel: z.infer<typeof envSchema>['P11KMS_LOG_LEVEL'];
  workers: number;
  maxClockSkewSeconds: number;
  audit: AuditConfig;
  lifecycle: LifecycleConfig;
  /** The XKS proxy API; absent when P11KMS_XKS_URI_PREFIX is unset. */
  xks?: XksConfig;
  frontDoor: FrontDoorConfig;
}

export interface XksConfig {
  /** Without a trailing slash; '' serves /kms/xks/v1 at the root. */
  uriPrefix: string;
  /** From P11KMS_XKS_ACCESS_KEY_ID / _SECRET_ACCESS_KEY; else credentialsFile is set. */
  credential?: { accessKeyId: string; secretAccessKey: string };
  credentialsFile?: string;
  authorizationFile?: string;
}

export interface TlsConfig {
  certFile: string;
  keyFile: string;
  clientCaFile?: string;
}

export interface ConnectionLimits {
  headersTimeoutMs: number;
  requestTimeoutMs: number;
  keepAliveTimeoutMs: number;
  maxConnections: number;
  maxConnectionsPerSource: number;
  maxRequestsInFlight: number;
}

/** How the service meets the network: TLS, quotas, connection limits, shutdown. */
export interface FrontDoorConfig {
  tls?: TlsConfig;
  /** 'off', 'aws' or the path of a quota file. */
  quotas: string;
  connections: ConnectionLimits;
  shutdownDelayMs: number;
  shutdownTimeoutMs: number;
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
  /** `syslog` or an absolute directory: where digests are copied as they are signed. */
  digestCopy?: string;
}

export class ConfigError extends Error {}

const partitionOf = (region: string) => (region.startsWith('cn-') ? 'aws-cn' : region.startsWith('us-gov-') ? 'aws-us-gov' : 'aws');

/** P11KMS_REGIONS defaults to P11KMS_REGION alone; P11KMS_REGION defaults to the list's first. An
 *  account's Regions share one partition (ARNs name it), so a list spanning two is refused. */
function servedRegions(home: string | undefined, listed: string[] | undefined): { region: string; regions: string[] } {
  const regions = listed ?? [home ?? 'us-east-1'];
  const region = home ?? regions[0]!;
  if (!regions.includes(region)) throw new ConfigError(`invalid configuration: P11KMS_REGION ${region} is not among P11KMS_REGIONS`);
  const foreign = regions.find((r) => partitionOf(r) !== partitionOf(region));
  if (foreign) throw new ConfigError(`invalid configuration: P11KMS_REGIONS mixes partitions (${region} and ${foreign})`);
  return { region, regions };
}

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
  if ((e.P11KMS_TLS_CERT_FILE === undefined) !== (e.P11KMS_TLS_KEY_FILE === undefined)) {
    throw new ConfigError('invalid configuration: P11KMS_TLS_CERT_FILE and P11KMS_TLS_KEY_FILE must be set together');
  }
  if (e.P11KMS_TLS_CLIENT_CA_FILE !== undefined && e.P11KMS_TLS_CERT_FILE === undefined) {
    throw new ConfigError('invalid configuration: P11KMS_TLS_CLIENT_CA_FILE needs P11KMS_TLS_CERT_FILE and P11KMS_TLS_KEY_FILE');
  }
  const { region, regions } = servedRegions(e.P11KMS_REGION, e.P11KMS_REGIONS);
  const database = databaseConfig(e.P11KMS_DATABASE_URL, e.P11KMS_DATABASE_URL_FILE, path.resolve(e.P11KMS_DATA_DIR));
  return {
    host: e.P11KMS_HOST,
    port: e.P11KMS_PORT,
    dataDir: path.resolve(e.P11KMS_DATA_DIR),
    accountId: e.P11KMS_ACCOUNT_ID,
    region,
    regions,
    partition: partitionOf(region),
    rootCredentials:
      e.P11KMS_ROOT_ACCESS_KEY_ID && e.P11KMS_ROOT_SECRET_ACCESS_KEY
        ? { accessKeyId: e.P11KMS_ROOT_ACCESS_KEY_ID, secretAccessKey: e.P11KMS_ROOT_SECRET_ACCESS_KEY }
        : undefined,
    principalsFile: e.P11KMS_PRINCIPALS_FILE,
    peersFile: e.P11KMS_PEERS_FILE,
    token: {
      module: e.P11KMS_PKCS11_MODULE,
      label: e.P11KMS_TOKEN_LABEL ?? 'p11kms',
      pin: e.P11KMS_PIN,
      pinFile: e.P11KMS_PIN_FILE,
      poolSize: e.P11KMS_SESSION_POOL_SIZE,
      symmetricCalls: e.P11KMS_SYMMETRIC_CALLS,
      sessionQueueMax: e.P11KMS_SESSION_QUEUE_MAX,
      profile: e.P11KMS_HSM_PROFILE,
      callTimeoutMs: e.P11KMS_HSM_CALL_TIMEOUT_MS,
      slowLane: { threads: e.P11KMS_SLOW_CALL_THREADS, queueMax: e.P11KMS_SLOW_CALL_QUEUE_MAX, deadlineMs: e.P11KMS_SLOW_CALL_TIMEOUT_MS },
      // Nodes on one database share one token: a SoftHSM2 token then needs the object-write lock.
      sharedAcrossProcesses: e.P11KMS_WORKERS > 1 || database.kind === 'postgres',
      objectWriteLockFile: e.P11KMS_TOKEN_LOCK_FILE,
    },
    rebindToken: e.P11KMS_REBIND_TOKEN,
    database,
    logLevel: e.P11KMS_LOG_LEVEL,
    workers: e.P11KMS_WORKERS,
    maxClockSkewSeconds: e.P11KMS_MAX_CLOCK_SKEW_SECONDS,
    audit: {
      enabled: e.P11KMS_AUDIT === 'on',
      retentionDays: e.P11KMS_AUDIT_RETENTION_DAYS,
      digestIntervalSeconds: e.P11KMS_AUDIT_DIGEST_SECONDS,
      fileMaxBytes: e.P11KMS_AUDIT_FILE_MAX_MB * 1024 * 1024,
      digestCopy: e.P11KMS_AUDIT_DIGEST_COPY,
    },
    lifecycle: {
      strictKeyCustody: e.P11KMS_STRICT_KEY_CUSTODY,
      seedFile: e.P11KMS_SEED_FILE,
      intervalMs: e.P11KMS_LIFECYCLE_INTERVAL_MS,
      gcmRotateAfter: e.P11KMS_GCM_ROTATE_AFTER,
    },
    xks: xksConfigOf(e),
    frontDoor: {
      tls: e.P11KMS_TLS_CERT_FILE && e.P11KMS_TLS_KEY_FILE
        ? { certFile: e.P11KMS_TLS_CERT_FILE, keyFile: e.P11KMS_TLS_KEY_FILE, clientCaFile: e.P11KMS_TLS_CLIENT_CA_FILE }
        : undefined,
      quotas: e.P11KMS_QUOTAS,
      connections: {
        headersTimeoutMs: e.P11KMS_HEADERS_TIMEOUT_MS,
        requestTimeoutMs: Math.max(e.P11KMS_REQUEST_TIMEOUT_MS, e.P11KMS_HEADERS_TIMEOUT_MS),
        keepAliveTimeoutMs: e.P11KMS_KEEP_ALIVE_TIMEOUT_MS,
        maxConnections: e.P11KMS_MAX_CONNECTIONS,
        maxConnectionsPerSource: e.P11KMS_MAX_CONNECTIONS_PER_SOURCE,
        maxRequestsInFlight: e.P11KMS_MAX_REQUESTS_IN_FLIGHT,
      },
      shutdownDelayMs: e.P11KMS_SHUTDOWN_DELAY_MS,
      shutdownTimeoutMs: e.P11KMS_SHUTDOWN_TIMEOUT_MS,
    },
  };
}

function xksConfigOf(e: z.infer<typeof envSchema>): XksConfig | undefined {
  const pairGiven = e.P11KMS_XKS_ACCESS_KEY_ID !== undefined || e.P11KMS_XKS_SECRET_ACCESS_KEY !== undefined;
  if (e.P11KMS_XKS_URI_PREFIX === undefined) {
    if (pairGiven || e.P11KMS_XKS_CREDENTIALS_FILE || e.P11KMS_XKS_AUTHORIZATION_FILE) {
      throw new ConfigError('invalid configuration: the P11KMS_XKS_* settings need P11KMS_XKS_URI_PREFIX, which turns the XKS proxy API on');
    }
    return undefined;
  }
  if ((e.P11KMS_XKS_ACCESS_KEY_ID === undefined) !== (e.P11KMS_XKS_SECRET_ACCESS_KEY === undefined)) {
    throw new ConfigError('invalid configuration: P11KMS_XKS_ACCESS_KEY_ID and P11KMS_XKS_SECRET_ACCESS_KEY must be set together');
  }
  if (pairGiven === (e.P11KMS_XKS_CREDENTIALS_FILE !== undefined)) {
    throw new ConfigError(
      'invalid configuration: the XKS proxy API needs its SigV4 credential: P11KMS_XKS_ACCESS_KEY_ID with P11KMS_XKS_SECRET_ACCESS_KEY, or P11KMS_XKS_CREDENTIALS_FILE (not both)',
    );
  }
  return {
    uriPrefix: e.P11KMS_XKS_URI_PREFIX.replace(/\/+$/, ''),
    credential: pairGiven ? { accessKeyId: e.P11KMS_XKS_ACCESS_KEY_ID!, secretAccessKey: e.P11KMS_XKS_SECRET_ACCESS_KEY! } : undefined,
    credentialsFile: e.P11KMS_XKS_CREDENTIALS_FILE,
    authorizationFile: e.P11KMS_XKS_AUTHORIZATION_FILE,
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
