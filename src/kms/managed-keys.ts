/**
 * AWS managed keys: `alias/aws/<service>`, one per Region and integrated service, created by the
 * service itself the first time its alias is used (AWS also creates it for a DescribeKey of the
 * alias), with AWS's description, AWS's key policy for that service and automatic rotation every
 * year. Nothing about such a key can be managed: its policy lets the account read its metadata
 * and lets the account's principals use it only through the service (kms:ViaService and
 * kms:CallerAccount), so every other operation is refused by the policy, as in AWS.
 *
 * An integrated service is a principal of the principals file marked `integratedService`
 * (auth/principals.ts), which calls on behalf of other principals (X-P11kms-On-Behalf-Of).
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type { AliasRecord, KeyRecord } from '../store/types.js';
import { keyArn, parseKeyIdentifier } from './arn.js';
import type { RequestContext, Services } from './context.js';
import { generateBackingKey } from './key-generation.js';
import { DAY_MS, DEFAULT_ROTATION_PERIOD_DAYS } from './lifecycle/materials.js';
import { internal } from './errors.js';

interface ManagedKeyService {
  /** The managed key's alias. */
  alias: string;
  /** What the key protects, in AWS's description of the key. */
  protects: string;
  /** The key policy's Id. */
  policyId: string;
  /** The policy's statements, as AWS writes them for this service. */
  statements(p: PolicyParts): PolicyObject[];
}

/** What a managed key's policy is made of in one account and Region. */
interface PolicyParts {
  accountId: string;
  /** The account root's ARN. */
  root: string;
  /** kms:ViaService of the service in the key's Region. */
  viaService: string;
  /** The service's name, for StringLike over any Region. */
  service: string;
}

const USE = ['kms:Encrypt', 'kms:Decrypt', 'kms:ReEncrypt*', 'kms:GenerateDataKey*'];
const METADATA = ['kms:Describe*', 'kms:Get*', 'kms:List*'];

/** The statement that lets the account's principals use the key through the service. */
function throughService(displayName: string, actions: string | string[], condition: PolicyObject): PolicyObject {
  return {
    Sid: `Allow access through ${displayName} for all principals in the account that are authorized to use ${displayName}`,
    Effect: 'Allow',
    Principal: { AWS: '*' },
    Action: actions,
    Resource: '*',
    Condition: condition,
  };
}

/** The statement that lets the account read the key (and revoke the grants the service made). */
const metadataForAccount = (root: string, revokeGrant: boolean): PolicyObject => ({
  Sid: 'Allow direct access to key metadata to the account',
  Effect: 'Allow',
  Principal: { AWS: root },
  Action: revokeGrant ? [...METADATA, 'kms:RevokeGrant'] : METADATA,
  Resource: '*',
});

/**
 * The integrated services, by the service name of kms:ViaService (`<name>.<region>.amazonaws.com`;
 * EBS calls KMS as ec2). Their policies are the ones AWS attaches to these managed keys (the
 * order of members too, as GetKeyPolicy returns them).
 */
const SERVICES = {
  s3: {
    alias: 'alias/aws/s3', protects: 'S3 objects', policyId: 'auto-s3-2',
    statements: (p) => [
      throughService('S3', [...USE, 'kms:DescribeKey'], { StringEquals: { 'kms:CallerAccount': p.accountId, 'kms:ViaService': p.viaService } }),
      metadataForAccount(p.root, false),
    ],
  },
  ec2: {
    alias: 'alias/aws/ebs', protects: 'EBS volumes', policyId: 'auto-ebs-2',
    statements: (p) => [
      throughService('EBS', [...USE, 'kms:CreateGrant', 'kms:DescribeKey'], { StringEquals: { 'kms:ViaService': p.viaService, 'kms:CallerAccount': p.accountId } }),
      metadataForAccount(p.root, true),
    ],
  },
  rds: {
    alias: 'alias/aws/rds', protects: 'RDS database volumes', policyId: 'auto-rds-2',
    statements: (p) => [
      throughService('RDS', [...USE, 'kms:CreateGrant', 'kms:ListGrants', 'kms:DescribeKey'], { StringEquals: { 'kms:ViaService': p.viaService, 'kms:CallerAccount': p.accountId } }),
      metadataForAccount(p.root, true),
    ],
  },
  ssm: {
    alias: 'alias/aws/ssm', protects: 'SSM parameters', policyId: 'auto-ssm-1',
    statements: (p) => [
      throughService('SSM', [...USE, 'kms:DescribeKey'], { StringEquals: { 'kms:ViaService': p.viaService, 'kms:CallerAccount': p.accountId } }),
      metadataForAccount(p.root, false),
    ],
  },
  lambda: {
    alias: 'alias/aws/lambda', protects: 'Lambda functions', policyId: 'auto-awslambda',
    statements: (p) => [
      throughService('AWS Lambda', [...USE, 'kms:CreateGrant', 'kms:DescribeKey'], { StringEquals: { 'kms:CallerAccount': p.accountId, 'kms:ViaService': p.viaService } }),
      metadataForAccount(p.root, true),
    ],
  },
  // Secrets Manager generates data keys through any Region's endpoint (replicated secrets).
  secretsmanager: {
    alias: 'alias/aws/secretsmanager', protects: 'Secrets Manager data', policyId: 'auto-secretsmanager-2',
    statements: (p) => [
      throughService('AWS Secrets Manager', ['kms:Encrypt', 'kms:Decrypt', 'kms:ReEncrypt*', 'kms:CreateGrant', 'kms:DescribeKey'], {
        StringEquals: { 'kms:CallerAccount': p.accountId, 'kms:ViaService': p.viaService },
      }),
      throughService('AWS Secrets Manager', 'kms:GenerateDataKey*', {
        StringEquals: { 'kms:CallerAccount': p.accountId },
        StringLike: { 'kms:ViaService': `${p.service}.*.amazonaws.com` },
      }),
      metadataForAccount(p.root, true),
    ],
  },
  // DynamoDB (global tables) uses the key through any Region's endpoint, and reads it itself.
  dynamodb: {
    alias: 'alias/aws/dynamodb', protects: 'DynamoDB data', policyId: 'auto-dynamodb-3',
    statements: (p) => [
      throughService('Amazon DynamoDB', [...USE, 'kms:CreateGrant', 'kms:DescribeKey'], {
        StringEquals: { 'kms:CallerAccount': p.accountId },
        StringLike: { 'kms:ViaService': `${p.service}.*.amazonaws.com` },
      }),
      metadataForAccount(p.root, true),
      { Sid: 'Allow DynamoDB to directly describe the key', Effect: 'Allow', Principal: { Service: 'dynamodb.amazonaws.com' }, Action: METADATA, Resource: '*' },
    ],
  },
} satisfies Record<string, ManagedKeyService>;

export type IntegratedServiceName = keyof typeof SERVICES;
export const INTEGRATED_SERVICE_NAMES = Object.keys(SERVICES) as [IntegratedServiceName, ...IntegratedServiceName[]];

/** The predefined alias/aws/* aliases, in name order (ListAliases lists them before their key exists). */
export const PREDEFINED_ALIASES: readonly string[] = Object.values(SERVICES)
  .map((s) => s.alias)
  .sort();

const serviceByAlias = new Map(Object.entries(SERVICES).map(([name, s]) => [s.alias, name as IntegratedServiceName]));

/** kms:ViaService of a request an integrated service makes in `region`. */
export function viaServiceName(service: IntegratedServiceName, region: string): string {
  return `${service}.${region}.amazonaws.com`;
}

export function managedKeyDescription(service: ManagedKeyService): string {
  return `Default key that protects my ${service.protects} when no other key is defined`;
}

/** AWS's key policy of the service's managed key in this account and Region, as GetKeyPolicy returns it. */
export function managedKeyPolicy(serviceName: IntegratedServiceName, partition: string, accountId: string, region: string): string {
  const service: ManagedKeyService = SERVICES[serviceName];
  const parts = { accountId, root: `arn:${partition}:iam::${accountId}:root`, viaService: viaServiceName(serviceName, region), service: serviceName };
  return renderPolicy({ Version: '2012-10-17', Id: service.policyId, Statement: service.statements(parts) });
}

type PolicyValue = string | string[] | PolicyObject | PolicyObject[];
interface PolicyObject {
  [member: string]: PolicyValue;
}

/** A policy document in the layout AWS stores its own policies in ("Key" : value, [ "a", "b" ]). */
function renderPolicy(doc: PolicyObject): string {
  const render = (value: PolicyValue, indent: number): string => {
    if (typeof value === 'string') return JSON.stringify(value);
    if (Array.isArray(value)) {
      const items = (value as Array<string | PolicyObject>).map((v) => (typeof v === 'string' ? JSON.stringify(v) : renderObject(v, indent)));
      return `[ ${items.join(', ')} ]`;
    }
    return renderObject(value, indent);
  };
  const renderObject = (object: PolicyObject, indent: number): string => {
    const pad = ' '.repeat(indent + 2);
    const members = Object.entries(object).map(([k, v]) => `${pad}${JSON.stringify(k)} : ${render(v, indent + 2)}`);
    return `{\n${members.join(',\n')}\n${' '.repeat(indent)}}`;
  };
  return renderObject(doc, 0);
}

/**
 * Before a request that names `raw` (alias name or alias ARN) is resolved: creates the AWS managed
 * key behind a predefined alias when the request is its first use, that is, when the alias has no
 * key yet and the request comes through the alias's own integrated service, or is a DescribeKey
 * of a principal of this account. Anything else resolves as usual (NotFoundException).
 */
export async function createManagedKeyOnFirstUse(svc: Services, ctx: RequestContext, raw: string): Promise<void> {
  if (!raw.includes('alias/aws/')) return; // the common case costs one substring search
  if (ctx.caller.principal.accountId !== svc.account.accountId) return; // AWS managed keys never serve other accounts
  let aliasName: string;
  try {
    const id = parseKeyIdentifier(svc.account, raw, true);
    if (id.kind !== 'alias') return;
    aliasName = id.aliasName;
  } catch {
    return; // resolving it will answer with the right error
  }
  const serviceName = serviceByAlias.get(aliasName);
  if (!serviceName) return;
  if (ctx.caller.via?.service !== serviceName && ctx.operation !== 'DescribeKey') return;
  if (await svc.store.getAlias(svc.account.region, aliasName)) return;
  await createManagedKey(svc, serviceName);
}

/**
 * Creates the service's managed key in this Region unless another request (in this process or
 * another) just did: key, first material, yearly rotation and alias are written in one
 * transaction that fails on an existing alias, so concurrent first uses leave exactly one key;
 * the token object of a request that lost is destroyed again.
 */
async function createManagedKey(svc: Services, serviceName: IntegratedServiceName): Promise<void> {
  const service: ManagedKeyService = SERVICES[serviceName];
  const now = svc.now();
  const { partition, accountId, region } = svc.account;
  const key: KeyRecord = {
    keyId: randomUUID(),
    accountId,
    region,
    createdAt: now,
    description: managedKeyDescription(service),
    keyState: 'Enabled',
    keySpec: 'SYMMETRIC_DEFAULT',
    keyUsage: 'ENCRYPT_DECRYPT',
    origin: 'AWS_KMS',
    policy: managedKeyPolicy(serviceName, partition, accountId, region),
    currentVersion: 1,
    deletionDate: null,
    pendingWindowInDays: null,
    keyManager: 'AWS',
  };
  const version = { keyId: key.keyId, version: 1, createdAt: now, keyMaterialId: randomBytes(32).toString('hex') };
  const alias: AliasRecord = { region, aliasName: service.alias, targetKeyId: key.keyId, createdAt: now, lastUpdatedAt: now };
  // AWS: new AWS managed keys rotate one year after creation and every year after; nobody can change that.
  const rotation = { periodInDays: DEFAULT_ROTATION_PERIOD_DAYS, nextRotationDate: new Date(now.getTime() + DEFAULT_ROTATION_PERIOD_DAYS * DAY_MS) };
  await generateBackingKey(svc, { keyId: key.keyId, version: 1 }, key.keySpec, 'ENCRYPT_DECRYPT');
  let created = false;
  try {
    created = await svc.store.createKeyWithAlias(key, version, alias, rotation);
  } finally {
    if (!created) await svc.hsm.destroyKey({ keyId: key.keyId, version: 1 }).catch(() => undefined);
  }
  if (created) {
    await svc.audit?.recordServiceEvent({ eventName: 'CreateKey', keyArns: [keyArn(svc.account, key.keyId)], responseElements: { keyId: keyArn(svc.account, key.keyId) } });
  } else if (!(await aliasAppears(svc, service.alias))) {
    // The insert lost to an alias that never became visible: nothing this request can resolve.
    throw internal(`The AWS managed key ${service.alias} could not be created in ${region}.`);
  }
}

/** Whether the alias another request just created is visible here: another node's commit reaches
 *  this node's cached reads (PostgreSQL) moments after it made this one's insert fail. */
async function aliasAppears(svc: Services, aliasName: string): Promise<boolean> {
  for (let attempt = 0; attempt < 20; attempt++) {
    if (await svc.store.getAlias(svc.account.region, aliasName)) return true;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  return false;
}

/** A ListAliases entry: a stored alias, or a predefined one whose key does not exist yet. */
export type ListedAlias = AliasRecord | { aliasName: string; targetKeyId?: undefined; createdAt?: undefined; lastUpdatedAt?: undefined };

/**
 * ListAliases without KeyId: up to `limit` aliases after `after`, the stored ones and, in name
 * order among them, the predefined alias/aws/* aliases that have no key yet in this Region (AWS
 * lists them without TargetKeyId).
 */
export async function aliasesWithPredefined(svc: Services, after: string | undefined, limit: number): Promise<ListedAlias[]> {
  const stored = await svc.store.listAliases({ region: svc.account.region, afterAliasName: after, limit });
  // A full page may stop before names that sort later: a predefined alias past its end belongs to a later page.
  const last = stored.length === limit ? stored.at(-1)!.aliasName : undefined;
  const pending: ListedAlias[] = [];
  for (const aliasName of PREDEFINED_ALIASES) {
    if ((after !== undefined && aliasName <= after) || (last !== undefined && aliasName > last)) continue;
    if (stored.some((a) => a.aliasName === aliasName) || (await svc.store.getAlias(svc.account.region, aliasName))) continue;
    pending.push({ aliasName });
  }
  return [...stored, ...pending].sort((a, b) => (a.aliasName < b.aliasName ? -1 : a.aliasName > b.aliasName ? 1 : 0)).slice(0, limit);
}
