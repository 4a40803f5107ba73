/**
 * Table-driven tests of AWS KMS authorization through the real KmsAuthorizer: key policies,
 * identity policies, grants and conditions, with a stub store (no token needed).
 */
import { describe, expect, it } from 'vitest';
import type { AuthorizationRequest } from '../src/auth/authorize.js';
import { issueGrantToken } from '../src/auth/grants.js';
import { KmsAuthorizer } from '../src/auth/kms-authorizer.js';
import { wildcardMatch } from '../src/auth/policy/wildcards.js';
import { PrincipalRegistry, loadPrincipals, type Principal } from '../src/auth/principals.js';
import { defaultKeyPolicy } from '../src/kms/policy-defaults.js';
import type { GrantRecord, KeyRecord, MetadataStore } from '../src/store/types.js';
import { writePrincipalsFile } from './helpers/principals.js';
import { tempDir, testConfig } from './helpers/service.js';

const ACCT = '111122223333';
const OTHER = '444455556666';
const KEY_ID = '1234abcd-12ab-34cd-56ef-1234567890ab';
const KEY_ARN = `arn:aws:kms:us-east-1:${ACCT}:key/${KEY_ID}`;
const OTHER_KEY_ARN = `arn:aws:kms:us-east-1:${ACCT}:key/00000000-0000-0000-0000-000000000000`;
const ROOT = `arn:aws:iam::${ACCT}:root`;
const ALICE = `arn:aws:iam::${ACCT}:user/alice`;
const BOB = `arn:aws:iam::${ACCT}:user/bob`;
const CAROL = `arn:aws:iam::${OTHER}:user/carol`;
const OTHER_ROOT = `arn:aws:iam::${OTHER}:root`;

type Doc = Record<string, unknown>;
const doc = (...statements: Doc[]): Doc => ({ Version: '2012-10-17', Statement: statements });
const allowIam = (action: string | string[], resource: string | string[] = '*', extra: Doc = {}): Doc => ({ Effect: 'Allow', Action: action, Resource: resource, ...extra });
const keyPolicy = (...statements: Doc[]) => JSON.stringify(doc(...statements));
const rootStatement = { Sid: 'root', Effect: 'Allow', Principal: { AWS: ROOT }, Action: 'kms:*', Resource: '*' };
const allowKey = (principal: unknown, action: string | string[], extra: Doc = {}): Doc => ({ Effect: 'Allow', Principal: principal, Action: action, Resource: '*', ...extra });

interface Case {
  name: string;
  caller?: string;
  /** Identity policies by principal ARN. */
  identity?: Record<string, Doc[]>;
  tags?: Record<string, string>;
  policy?: string;
  action?: string;
  operation?: string;
  input?: Record<string, unknown>;
  resource?: string;
  noKey?: boolean;
  grants?: Array<Partial<GrantRecord>>;
  aliases?: string[];
  sourceIp?: string;
  secure?: boolean;
  now?: Date;
  expect: 'allow' | RegExp;
}

function principal(arn: string, policies: Doc[] = [], tags: Record<string, string> = {}): Principal {
  return { arn, accountId: arn.split(':')[4]!, isRoot: arn.endsWith(':root'), policies, tags };
}

function authorizerFor(c: Pick<Case, 'identity' | 'tags' | 'grants' | 'aliases'>): KmsAuthorizer {
  const registry = new PrincipalRegistry();
  let n = 0;
  for (const arn of [ROOT, ALICE, BOB, CAROL, OTHER_ROOT]) {
    registry.add(principal(arn, c.identity?.[arn] ?? [], arn === ALICE ? (c.tags ?? {}) : {}), `AKIATEST${String(n++).padStart(12, '0')}`, 'secret-secret-secret');
  }
  const grants: GrantRecord[] = (c.grants ?? []).map((g, i) => ({
    grantId: String(i).padStart(64, '0'),
    keyId: KEY_ID,
    name: null,
    granteePrincipal: ALICE,
    retiringPrincipal: null,
    issuingAccount: ROOT,
    operations: ['Encrypt'],
    constraints: null,
    createdAt: new Date(0),
    ...g,
  }));
  const store = {
    grantsForGrantees: async (keyId: string, grantees: string[]) => grants.filter((g) => g.keyId === keyId && grantees.includes(g.granteePrincipal)),
    listAliases: async () => (c.aliases ?? []).map((aliasName) => ({ aliasName, targetKeyId: KEY_ID, createdAt: new Date(), lastUpdatedAt: new Date() })),
    listTags: async () => [],
  } as unknown as MetadataStore;
  return new KmsAuthorizer({ store, principals: registry, accountId: ACCT });
}

function keyRecord(policy: string): KeyRecord {
  return {
    keyId: KEY_ID,
    accountId: ACCT,
    region: 'us-east-1',
    createdAt: new Date(0),
    description: '',
    keyState: 'Enabled',
    keySpec: 'SYMMETRIC_DEFAULT',
    keyUsage: 'ENCRYPT_DECRYPT',
    origin: 'AWS_KMS',
    policy,
    currentVersion: 1,
    deletionDate: null,
    pendingWindowInDays: null,
  };
}

function requestFor(c: Case, registry: Principal): AuthorizationRequest {
  const action = c.action ?? 'kms:Encrypt';
  return {
    caller: { principal: registry, accessKeyId: 'AKIA' },
    action,
    resource: c.resource ?? (c.noKey ? '*' : KEY_ARN),
    key: c.noKey ? undefined : keyRecord(c.policy ?? defaultKeyPolicy('aws', ACCT)),
    operation: c.operation ?? action.slice(4),
    input: c.input ?? {},
    sourceIp: c.sourceIp ?? '::ffff:10.1.2.3',
    secureTransport: c.secure ?? false,
    now: c.now ?? new Date('2026-06-01T00:00:00Z'),
  };
}

async function outcome(c: Case): Promise<string> {
  const authorizer = authorizerFor(c);
  const caller = c.caller ?? ALICE;
  const p = principal(caller, c.identity?.[caller] ?? [], caller === ALICE ? (c.tags ?? {}) : {});
  try {
    await authorizer.authorize(requestFor(c, p));
    return 'allow';
  } catch (e) {
    return `${(e as Error).name}: ${(e as Error).message}`;
  }
}

const defaultPolicyCases: Case[] = [
  { name: 'root with the default policy', caller: ROOT, expect: 'allow' },
  { name: 'user without identity policy, default policy', expect: /no identity-based policy allows the kms:Encrypt action/ },
  { name: 'user with identity policy on the key ARN', identity: { [ALICE]: [doc(allowIam('kms:Encrypt', KEY_ARN))] }, expect: 'allow' },
  { name: 'identity policy for another key', identity: { [ALICE]: [doc(allowIam('kms:Encrypt', OTHER_KEY_ARN))] }, expect: /no identity-based policy/ },
  { name: 'identity policy with resource wildcard', identity: { [ALICE]: [doc(allowIam('kms:Encrypt', `arn:aws:kms:*:${ACCT}:key/*`))] }, expect: 'allow' },
  { name: 'action wildcard kms:Gen*', action: 'kms:GenerateDataKey', identity: { [ALICE]: [doc(allowIam('kms:Gen*'))] }, expect: 'allow' },
  { name: 'action ? wildcard', action: 'kms:ReEncryptTo', identity: { [ALICE]: [doc(allowIam('kms:ReEncrypt??'))] }, expect: 'allow' },
  { name: 'actions match case-insensitively', identity: { [ALICE]: [doc(allowIam('KMS:encrypt'))] }, expect: 'allow' },
  { name: 'identity allows another action only', action: 'kms:Decrypt', identity: { [ALICE]: [doc(allowIam('kms:Encrypt'))] }, expect: /no identity-based policy allows the kms:Decrypt action/ },
  { name: 'identity NotAction', action: 'kms:Decrypt', identity: { [ALICE]: [doc({ Effect: 'Allow', NotAction: 'kms:Decrypt', Resource: '*' })] }, expect: /no identity-based/ },
  { name: 'identity NotAction allows the rest', identity: { [ALICE]: [doc({ Effect: 'Allow', NotAction: 'kms:Decrypt', Resource: '*' })] }, expect: 'allow' },
  { name: 'identity NotResource excludes the key', identity: { [ALICE]: [doc({ Effect: 'Allow', Action: 'kms:*', NotResource: KEY_ARN })] }, expect: /no identity-based/ },
  { name: 'identity NotResource includes other keys', identity: { [ALICE]: [doc({ Effect: 'Allow', Action: 'kms:*', NotResource: OTHER_KEY_ARN })] }, expect: 'allow' },
  {
    name: 'identity explicit deny beats identity allow',
    identity: { [ALICE]: [doc(allowIam('kms:*'), { Effect: 'Deny', Action: 'kms:Encrypt', Resource: '*' })] },
    expect: /with an explicit deny in an identity-based policy$/,
  },
  {
    name: 'deny in a second identity policy',
    identity: { [ALICE]: [doc(allowIam('kms:*')), doc({ Effect: 'Deny', Action: 'kms:*', Resource: '*' })] },
    expect: /explicit deny in an identity-based policy/,
  },
  { name: 'statement without Resource has no effect', identity: { [ALICE]: [doc({ Effect: 'Allow', Action: 'kms:*' })] }, expect: /no identity-based/ },
  { name: 'policy variable in Resource', identity: { [ALICE]: [doc(allowIam('kms:*', `arn:aws:kms:*:*:key/\${aws:PrincipalTag/key}`))] }, tags: { key: KEY_ID }, expect: 'allow' },
  { name: 'policy variable without a value never matches', identity: { [ALICE]: [doc(allowIam('kms:*', `arn:aws:kms:*:*:key/\${aws:PrincipalTag/missing}`))] }, expect: /no identity-based/ },
];

const keyPolicyCases: Case[] = [
  { name: 'key policy naming the user suffices without IAM', policy: keyPolicy(allowKey({ AWS: ALICE }, 'kms:Encrypt')), expect: 'allow' },
  { name: 'key policy naming the user, other action', action: 'kms:Decrypt', policy: keyPolicy(allowKey({ AWS: ALICE }, 'kms:Encrypt')), expect: /no resource-based policy allows the kms:Decrypt action/ },
  { name: 'key policy Principal "*"', policy: keyPolicy(allowKey('*', 'kms:Encrypt')), expect: 'allow' },
  { name: 'key policy Principal {AWS:"*"}', policy: keyPolicy(allowKey({ AWS: '*' }, 'kms:Encrypt')), expect: 'allow' },
  { name: 'bare account ID delegates like the root ARN', policy: keyPolicy(allowKey({ AWS: ACCT }, 'kms:*')), identity: { [ALICE]: [doc(allowIam('kms:*'))] }, expect: 'allow' },
  { name: 'bare account ID, no IAM', policy: keyPolicy(allowKey({ AWS: ACCT }, 'kms:*')), expect: /no identity-based/ },
  {
    name: 'no account delegation: identity policy alone is not enough',
    policy: keyPolicy(allowKey({ AWS: BOB }, 'kms:*')),
    identity: { [ALICE]: [doc(allowIam('kms:*'))] },
    expect: /because no resource-based policy allows the kms:Encrypt action$/,
  },
  { name: 'no root statement: even root is denied', caller: ROOT, policy: keyPolicy(allowKey({ AWS: ALICE }, 'kms:*')), expect: /User: arn:aws:iam::111122223333:root is not authorized.*no resource-based policy/ },
  {
    name: 'explicit deny in the key policy beats every allow',
    policy: keyPolicy(rootStatement, allowKey({ AWS: ALICE }, 'kms:*'), { Effect: 'Deny', Principal: { AWS: ALICE }, Action: 'kms:Encrypt', Resource: '*' }),
    identity: { [ALICE]: [doc(allowIam('kms:*'))] },
    expect: new RegExp(`^AccessDeniedException: User: ${ALICE} is not authorized to perform: kms:Encrypt on resource: ${KEY_ARN} with an explicit deny in a resource-based policy$`),
  },
  {
    name: 'deny naming the account applies to its users',
    policy: keyPolicy(rootStatement, { Effect: 'Deny', Principal: { AWS: ROOT }, Action: 'kms:Encrypt', Resource: '*' }),
    identity: { [ALICE]: [doc(allowIam('kms:*'))] },
    expect: /explicit deny in a resource-based policy/,
  },
  { name: 'NotPrincipal deny spares the listed user and account', policy: keyPolicy(allowKey('*', 'kms:*'), { Effect: 'Deny', NotPrincipal: { AWS: [ALICE, ROOT] }, Action: 'kms:*', Resource: '*' }), expect: 'allow' },
  { name: 'NotPrincipal deny hits everyone else', caller: BOB, policy: keyPolicy(allowKey('*', 'kms:*'), { Effect: 'Deny', NotPrincipal: { AWS: [ALICE, ROOT] }, Action: 'kms:*', Resource: '*' }), expect: /explicit deny in a resource-based/ },
  { name: 'NotPrincipal naming the account spares its root', caller: ROOT, policy: keyPolicy(allowKey('*', 'kms:*'), { Effect: 'Deny', NotPrincipal: { AWS: ACCT }, Action: 'kms:*', Resource: '*' }), expect: 'allow' },
  { name: 'NotPrincipal without the account denies the user too', policy: keyPolicy(allowKey('*', 'kms:*'), { Effect: 'Deny', NotPrincipal: { AWS: ALICE }, Action: 'kms:*', Resource: '*' }), expect: /explicit deny in a resource-based/ },
  { name: 'NotPrincipal "*" exempts everyone', caller: BOB, policy: keyPolicy(allowKey('*', 'kms:*'), { Effect: 'Deny', NotPrincipal: '*', Action: 'kms:*', Resource: '*' }), expect: 'allow' },
  { name: 'key policy NotAction', action: 'kms:ScheduleKeyDeletion', policy: keyPolicy({ Effect: 'Allow', Principal: { AWS: ALICE }, NotAction: ['kms:ScheduleKeyDeletion'], Resource: '*' }), expect: /no resource-based/ },
  { name: 'key policy statement without Action has no effect', policy: keyPolicy({ Effect: 'Allow', Principal: { AWS: ALICE }, Resource: '*' }), expect: /no resource-based/ },
  {
    // The root statement would accept an IAM allow, but the user's own statement is what failed.
    name: 'key policy allow for the user whose condition fails names the key policy and the condition',
    policy: keyPolicy(rootStatement, allowKey({ AWS: ALICE }, 'kms:Encrypt', { Condition: { Bool: { 'aws:SecureTransport': 'true' } } })),
    expect: new RegExp(`^AccessDeniedException: User: ${ALICE} is not authorized to perform: kms:Encrypt on resource: ${KEY_ARN} because no resource-based policy allows the kms:Encrypt action \\(a statement that allows it has a condition this request does not meet\\)$`),
  },
  {
    name: 'identity allow whose condition fails says so',
    identity: { [ALICE]: [doc({ Effect: 'Allow', Action: 'kms:Encrypt', Resource: '*', Condition: { IpAddress: { 'aws:SourceIp': '192.0.2.0/24' } } })] },
    expect: /because no identity-based policy allows the kms:Encrypt action \(a statement that allows it has a condition this request does not meet\)$/,
  },
];

const crossAccountCases: Case[] = [
  { name: 'other account: key policy allows the account, no IAM', caller: CAROL, policy: keyPolicy(rootStatement, allowKey({ AWS: OTHER_ROOT }, 'kms:Encrypt')), expect: /no identity-based policy allows/ },
  {
    name: 'other account: key policy + IAM',
    caller: CAROL,
    policy: keyPolicy(rootStatement, allowKey({ AWS: OTHER_ROOT }, 'kms:Encrypt')),
    identity: { [CAROL]: [doc(allowIam('kms:Encrypt', KEY_ARN))] },
    expect: 'allow',
  },
  { name: 'other account: key policy names the user, still needs IAM', caller: CAROL, policy: keyPolicy(rootStatement, allowKey({ AWS: CAROL }, 'kms:Encrypt')), expect: /no identity-based/ },
  { name: 'other account: IAM alone', caller: CAROL, identity: { [CAROL]: [doc(allowIam('kms:*'))] }, expect: /no resource-based policy allows/ },
  { name: 'other account root: key policy suffices', caller: OTHER_ROOT, policy: keyPolicy(rootStatement, allowKey({ AWS: OTHER }, 'kms:Encrypt')), expect: 'allow' },
  {
    name: 'other account: management operations never cross accounts',
    caller: CAROL,
    action: 'kms:ScheduleKeyDeletion',
    policy: keyPolicy(rootStatement, allowKey({ AWS: OTHER_ROOT }, 'kms:*')),
    identity: { [CAROL]: [doc(allowIam('kms:*'))] },
    expect: /is not authorized to perform: kms:ScheduleKeyDeletion/,
  },
  { name: 'Principal "*" across accounts still needs IAM', caller: CAROL, policy: keyPolicy(allowKey('*', 'kms:Encrypt')), expect: /no identity-based/ },
];

const withCondition = (condition: Doc, action = 'kms:Encrypt') => keyPolicy(allowKey({ AWS: ALICE }, action, { Condition: condition }));
const ec = (context: Record<string, string>) => ({ EncryptionContext: context });

const conditionCases: Case[] = [
  { name: 'StringEquals on an encryption context pair', policy: withCondition({ StringEquals: { 'kms:EncryptionContext:purpose': 'test' } }), input: ec({ purpose: 'test' }), expect: 'allow' },
  { name: 'StringEquals, other value', policy: withCondition({ StringEquals: { 'kms:EncryptionContext:purpose': 'test' } }), input: ec({ purpose: 'prod' }), expect: /no resource-based/ },
  { name: 'StringEquals, several values are ORed', policy: withCondition({ StringEquals: { 'kms:EncryptionContext:purpose': ['a', 'prod'] } }), input: ec({ purpose: 'prod' }), expect: 'allow' },
  { name: 'StringEquals, absent key is false', policy: withCondition({ StringEquals: { 'kms:EncryptionContext:purpose': 'test' } }), expect: /no resource-based/ },
  { name: 'condition key names are case-insensitive', policy: withCondition({ StringEquals: { 'KMS:ENCRYPTIONCONTEXT:Purpose': 'test' } }), input: ec({ purpose: 'test' }), expect: 'allow' },
  { name: 'condition values are case-sensitive', policy: withCondition({ StringEquals: { 'kms:EncryptionContext:purpose': 'Test' } }), input: ec({ purpose: 'test' }), expect: /no resource-based/ },
  { name: 'StringEqualsIgnoreCase', policy: withCondition({ StringEqualsIgnoreCase: { 'kms:EncryptionContext:purpose': 'TEST' } }), input: ec({ purpose: 'test' }), expect: 'allow' },
  { name: 'StringNotEqualsIgnoreCase', policy: withCondition({ StringNotEqualsIgnoreCase: { 'kms:EncryptionContext:purpose': 'TEST' } }), input: ec({ purpose: 'test' }), expect: /no resource-based/ },
  { name: 'StringNotEquals holds for other values', policy: withCondition({ StringNotEquals: { 'kms:EncryptionContext:purpose': ['a', 'b'] } }), input: ec({ purpose: 'c' }), expect: 'allow' },
  { name: 'StringNotEquals fails when any value matches', policy: withCondition({ StringNotEquals: { 'kms:EncryptionContext:purpose': ['a', 'b'] } }), input: ec({ purpose: 'b' }), expect: /no resource-based/ },
  { name: 'StringNotEquals holds when the key is absent', policy: withCondition({ StringNotEquals: { 'kms:EncryptionContext:purpose': 'a' } }), expect: 'allow' },
  { name: 'StringLike with *', policy: withCondition({ StringLike: { 'kms:EncryptionContext:path': 'tenants/*/data' } }), input: ec({ path: 'tenants/42/data' }), expect: 'allow' },
  { name: 'StringLike with ?', policy: withCondition({ StringLike: { 'kms:EncryptionContext:path': 'v?' } }), input: ec({ path: 'v10' }), expect: /no resource-based/ },
  { name: 'StringNotLike', policy: withCondition({ StringNotLike: { 'kms:EncryptionContext:path': 'secret*' } }), input: ec({ path: 'secret-1' }), expect: /no resource-based/ },
  { name: 'StringEqualsIfExists, key absent', policy: withCondition({ StringEqualsIfExists: { 'kms:EncryptionContext:purpose': 'test' } }), expect: 'allow' },
  { name: 'StringEqualsIfExists, key present and different', policy: withCondition({ StringEqualsIfExists: { 'kms:EncryptionContext:purpose': 'test' } }), input: ec({ purpose: 'x' }), expect: /no resource-based/ },
  { name: 'ForAnyValue:StringEquals on context keys', policy: withCondition({ 'ForAnyValue:StringEquals': { 'kms:EncryptionContextKeys': ['tenant', 'app'] } }), input: ec({ app: '1', other: '2' }), expect: 'allow' },
  { name: 'ForAnyValue with no context is false', policy: withCondition({ 'ForAnyValue:StringEquals': { 'kms:EncryptionContextKeys': ['tenant'] } }), expect: /no resource-based/ },
  { name: 'ForAllValues:StringEquals, all keys allowed', policy: withCondition({ 'ForAllValues:StringEquals': { 'kms:EncryptionContextKeys': ['a', 'b'] } }), input: ec({ a: '1' }), expect: 'allow' },
  { name: 'ForAllValues:StringEquals, an extra key', policy: withCondition({ 'ForAllValues:StringEquals': { 'kms:EncryptionContextKeys': ['a', 'b'] } }), input: ec({ a: '1', c: '2' }), expect: /no resource-based/ },
  { name: 'ForAllValues with no context is true', policy: withCondition({ 'ForAllValues:StringEquals': { 'kms:EncryptionContextKeys': ['a'] } }), expect: 'allow' },
  { name: 'ForAnyValue:StringNotLike', policy: withCondition({ 'ForAnyValue:StringNotLike': { 'kms:EncryptionContextKeys': 'a*' } }), input: ec({ ab: '1', x: '2' }), expect: 'allow' },
  { name: 'ForAllValues:StringLike', policy: withCondition({ 'ForAllValues:StringLike': { 'kms:EncryptionContextKeys': 'app:*' } }), input: ec({ 'app:a': '1', 'app:b': '2' }), expect: 'allow' },
  { name: 'Null true: key absent', policy: withCondition({ Null: { 'kms:EncryptionContextKeys': 'true' } }), expect: 'allow' },
  { name: 'Null false: key must be present', policy: withCondition({ Null: { 'kms:EncryptionContextKeys': false } }), expect: /no resource-based/ },
  { name: 'Null false with a context', policy: withCondition({ Null: { 'kms:EncryptionContextKeys': 'false' } }), input: ec({ a: '1' }), expect: 'allow' },
  {
    name: 'several operators are ANDed',
    policy: withCondition({ StringEquals: { 'kms:EncryptionContext:a': '1' }, Bool: { 'aws:SecureTransport': 'true' } }),
    input: ec({ a: '1' }),
    expect: /no resource-based/,
  },
  { name: 'Bool aws:SecureTransport false', policy: withCondition({ Bool: { 'aws:SecureTransport': false } }), expect: 'allow' },
  { name: 'Bool aws:SecureTransport true over TLS', policy: withCondition({ Bool: { 'aws:SecureTransport': 'true' } }), secure: true, expect: 'allow' },
  { name: 'IpAddress with an IPv4-mapped source', policy: withCondition({ IpAddress: { 'aws:SourceIp': '10.0.0.0/8' } }), expect: 'allow' },
  { name: 'IpAddress outside the range', policy: withCondition({ IpAddress: { 'aws:SourceIp': ['192.168.0.0/16', '127.0.0.1/32'] } }), expect: /no resource-based/ },
  { name: 'NotIpAddress', policy: withCondition({ NotIpAddress: { 'aws:SourceIp': '10.1.0.0/16' } }), expect: /no resource-based/ },
  { name: 'IpAddress IPv6', policy: withCondition({ IpAddress: { 'aws:SourceIp': '::1/128' } }), sourceIp: '::1', expect: 'allow' },
  { name: 'IpAddress IPv6 range', policy: withCondition({ IpAddress: { 'aws:SourceIp': '2001:db8::/32' } }), sourceIp: '2001:db8:0:1::7', expect: 'allow' },
  { name: 'IpAddress IPv6 outside the range', policy: withCondition({ IpAddress: { 'aws:SourceIp': '2001:db8::/32' } }), sourceIp: '2001:db9::1', expect: /no resource-based/ },
  { name: 'IpAddress IPv4 range does not match IPv6', policy: withCondition({ IpAddress: { 'aws:SourceIp': '0.0.0.0/0' } }), sourceIp: '2001:db8::1', expect: /no resource-based/ },
  { name: 'IpAddress single address, odd prefix', policy: withCondition({ IpAddress: { 'aws:SourceIp': ['10.1.2.0/23', '192.0.2.1'] } }), sourceIp: '10.1.3.200', expect: 'allow' },
  { name: 'NumericLessThanEquals pending window', action: 'kms:ScheduleKeyDeletion', policy: withCondition({ NumericGreaterThanEquals: { 'kms:ScheduleKeyDeletionPendingWindowInDays': 14 } }, 'kms:ScheduleKeyDeletion'), input: { PendingWindowInDays: 7 }, expect: /no resource-based/ },
  { name: 'NumericGreaterThanEquals, default window 30', action: 'kms:ScheduleKeyDeletion', policy: withCondition({ NumericGreaterThanEquals: { 'kms:ScheduleKeyDeletionPendingWindowInDays': '14' } }, 'kms:ScheduleKeyDeletion'), expect: 'allow' },
  { name: 'NumericEquals / NumericNotEquals', action: 'kms:EnableKeyRotation', policy: withCondition({ NumericEquals: { 'kms:RotationPeriodInDays': 90 }, NumericNotEquals: { 'kms:RotationPeriodInDays': 91 } }, 'kms:EnableKeyRotation'), input: { RotationPeriodInDays: 90 }, expect: 'allow' },
  { name: 'NumericLessThan', action: 'kms:EnableKeyRotation', policy: withCondition({ NumericLessThan: { 'kms:RotationPeriodInDays': 90 } }, 'kms:EnableKeyRotation'), input: { RotationPeriodInDays: 90 }, expect: /no resource-based/ },
  { name: 'NumericGreaterThan/LessThanEquals', action: 'kms:EnableKeyRotation', policy: withCondition({ NumericGreaterThan: { 'kms:RotationPeriodInDays': 89 }, NumericLessThanEquals: { 'kms:RotationPeriodInDays': 90 } }, 'kms:EnableKeyRotation'), input: { RotationPeriodInDays: 90 }, expect: 'allow' },
  { name: 'DateLessThan aws:CurrentTime', policy: withCondition({ DateLessThan: { 'aws:CurrentTime': '2026-12-31T00:00:00Z' } }), expect: 'allow' },
  { name: 'DateGreaterThan aws:CurrentTime', policy: withCondition({ DateGreaterThan: { 'aws:CurrentTime': '2026-12-31T00:00:00Z' } }), expect: /no resource-based/ },
  { name: 'DateGreaterThanEquals with epoch seconds', policy: withCondition({ DateGreaterThanEquals: { 'aws:EpochTime': 1780272000 } }), expect: 'allow' },
  { name: 'DateEquals / DateNotEquals / DateLessThanEquals', policy: withCondition({ DateEquals: { 'aws:CurrentTime': '2026-06-01T00:00:00Z' }, DateNotEquals: { 'aws:CurrentTime': '2026-06-02' }, DateLessThanEquals: { 'aws:CurrentTime': '2026-06-01T00:00:00Z' } }), expect: 'allow' },
  { name: 'ArnLike on aws:PrincipalArn', policy: keyPolicy(allowKey('*', 'kms:Encrypt', { Condition: { ArnLike: { 'aws:PrincipalArn': `arn:aws:iam::${ACCT}:user/al*` } } })), expect: 'allow' },
  { name: 'ArnLike wildcards stay in their segment', policy: keyPolicy(allowKey('*', 'kms:Encrypt', { Condition: { ArnLike: { 'aws:PrincipalArn': 'arn:aws:*:user/alice' } } })), expect: /no resource-based/ },
  { name: 'ArnEquals / ArnNotEquals / ArnNotLike', policy: keyPolicy(allowKey('*', 'kms:Encrypt', { Condition: { ArnEquals: { 'aws:PrincipalArn': ALICE }, ArnNotEquals: { 'aws:PrincipalArn': BOB }, ArnNotLike: { 'aws:PrincipalArn': '*:role/*' } } })), expect: 'allow' },
  { name: 'kms:CallerAccount', policy: keyPolicy(allowKey('*', 'kms:Encrypt', { Condition: { StringEquals: { 'kms:CallerAccount': ACCT } } })), expect: 'allow' },
  { name: 'aws:PrincipalAccount other', policy: keyPolicy(allowKey('*', 'kms:Encrypt', { Condition: { StringEquals: { 'aws:PrincipalAccount': OTHER } } })), expect: /no resource-based/ },
  { name: 'aws:username', policy: keyPolicy(allowKey('*', 'kms:Encrypt', { Condition: { StringEquals: { 'aws:username': 'alice' } } })), expect: 'allow' },
  { name: 'aws:PrincipalTag', policy: withCondition({ StringEquals: { 'aws:PrincipalTag/team': 'blue' } }), tags: { team: 'blue' }, expect: 'allow' },
  { name: 'policy variable in a condition value', policy: withCondition({ StringEquals: { 'kms:EncryptionContext:owner': '${aws:username}' } }), input: ec({ owner: 'alice' }), expect: 'allow' },
  { name: 'kms:KeySpec / KeyUsage / KeyOrigin', policy: withCondition({ StringEquals: { 'kms:KeySpec': 'SYMMETRIC_DEFAULT', 'kms:KeyUsage': 'ENCRYPT_DECRYPT', 'kms:KeyOrigin': 'AWS_KMS' } }), expect: 'allow' },
  { name: 'kms:EncryptionAlgorithm defaults to SYMMETRIC_DEFAULT', policy: withCondition({ StringEquals: { 'kms:EncryptionAlgorithm': 'SYMMETRIC_DEFAULT' } }), expect: 'allow' },
  { name: 'kms:RequestAlias from the alias used', policy: withCondition({ StringEquals: { 'kms:RequestAlias': 'alias/app' } }), input: { KeyId: `arn:aws:kms:us-east-1:${ACCT}:alias/app` }, expect: 'allow' },
  { name: 'kms:RequestAlias absent for a key ID', policy: withCondition({ StringEquals: { 'kms:RequestAlias': 'alias/app' } }), input: { KeyId: KEY_ID }, expect: /no resource-based/ },
  { name: 'kms:ResourceAliases', identity: { [ALICE]: [doc(allowIam('kms:Encrypt', '*', { Condition: { 'ForAnyValue:StringEquals': { 'kms:ResourceAliases': 'alias/app' } } }))] }, aliases: ['alias/app', 'alias/x'], expect: 'allow' },
  { name: 'kms:ResourceAliases without the alias', identity: { [ALICE]: [doc(allowIam('kms:Encrypt', '*', { Condition: { 'ForAnyValue:StringEquals': { 'kms:ResourceAliases': 'alias/app' } } }))] }, aliases: ['alias/x'], expect: /no identity-based/ },
  {
    name: 'kms:GrantOperations ForAllValues',
    action: 'kms:CreateGrant',
    policy: withCondition({ 'ForAllValues:StringEquals': { 'kms:GrantOperations': ['Encrypt', 'Decrypt'] }, StringEquals: { 'kms:GranteePrincipal': BOB } }, 'kms:CreateGrant'),
    input: { Operations: ['Encrypt', 'Sign'], GranteePrincipal: BOB },
    expect: /no resource-based/,
  },
  {
    name: 'kms:GrantOperations and GranteePrincipal satisfied',
    action: 'kms:CreateGrant',
    policy: withCondition({ 'ForAllValues:StringEquals': { 'kms:GrantOperations': ['Encrypt', 'Decrypt'] }, StringEquals: { 'kms:GranteePrincipal': BOB }, Bool: { 'kms:GrantIsForAWSResource': false } }, 'kms:CreateGrant'),
    input: { Operations: ['Encrypt'], GranteePrincipal: BOB },
    expect: 'allow',
  },
  { name: 'kms:RetiringPrincipal', action: 'kms:CreateGrant', policy: withCondition({ StringEquals: { 'kms:RetiringPrincipal': BOB } }, 'kms:CreateGrant'), input: { Operations: ['Encrypt'], GranteePrincipal: BOB }, expect: /no resource-based/ },
  { name: 'kms:BypassPolicyLockoutSafetyCheck', action: 'kms:PutKeyPolicy', policy: keyPolicy(allowKey({ AWS: ALICE }, 'kms:*'), { Effect: 'Deny', Principal: '*', Action: 'kms:PutKeyPolicy', Resource: '*', Condition: { Bool: { 'kms:BypassPolicyLockoutSafetyCheck': true } } }), input: { BypassPolicyLockoutSafetyCheck: true }, expect: /explicit deny/ },
  { name: 'kms:SigningAlgorithm / MessageType', action: 'kms:Sign', policy: withCondition({ StringEquals: { 'kms:SigningAlgorithm': 'ECDSA_SHA_256', 'kms:MessageType': 'RAW' } }, 'kms:Sign'), input: { SigningAlgorithm: 'ECDSA_SHA_256' }, expect: 'allow' },
  { name: 'kms:MacAlgorithm', action: 'kms:GenerateMac', policy: withCondition({ StringEquals: { 'kms:MacAlgorithm': 'HMAC_SHA_256' } }, 'kms:GenerateMac'), input: { MacAlgorithm: 'HMAC_SHA_384' }, expect: /no resource-based/ },
];

const noKeyCases: Case[] = [
  { name: 'CreateKey by the account root', caller: ROOT, action: 'kms:CreateKey', noKey: true, expect: 'allow' },
  { name: 'CreateKey without IAM', action: 'kms:CreateKey', noKey: true, expect: /^AccessDeniedException: User: arn:aws:iam::111122223333:user\/alice is not authorized to perform: kms:CreateKey on resource: \* because no identity-based policy allows the kms:CreateKey action$/ },
  { name: 'CreateKey with IAM Resource "*"', action: 'kms:CreateKey', noKey: true, identity: { [ALICE]: [doc(allowIam('kms:CreateKey'))] }, expect: 'allow' },
  { name: 'CreateKey with IAM on key ARNs only', action: 'kms:CreateKey', noKey: true, identity: { [ALICE]: [doc(allowIam('kms:CreateKey', `arn:aws:kms:*:${ACCT}:key/*`))] }, expect: /no identity-based/ },
  { name: 'CreateKey condition on kms:KeySpec', action: 'kms:CreateKey', noKey: true, identity: { [ALICE]: [doc(allowIam('kms:CreateKey', '*', { Condition: { StringEquals: { 'kms:KeySpec': 'RSA_2048' } } }))] }, input: { KeySpec: 'RSA_2048', KeyUsage: 'SIGN_VERIFY' }, expect: 'allow' },
  { name: 'CreateKey condition on kms:KeySpec default', action: 'kms:CreateKey', noKey: true, identity: { [ALICE]: [doc(allowIam('kms:CreateKey', '*', { Condition: { StringEquals: { 'kms:KeySpec': 'RSA_2048' } } }))] }, expect: /no identity-based/ },
  { name: 'CreateKey with aws:RequestTag', action: 'kms:CreateKey', noKey: true, identity: { [ALICE]: [doc(allowIam('kms:CreateKey', '*', { Condition: { StringEquals: { 'aws:RequestTag/env': 'dev' } } }))] }, input: { Tags: [{ TagKey: 'env', TagValue: 'dev' }] }, expect: 'allow' },
  { name: 'an alias of the caller account', action: 'kms:CreateAlias', resource: `arn:aws:kms:us-east-1:${ACCT}:alias/a`, noKey: true, identity: { [ALICE]: [doc(allowIam('kms:CreateAlias', `arn:aws:kms:*:${ACCT}:alias/*`))] }, expect: 'allow' },
  { name: "CreateKey by another account's principal", caller: CAROL, action: 'kms:CreateKey', noKey: true, identity: { [CAROL]: [doc(allowIam('kms:*'))] }, expect: /no resource-based policy allows the kms:CreateKey action/ },
  { name: "ListKeys by another account's root", caller: OTHER_ROOT, action: 'kms:ListKeys', noKey: true, expect: /no resource-based policy allows the kms:ListKeys action/ },
  { name: 'ListRetirableGrants from another account', caller: CAROL, action: 'kms:ListRetirableGrants', noKey: true, identity: { [CAROL]: [doc(allowIam('kms:ListRetirableGrants'))] }, expect: 'allow' },
  { name: "another account's alias", caller: CAROL, action: 'kms:CreateAlias', resource: `arn:aws:kms:us-east-1:${ACCT}:alias/a`, noKey: true, identity: { [CAROL]: [doc(allowIam('kms:*'))] }, expect: /no resource-based policy allows the kms:CreateAlias/ },
];

const grantCases: Case[] = [
  { name: 'a grant allows its operation without any policy', grants: [{ operations: ['Encrypt'] }], expect: 'allow' },
  { name: 'a grant allows only its operations', action: 'kms:Decrypt', grants: [{ operations: ['Encrypt'] }], expect: /no identity-based/ },
  { name: "a grant is its grantee's only", caller: BOB, grants: [{ operations: ['Encrypt'] }], expect: /no identity-based/ },
  { name: 'a grant works without account delegation', policy: keyPolicy(allowKey({ AWS: BOB }, 'kms:*')), grants: [{ operations: ['Encrypt'] }], expect: 'allow' },
  { name: 'an explicit deny beats a grant', policy: keyPolicy(rootStatement, { Effect: 'Deny', Principal: '*', Action: 'kms:Encrypt', Resource: '*' }), grants: [{ operations: ['Encrypt'] }], expect: /explicit deny/ },
  { name: 'EncryptionContextEquals satisfied', grants: [{ constraints: { EncryptionContextEquals: { a: '1' } } }], input: ec({ a: '1' }), expect: 'allow' },
  { name: 'EncryptionContextEquals with an extra pair', grants: [{ constraints: { EncryptionContextEquals: { a: '1' } } }], input: ec({ a: '1', b: '2' }), expect: /no identity-based/ },
  { name: 'constraint keys are case-insensitive, values are not', grants: [{ constraints: { EncryptionContextEquals: { App: 'x' } } }], input: ec({ app: 'x' }), expect: 'allow' },
  { name: 'constraint values are case-sensitive', grants: [{ constraints: { EncryptionContextEquals: { app: 'x' } } }], input: ec({ app: 'X' }), expect: /no identity-based/ },
  { name: 'EncryptionContextSubset satisfied by a superset', grants: [{ constraints: { EncryptionContextSubset: { a: '1' } } }], input: ec({ a: '1', b: '2' }), expect: 'allow' },
  { name: 'EncryptionContextSubset not satisfied', grants: [{ constraints: { EncryptionContextSubset: { a: '1' } } }], input: ec({ a: '2' }), expect: /no identity-based/ },
  { name: 'constraints ignored for DescribeKey', action: 'kms:DescribeKey', grants: [{ operations: ['DescribeKey'], constraints: { EncryptionContextEquals: { a: '1' } } }], expect: 'allow' },
  { name: 'ReEncryptTo checks the destination context', action: 'kms:ReEncryptTo', grants: [{ operations: ['ReEncryptTo'], constraints: { EncryptionContextSubset: { a: '1' } } }], input: { DestinationEncryptionContext: { a: '1' }, SourceEncryptionContext: { a: '2' } }, expect: 'allow' },
  { name: 'CreateGrant through a grant: fewer operations', action: 'kms:CreateGrant', grants: [{ operations: ['Encrypt', 'Decrypt', 'CreateGrant'] }], input: { Operations: ['Decrypt'], GranteePrincipal: BOB }, expect: 'allow' },
  { name: 'CreateGrant through a grant: more operations', action: 'kms:CreateGrant', grants: [{ operations: ['Encrypt', 'CreateGrant'] }], input: { Operations: ['Decrypt'], GranteePrincipal: BOB }, expect: /no identity-based/ },
  { name: 'CreateGrant through a grant: looser constraints', action: 'kms:CreateGrant', grants: [{ operations: ['Encrypt', 'CreateGrant'], constraints: { EncryptionContextSubset: { a: '1' } } }], input: { Operations: ['Encrypt'], GranteePrincipal: BOB }, expect: /no identity-based/ },
  { name: 'CreateGrant through a grant: stricter constraints', action: 'kms:CreateGrant', grants: [{ operations: ['Encrypt', 'CreateGrant'], constraints: { EncryptionContextSubset: { a: '1' } } }], input: { Operations: ['Encrypt'], GranteePrincipal: BOB, Constraints: { EncryptionContextEquals: { a: '1', b: '2' } } }, expect: 'allow' },
  { name: 'RetireGrant is never allowed key-wide by a grant', action: 'kms:RetireGrant', grants: [{ operations: ['RetireGrant'] }], expect: /no identity-based/ },
  { name: 'a cross-account grantee needs no IAM policy', caller: CAROL, grants: [{ granteePrincipal: CAROL }], expect: 'allow' },
  { name: 'a grant to the account serves users allowed by IAM', grants: [{ granteePrincipal: ROOT }], identity: { [ALICE]: [doc(allowIam('kms:Encrypt'))] }, policy: keyPolicy(allowKey({ AWS: BOB }, 'kms:*')), expect: 'allow' },
  { name: 'invalid grant token', input: { GrantTokens: ['not-a-token'] }, caller: ROOT, expect: /^InvalidGrantTokenException/ },
  { name: 'valid grant token', input: { GrantTokens: [issueGrantToken(KEY_ID, 'a'.repeat(64))] }, caller: ROOT, expect: 'allow' },
];

/**
 * Encryption context (and tag) keys that differ only in case. Condition key names and grant
 * constraint keys are case-insensitive (Developer Guide, "Case sensitivity of the encryption
 * context condition"; API reference, GrantConstraints), so {"TENANT":"evil","tenant":"a"} gives
 * the key `tenant` two values. AWS documents no rule for that: we read it strictly (an Allow must
 * hold for every value, a Deny for any), and every case runs with the members in both orders.
 */
const COLLIDING = { TENANT: 'evil', tenant: 'a' };
const denyWhen = (condition: Doc) =>
  keyPolicy(allowKey({ AWS: ALICE }, 'kms:Encrypt'), { Effect: 'Deny', Principal: { AWS: ALICE }, Action: 'kms:Encrypt', Resource: '*', Condition: condition });
const iamWhen = (condition: Doc) => ({ [ALICE]: [doc(allowIam('kms:Encrypt', '*', { Condition: condition }))] });
const grantWith = (constraints: Record<string, Record<string, string>>, operations = ['Encrypt']) => [{ operations, constraints }];

const caseCollisionCases: Case[] = [
  // kms:EncryptionContext:<key> in an Allow: every value must satisfy the condition.
  { name: 'Allow StringEquals: one of two values', policy: withCondition({ StringEquals: { 'kms:EncryptionContext:tenant': 'a' } }), input: ec(COLLIDING), expect: /no resource-based/ },
  { name: 'Allow StringEquals: the same value twice', policy: withCondition({ StringEquals: { 'kms:EncryptionContext:tenant': 'a' } }), input: ec({ TENANT: 'a', tenant: 'a' }), expect: 'allow' },
  { name: 'Allow StringEquals: both values listed', policy: withCondition({ StringEquals: { 'kms:EncryptionContext:tenant': ['a', 'evil'] } }), input: ec(COLLIDING), expect: 'allow' },
  { name: 'Allow StringEqualsIgnoreCase: values differing in case', policy: withCondition({ StringEqualsIgnoreCase: { 'kms:EncryptionContext:Tenant': 'A' } }), input: ec({ Tenant: 'a', tenant: 'A' }), expect: 'allow' },
  { name: 'Allow StringEquals is case-sensitive in values', policy: withCondition({ StringEquals: { 'kms:EncryptionContext:Tenant': 'A' } }), input: ec({ Tenant: 'a', tenant: 'A' }), expect: /no resource-based/ },
  { name: 'Allow StringNotEquals: one value is the forbidden one', policy: withCondition({ StringNotEquals: { 'kms:EncryptionContext:tenant': 'evil' } }), input: ec(COLLIDING), expect: /no resource-based/ },
  { name: 'Allow StringLike: every value matches', policy: withCondition({ StringLike: { 'kms:EncryptionContext:tenant': 'a*' } }), input: ec({ TENANT: 'ab', tenant: 'a' }), expect: 'allow' },
  { name: 'Allow StringLike: one value does not', policy: withCondition({ StringLike: { 'kms:EncryptionContext:tenant': 'a*' } }), input: ec({ TENANT: 'b', tenant: 'a' }), expect: /no resource-based/ },
  { name: 'Allow StringEqualsIfExists: one of two values', policy: withCondition({ StringEqualsIfExists: { 'kms:EncryptionContext:tenant': 'a' } }), input: ec(COLLIDING), expect: /no resource-based/ },
  { name: 'Allow Null false: the key is present', policy: withCondition({ Null: { 'kms:EncryptionContext:tenant': 'false' } }), input: ec(COLLIDING), expect: 'allow' },
  { name: 'Allow ForAnyValue on the pair: one of two values', policy: withCondition({ 'ForAnyValue:StringEquals': { 'kms:EncryptionContext:tenant': 'a' } }), input: ec(COLLIDING), expect: /no resource-based/ },
  { name: 'IAM Allow ForAllValues on the pair: one of two values', identity: iamWhen({ 'ForAllValues:StringEquals': { 'kms:EncryptionContext:tenant': 'a' } }), input: ec(COLLIDING), expect: /no identity-based/ },
  { name: 'IAM Allow ForAllValues on the pair: the same value twice', identity: iamWhen({ 'ForAllValues:StringEquals': { 'kms:EncryptionContext:tenant': 'a' } }), input: ec({ TENANT: 'a', tenant: 'a' }), expect: 'allow' },
  // In a Deny: any value satisfying the condition denies.
  { name: 'Deny StringEquals: one value is restricted', policy: denyWhen({ StringEquals: { 'kms:EncryptionContext:stage': 'restricted' } }), input: ec({ Stage: 'restricted', stage: 'test' }), expect: /explicit deny/ },
  { name: 'Deny StringEquals: neither value is restricted', policy: denyWhen({ StringEquals: { 'kms:EncryptionContext:stage': 'restricted' } }), input: ec({ Stage: 'prod', stage: 'test' }), expect: 'allow' },
  { name: 'Deny StringNotEquals: one value is not the required one', policy: denyWhen({ StringNotEquals: { 'kms:EncryptionContext:tenant': 'a' } }), input: ec(COLLIDING), expect: /explicit deny/ },
  { name: 'Deny StringNotEquals: the required value twice', policy: denyWhen({ StringNotEquals: { 'kms:EncryptionContext:tenant': 'a' } }), input: ec({ TENANT: 'a', tenant: 'a' }), expect: 'allow' },
  { name: 'Deny ForAnyValue on the pair: one value is restricted', policy: denyWhen({ 'ForAnyValue:StringEquals': { 'kms:EncryptionContext:stage': 'restricted' } }), input: ec({ STAGE: 'restricted', stage: 'x' }), expect: /explicit deny/ },
  // kms:EncryptionContextKeys: every key as given, case-sensitive unless the operator ignores case.
  { name: 'ForAllValues:StringEquals on the keys', policy: withCondition({ 'ForAllValues:StringEquals': { 'kms:EncryptionContextKeys': ['tenant'] } }), input: ec(COLLIDING), expect: /no resource-based/ },
  { name: 'ForAllValues:StringEqualsIgnoreCase on the keys', policy: withCondition({ 'ForAllValues:StringEqualsIgnoreCase': { 'kms:EncryptionContextKeys': ['tenant'] } }), input: ec(COLLIDING), expect: 'allow' },
  { name: 'ForAnyValue:StringEquals on the keys', policy: withCondition({ 'ForAnyValue:StringEquals': { 'kms:EncryptionContextKeys': 'TENANT' } }), input: ec(COLLIDING), expect: 'allow' },
  { name: 'Deny ForAnyValue:StringEquals on the keys', policy: denyWhen({ 'ForAnyValue:StringEquals': { 'kms:EncryptionContextKeys': 'TENANT' } }), input: ec(COLLIDING), expect: /explicit deny/ },
  {
    name: 'the documented fully case-sensitive pattern refuses the extra key',
    policy: withCondition({ StringEquals: { 'kms:EncryptionContext:tenant': 'a' }, 'ForAllValues:StringEquals': { 'kms:EncryptionContextKeys': ['tenant'] } }),
    input: ec(COLLIDING),
    expect: /no resource-based/,
  },
  {
    name: 'the documented fully case-sensitive pattern allows the exact pair',
    policy: withCondition({ StringEquals: { 'kms:EncryptionContext:tenant': 'a' }, 'ForAllValues:StringEquals': { 'kms:EncryptionContextKeys': ['tenant'] } }),
    input: ec({ tenant: 'a' }),
    expect: 'allow',
  },
  // Tags in the request are another family of case-insensitive condition keys.
  {
    name: 'aws:RequestTag with tag keys that differ in case',
    action: 'kms:CreateKey',
    noKey: true,
    identity: { [ALICE]: [doc(allowIam('kms:CreateKey', '*', { Condition: { StringEquals: { 'aws:RequestTag/env': 'dev' } } }))] },
    input: { Tags: [{ TagKey: 'env', TagValue: 'dev' }, { TagKey: 'ENV', TagValue: 'prod' }] },
    expect: /no identity-based/,
  },
  // Grant constraints: keys case-insensitive, values case-sensitive, Equals is the whole pair set.
  { name: 'grant Equals: an extra pair whose key differs in case (issue 9)', grants: grantWith({ EncryptionContextEquals: { tenant: 'a' } }), input: ec(COLLIDING), expect: /no identity-based/ },
  { name: 'grant Equals: the key in another case', grants: grantWith({ EncryptionContextEquals: { tenant: 'a' } }), input: ec({ TENANT: 'a' }), expect: 'allow' },
  { name: 'grant Equals: the same pair in two cases', grants: grantWith({ EncryptionContextEquals: { tenant: 'a' } }), input: ec({ TENANT: 'a', tenant: 'a' }), expect: 'allow' },
  { name: 'grant Equals: the value in another case', grants: grantWith({ EncryptionContextEquals: { tenant: 'a' } }), input: ec({ tenant: 'A' }), expect: /no identity-based/ },
  { name: 'grant Equals with colliding keys: the same pairs', grants: grantWith({ EncryptionContextEquals: { tenant: 'a', TENANT: 'b' } }), input: ec({ Tenant: 'b', tenant: 'a' }), expect: 'allow' },
  { name: 'grant Equals with colliding keys: one pair missing', grants: grantWith({ EncryptionContextEquals: { tenant: 'a', TENANT: 'b' } }), input: ec({ tenant: 'a' }), expect: /no identity-based/ },
  { name: 'grant Subset: an extra value for a constrained key', grants: grantWith({ EncryptionContextSubset: { tenant: 'a' } }), input: ec(COLLIDING), expect: /no identity-based/ },
  { name: 'grant Subset: the key in another case, other keys free', grants: grantWith({ EncryptionContextSubset: { tenant: 'a' } }), input: ec({ other: 'x', TENANT: 'a' }), expect: 'allow' },
  {
    name: 'CreateGrant through a grant: Equals with the key in another case is as strict',
    action: 'kms:CreateGrant',
    grants: grantWith({ EncryptionContextEquals: { tenant: 'a' } }, ['Encrypt', 'CreateGrant']),
    input: { Operations: ['Encrypt'], GranteePrincipal: BOB, Constraints: { EncryptionContextEquals: { TENANT: 'a' } } },
    expect: 'allow',
  },
  {
    name: 'CreateGrant through a grant: Equals with an extra colliding pair is not',
    action: 'kms:CreateGrant',
    grants: grantWith({ EncryptionContextEquals: { tenant: 'a' } }, ['Encrypt', 'CreateGrant']),
    input: { Operations: ['Encrypt'], GranteePrincipal: BOB, Constraints: { EncryptionContextEquals: COLLIDING } },
    expect: /no identity-based/,
  },
  {
    name: 'CreateGrant through a grant: Subset with an extra colliding value is not',
    action: 'kms:CreateGrant',
    grants: grantWith({ EncryptionContextSubset: { tenant: 'a' } }, ['Encrypt', 'CreateGrant']),
    input: { Operations: ['Encrypt'], GranteePrincipal: BOB, Constraints: { EncryptionContextSubset: COLLIDING } },
    expect: /no identity-based/,
  },
];

/** The same value with every object's members, and every list, in reverse order. */
function reversedMembers<T>(value: T): T {
  if (Array.isArray(value)) return value.map(reversedMembers).reverse() as T;
  if (value !== null && typeof value === 'object') return Object.fromEntries(Object.entries(value).reverse().map(([k, v]) => [k, reversedMembers(v)])) as T;
  return value;
}

describe('keys that differ only in case, in both member orders', () => {
  it.each(caseCollisionCases.map((c) => [c.name, c] as const))('%s', async (_name, c) => {
    const reversed: Case = { ...c, input: reversedMembers(c.input), grants: c.grants?.map((g) => ({ ...g, constraints: reversedMembers(g.constraints) })) };
    const [forward, backward] = [await outcome(c), await outcome(reversed)];
    expect(backward).toBe(forward);
    if (c.expect === 'allow') expect(forward).toBe('allow');
    else expect(forward).toMatch(c.expect);
  });
});

describe.each([
  ['default key policy and identity policies', defaultPolicyCases],
  ['key policies', keyPolicyCases],
  ['cross-account access', crossAccountCases],
  ['condition operators and keys', conditionCases],
  ['actions without a key', noKeyCases],
  ['grants', grantCases],
])('%s', (_group, cases) => {
  it.each(cases.map((c) => [c.name, c] as const))('%s', async (_name, c) => {
    const result = await outcome(c);
    if (c.expect === 'allow') expect(result).toBe('allow');
    else expect(result).toMatch(c.expect);
  });
});

describe('wildcards', () => {
  it.each([
    ['*', '', true],
    ['a*', 'abc', true],
    ['a?c', 'abc', true],
    ['a?c', 'ac', false],
    ['*b*', 'abc', true],
    ['a*c*e', 'abcde', true],
    ['a*c*e', 'abcdf', false],
    ['kms:*Key', 'kms:DescribeKey', true],
    ['abc', 'ABC', false],
    ['a**?', 'ab', true],
  ] as const)('%s ~ %s is %s', (pattern, text, expected) => {
    expect(wildcardMatch(pattern, text)).toBe(expected);
  });

  it('stays fast on patterns that make regular expressions backtrack', () => {
    const started = Date.now();
    expect(wildcardMatch(`${'*a'.repeat(20)}*b`, 'a'.repeat(20_000))).toBe(false);
    expect(Date.now() - started).toBeLessThan(1000);
  });
});

describe('key policy documents', () => {
  const authorizer = authorizerFor({});
  const malformed: Array<[string, string]> = [
    ['not JSON', '{"Statement": ['],
    ['no Statement', '{"Version":"2012-10-17"}'],
    ['unknown top-level element', JSON.stringify({ ...doc(rootStatement), Extra: 1 })],
    ['bad Version', JSON.stringify({ Version: '2020-01-01', Statement: [rootStatement] })],
    ['bad Effect', keyPolicy({ ...rootStatement, Effect: 'allow' })],
    ['Action and NotAction', keyPolicy({ ...rootStatement, NotAction: 'kms:Decrypt' })],
    ['no principal', keyPolicy({ Effect: 'Allow', Action: 'kms:*', Resource: '*' })],
    ['principal that does not exist', keyPolicy(allowKey({ AWS: `arn:aws:iam::${ACCT}:user/nobody` }, 'kms:*'))],
    ['principal that is not an ARN', keyPolicy(allowKey({ AWS: 'alice' }, 'kms:*'))],
    ['invalid action', keyPolicy(allowKey({ AWS: ROOT }, 'Encrypt'))],
    ['unknown condition operator', keyPolicy(allowKey({ AWS: ROOT }, 'kms:*', { Condition: { StringSortOf: { 'kms:KeySpec': 'x' } } }))],
    ['Null with IfExists', keyPolicy(allowKey({ AWS: ROOT }, 'kms:*', { Condition: { NullIfExists: { 'kms:KeySpec': 'true' } } }))],
    ['invalid IP range', keyPolicy(allowKey({ AWS: ROOT }, 'kms:*', { Condition: { IpAddress: { 'aws:SourceIp': '10.0.0.0/99' } } }))],
    ['unknown statement element', keyPolicy({ ...rootStatement, Actions: 'kms:*' })],
  ];
  it.each(malformed)('refuses %s', (_name, text) => {
    expect(() => authorizer.compileKeyPolicy(text)).toThrow(expect.objectContaining({ type: 'MalformedPolicyDocumentException' }));
  });

  it('accepts service principals, bare account IDs and several statements', () => {
    expect(() =>
      authorizer.compileKeyPolicy(keyPolicy(rootStatement, allowKey({ AWS: [ACCT, ALICE, CAROL], Service: 'ec2.amazonaws.com' }, ['kms:Encrypt', 'kms:Decrypt']))),
    ).not.toThrow();
  });

  const lockout = async (caller: string, policy: string, bypass = false, identity: Record<string, Doc[]> = {}) => {
    const a = authorizerFor({ identity });
    const request = requestFor({ name: '', action: 'kms:PutKeyPolicy', expect: 'allow' }, principal(caller, identity[caller] ?? []));
    try {
      await a.checkKeyPolicy(request, policy, bypass);
      return 'ok';
    } catch (e) {
      return `${(e as Error).name}: ${(e as Error).message}`;
    }
  };

  it('lockout safety check: root must keep PutKeyPolicy', async () => {
    const withoutRoot = keyPolicy(allowKey({ AWS: ALICE }, 'kms:*'));
    expect(await lockout(ROOT, withoutRoot)).toBe('MalformedPolicyDocumentException: The new key policy will not allow you to update the key policy in the future.');
    expect(await lockout(ROOT, withoutRoot, true)).toBe('ok');
    expect(await lockout(ROOT, defaultKeyPolicy('aws', ACCT))).toBe('ok');
  });

  it('lockout safety check: a user through the key policy or through delegation and IAM', async () => {
    expect(await lockout(ALICE, keyPolicy(allowKey({ AWS: ALICE }, 'kms:PutKeyPolicy')))).toBe('ok');
    expect(await lockout(ALICE, defaultKeyPolicy('aws', ACCT))).toMatch(/will not allow you to update/);
    expect(await lockout(ALICE, defaultKeyPolicy('aws', ACCT), false, { [ALICE]: [doc(allowIam('kms:PutKeyPolicy'))] })).toBe('ok');
    expect(await lockout(ALICE, keyPolicy(allowKey({ AWS: ALICE }, 'kms:*'), { Effect: 'Deny', Principal: '*', Action: 'kms:PutKeyPolicy', Resource: '*' }))).toMatch(/will not allow/);
  });

  it('refuses ForAllValues on single-valued encryption context and request tag keys, as AWS KMS does', async () => {
    const withSetOperator = (operator: string, key: string) => keyPolicy(rootStatement, allowKey({ AWS: ALICE }, 'kms:Encrypt', { Condition: { [operator]: { [key]: 'a' } } }));
    expect(await lockout(ROOT, withSetOperator('ForAllValues:StringEquals', 'kms:EncryptionContext:tenant'))).toBe(
      'MalformedPolicyDocumentException: OverlyPermissiveCondition:EncryptionContext: Using the ForAllValues set operator with a single-valued condition key ' +
        'matches requests without the specified encryption context or with an unspecified encryption context. To fix, remove ForAllValues.',
    );
    expect(await lockout(ROOT, withSetOperator('ForAllValues:StringLike', 'aws:RequestTag/env'))).toMatch(/^MalformedPolicyDocumentException: OverlyPermissiveCondition:RequestTag: /);
    // Even with the lockout check bypassed; other set operators and multivalued keys are fine.
    expect(await lockout(ROOT, withSetOperator('ForAllValues:StringEquals', 'kms:EncryptionContext:tenant'), true)).toMatch(/OverlyPermissiveCondition/);
    expect(await lockout(ROOT, withSetOperator('ForAnyValue:StringEquals', 'kms:EncryptionContext:tenant'))).toBe('ok');
    expect(await lockout(ROOT, withSetOperator('ForAllValues:StringEquals', 'kms:EncryptionContextKeys'))).toBe('ok');
  });

  it('enforces the 32 KB quota', async () => {
    const big = keyPolicy({ ...rootStatement, Sid: 'x'.repeat(33_000) });
    expect(await lockout(ROOT, big)).toMatch(/^LimitExceededException/);
  });

  it('compiles a key policy once per key and policy text', () => {
    const policyOf = (k: KeyRecord) => authorizer['keyPolicyOf'](k);
    const first = policyOf(keyRecord(defaultKeyPolicy('aws', ACCT)));
    expect(policyOf(keyRecord(`${defaultKeyPolicy('aws', ACCT)}`))).toBe(first);
    expect(policyOf(keyRecord(keyPolicy(rootStatement)))).not.toBe(first);
  });

  it('fails closed on a stored policy that no longer compiles', async () => {
    const stale = keyPolicy(rootStatement, allowKey({ AWS: `arn:aws:iam::${ACCT}:user/removed` }, 'kms:*'));
    expect(await outcome({ name: '', caller: ROOT, policy: stale, expect: 'allow' })).toMatch(/no resource-based policy/);
  });

  it('refuses an invalid identity policy at start', () => {
    expect(() => authorizerFor({ identity: { [ALICE]: [{ Version: '2012-10-17', Statement: [{ Effect: 'Allow', Action: 'kms:*', Resource: '*', Principal: '*' }] }] } })).toThrow(/policy 0 of arn:aws:iam::111122223333:user\/alice is invalid/);
  });
});

describe('principals file', () => {
  it('refuses principal tags whose keys differ only in case (IAM keeps them unique)', () => {
    const user = { arn: ALICE, accessKeyId: 'AKIATESTALICE0000001', secretAccessKey: 'alice-secret-0123456789abcdefghij' };
    const load = (tags: Record<string, string>) => loadPrincipals(testConfig(tempDir('p11kms-principals-'), { P11KMS_PRINCIPALS_FILE: writePrincipalsFile([{ ...user, tags }]) }), () => {});
    expect(() => load({ Team: 'blue', team: 'red' })).toThrow(/principals\.0\.tags: tag keys must differ in more than case/);
    expect(load({ Team: 'blue', project: 'x' }).all().find((p) => p.arn === ALICE)?.tags).toEqual({ Team: 'blue', project: 'x' });
  });
});
