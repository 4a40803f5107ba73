/**
 * The SigV4 credentials AWS KMS signs XKS Proxy API requests with (service `kms-xks-proxy`). The
 * spec has customers rotate them without downtime, so up to two pairs are accepted at once, and a
 * credentials file (P11KMS_XKS_CREDENTIALS_FILE) is re-read when it changes, without a restart; a
 * file that no longer validates leaves the previous credentials in force (and is logged).
 * They are unrelated to the KMS API's principals: an XKS credential can call nothing but XKS.
 */
import fs from 'node:fs';
import { z } from 'zod';

/** The spec's Appendix A rules, which AWS KMS itself enforces in CreateCustomKeyStore. */
export const xksAccessKeyIdSchema = z.string().regex(/^[A-Z2-7]{20,30}$/, 'must be 20-30 characters A-Z and 2-7 (XKS spec, Appendix A)');
export const xksSecretAccessKeySchema = z.string().regex(/^[A-Za-z0-9+/=]{43,64}$/, 'must be 43-64 characters a-z, A-Z, 0-9, +, / and = (XKS spec, Appendix A)');

const credentialSchema = z.object({ accessKeyId: xksAccessKeyIdSchema, secretAccessKey: xksSecretAccessKeySchema }).strict();
const fileSchema = z
  .object({ credentials: z.array(credentialSchema).min(1).max(2) })
  .strict()
  .refine((f) => new Set(f.credentials.map((c) => c.accessKeyId)).size === f.credentials.length, 'access key IDs must differ');

export type XksCredential = z.infer<typeof credentialSchema>;

const RELOAD_CHECK_MS = 1000;

export class XksCredentials {
  private secrets: Map<string, string>;
  private watching = false;

  constructor(
    credentials: readonly XksCredential[],
    private readonly file?: string,
    private readonly log?: (level: 'info' | 'error', msg: string) => void,
  ) {
    this.secrets = new Map(credentials.map((c) => [c.accessKeyId, c.secretAccessKey]));
  }

  /** Reads and validates a credentials file; throws an Error naming the file and the problem. */
  static readFile(file: string): XksCredential[] {
    let parsed: unknown;
    try {
      parsed = JSON.parse(fs.readFileSync(file, 'utf8'));
    } catch (e) {
      throw new Error(`P11KMS_XKS_CREDENTIALS_FILE ${file}: ${e instanceof Error ? e.message : String(e)}`);
    }
    const result = fileSchema.safeParse(parsed);
    if (!result.success) {
      const problems = result.error.issues.map((i) => `${i.path.join('.') || '(file)'}: ${i.message}`);
      throw new Error(`P11KMS_XKS_CREDENTIALS_FILE ${file}: ${problems.join('; ')}`);
    }
    return result.data.credentials;
  }

  static fromFile(file: string, log: (level: 'info' | 'error', msg: string) => void): XksCredentials {
    const credentials = new XksCredentials(XksCredentials.readFile(file), file, log);
    credentials.watch();
    return credentials;
  }

  readonly secretFor = (accessKeyId: string): string | undefined => this.secrets.get(accessKeyId);

  get accessKeyIds(): string[] {
    return [...this.secrets.keys()];
  }

  close(): void {
    if (this.watching && this.file) fs.unwatchFile(this.file);
    this.watching = false;
  }

  private watch(): void {
    if (!this.file) return;
    this.watching = true;
    fs.watchFile(this.file, { interval: RELOAD_CHECK_MS, persistent: false }, (curr, prev) => {
      if (curr.mtimeMs === prev.mtimeMs && curr.size === prev.size) return;
      try {
        const next = XksCredentials.readFile(this.file!);
        this.secrets = new Map(next.map((c) => [c.accessKeyId, c.secretAccessKey]));
        this.log?.('info', `XKS credentials reloaded from ${this.file}: ${next.length} access key(s)`);
      } catch (e) {
        this.log?.('error', `XKS credentials not reloaded, the previous ones stay in force: ${e instanceof Error ? e.message : String(e)}`);
      }
    });
  }
}
