/**
 * Request quotas with AWS KMS's semantics (P11KMS_QUOTAS): requests per second per account —
 * and, on top, per principal — for families of cryptographic operations that share one quota
 * (symmetric, RSA, ECC, GenerateDataKeyPair per key pair spec) and for single operations. A
 * request over a quota is refused with ThrottlingException naming the quota; SDKs retry it with
 * backoff. Each quota is a token bucket holding one second of its rate (at least one request),
 * refilled continuously, so a burst of N requests passes a quota of N/s and the next must wait.
 */
import { readStructuredFile } from '../../structured-file.js';
import { z } from 'zod';
import { KmsError } from '../errors.js';
import { awsDefaultQuotas } from './aws-defaults.js';

export const DATA_KEY_PAIR_SPECS = ['RSA_2048', 'RSA_3072', 'RSA_4096', 'ECC_NIST_P256', 'ECC_NIST_P384', 'ECC_NIST_P521', 'ECC_SECG_P256K1', 'SM2'] as const;
const dataKeyPairFamily = (spec: string) => `GenerateDataKeyPair (${spec})`;
export const QUOTA_FAMILIES = ['symmetric', 'rsa', 'ecc', ...DATA_KEY_PAIR_SPECS.map(dataKeyPairFamily)];

/** What each family is called in AWS's quota table (and in the ThrottlingException message). */
const FAMILY_QUOTA_NAMES: Record<string, string> = {
  symmetric: 'Cryptographic operations (symmetric) request rate',
  rsa: 'Cryptographic operations (RSA) request rate',
  ecc: 'Cryptographic operations (ECC) request rate',
};
const quotaName = (family: string) => FAMILY_QUOTA_NAMES[family] ?? `${family} request rate`;

const PRINCIPAL_ARN = /^arn:aws[a-z-]*:iam::\d{12}:(root|user\/.+|role\/.+)$/;
const rates = z.record(z.string(), z.number().positive().finite());
const limitsSchema = z.strictObject({
  families: rates.default({}).refine((f) => Object.keys(f).every((k) => QUOTA_FAMILIES.includes(k)), {
    message: `families may name only ${QUOTA_FAMILIES.join(', ')}`,
  }),
  operations: rates.default({}),
});
const quotaFileSchema = limitsSchema.extend({
  principals: z
    .record(z.string(), limitsSchema)
    .default({})
    .superRefine((principals, ctx) => {
      for (const arn of Object.keys(principals)) {
        if (!PRINCIPAL_ARN.test(arn)) ctx.addIssue({ code: 'custom', path: [arn], message: 'must be an IAM principal ARN' });
      }
    }),
});

export type QuotaLimits = z.infer<typeof limitsSchema>;
export type QuotaTable = z.infer<typeof quotaFileSchema>;

/** A request refused by a quota (or by back-pressure); `family` labels the metric. */
export class Throttled extends KmsError {
  constructor(
    readonly family: string,
    detail: string,
  ) {
    super('ThrottlingException', `You have exceeded the rate at which you may call KMS. Reduce the frequency of your calls. (${detail})`);
  }
}

/**
 * The family a request counts against, from what it asks for: AWS makes asymmetric keys name
 * their algorithm (Encrypt, Decrypt, ReEncrypt, Sign, Verify), so the algorithm tells the key
 * type without a key lookup; a request naming the wrong one fails anyway.
 */
export function quotaFamilyOf(operation: string, input: Record<string, unknown>): string | undefined {
  switch (operation) {
    case 'Encrypt':
    case 'Decrypt':
      return encryptionFamily(input.EncryptionAlgorithm);
    case 'ReEncrypt': {
      const families = [encryptionFamily(input.SourceEncryptionAlgorithm), encryptionFamily(input.DestinationEncryptionAlgorithm)];
      return families.find((f) => f !== 'symmetric') ?? 'symmetric';
    }
    case 'GenerateDataKey':
    case 'GenerateDataKeyWithoutPlaintext':
    case 'GenerateRandom':
    case 'GenerateMac':
    case 'VerifyMac':
      return 'symmetric';
    case 'Sign':
    case 'Verify':
      return signingFamily(input.SigningAlgorithm);
    case 'DeriveSharedSecret':
      return 'ecc';
    case 'GenerateDataKeyPair':
    case 'GenerateDataKeyPairWithoutPlaintext':
      return typeof input.KeyPairSpec === 'string' ? dataKeyPairFamily(input.KeyPairSpec) : undefined;
    default:
      return undefined;
  }
}

function encryptionFamily(algorithm: unknown): string {
  if (typeof algorithm === 'string' && algorithm.startsWith('RSAES_')) return 'rsa';
  if (algorithm === 'SM2PKE') return 'ecc';
  return 'symmetric';
}

function signingFamily(algorithm: unknown): string | undefined {
  if (typeof algorithm !== 'string') return undefined;
  if (algorithm.startsWith('RSASSA_')) return 'rsa';
  if (algorithm.startsWith('ECDSA_') || algorithm.startsWith('ED25519_') || algorithm === 'SM2DSA') return 'ecc';
  return undefined; // ML-DSA has a family of its own at AWS, not offered here
}

class TokenBucket {
  private tokens: number;
  private last = performance.now();
  private readonly capacity: number;

  constructor(readonly rate: number) {
    this.capacity = Math.max(1, rate);
    this.tokens = this.capacity;
  }

  /** Whether a request may pass now (refills first; takes nothing). */
  available(now: number): boolean {
    this.tokens = Math.min(this.capacity, this.tokens + ((now - this.last) / 1000) * this.rate);
    this.last = now;
    return this.tokens >= 1;
  }

  take(): void {
    this.tokens -= 1;
  }
}

/** A quota's bucket and its name for the ThrottlingException message (made once, not per request). */
interface Quota {
  bucket: TokenBucket;
  detail: string;
}

class QuotaSet {
  private readonly families = new Map<string, Quota>();
  private readonly operations = new Map<string, Quota>();

  constructor(limits: QuotaLimits, scope: string) {
    for (const [family, rate] of Object.entries(limits.families)) {
      this.families.set(family, { bucket: new TokenBucket(rate), detail: `${quotaName(family)}: ${rate} per second${scope}` });
    }
    for (const [operation, rate] of Object.entries(limits.operations)) {
      this.operations.set(operation, { bucket: new TokenBucket(rate), detail: `${operation} request rate: ${rate} per second${scope}` });
    }
  }

  /** Throws Throttled if a quota of this set that applies is exhausted; returns those that apply. */
  check(operation: string, family: string | undefined, now: number, passed: Quota[]): void {
    const byOperation = this.operations.get(operation);
    if (byOperation) {
      if (!byOperation.bucket.available(now)) throw new Throttled('-', byOperation.detail);
      passed.push(byOperation);
    }
    const byFamily = family === undefined ? undefined : this.families.get(family);
    if (byFamily) {
      if (!byFamily.bucket.available(now)) throw new Throttled(family!, byFamily.detail);
      passed.push(byFamily);
    }
  }
}

export class RequestQuotas {
  private readonly account: QuotaSet;
  private readonly principals = new Map<string, QuotaSet>();

  constructor(table: QuotaTable) {
    this.account = new QuotaSet(table, '');
    for (const [arn, limits] of Object.entries(table.principals)) this.principals.set(arn, new QuotaSet(limits, ` for ${arn}`));
  }

  /** Counts one request against every quota that applies, or throws Throttled (taking nothing). */
  admit(operation: string, input: Record<string, unknown>, principalArn: string): void {
    const family = quotaFamilyOf(operation, input);
    const now = performance.now();
    const passed: Quota[] = [];
    this.account.check(operation, family, now, passed);
    this.principals.get(principalArn)?.check(operation, family, now, passed);
    for (const q of passed) q.bucket.take();
  }
}

export class QuotaConfigError extends Error {}

/** P11KMS_QUOTAS: 'off' (undefined), 'aws' (AWS's defaults for the Region) or a JSON/YAML file. */
export function loadRequestQuotas(setting: string, region: string, knownOperations: ReadonlySet<string>): RequestQuotas | undefined {
  if (setting === 'off') return undefined;
  if (setting === 'aws') return new RequestQuotas(awsDefaultQuotas(region));
  let raw: unknown;
  try {
    raw = readStructuredFile(setting);
  } catch (e) {
    throw new QuotaConfigError(`P11KMS_QUOTAS ${setting} cannot be read: ${(e as Error).message}`);
  }
  const parsed = quotaFileSchema.safeParse(raw);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.join('.') || '(top level)'}: ${i.message}`).join('; ');
    throw new QuotaConfigError(`P11KMS_QUOTAS ${setting} is invalid: ${problems}`);
  }
  const scopes = [parsed.data, ...Object.values(parsed.data.principals)];
  const unknown = scopes.flatMap((l) => Object.keys(l.operations)).filter((op) => !knownOperations.has(op));
  if (unknown.length > 0) throw new QuotaConfigError(`P11KMS_QUOTAS ${setting} is invalid: operations: unknown KMS operation ${unknown.join(', ')}`);
  return new RequestQuotas(parsed.data);
}
