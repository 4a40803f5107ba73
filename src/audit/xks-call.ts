/**
 * From one XKS Proxy API request to its audit record, in CloudTrail's shape where it fits: the
 * caller is the AWS KMS service (AWSService, with the XKS credential's access key), eventSource
 * names the XKS API, eventName is the spec's operation prefixed with `Xks` (so reports that group
 * by eventName never mix it with the KMS API's Encrypt), the request metadata AWS KMS sent is kept
 * whole (whitelisted fields) and the kmsRequestId lands in additionalEventData to correlate with
 * the customer's CloudTrail. Plaintext, ciphertext, AAD and tags never enter a record: only sizes.
 */
import { randomUUID } from 'node:crypto';
import type { Account } from '../kms/arn.js';
import { type AuditRecord, EVENT_VERSION, eventTimeOf } from './record.js';
import type { AuditTrail } from './trail.js';

export const XKS_EVENT_SOURCE = 'kms-xks-proxy';
const METADATA_FIELDS = ['awsPrincipalArn', 'kmsOperation', 'kmsRequestId', 'kmsKeyArn', 'kmsViaService', 'awsSourceVpc', 'awsSourceVpce'];
const READ_ONLY = new Set(['GetKeyMetadata', 'GetHealthStatus']);

export interface XksCallAudit {
  requestId: string;
  eventTime: Date;
  /** GetKeyMetadata, Encrypt, Decrypt or GetHealthStatus; undefined when the path named none. */
  operation: string | undefined;
  externalKeyId?: string;
  /** This service's ARN of the key behind externalKeyId, when it exists. */
  keyArn?: string;
  /** The access key the request was signed (or claimed to be signed) with. */
  accessKeyId?: string;
  sourceIp: string;
  userAgent: string;
  /** The parsed body, when it was a JSON object. */
  body?: Record<string, unknown>;
  error?: { name: string; message: string };
}

export class XksAuditor {
  constructor(
    private readonly trail: AuditTrail,
    private readonly account: Account,
  ) {}

  record(a: XksCallAudit): Promise<void> {
    return this.trail.append(xksCallRecord(this.account, a));
  }
}

export function xksCallRecord(account: Account, a: XksCallAudit): AuditRecord {
  const eventName = `Xks${a.operation ?? 'UnknownOperation'}`;
  const metadata = a.body?.requestMetadata;
  const requestMetadata: Record<string, string> = {};
  if (metadata !== null && typeof metadata === 'object') {
    for (const field of METADATA_FIELDS) {
      const v = (metadata as Record<string, unknown>)[field];
      if (typeof v === 'string') requestMetadata[field] = v.slice(0, 2048);
    }
  }
  const requestParameters: Record<string, unknown> = {};
  if (a.externalKeyId !== undefined) requestParameters.externalKeyId = a.externalKeyId;
  for (const member of ['encryptionAlgorithm', 'ciphertextDataIntegrityValueAlgorithm']) {
    const v = a.body?.[member];
    if (typeof v === 'string') requestParameters[member] = v.slice(0, 64);
  }
  for (const member of ['plaintext', 'ciphertext', 'additionalAuthenticatedData']) {
    const v = a.body?.[member];
    if (typeof v === 'string') requestParameters[`${member}Base64Length`] = v.length;
  }
  if (Object.keys(requestMetadata).length > 0) requestParameters.requestMetadata = requestMetadata;
  const record: AuditRecord = {
    eventVersion: EVENT_VERSION,
    userIdentity: { type: 'AWSService', invokedBy: 'kms.amazonaws.com', ...(a.accessKeyId ? { accessKeyId: a.accessKeyId.slice(0, 128) } : {}) },
    eventTime: eventTimeOf(a.eventTime),
    eventSource: XKS_EVENT_SOURCE,
    eventName,
    awsRegion: account.region,
    sourceIPAddress: a.sourceIp.startsWith('::ffff:') ? a.sourceIp.slice(7) : a.sourceIp,
    userAgent: a.userAgent.slice(0, 1024),
    ...(a.error ? { errorCode: a.error.name, errorMessage: a.error.message.slice(0, 1024) } : {}),
    requestParameters: Object.keys(requestParameters).length > 0 ? requestParameters : null,
    responseElements: null,
    ...(requestMetadata.kmsRequestId ? { additionalEventData: { kmsRequestId: requestMetadata.kmsRequestId } } : {}),
    requestID: a.requestId,
    eventID: randomUUID(),
    readOnly: READ_ONLY.has(a.operation ?? ''),
    resources: a.keyArn ? [{ accountId: account.accountId, type: 'AWS::KMS::Key', ARN: a.keyArn }] : undefined,
    eventType: 'AwsApiCall',
    managementEvent: true,
    recipientAccountId: account.accountId,
    eventCategory: 'Management',
  };
  if (record.resources === undefined) delete record.resources;
  return record;
}
