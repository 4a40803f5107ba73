/**
 * Who may call the service: the account root (credentials from the environment, or generated on
 * first start and kept in the data dir with mode 0600) and the principals of
 * P11KMS_PRINCIPALS_FILE. Secrets stay in this module's map; nothing here logs them.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { accessKeyIdSchema, secretAccessKeySchema, type Config } from '../config.js';

export interface Principal {
  arn: string;
  accountId: string;
  isRoot: boolean;
  /** IAM identity policy documents attached to the principal (evaluated by the policy layer). */
  policies: unknown[];
  tags: Record<string, string>;
  /** The client certificate this principal must present (mutual TLS), so that its access key
   *  alone is not enough: the subject, the SPKI's SHA-256, or both. */
  certificate?: CertificateBinding;
}

export interface CertificateBinding {
  /** RDNs in certificate order, comma-separated, e.g. "O=Example,CN=payments". */
  subject?: string;
  /** SHA-256 of the DER SubjectPublicKeyInfo, lower-case hex. */
  spkiSha256?: string;
}

export interface Caller {
  principal: Principal;
  accessKeyId: string;
}

const accessKeySchema = z.object({
  accessKeyId: accessKeyIdSchema,
  secretAccessKey: secretAccessKeySchema,
});

const principalsFileSchema = z.object({
  principals: z.array(
    z
      .object({
        arn: z.string().regex(/^arn:aws[a-z-]*:iam::\d{12}:(root|user\/.+|role\/.+)$/, 'must be an IAM user, role or root ARN'),
        accessKeyId: accessKeySchema.shape.accessKeyId.optional(),
        secretAccessKey: accessKeySchema.shape.secretAccessKey.optional(),
        accessKeys: z.array(accessKeySchema).max(2).optional(),
        policies: z.array(z.unknown()).default([]),
        tags: z.record(z.string(), z.string()).default({}),
        certificate: z
          .strictObject({ subject: z.string().min(1).optional(), spkiSha256: z.string().min(1).optional() })
          .refine((c) => c.subject !== undefined || c.spkiSha256 !== undefined, 'certificate needs subject or spkiSha256')
          .optional(),
      })
      .refine((p) => (p.accessKeyId === undefined) === (p.secretAccessKey === undefined), 'accessKeyId and secretAccessKey go together')
      .refine((p) => p.accessKeyId !== undefined || (p.accessKeys?.length ?? 0) > 0, 'a principal needs at least one access key')
      // IAM keeps tag keys unique regardless of case, so aws:PrincipalTag/<key> has one value.
      .refine((p) => new Set(Object.keys(p.tags).map((k) => k.toLowerCase())).size === Object.keys(p.tags).length, {
        message: 'tag keys must differ in more than case',
        path: ['tags'],
      }),
  ),
});

export class PrincipalRegistry {
  private readonly byAccessKey = new Map<string, { secret: string; principal: Principal }>();

  add(principal: Principal, accessKeyId: string, secretAccessKey: string): void {
    if (this.byAccessKey.has(accessKeyId)) throw new Error(`access key ${accessKeyId} is configured twice`);
    this.byAccessKey.set(accessKeyId, { secret: secretAccessKey, principal });
  }

  secretFor = (accessKeyId: string): string | undefined => this.byAccessKey.get(accessKeyId)?.secret;

  /** Every configured principal once (a principal may have two access keys). */
  all(): Principal[] {
    return [...new Set([...this.byAccessKey.values()].map((e) => e.principal))];
  }

  caller(accessKeyId: string): Caller {
    const entry = this.byAccessKey.get(accessKeyId);
    if (!entry) throw new Error('unknown access key');
    return { principal: entry.principal, accessKeyId };
  }
}

export const ROOT_CREDENTIALS_FILE = 'root-credentials.json';

/** Loads (or on first start generates) the root credentials and the principals file. */
export function loadPrincipals(config: Config, log: (msg: string) => void): PrincipalRegistry {
  const registry = new PrincipalRegistry();
  const root: Principal = {
    arn: `arn:${config.partition}:iam::${config.accountId}:root`,
    accountId: config.accountId,
    isRoot: true,
    policies: [],
    tags: {},
  };
  const rootCredentials = config.rootCredentials ?? loadOrCreateRootCredentials(config.dataDir, log);
  registry.add(root, rootCredentials.accessKeyId, rootCredentials.secretAccessKey);

  if (config.principalsFile) {
    let parsed: z.infer<typeof principalsFileSchema>;
    try {
      parsed = principalsFileSchema.parse(JSON.parse(fs.readFileSync(config.principalsFile, 'utf8')));
    } catch (e) {
      const detail = e instanceof z.ZodError ? e.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ') : (e as Error).message;
      throw new Error(`P11KMS_PRINCIPALS_FILE ${config.principalsFile} is invalid: ${detail}`);
    }
    for (const p of parsed.principals) {
      const accountId = p.arn.split(':')[4]!;
      const principal: Principal = { arn: p.arn, accountId, isRoot: p.arn.endsWith(':root'), policies: p.policies, tags: p.tags, certificate: certificateBinding(p.certificate) };
      const keys = [...(p.accessKeys ?? []), ...(p.accessKeyId ? [{ accessKeyId: p.accessKeyId, secretAccessKey: p.secretAccessKey! }] : [])];
      for (const k of keys) registry.add(principal, k.accessKeyId, k.secretAccessKey);
    }
  }
  return registry;
}

function certificateBinding(c: { subject?: string; spkiSha256?: string } | undefined): CertificateBinding | undefined {
  if (!c) return undefined;
  return {
    subject: c.subject === undefined ? undefined : normalizeSubject(c.subject.split(',')),
    spkiSha256: c.spkiSha256 === undefined ? undefined : normalizeFingerprint(c.spkiSha256),
  };
}

/** "CN=app, O=Example" and Node's line-per-RDN form compare equal. */
export function normalizeSubject(rdns: string[]): string {
  return rdns.map((r) => r.trim()).filter((r) => r.length > 0).join(',');
}

/** A fingerprint written as hex (colons allowed) or base64 (as in pin-sha256), as lower-case hex. */
export function normalizeFingerprint(value: string): string {
  const hex = value.replace(/:/g, '').toLowerCase();
  if (/^[0-9a-f]{64}$/.test(hex)) return hex;
  return Buffer.from(value, 'base64').toString('hex');
}

/** Whether the connection's client certificate is the one the principal is bound to (if any). */
export function presentsBoundCertificate(principal: Principal, peer: { subject: string; spkiSha256: string } | undefined): boolean {
  const bound = principal.certificate;
  if (!bound) return true;
  if (!peer) return false;
  return (bound.subject === undefined || bound.subject === peer.subject) && (bound.spkiSha256 === undefined || bound.spkiSha256 === peer.spkiSha256);
}

function loadOrCreateRootCredentials(dataDir: string, log: (msg: string) => void) {
  const file = path.join(dataDir, ROOT_CREDENTIALS_FILE);
  if (!fs.existsSync(file)) {
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
    const accessKeyId = 'AKIA' + [...randomBytes(16)].map((b) => alphabet[b % 32]).join('');
    const secretAccessKey = randomBytes(30).toString('base64');
    fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    // Written aside and linked into place: several worker processes may start at once, and
    // exactly one pair must win, complete, before anyone reads it.
    const pending = `${file}.${process.pid}.tmp`;
    fs.writeFileSync(pending, JSON.stringify({ accessKeyId, secretAccessKey }, null, 2) + '\n', { mode: 0o600 });
    try {
      fs.linkSync(pending, file);
      log(`generated root credentials (access key ${accessKeyId}); the secret is in ${file}`);
      return { accessKeyId, secretAccessKey };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    } finally {
      fs.rmSync(pending, { force: true });
    }
  }
  const creds = accessKeySchema.parse(JSON.parse(fs.readFileSync(file, 'utf8')));
  log(`root credentials: ${file}`);
  return creds;
}
