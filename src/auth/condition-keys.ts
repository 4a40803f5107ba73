/**
 * The request context a policy's Condition element reads: AWS global keys (aws:*) about the
 * caller and the connection, and KMS keys (kms:*) about the key and the request's parameters.
 *
 * Values are computed when a condition first asks for them (most policies read a few keys, and
 * this runs on every request). Key names are case-insensitive, so lookups use lower case; that
 * includes the part after kms:EncryptionContext:, aws:PrincipalTag/, aws:RequestTag/ and
 * aws:ResourceTag/. Values keep their case. Members whose names differ only in case with
 * different values make an AmbiguousValue (policy/conditions.ts), never "the last one wins".
 */
import type { KeyRecord } from '../store/types.js';
import type { AuthorizationRequest } from './authorize.js';
import { AmbiguousValue, normalizeIp, type ContextValue, type PolicyContext } from './policy/conditions.js';

/** Lookups that need the store: made only when a policy reads the key. */
export interface SlowContextLookups {
  aliasesOf(key: KeyRecord): Promise<string[]>;
  tagsOf(key: KeyRecord): Promise<Record<string, string>>;
}

const ENCRYPTION_CONTEXT_MEMBER: Record<string, string> = {
  'kms:ReEncryptFrom': 'SourceEncryptionContext',
  'kms:ReEncryptTo': 'DestinationEncryptionContext',
};
const ENCRYPTION_ALGORITHM_MEMBER: Record<string, string> = {
  'kms:ReEncryptFrom': 'SourceEncryptionAlgorithm',
  'kms:ReEncryptTo': 'DestinationEncryptionAlgorithm',
};
const KEY_ID_MEMBER: Record<string, string> = {
  'kms:ReEncryptFrom': 'SourceKeyId',
  'kms:ReEncryptTo': 'DestinationKeyId',
};
/** Operations whose symmetric form uses SYMMETRIC_DEFAULT when the request names no algorithm. */
const SYMMETRIC_CRYPTO_ACTIONS = new Set([
  'kms:Encrypt', 'kms:Decrypt', 'kms:ReEncryptFrom', 'kms:ReEncryptTo', 'kms:GenerateDataKey',
  'kms:GenerateDataKeyWithoutPlaintext', 'kms:GenerateDataKeyPair', 'kms:GenerateDataKeyPairWithoutPlaintext',
]);
const LOCKOUT_CHECK_ACTIONS = new Set(['kms:CreateKey', 'kms:PutKeyPolicy', 'kms:ReplicateKey']);
const GRANT_ADMIN_ACTIONS = new Set(['kms:CreateGrant', 'kms:ListGrants', 'kms:RevokeGrant']);

const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : typeof v === 'number' || typeof v === 'boolean' ? String(v) : undefined);
type Family = Map<string, string | AmbiguousValue>;

/** Name → value pairs by lower-cased name; names that collide keep every distinct value. */
function byLowerName(pairs: Iterable<readonly [string, string]>): Family {
  const values = new Map<string, Set<string>>();
  for (const [name, value] of pairs) {
    const lower = name.toLowerCase();
    const set = values.get(lower) ?? new Set<string>();
    values.set(lower, set.add(value));
  }
  const family: Family = new Map();
  for (const [lower, set] of values) family.set(lower, set.size === 1 ? set.values().next().value! : new AmbiguousValue([...set].sort()));
  return family;
}

/** The alias the caller named the key by (alias name or alias ARN), as kms:RequestAlias wants it. */
export function requestedAlias(raw: unknown): string | undefined {
  if (typeof raw !== 'string') return undefined;
  if (raw.startsWith('alias/')) return raw;
  const m = /^arn:[^:]+:kms:[^:]*:\d{12}:(alias\/.+)$/.exec(raw);
  return m ? m[1] : undefined;
}

/** The encryption context an action is evaluated against (CreateGrant: its constraint's). */
export function encryptionContextOf(action: string, input: Record<string, unknown>): Record<string, string> | undefined {
  if (action === 'kms:CreateGrant') {
    const c = input.Constraints as { EncryptionContextEquals?: Record<string, string>; EncryptionContextSubset?: Record<string, string> } | undefined;
    return c?.EncryptionContextEquals ?? c?.EncryptionContextSubset;
  }
  return input[ENCRYPTION_CONTEXT_MEMBER[action] ?? 'EncryptionContext'] as Record<string, string> | undefined;
}

const PREFIXED_KEYS = ['kms:encryptioncontext:', 'aws:principaltag/', 'aws:requesttag/', 'aws:resourcetag/'] as const;

class RequestConditionContext implements PolicyContext {
  private readonly memo = new Map<string, ContextValue | undefined>();
  private readonly families = new Map<string, Family>();

  constructor(
    private readonly request: AuthorizationRequest,
    private readonly resourceAliases: string[] | undefined,
    private readonly resourceTags: Record<string, string> | undefined,
  ) {}

  get(key: string): ContextValue | undefined {
    if (this.memo.has(key)) return this.memo.get(key);
    const value = this.compute(key);
    this.memo.set(key, value);
    return value;
  }

  private compute(key: string): ContextValue | undefined {
    const { caller, action, input, key: kmsKey, now } = this.request;
    const { principal } = caller;
    const createKey = action === 'kms:CreateKey';
    switch (key) {
      case 'aws:principalarn':
        return principal.arn;
      // Through an integrated service: the account of the principal it calls for.
      case 'aws:principalaccount':
      case 'kms:calleraccount':
        return principal.accountId;
      case 'aws:principaltype':
        return principal.isRoot ? 'Account' : principal.arn.includes(':user/') ? 'User' : 'AssumedRole';
      case 'aws:username':
        return /:user\/(?:.*\/)?([^/]+)$/.exec(principal.arn)?.[1];
      case 'aws:userid':
        return principal.isRoot ? principal.accountId : undefined;
      case 'aws:sourceip':
        return normalizeIp(this.request.sourceIp);
      case 'aws:currenttime':
        return now.toISOString();
      case 'aws:epochtime':
        return String(Math.floor(now.getTime() / 1000));
      case 'aws:securetransport':
        return String(this.request.secureTransport);
      // Requests an integrated service makes on behalf of the principal (auth/principals.ts).
      case 'aws:viaawsservice':
        return String(caller.via !== undefined);
      case 'kms:viaservice':
        return caller.via?.viaService;
      // Key properties (CreateKey: the ones requested, with CreateKey's defaults).
      case 'kms:keyspec':
      case 'kms:customermasterkeyspec':
        return kmsKey?.keySpec ?? str(input.KeySpec) ?? str(input.CustomerMasterKeySpec) ?? (createKey ? 'SYMMETRIC_DEFAULT' : undefined);
      case 'kms:keyusage':
      case 'kms:customermasterkeyusage':
        return kmsKey?.keyUsage ?? str(input.KeyUsage) ?? (createKey ? 'ENCRYPT_DECRYPT' : undefined);
      case 'kms:keyorigin':
        return kmsKey?.origin ?? str(input.Origin) ?? (createKey ? 'AWS_KMS' : undefined);
      case 'kms:multiregion':
        return kmsKey ? String(kmsKey.primaryRegion !== undefined) : createKey ? String(input.MultiRegion === true) : undefined;
      case 'kms:multiregionkeytype':
        if (kmsKey?.primaryRegion === undefined) return undefined;
        return kmsKey.region === kmsKey.primaryRegion ? 'PRIMARY' : 'REPLICA';
      case 'kms:replicaregion':
        return action === 'kms:ReplicateKey' ? str(input.ReplicaRegion) : undefined;
      case 'kms:primaryregion':
        return action === 'kms:UpdatePrimaryRegion' ? str(input.PrimaryRegion) : undefined;
      case 'kms:resourcealiases':
        return this.resourceAliases;
      // Request parameters.
      case 'kms:encryptioncontextkeys': {
        const context = encryptionContextOf(action, input);
        return context ? Object.keys(context) : undefined;
      }
      case 'kms:encryptionalgorithm':
        return (
          str(input[ENCRYPTION_ALGORITHM_MEMBER[action] ?? 'EncryptionAlgorithm']) ??
          (SYMMETRIC_CRYPTO_ACTIONS.has(action) && kmsKey?.keySpec === 'SYMMETRIC_DEFAULT' ? 'SYMMETRIC_DEFAULT' : undefined)
        );
      case 'kms:signingalgorithm':
        return str(input.SigningAlgorithm);
      case 'kms:macalgorithm':
        return str(input.MacAlgorithm);
      case 'kms:keyagreementalgorithm':
        return str(input.KeyAgreementAlgorithm);
      case 'kms:datakeypairspec':
        return str(input.KeyPairSpec);
      case 'kms:messagetype':
        return action === 'kms:Sign' || action === 'kms:Verify' ? (str(input.MessageType) ?? 'RAW') : undefined;
      case 'kms:requestalias':
        return requestedAlias(input[KEY_ID_MEMBER[action] ?? 'KeyId']);
      case 'kms:bypasspolicylockoutsafetycheck':
        return LOCKOUT_CHECK_ACTIONS.has(action) ? String(input.BypassPolicyLockoutSafetyCheck === true) : undefined;
      case 'kms:schedulekeydeletionpendingwindowindays':
        return action === 'kms:ScheduleKeyDeletion' ? str(input.PendingWindowInDays ?? 30) : undefined;
      case 'kms:rotationperiodindays':
        return str(input.RotationPeriodInDays);
      case 'kms:expirationmodel':
        return str(input.ExpirationModel);
      case 'kms:wrappingalgorithm':
        return str(input.WrappingAlgorithm);
      case 'kms:wrappingkeyspec':
        return str(input.WrappingKeySpec);
      case 'kms:validto':
        return input.ValidTo instanceof Date ? String(Math.floor(input.ValidTo.getTime() / 1000)) : undefined;
      // CreateGrant's parameters.
      case 'kms:grantoperations':
        return action === 'kms:CreateGrant' ? ((input.Operations as string[] | undefined) ?? []) : undefined;
      case 'kms:granteeprincipal':
        return action === 'kms:CreateGrant' ? str(input.GranteePrincipal) : undefined;
      case 'kms:retiringprincipal':
        return action === 'kms:CreateGrant' ? str(input.RetiringPrincipal) : undefined;
      case 'kms:grantconstrainttype': {
        if (action !== 'kms:CreateGrant') return undefined;
        const constraints = (input.Constraints ?? {}) as Record<string, unknown>;
        return Object.keys(constraints).filter((k) => constraints[k] !== undefined);
      }
      // True when an integrated service manages the grant on the principal's behalf.
      case 'kms:grantisforawsresource':
        return GRANT_ADMIN_ACTIONS.has(action) ? String(caller.via !== undefined) : undefined;
      // Tags in the request (CreateKey, TagResource, UntagResource).
      case 'aws:tagkeys': {
        const tags = input.Tags as Array<{ TagKey: string }> | undefined;
        return tags ? tags.map((t) => t.TagKey) : Array.isArray(input.TagKeys) ? (input.TagKeys as string[]) : undefined;
      }
    }
    for (const prefix of PREFIXED_KEYS) {
      if (key.startsWith(prefix)) return this.family(prefix).get(key.slice(prefix.length));
    }
    return undefined;
  }

  /** One of the key families (context pairs, tags), lower-cased once per request. */
  private family(prefix: (typeof PREFIXED_KEYS)[number]): Family {
    let members = this.families.get(prefix);
    if (!members) {
      const { input, action, caller } = this.request;
      switch (prefix) {
        case 'kms:encryptioncontext:':
          members = byLowerName(Object.entries(encryptionContextOf(action, input) ?? {}));
          break;
        case 'aws:principaltag/':
          members = byLowerName(Object.entries(caller.principal.tags));
          break;
        case 'aws:requesttag/':
          members = byLowerName(((input.Tags as Array<{ TagKey: string; TagValue: string }> | undefined) ?? []).map((t) => [t.TagKey, t.TagValue] as const));
          break;
        case 'aws:resourcetag/':
          members = byLowerName(Object.entries(this.resourceTags ?? {}));
          break;
      }
      this.families.set(prefix, members);
    }
    return members;
  }
}

/**
 * The context for one request. The store is asked for the key's aliases and tags only when one of
 * the applicable policies reads them.
 */
export async function buildConditionContext(
  request: AuthorizationRequest,
  reads: { resourceAliases: boolean; resourceTags: boolean },
  lookups: SlowContextLookups,
): Promise<PolicyContext> {
  const key = request.key;
  const aliases = key && reads.resourceAliases ? await lookups.aliasesOf(key) : undefined;
  const tags = key && reads.resourceTags ? await lookups.tagsOf(key) : undefined;
  return new RequestConditionContext(request, aliases, tags);
}
