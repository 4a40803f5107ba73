/**
 * Policy documents: parsing and validation (what AWS refuses as malformed) into compiled
 * statements, and their evaluation against one request.
 *
 * A key policy is a resource-based policy: every statement names a Principal (or NotPrincipal).
 * An identity policy (attached to a user or role) names none. Evaluation reports, for one
 * document, whether an explicit Deny applies and how an Allow applies:
 * - 'direct': the statement names the caller itself (its ARN, or "*");
 * - 'account': the statement names the caller's account (`arn:aws:iam::<acct>:root` or the bare
 *   account ID). In a key policy that delegates to the account's IAM policies: the caller still
 *   needs an identity policy that allows the action (the account root always has one).
 */
import { compileConditions, isPlainObject, type CompiledCondition, type PolicyContext } from './conditions.js';
import { MalformedPolicyError } from './errors.js';
import { hasPolicyVariable, substitutePolicyVariables } from './variables.js';
import { compileWildcards, type TextMatcher } from './wildcards.js';

export type PolicyKind = 'resource' | 'identity';
export type AllowKind = 'direct' | 'account';

export interface EvaluatedPrincipal {
  arn: string;
  accountId: string;
  isRoot: boolean;
}

export interface EvaluationInput {
  principal: EvaluatedPrincipal;
  /** e.g. kms:Encrypt */
  action: string;
  /** Key ARN, alias ARN or '*'. */
  resource: string;
  context: PolicyContext;
}

export interface PolicyVerdict {
  explicitDeny: boolean;
  allow: AllowKind | undefined;
  /** An Allow naming this principal, action and resource did not apply because a condition failed
   *  (so an AccessDenied can say so). */
  conditionFailed?: boolean;
}

interface PrincipalSet {
  everyone: boolean;
  arns: ReadonlySet<string>;
  accounts: ReadonlySet<string>;
}

interface CompiledStatement {
  effect: 'Allow' | 'Deny';
  principal?: PrincipalSet;
  notPrincipal?: PrincipalSet;
  /** Exactly one of action / notAction; a statement with neither never applies. */
  action?: TextMatcher;
  notAction?: TextMatcher;
  resource?: ResourceMatcher;
  notResource?: ResourceMatcher;
  conditions: CompiledCondition[];
}

type ResourceMatcher = (resource: string, context: PolicyContext) => boolean;

export interface CompiledPolicy {
  readonly statements: readonly CompiledStatement[];
  /** Condition keys the document reads (lower case), so costly ones are looked up only when used. */
  readonly conditionKeys: ReadonlySet<string>;
  /** Whether a condition reads the key's aliases (kms:ResourceAliases) or tags (aws:ResourceTag/*). */
  readonly readsResourceAliases: boolean;
  readonly readsResourceTags: boolean;
}

export interface CompileOptions {
  kind: PolicyKind;
  /** Whether an IAM user or role ARN names a principal that exists (AWS refuses the others). */
  principalExists?: (arn: string) => boolean;
}

const STATEMENT_ELEMENTS = new Set(['Sid', 'Effect', 'Principal', 'NotPrincipal', 'Action', 'NotAction', 'Resource', 'NotResource', 'Condition']);
const ACTION_PATTERN = /^(\*|[a-zA-Z0-9-]+:[a-zA-Z0-9*?]+)$/;
const ACCOUNT_ID = /^\d{12}$/;
const IAM_PRINCIPAL_ARN = /^arn:aws[a-z-]*:(iam|sts)::(\d{12}):(root|user\/.+|role\/.+|assumed-role\/.+|federated-user\/.+)$/;

/** Parses, validates and compiles a policy document given as JSON text. */
export function compilePolicy(text: string, options: CompileOptions): CompiledPolicy {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new MalformedPolicyError('The policy is not a valid JSON document.');
  }
  return compilePolicyDocument(doc, options);
}

export function compilePolicyDocument(doc: unknown, options: CompileOptions): CompiledPolicy {
  if (!isPlainObject(doc)) throw new MalformedPolicyError('The policy must be a JSON object.');
  for (const element of Object.keys(doc)) {
    if (!['Version', 'Id', 'Statement'].includes(element)) throw new MalformedPolicyError(`Policy has an unknown element: ${element}`);
  }
  if (doc.Version !== undefined && doc.Version !== '2012-10-17' && doc.Version !== '2008-10-17') {
    throw new MalformedPolicyError('The policy Version must be 2012-10-17 or 2008-10-17.');
  }
  const raw = doc.Statement;
  const list = Array.isArray(raw) ? raw : raw === undefined ? [] : [raw];
  if (list.length === 0) throw new MalformedPolicyError('The policy must contain at least one Statement.');
  const statements = list.map((s) => compileStatement(s, options));
  const conditionKeys = new Set(statements.flatMap((s) => s.conditions.map((c) => c.key)));
  const keys = [...conditionKeys];
  return {
    statements,
    conditionKeys,
    readsResourceAliases: conditionKeys.has('kms:resourcealiases'),
    readsResourceTags: keys.some((k) => k.startsWith('aws:resourcetag/')),
  };
}

function compileStatement(raw: unknown, options: CompileOptions): CompiledStatement {
  if (!isPlainObject(raw)) throw new MalformedPolicyError('Each Statement must be a JSON object.');
  for (const element of Object.keys(raw)) {
    if (!STATEMENT_ELEMENTS.has(element)) throw new MalformedPolicyError(`Statement has an unknown element: ${element}`);
  }
  if (raw.Sid !== undefined && typeof raw.Sid !== 'string') throw new MalformedPolicyError('Sid must be a string.');
  if (raw.Effect !== 'Allow' && raw.Effect !== 'Deny') throw new MalformedPolicyError('Effect must be "Allow" or "Deny".');
  exclusive(raw, 'Action', 'NotAction');
  exclusive(raw, 'Resource', 'NotResource');
  exclusive(raw, 'Principal', 'NotPrincipal');

  const hasPrincipal = raw.Principal !== undefined || raw.NotPrincipal !== undefined;
  if (options.kind === 'resource' && !hasPrincipal) throw new MalformedPolicyError('Policy contains a statement with no principal.');
  if (options.kind === 'identity' && hasPrincipal) throw new MalformedPolicyError('An identity-based policy cannot name a Principal.');

  return {
    effect: raw.Effect,
    principal: raw.Principal === undefined ? undefined : compilePrincipals(raw.Principal, options),
    notPrincipal: raw.NotPrincipal === undefined ? undefined : compilePrincipals(raw.NotPrincipal, options),
    action: raw.Action === undefined ? undefined : compileActions(raw.Action),
    notAction: raw.NotAction === undefined ? undefined : compileActions(raw.NotAction),
    resource: raw.Resource === undefined ? undefined : compileResources(raw.Resource),
    notResource: raw.NotResource === undefined ? undefined : compileResources(raw.NotResource),
    conditions: compileConditions(raw.Condition),
  };
}

function exclusive(statement: Record<string, unknown>, a: string, b: string): void {
  if (statement[a] !== undefined && statement[b] !== undefined) throw new MalformedPolicyError(`A statement cannot have both ${a} and ${b}.`);
}

function stringList(raw: unknown, element: string): string[] {
  const list = Array.isArray(raw) ? raw : [raw];
  if (list.length === 0 || list.some((v) => typeof v !== 'string' || v === '')) {
    throw new MalformedPolicyError(`${element} must be a non-empty string or a list of them.`);
  }
  return list as string[];
}

/** Action names match case-insensitively. */
function compileActions(raw: unknown): TextMatcher {
  const actions = stringList(raw, 'Action');
  for (const a of actions) if (!ACTION_PATTERN.test(a)) throw new MalformedPolicyError(`Policy has an invalid action: ${a}`);
  return compileWildcards(actions, true);
}

function compileResources(raw: unknown): ResourceMatcher {
  const patterns = stringList(raw, 'Resource');
  const fixed = patterns.filter((p) => !hasPolicyVariable(p));
  const dynamic = patterns.filter(hasPolicyVariable);
  const fixedMatcher = fixed.length > 0 ? compileWildcards(fixed) : undefined;
  return (resource, context) => {
    if (fixedMatcher?.(resource)) return true;
    if (dynamic.length === 0) return false;
    const resolved = dynamic.flatMap((p) => substitutePolicyVariables(p, context) ?? []);
    return resolved.length > 0 && compileWildcards(resolved)(resource);
  };
}

const INVALID_PRINCIPALS = 'Policy contains a statement with one or more invalid principals.';

function compilePrincipals(raw: unknown, options: CompileOptions): PrincipalSet {
  if (raw === '*') return { everyone: true, arns: new Set(), accounts: new Set() };
  if (!isPlainObject(raw) || Object.keys(raw).length === 0) throw new MalformedPolicyError(INVALID_PRINCIPALS);
  let everyone = false;
  const arns = new Set<string>();
  const accounts = new Set<string>();
  for (const [type, values] of Object.entries(raw)) {
    const list = stringList(values, 'Principal');
    if (type === 'Service' || type === 'Federated' || type === 'CanonicalUser') continue; // never a caller here
    if (type !== 'AWS') throw new MalformedPolicyError(INVALID_PRINCIPALS);
    for (const value of list) {
      if (value === '*') {
        everyone = true;
        continue;
      }
      if (ACCOUNT_ID.test(value)) {
        accounts.add(value);
        continue;
      }
      const m = IAM_PRINCIPAL_ARN.exec(value);
      if (!m) throw new MalformedPolicyError(INVALID_PRINCIPALS);
      if (m[3] === 'root') {
        accounts.add(m[2]!);
        continue;
      }
      if (m[1] === 'iam' && options.principalExists && !options.principalExists(value)) throw new MalformedPolicyError(INVALID_PRINCIPALS);
      arns.add(value);
    }
  }
  return { everyone, arns, accounts };
}

function principalMatch(set: PrincipalSet, principal: EvaluatedPrincipal): AllowKind | undefined {
  if (set.everyone || set.arns.has(principal.arn)) return 'direct';
  if (set.accounts.has(principal.accountId)) return 'account';
  return undefined;
}

/**
 * NotPrincipal exempts a caller only when every layer AWS evaluates is listed: its account, and
 * (for a user or role) its own ARN. Listing just the user leaves its account, and so the user,
 * subject to the statement (IAM reference, "NotPrincipal with Deny").
 */
function exemptedBy(set: PrincipalSet, principal: EvaluatedPrincipal): boolean {
  if (set.everyone) return true;
  if (!set.accounts.has(principal.accountId)) return false;
  return principal.isRoot || set.arns.has(principal.arn);
}

/** How a statement's principal element applies to the caller (identity statements: directly). */
function statementPrincipal(s: CompiledStatement, principal: EvaluatedPrincipal): AllowKind | undefined {
  if (s.principal) return principalMatch(s.principal, principal);
  if (s.notPrincipal) return exemptedBy(s.notPrincipal, principal) ? undefined : 'direct';
  return 'direct';
}

function statementTargets(s: CompiledStatement, input: EvaluationInput): boolean {
  if (s.action ? !s.action(input.action) : !s.notAction || s.notAction(input.action)) return false;
  return !(s.resource ? !s.resource(input.resource, input.context) : !s.notResource || s.notResource(input.resource, input.context));
}

const conditionsHold = (s: CompiledStatement, input: EvaluationInput) => s.conditions.every((c) => c.test(input.context, s.effect));

// The tag variant's exact wording is not documented; it follows the encryption context one.
const SINGLE_VALUED_FAMILIES = [
  { prefix: 'kms:encryptioncontext:', name: 'EncryptionContext', noun: 'encryption context' },
  { prefix: 'aws:requesttag/', name: 'RequestTag', noun: 'tag' },
] as const;

/**
 * AWS KMS refuses a new key policy whose ForAllValues condition reads a single-valued
 * kms:EncryptionContext:<key> or aws:RequestTag/<key>: such a condition also holds for requests
 * without that pair, or with others (Developer Guide, "Using set operators with condition keys").
 * The reason AWS gives, or undefined when the policy has no such condition. Policies already
 * stored are still evaluated as written.
 */
export function overlyPermissiveCondition(policy: CompiledPolicy): string | undefined {
  for (const s of policy.statements) {
    for (const c of s.conditions) {
      if (!c.operator.startsWith('ForAllValues:')) continue;
      const family = SINGLE_VALUED_FAMILIES.find(({ prefix }) => c.key.startsWith(prefix));
      if (family) {
        return (
          `OverlyPermissiveCondition:${family.name}: Using the ForAllValues set operator with a single-valued condition key matches requests ` +
          `without the specified ${family.noun} or with an unspecified ${family.noun}. To fix, remove ForAllValues.`
        );
      }
    }
  }
  return undefined;
}

/** Evaluates one document: explicit Deny, and the strongest Allow that applies. */
export function evaluatePolicy(policy: CompiledPolicy, input: EvaluationInput): PolicyVerdict {
  let allow: AllowKind | undefined;
  let conditionFailed = false;
  for (const s of policy.statements) {
    if (s.effect === 'Allow' && allow === 'direct') continue;
    const who = statementPrincipal(s, input.principal);
    if (!who || !statementTargets(s, input)) continue;
    if (!conditionsHold(s, input)) {
      if (s.effect === 'Allow' && who === 'direct') conditionFailed = true;
      continue;
    }
    if (s.effect === 'Deny') return { explicitDeny: true, allow: undefined };
    if (allow === undefined || who === 'direct') allow = who;
  }
  return { explicitDeny: false, allow, conditionFailed: allow !== 'direct' && conditionFailed };
}
