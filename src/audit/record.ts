/**
 * Audit records in AWS CloudTrail's event shape for KMS (eventVersion 1.11): one AwsApiCall per
 * request — allowed, denied, failed or malformed — and AwsServiceEvent for what the service does
 * on its own (rotation, deletion sweep, import expiry).
 *
 * What goes into a record is whitelisted, never blacklisted: requestParameters keep only the
 * members named in REQUEST_MEMBERS (key IDs, encryption context, algorithms, sizes, names,
 * descriptions, policies, tags...) and responseElements only the members CloudTrail shows for
 * the few operations where it shows any. Plaintext, ciphertext, messages, signatures, MACs, data
 * keys, wrapped key material, import and grant tokens and passwords are not on the list, so no
 * future input member can leak by default.
 */
import { type Caller, uniquePrincipalId } from '../auth/principals.js';
import type { Account } from '../kms/arn.js';

export const EVENT_VERSION = '1.11';
export const EVENT_SOURCE = 'kms.amazonaws.com';

export interface UserIdentity {
  type: 'Root' | 'IAMUser' | 'AssumedRole' | 'AWSService' | 'Unknown';
  principalId?: string;
  arn?: string;
  accountId?: string;
  accessKeyId?: string;
  userName?: string;
  invokedBy?: string;
  sessionContext?: { sessionIssuer: { type: 'Role'; principalId: string; arn: string; accountId: string; userName: string } };
}

export interface AuditResource {
  accountId: string;
  type: 'AWS::KMS::Key';
  ARN: string;
}

/** One CloudTrail-shaped record (the chain fields are added by the writer). */
export interface AuditRecord {
  eventVersion: string;
  userIdentity: UserIdentity;
  eventTime: string;
  eventSource: string;
  eventName: string;
  awsRegion: string;
  sourceIPAddress: string;
  userAgent: string;
  errorCode?: string;
  errorMessage?: string;
  requestParameters: Record<string, unknown> | null;
  responseElements: Record<string, unknown> | null;
  additionalEventData?: Record<string, unknown>;
  requestID?: string;
  eventID: string;
  readOnly: boolean;
  resources?: AuditResource[];
  eventType: 'AwsApiCall' | 'AwsServiceEvent';
  managementEvent: boolean;
  recipientAccountId: string;
  eventCategory: 'Management';
}

let lastEventTime = { second: NaN, text: '' };
/** CloudTrail's eventTime: ISO 8601 UTC to the second. */
export function eventTimeOf(d: Date): string {
  // Every record of one second has the same text: made once per second.
  const second = Math.floor(d.getTime() / 1000);
  if (second !== lastEventTime.second) lastEventTime = { second, text: d.toISOString().slice(0, 19) + 'Z' };
  return lastEventTime.text;
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** How CloudTrail prints timestamps inside KMS request/response elements: "Aug 10, 2022, 10:38:27 PM" (UTC). */
export function cloudTrailDate(d: Date): string {
  const h = d.getUTCHours();
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${MONTHS[d.getUTCMonth()]} ${d.getUTCDate()}, ${d.getUTCFullYear()}, ${h % 12 === 0 ? 12 : h % 12}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} ${h < 12 ? 'AM' : 'PM'}`;
}

const identityCache = new WeakMap<object, Map<string, UserIdentity>>();

/** userIdentity of an authenticated caller (Root, IAMUser or AssumedRole as CloudTrail names them).
 *  Cached per principal and access key: records only serialise it. */
export function identityOf(caller: Caller): UserIdentity {
  const p = caller.principal;
  let byKey = identityCache.get(p);
  if (byKey === undefined) {
    byKey = new Map();
    identityCache.set(p, byKey);
  }
  const cached = byKey.get(caller.accessKeyId);
  if (cached !== undefined) return cached;
  const resource = p.arn.split(':').slice(5).join(':');
  const accessKeyId = caller.accessKeyId;
  let identity: UserIdentity;
  if (p.isRoot) {
    identity = { type: 'Root', principalId: p.accountId, arn: p.arn, accountId: p.accountId, accessKeyId };
  } else if (resource.startsWith('role/')) {
    const name = resource.slice(resource.lastIndexOf('/') + 1);
    const principalId = uniquePrincipalId(p.arn, p.accountId, false);
    identity = {
      type: 'AssumedRole',
      principalId,
      arn: p.arn,
      accountId: p.accountId,
      accessKeyId,
      sessionContext: { sessionIssuer: { type: 'Role', principalId, arn: p.arn, accountId: p.accountId, userName: name } },
    };
  } else {
    const name = resource.slice(resource.lastIndexOf('/') + 1);
    identity = { type: 'IAMUser', principalId: uniquePrincipalId(p.arn, p.accountId, false), arn: p.arn, accountId: p.accountId, accessKeyId, userName: name };
  }
  // Through an integrated service (one access key is one service): CloudTrail names the service.
  if (caller.via) identity = { ...identity, invokedBy: `${caller.via.service}.amazonaws.com` };
  byKey.set(accessKeyId, identity);
  return identity;
}

/** userIdentity when authentication failed: only what the request claimed. */
export function unknownIdentity(accessKeyId: string | undefined): UserIdentity {
  return accessKeyId ? { type: 'Unknown', accessKeyId } : { type: 'Unknown' };
}

const READ_ONLY = /^(Describe|List|Get|Generate|Encrypt|Decrypt|ReEncrypt|Sign|Verify|DeriveSharedSecret)/;
export const isReadOnly = (eventName: string) => READ_ONLY.test(eventName);

/** CloudTrail's member naming: first letter lower-cased, except leading acronyms (AWSAccountId). */
export function lowerCamel(name: string): string {
  if (name.length > 1 && name[1]! >= 'A' && name[1]! <= 'Z') return name;
  return name.charAt(0).toLowerCase() + name.slice(1);
}

/** Input members that may appear in requestParameters (and nothing else, ever). */
const REQUEST_MEMBERS = new Set([
  'KeyId',
  'SourceKeyId',
  'DestinationKeyId',
  'TargetKeyId',
  'AliasName',
  'Description',
  'KeyUsage',
  'KeySpec',
  'CustomerMasterKeySpec',
  'KeyPairSpec',
  'Origin',
  'MultiRegion',
  'BypassPolicyLockoutSafetyCheck',
  'Policy',
  'PolicyName',
  'Tags',
  'TagKeys',
  'EncryptionContext',
  'SourceEncryptionContext',
  'DestinationEncryptionContext',
  'EncryptionAlgorithm',
  'SourceEncryptionAlgorithm',
  'DestinationEncryptionAlgorithm',
  'SigningAlgorithm',
  'MessageType',
  'MacAlgorithm',
  'KeyAgreementAlgorithm',
  'NumberOfBytes',
  'PendingWindowInDays',
  'Limit',
  'Marker',
  'RotationPeriodInDays',
  'GranteePrincipal',
  'RetiringPrincipal',
  'Operations',
  'Constraints',
  'Name',
  'GrantId',
  'WrappingAlgorithm',
  'WrappingKeySpec',
  'ExpirationModel',
  'ValidTo',
  'ImportType',
  'KeyMaterialDescription',
  'KeyMaterialId',
  'IncludeKeyMaterial',
  'CustomKeyStoreId',
  'ReplicaRegion',
  'PrimaryRegion',
  'DryRun',
]);

/** Maps whose keys are user data (kept verbatim); their values are strings. */
const VERBATIM_MAPS = new Set(['EncryptionContext', 'SourceEncryptionContext', 'DestinationEncryptionContext', 'EncryptionContextSubset', 'EncryptionContextEquals']);
/** Operations whose CloudTrail entry has no requestParameters at all. */
const NO_PARAMETERS = new Set(['GenerateRandom']);
const MAX_STRING = 32 * 1024;

function cleanValue(member: string, value: unknown, depth: number): unknown {
  if (value === null || value === undefined) return undefined;
  if (typeof value === 'string') return value.length > MAX_STRING ? value.slice(0, MAX_STRING) : value;
  if (typeof value === 'number' || typeof value === 'boolean') return value;
  if (value instanceof Date) return cloudTrailDate(value);
  if (value instanceof Uint8Array || depth > 3) return undefined; // never bytes
  if (Array.isArray(value)) {
    const out = value.map((v) => cleanValue(member, v, depth + 1)).filter((v) => v !== undefined);
    return out;
  }
  if (typeof value === 'object') {
    const out: Record<string, unknown> = {};
    if (VERBATIM_MAPS.has(member)) {
      for (const [k, v] of Object.entries(value)) if (typeof v === 'string') out[k] = v.length > MAX_STRING ? v.slice(0, MAX_STRING) : v;
      return out;
    }
    for (const [k, v] of Object.entries(value)) {
      const cleaned = cleanValue(k, v, depth + 1);
      if (cleaned !== undefined) out[lowerCamel(k)] = cleaned;
    }
    return out;
  }
  return undefined;
}

/** requestParameters for `operation` from its (validated or raw) input; null when empty. */
export function requestParametersOf(operation: string, input: Record<string, unknown> | undefined): Record<string, unknown> | null {
  if (input === undefined || NO_PARAMETERS.has(operation)) return null;
  const out: Record<string, unknown> = {};
  for (const [member, value] of Object.entries(input)) {
    if (!REQUEST_MEMBERS.has(member)) continue;
    const cleaned = cleanValue(member, value, 0);
    if (cleaned !== undefined) out[lowerCamel(member)] = cleaned;
  }
  // CloudTrail always names the algorithm of a Decrypt, even when the request did not.
  if (operation === 'Decrypt' && out.encryptionAlgorithm === undefined) out.encryptionAlgorithm = 'SYMMETRIC_DEFAULT';
  return Object.keys(out).length > 0 ? out : null;
}

function pick(output: Record<string, unknown>, members: string[]): Record<string, unknown> | null {
  const out: Record<string, unknown> = {};
  for (const m of members) {
    const cleaned = cleanValue(m, output[m], 0);
    if (cleaned !== undefined) out[lowerCamel(m)] = cleaned;
  }
  return Object.keys(out).length > 0 ? out : null;
}

/** responseElements as CloudTrail shows them for KMS: null for everything but the operations
 *  listed here (crypto operations' outputs — plaintext, ciphertext, signatures — never appear). */
export function responseElementsOf(operation: string, output: Record<string, unknown> | undefined): Record<string, unknown> | null {
  if (output === undefined) return null;
  switch (operation) {
    case 'CreateKey':
    case 'ReplicateKey':
      return output.KeyMetadata ? { keyMetadata: cleanValue('KeyMetadata', output.KeyMetadata, 0) } : null;
    case 'ScheduleKeyDeletion':
      return pick(output, ['KeyId', 'KeyState', 'DeletionDate', 'PendingWindowInDays']);
    case 'CancelKeyDeletion':
    case 'RotateKeyOnDemand':
      return pick(output, ['KeyId']);
    case 'CreateGrant':
      return pick(output, ['GrantId']);
    case 'ImportKeyMaterial':
      return pick(output, ['KeyId', 'KeyMaterialId']);
    default:
      return null;
  }
}

export function resourcesOf(account: Account, keyArns: Iterable<string>): AuditResource[] | undefined {
  const out: AuditResource[] = [];
  for (const arn of keyArns) out.push({ accountId: account.accountId, type: 'AWS::KMS::Key', ARN: arn });
  return out.length > 0 ? out : undefined;
}

/** CloudTrail names a denial AccessDenied (the API error is AccessDeniedException). */
export function errorCodeOf(errorType: string): string {
  return errorType === 'AccessDeniedException' ? 'AccessDenied' : errorType;
}

export interface ApiCallFacts {
  account: Account;
  eventTime: Date;
  eventId: string;
  requestId: string;
  eventName: string;
  identity: UserIdentity;
  sourceIp: string;
  userAgent: string;
  input: Record<string, unknown> | undefined;
  output: Record<string, unknown> | undefined;
  error: { type: string; message: string } | undefined;
  keyArns: Iterable<string>;
  /** Another AWS service's API on the same port (STS); default kms.amazonaws.com. */
  eventSource?: string;
}

export function apiCallRecord(f: ApiCallFacts): AuditRecord {
  const record: AuditRecord = {
    eventVersion: EVENT_VERSION,
    userIdentity: f.identity,
    eventTime: eventTimeOf(f.eventTime),
    eventSource: f.eventSource ?? EVENT_SOURCE,
    eventName: f.eventName,
    awsRegion: f.account.region,
    sourceIPAddress: f.sourceIp,
    userAgent: f.userAgent.length > 1024 ? f.userAgent.slice(0, 1024) : f.userAgent,
    requestParameters: requestParametersOf(f.eventName, f.input),
    responseElements: f.error ? null : responseElementsOf(f.eventName, f.output),
    requestID: f.requestId,
    eventID: f.eventId,
    readOnly: isReadOnly(f.eventName),
    resources: resourcesOf(f.account, f.keyArns),
    eventType: 'AwsApiCall',
    managementEvent: true,
    recipientAccountId: f.account.accountId,
    eventCategory: 'Management',
  };
  if (f.error) {
    // errorCode/errorMessage sit after userAgent in CloudTrail's own field order.
    return insertAfter(record, 'userAgent', { errorCode: errorCodeOf(f.error.type), errorMessage: f.error.message.slice(0, 1024) });
  }
  return record;
}

function insertAfter(record: AuditRecord, after: keyof AuditRecord, extra: Partial<AuditRecord>): AuditRecord {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(record)) {
    out[k] = v;
    if (k === after) Object.assign(out, extra);
  }
  return out as unknown as AuditRecord;
}

/** What an internal action (rotation, deletion sweep, import expiry...) tells the audit trail. */
export interface ServiceEvent {
  /** CloudTrail's eventName, e.g. RotateKey, DeleteKey, DeleteExpiredKeyMaterial. */
  eventName: string;
  /** Key ARNs the action touched (resources). */
  keyArns?: string[];
  /** Whitelisted like API input (e.g. { KeyId: arn }); null/undefined for none. */
  requestParameters?: Record<string, unknown> | null;
  /** e.g. { keyId: arn } as CloudTrail shows for DeleteKey; kept only if plain strings/numbers. */
  responseElements?: Record<string, string | number | boolean> | null;
  /** e.g. { keyMaterialId }. Plain strings/numbers only. */
  additionalEventData?: Record<string, string | number | boolean>;
  errorCode?: string;
  errorMessage?: string;
  /** Defaults to the service clock. */
  eventTime?: Date;
  /** The Region the event happened in (awsRegion): its key's. Defaults to the home Region. */
  region?: string;
}

export function serviceEventRecord(account: Account, eventTime: Date, eventId: string, e: ServiceEvent): AuditRecord {
  const plain = (o: Record<string, string | number | boolean> | null | undefined) => {
    if (!o) return undefined;
    const out: Record<string, string | number | boolean> = {};
    for (const [k, v] of Object.entries(o)) if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') out[k] = v;
    return out;
  };
  const record: Record<string, unknown> = {
    eventVersion: EVENT_VERSION,
    userIdentity: { accountId: account.accountId, invokedBy: 'AWS Internal' },
    eventTime: eventTimeOf(eventTime),
    eventSource: EVENT_SOURCE,
    eventName: e.eventName,
    awsRegion: e.region ?? account.region,
    sourceIPAddress: 'AWS Internal',
    userAgent: 'AWS Internal',
  };
  if (e.errorCode) {
    record.errorCode = e.errorCode;
    record.errorMessage = (e.errorMessage ?? '').slice(0, 1024);
  }
  record.requestParameters = e.requestParameters ? requestParametersOf(e.eventName, e.requestParameters) : null;
  record.responseElements = plain(e.responseElements) ?? null;
  const additional = plain(e.additionalEventData);
  if (additional) record.additionalEventData = additional;
  record.eventID = eventId;
  record.readOnly = false;
  const resources = resourcesOf(account, e.keyArns ?? []);
  if (resources) record.resources = resources;
  record.eventType = 'AwsServiceEvent';
  record.managementEvent = true;
  record.recipientAccountId = account.accountId;
  record.eventCategory = 'Management';
  return record as unknown as AuditRecord;
}
