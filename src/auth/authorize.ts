/**
 * Authorization: every operation asks the Authorizer before acting. Deny by default.
 *
 * The request carries everything AWS's evaluation looks at: the caller, the IAM action, the
 * resource ARN, the key (its policy, properties and grants) and the operation's validated input
 * (from which request condition keys such as kms:EncryptionContext:* are derived).
 * The implementation is KmsAuthorizer (kms-authorizer.ts).
 */
import type { KeyRecord } from '../store/types.js';
import type { Caller } from './principals.js';

export interface AuthorizationRequest {
  caller: Caller;
  /** IAM action, e.g. kms:Encrypt. */
  action: string;
  /** Key or alias ARN, or '*' for actions without a resource (CreateKey, ListKeys, GenerateRandom). */
  resource: string;
  /** The key the action applies to, when there is one. */
  key?: KeyRecord;
  /** API operation name and its validated input. */
  operation: string;
  input: Record<string, unknown>;
  /** The grant being retired names the caller (its retiring principal, or its grantee when it
   *  includes RetireGrant): no policy needs to allow the call, but an explicit Deny still refuses it. */
  designatedByGrant?: boolean;
  sourceIp: string;
  secureTransport: boolean;
  now: Date;
}

export interface Authorizer {
  /** Resolves when allowed; rejects with AccessDeniedException otherwise. */
  authorize(request: AuthorizationRequest): Promise<void>;
  /**
   * Validates a key policy for CreateKey/PutKeyPolicy: the 32 KB quota (LimitExceededException),
   * the document (MalformedPolicyDocumentException) and, unless bypassed, the lockout safety check:
   * the new policy must let the caller of `request` (whose key is the key as it will be) call
   * PutKeyPolicy later.
   */
  checkKeyPolicy(request: AuthorizationRequest, policy: string, bypassLockoutSafetyCheck: boolean): Promise<void>;
}

/** AWS's AccessDeniedException wording: who, which action, which resource, why. `why` is
 *  "because no ... policy allows the <action> action" or "with an explicit deny in a ... policy". */
export function deniedMessage(request: AuthorizationRequest, why: string): string {
  return `User: ${request.caller.principal.arn} is not authorized to perform: ${request.action} on resource: ${request.resource} ${why}`;
}

/** Decrypt/ReEncrypt of a ciphertext whose key is missing or not accessible: one answer for both,
 *  so the error never tells whether the key exists. */
export function inaccessibleCiphertextKeyMessage(callerArn: string, action: string): string {
  return (
    `User: ${callerArn} is not authorized to perform: ${action} on the resource associated with this ciphertext because ` +
    'the resource does not exist in this Region, no resource-based policies allow access, or a resource-based policy explicitly denies access'
  );
}
