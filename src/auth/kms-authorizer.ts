/**
 * AWS KMS's authorization model (Developer Guide, "Determining access to a KMS key"):
 *
 * - The key policy is the primary resource policy. An explicit Deny anywhere (key policy or the
 *   caller's identity policies) wins; without an Allow the answer is no.
 * - Same account: a key policy statement naming the caller (its ARN or "*") suffices; a statement
 *   naming the account (`arn:aws:iam::<acct>:root`) delegates to IAM, so the caller's identity
 *   policy must also allow the action (the account root is always allowed by its identity).
 * - Other account: the key policy must allow the caller or its account AND the caller's identity
 *   policy must allow it, and only for the operations AWS lets cross accounts.
 * - Grants on the key allow their grantee their operations, under their constraints.
 * - Actions without a key (CreateKey, ListKeys, aliases, ...) are decided by identity policies
 *   alone; the account root may do them in its own account.
 *
 * Key policies are compiled once per distinct text (a bounded cache); identity policies once, at
 * start.
 */
import { KmsError, accessDenied } from '../kms/errors.js';
import { storeKeyId } from '../kms/regional-store.js';
import type { KeyRecord, MetadataStore } from '../store/types.js';
import { deniedMessage, type AuthorizationRequest, type Authorizer } from './authorize.js';
import { buildConditionContext, type SlowContextLookups } from './condition-keys.js';
import { checkGrantTokens, grantPermits } from './grants.js';
import { compilePolicy, compilePolicyDocument, evaluatePolicy, overlyPermissiveCondition, type CompiledPolicy, type EvaluationInput, type PolicyVerdict } from './policy/document.js';
import { MalformedPolicyError } from './policy/errors.js';
import type { Principal, PrincipalRegistry } from './principals.js';

/** Appended to AWS's "no ... policy allows" wording when an Allow for this principal and action
 *  was there but its condition did not hold. */
const CONDITION_FAILED = ' (a statement that allows it has a condition this request does not meet)';

/** AWS's key policy quota (the model allows longer documents). */
export const MAX_KEY_POLICY_BYTES = 32_768;
const KEY_POLICY_CACHE_SIZE = 10_000;

/** The operations whose cross-account use AWS allows; other actions on another account's key fail. */
const CROSS_ACCOUNT_ACTIONS: ReadonlySet<string> = new Set(
  [
    'CreateGrant', 'Decrypt', 'DeriveSharedSecret', 'DescribeKey', 'Encrypt', 'GenerateDataKey', 'GenerateDataKeyPair',
    'GenerateDataKeyPairWithoutPlaintext', 'GenerateDataKeyWithoutPlaintext', 'GenerateMac', 'GetKeyRotationStatus',
    'GetPublicKey', 'ListGrants', 'ReEncryptFrom', 'ReEncryptTo', 'RetireGrant', 'RevokeGrant', 'Sign', 'Verify', 'VerifyMac',
  ].map((a) => `kms:${a}`),
);

const NO_POLICY: CompiledPolicy = { statements: [], conditionKeys: new Set(), readsResourceAliases: false, readsResourceTags: false };

interface IdentityPolicies {
  policies: CompiledPolicy[];
  readsResourceAliases: boolean;
  readsResourceTags: boolean;
}
const NO_IDENTITY_POLICIES: IdentityPolicies = { policies: [], readsResourceAliases: false, readsResourceTags: false };

export type Decision = { allowed: true; by: 'policy' | 'grant' } | { allowed: false; why: string };

export interface KmsAuthorizerDeps {
  store: MetadataStore;
  principals: PrincipalRegistry;
  /** The account whose keys and aliases this service holds. */
  accountId: string;
}

/** Actions without a resource that principals of any account may call: ListRetirableGrants lists
 *  grants on other accounts' keys that the caller's account may retire. */
const ACCOUNT_NEUTRAL_ACTIONS: ReadonlySet<string> = new Set(['kms:ListRetirableGrants']);

export class KmsAuthorizer implements Authorizer {
  private readonly store: MetadataStore;
  private readonly accountId: string;
  private readonly knownPrincipals: ReadonlySet<string>;
  private readonly identityPolicies = new Map<string, IdentityPolicies>();
  /** Compiled key policies by key ID with the text they were compiled from, least recently used
   *  first. Comparing the text is cheap; hashing a fresh multi-KB string for a lookup is not. */
  private readonly keyPolicies = new Map<string, { text: string; compiled: CompiledPolicy }>();
  private readonly slowLookups: SlowContextLookups = {
    // The whole store: a multi-Region key's aliases and tags are those of the Region's own row.
    aliasesOf: async (key) =>
      (await this.store.listAliases({ region: key.region, targetKeyId: storeKeyId(key), limit: 1000 })).map((a) => a.aliasName),
    tagsOf: async (key) => Object.fromEntries((await this.store.listTags(storeKeyId(key))).map((t) => [t.TagKey, t.TagValue])),
  };

  constructor(deps: KmsAuthorizerDeps) {
    this.store = deps.store;
    this.accountId = deps.accountId;
    const principals = deps.principals.all();
    this.knownPrincipals = new Set(principals.map((p) => p.arn));
    for (const p of principals) {
      const policies = compileIdentityPolicies(p);
      this.identityPolicies.set(p.arn, {
        policies,
        readsResourceAliases: policies.some((c) => c.readsResourceAliases),
        readsResourceTags: policies.some((c) => c.readsResourceTags),
      });
    }
  }

  async authorize(request: AuthorizationRequest): Promise<void> {
    const decision = await this.decide(request);
    if (!decision.allowed) throw accessDenied(deniedMessage(request, decision.why));
  }

  async checkKeyPolicy(request: AuthorizationRequest, policy: string, bypassLockoutSafetyCheck: boolean): Promise<void> {
    if (Buffer.byteLength(policy, 'utf8') > MAX_KEY_POLICY_BYTES) {
      throw new KmsError('LimitExceededException', `The key policy exceeds the maximum size of ${MAX_KEY_POLICY_BYTES} bytes.`);
    }
    const compiled = this.compileKeyPolicy(policy);
    const overlyPermissive = overlyPermissiveCondition(compiled);
    if (overlyPermissive) throw new KmsError('MalformedPolicyDocumentException', overlyPermissive);
    if (bypassLockoutSafetyCheck || !request.key) return;
    const later: AuthorizationRequest = {
      ...request,
      action: 'kms:PutKeyPolicy',
      operation: 'PutKeyPolicy',
      input: { KeyId: request.resource, Policy: policy, PolicyName: 'default', BypassPolicyLockoutSafetyCheck: false },
    };
    const decision = await this.decide(later, compiled, { consultGrants: false });
    if (!decision.allowed) {
      throw new KmsError('MalformedPolicyDocumentException', 'The new key policy will not allow you to update the key policy in the future.');
    }
  }

  /** The whole evaluation; `keyPolicy` overrides the key's stored policy (lockout check). */
  async decide(request: AuthorizationRequest, keyPolicy?: CompiledPolicy, options = { consultGrants: true }): Promise<Decision> {
    checkGrantTokens(request.input);
    const { principal } = request.caller;
    const { action, key } = request;
    const identity = this.identityPolicies.get(principal.arn) ?? NO_IDENTITY_POLICIES;
    const resourcePolicy = key ? (keyPolicy ?? this.keyPolicyOf(key)) : NO_POLICY;

    const reads = {
      resourceAliases: resourcePolicy.readsResourceAliases || identity.readsResourceAliases,
      resourceTags: resourcePolicy.readsResourceTags || identity.readsResourceTags,
    };
    const context = await buildConditionContext(request, reads, this.slowLookups);
    const input: EvaluationInput = { principal, action, resource: request.resource, context };
    const identityVerdict = identityVerdictOf(principal, identity.policies, input);
    const noIdentityAllow = `because no identity-based policy allows the ${action} action${identityVerdict.conditionFailed ? CONDITION_FAILED : ''}`;

    if (!key) {
      if (identityVerdict.explicitDeny) return { allowed: false, why: 'with an explicit deny in an identity-based policy' };
      // CreateKey, ListKeys, aliases...: they act in this service's account, which principals of
      // other accounts can never do (AWS: "cross-account use: no").
      const resourceAccount = request.resource === '*' ? this.accountId : request.resource.split(':')[4];
      if (resourceAccount !== principal.accountId && !ACCOUNT_NEUTRAL_ACTIONS.has(action)) {
        return { allowed: false, why: `because no resource-based policy allows the ${action} action` };
      }
      if (identityVerdict.allow) return { allowed: true, by: 'policy' };
      return { allowed: false, why: noIdentityAllow };
    }

    const keyVerdict = evaluatePolicy(resourcePolicy, input);
    if (keyVerdict.explicitDeny) return { allowed: false, why: 'with an explicit deny in a resource-based policy' };
    if (identityVerdict.explicitDeny) return { allowed: false, why: 'with an explicit deny in an identity-based policy' };
    // AWS lets a grant's designated retirer retire it without any permission; whether an explicit
    // Deny stops it is not documented: here, as everywhere, the Deny wins.
    if (request.designatedByGrant) return { allowed: true, by: 'grant' };
    if (principal.accountId === key.accountId) {
      if (keyVerdict.allow === 'direct') return { allowed: true, by: 'policy' };
      if (keyVerdict.allow === 'account' && identityVerdict.allow) return { allowed: true, by: 'policy' };
    } else if (CROSS_ACCOUNT_ACTIONS.has(action) && keyVerdict.allow && identityVerdict.allow) {
      return { allowed: true, by: 'policy' };
    }
    if (options.consultGrants && (await this.grantAllows(request, principal, key, identityVerdict))) return { allowed: true, by: 'grant' };
    // A key policy statement for this principal whose condition failed is the likelier cause than
    // the missing identity policy that the account delegation would also have accepted.
    const keyPolicyCause = !keyVerdict.allow || (keyVerdict.conditionFailed && !identityVerdict.allow);
    return { allowed: false, why: keyPolicyCause ? `because no resource-based policy allows the ${action} action${keyVerdict.conditionFailed ? CONDITION_FAILED : ''}` : noIdentityAllow };
  }

  /** Grants to the caller itself; a grant to an account serves its principals whose identity
   *  policies allow the action (the account root: always). */
  private async grantAllows(request: AuthorizationRequest, principal: Principal, key: KeyRecord, identity: PolicyVerdict): Promise<boolean> {
    const accountRoot = `arn:${principal.arn.split(':')[1]}:iam::${principal.accountId}:root`;
    const grantees = principal.arn === accountRoot ? [accountRoot] : identity.allow ? [principal.arn, accountRoot] : [principal.arn];
    const grants = await this.store.grantsForGrantees(storeKeyId(key), grantees);
    return grants.some((g) => grantPermits(g, request.action, request.input));
  }

  /** Compiles a key policy; MalformedPolicyDocumentException when invalid. */
  compileKeyPolicy(policy: string): CompiledPolicy {
    try {
      return compilePolicy(policy, { kind: 'resource', principalExists: (arn) => this.knownPrincipals.has(arn) });
    } catch (e) {
      if (e instanceof MalformedPolicyError) throw new KmsError('MalformedPolicyDocumentException', e.message);
      throw e;
    }
  }

  /** The key's compiled policy, compiled once per (key, policy text). A stored policy that no
   *  longer compiles (e.g. it names a principal since removed from the principals file) allows
   *  nothing: fail closed. */
  private keyPolicyOf(key: KeyRecord): CompiledPolicy {
    // By store row: each Region's key of a multi-Region key has its own policy.
    const row = storeKeyId(key);
    const cached = this.keyPolicies.get(row);
    if (cached && cached.text === key.policy) {
      this.keyPolicies.delete(row);
      this.keyPolicies.set(row, cached);
      return cached.compiled;
    }
    let compiled: CompiledPolicy;
    try {
      compiled = this.compileKeyPolicy(key.policy);
    } catch (e) {
      if (!(e instanceof KmsError)) throw e;
      compiled = NO_POLICY;
    }
    this.keyPolicies.delete(row);
    this.keyPolicies.set(row, { text: key.policy, compiled });
    if (this.keyPolicies.size > KEY_POLICY_CACHE_SIZE) this.keyPolicies.delete(this.keyPolicies.keys().next().value!);
    return compiled;
  }
}

function identityVerdictOf(principal: Principal, policies: CompiledPolicy[], input: EvaluationInput): PolicyVerdict {
  let allow = principal.isRoot;
  let conditionFailed = false;
  for (const policy of policies) {
    const verdict = evaluatePolicy(policy, input);
    if (verdict.explicitDeny) return { explicitDeny: true, allow: undefined };
    if (verdict.allow) allow = true;
    conditionFailed ||= verdict.conditionFailed === true;
  }
  return { explicitDeny: false, allow: allow ? 'direct' : undefined, conditionFailed: !allow && conditionFailed };
}

function compileIdentityPolicies(principal: Principal): CompiledPolicy[] {
  return principal.policies.map((doc, index) => {
    try {
      return typeof doc === 'string' ? compilePolicy(doc, { kind: 'identity' }) : compilePolicyDocument(doc, { kind: 'identity' });
    } catch (e) {
      if (e instanceof MalformedPolicyError) throw new Error(`P11KMS_PRINCIPALS_FILE: policy ${index} of ${principal.arn} is invalid: ${e.message}`);
      throw e;
    }
  });
}
