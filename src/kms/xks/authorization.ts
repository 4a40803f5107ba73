/**
 * The XKS spec's optional secondary authorization: rules the operator writes about who, through
 * which AWS KMS operation, may use which key, decided on each request's `requestMetadata` by the
 * same policy engine as key policies. The rules are one key-policy-like document
 * (P11KMS_XKS_AUTHORIZATION_FILE): statements name principals (the AWS caller, `awsPrincipalArn`,
 * or "*"), actions `xks:GetKeyMetadata`, `xks:Encrypt`, `xks:Decrypt`, resources (this service's
 * key ARNs) and conditions on the metadata. Configured, it denies by default; an explicit Deny
 * wins. GetHealthStatus is never subject to it (the spec excludes it).
 *
 * Condition keys: aws:PrincipalArn, aws:PrincipalAccount, aws:SourceVpc, aws:SourceVpce,
 * xks:KmsOperation, xks:KmsKeyArn, xks:KmsViaService.
 */
import fs from 'node:fs';
import type { ContextValue, PolicyContext } from '../../auth/policy/conditions.js';
import { compilePolicy, evaluatePolicy, type CompiledPolicy } from '../../auth/policy/document.js';
import { MalformedPolicyError } from '../../auth/policy/errors.js';
import { XksError } from './errors.js';
import type { XksRequestMetadata } from './operations.js';

export type XksAction = 'xks:GetKeyMetadata' | 'xks:Encrypt' | 'xks:Decrypt';

export class XksAuthorization {
  private constructor(private readonly policy: CompiledPolicy) {}

  /** Throws a plain Error naming the file and the problem (the start stops on it). */
  static fromFile(file: string): XksAuthorization {
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (e) {
      throw new Error(`P11KMS_XKS_AUTHORIZATION_FILE ${file}: ${e instanceof Error ? e.message : String(e)}`);
    }
    return XksAuthorization.fromText(text, file);
  }

  static fromText(text: string, source = 'XKS authorization rules'): XksAuthorization {
    try {
      // Callers are principals of AWS accounts this service does not know: any ARN may be named.
      return new XksAuthorization(compilePolicy(text, { kind: 'resource', principalExists: () => true }));
    } catch (e) {
      if (e instanceof MalformedPolicyError) throw new Error(`${source}: ${e.message}`);
      throw e;
    }
  }

  check(action: XksAction, keyArn: string, metadata: XksRequestMetadata): void {
    const principalArn = metadata.awsPrincipalArn ?? '';
    const accountId = /^arn:[^:]+:(?:iam|sts)::(\d{12}):/.exec(principalArn)?.[1] ?? '';
    const verdict = evaluatePolicy(this.policy, {
      principal: { arn: principalArn, accountId, isRoot: principalArn.endsWith(':root') },
      action,
      resource: keyArn,
      context: metadataContext(metadata, accountId),
    });
    // No IAM stands behind an AWS caller here, so a statement naming the caller's account allows
    // as directly as one naming the caller.
    if (verdict.explicitDeny || verdict.allow === undefined) {
      throw new XksError('AccessDeniedException', `${action} on ${keyArn} is not allowed for ${principalArn || 'this caller'} by the proxy's authorization rules.`);
    }
  }
}

function metadataContext(m: XksRequestMetadata, accountId: string): PolicyContext {
  const values: Record<string, string | undefined> = {
    'aws:principalarn': m.awsPrincipalArn,
    'aws:principalaccount': accountId || undefined,
    'aws:sourcevpc': m.awsSourceVpc,
    'aws:sourcevpce': m.awsSourceVpce,
    'xks:kmsoperation': m.kmsOperation,
    'xks:kmskeyarn': m.kmsKeyArn,
    'xks:kmsviaservice': m.kmsViaService,
  };
  return { get: (key: string): ContextValue | undefined => values[key] };
}
