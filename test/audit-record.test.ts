/**
 * The record whitelist against the whole AWS KMS model: for every operation, every input and
 * output member is filled with a recognisable value, and nothing secret (blobs, sensitive shapes,
 * tokens, passwords, messages) may reach requestParameters or responseElements, while the
 * identifying members CloudTrail shows do.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { apiCallRecord, cloudTrailDate, lowerCamel, requestParametersOf, responseElementsOf, serviceEventRecord } from '../src/audit/record.js';

interface Shape {
  type: string;
  members?: Record<string, string>;
  member?: string;
  key?: string;
  value?: string;
  sensitive?: boolean;
}
const model = JSON.parse(fs.readFileSync(path.resolve(import.meta.dirname, '../src/http/kms-model.json'), 'utf8')) as {
  operations: Record<string, { input?: string; output?: string }>;
  shapes: Record<string, Shape>;
};

/** Members whose values must never be recorded, whatever their shape says. */
const SECRET_MEMBERS = new Set([
  'Plaintext',
  'CiphertextBlob',
  'CiphertextForRecipient',
  'Message',
  'Signature',
  'Mac',
  'GrantToken',
  'GrantTokens',
  'EncryptedKeyMaterial',
  'ImportToken',
  'KeyStorePassword',
  'XksProxyAuthenticationCredential',
  'PrivateKeyPlaintext',
  'PrivateKeyCiphertextBlob',
  'SharedSecret',
  'Recipient',
  'PublicKey',
]);

const SECRET = 'SECRET-VALUE-MUST-NOT-APPEAR';

/** A value for a shape; secret members get SECRET (strings) or SECRET bytes (blobs). */
function fill(shapeName: string, member: string, depth = 0): unknown {
  const shape = model.shapes[shapeName]!;
  const secret = SECRET_MEMBERS.has(member) || shape.sensitive === true;
  switch (shape.type) {
    case 'blob':
      return Buffer.from(SECRET);
    case 'string':
      return secret ? SECRET : `v-${member}`;
    case 'integer':
    case 'long':
      return 7;
    case 'boolean':
      return true;
    case 'timestamp':
      return new Date('2026-11-22T10:38:27Z');
    case 'list':
      return depth > 4 ? [] : [fill(shape.member!, member, depth + 1)];
    case 'map':
      return { k: secret ? SECRET : `v-${member}` };
    case 'structure': {
      if (depth > 4) return {};
      const out: Record<string, unknown> = {};
      for (const [m, s] of Object.entries(shape.members ?? {})) out[m] = fill(s, m, depth + 1);
      return out;
    }
    default:
      return `v-${member}`;
  }
}

describe('audit record whitelist', () => {
  const operations = Object.entries(model.operations);

  it('covers the model', () => {
    expect(operations.length).toBeGreaterThan(50);
  });

  for (const [operation, { input, output }] of operations) {
    it(`${operation}: no secret in requestParameters or responseElements`, () => {
      const inputValue = input ? (fill(input, '') as Record<string, unknown>) : undefined;
      const outputValue = output ? (fill(output, '') as Record<string, unknown>) : undefined;
      const params = requestParametersOf(operation, inputValue);
      const response = responseElementsOf(operation, outputValue);
      const text = JSON.stringify({ params, response });
      expect(text).not.toContain(SECRET);
      expect(text).not.toContain(Buffer.from(SECRET).toString('base64'));
      for (const member of SECRET_MEMBERS) expect(text).not.toContain(`"${lowerCamel(member)}"`);
      // What CloudTrail shows to identify the call survives.
      if (inputValue && 'KeyId' in inputValue && operation !== 'GenerateRandom') expect(params?.keyId).toBe('v-KeyId');
      if (inputValue && 'EncryptionContext' in inputValue) expect(params?.encryptionContext).toEqual({ k: 'v-EncryptionContext' });
    });
  }

  it('renders CreateKey metadata and CloudTrail dates as CloudTrail does', () => {
    const response = responseElementsOf('CreateKey', { KeyMetadata: { AWSAccountId: '111122223333', KeyId: 'k', CreationDate: new Date('2022-08-10T22:38:27Z'), MultiRegion: false } });
    expect(response).toEqual({ keyMetadata: { AWSAccountId: '111122223333', keyId: 'k', creationDate: 'Aug 10, 2022, 10:38:27 PM', multiRegion: false } });
    expect(cloudTrailDate(new Date('2021-04-12T00:05:09Z'))).toBe('Apr 12, 2021, 12:05:09 AM');
  });

  it('shapes failures and service events', () => {
    const account = { partition: 'aws', region: 'us-east-1', accountId: '111122223333' };
    const failed = apiCallRecord({
      account,
      eventTime: new Date('2026-11-22T01:02:03.456Z'),
      eventId: 'e',
      requestId: 'r',
      eventName: 'Decrypt',
      identity: { type: 'Unknown', accessKeyId: 'AKIAEXAMPLE' },
      sourceIp: '192.0.2.0',
      userAgent: 'ua',
      input: undefined,
      output: { Plaintext: Buffer.from(SECRET) },
      error: { type: 'AccessDeniedException', message: 'denied' },
      keyArns: [],
    });
    expect(Object.keys(failed).slice(0, 10)).toEqual(['eventVersion', 'userIdentity', 'eventTime', 'eventSource', 'eventName', 'awsRegion', 'sourceIPAddress', 'userAgent', 'errorCode', 'errorMessage']);
    expect(failed).toMatchObject({ eventTime: '2026-11-22T01:02:03Z', errorCode: 'AccessDenied', errorMessage: 'denied', requestParameters: null, responseElements: null, readOnly: true });
    expect(failed.resources).toBeUndefined();
    const deleted = serviceEventRecord(account, new Date('2026-11-22T00:00:00Z'), 'id', {
      eventName: 'DeleteKey',
      keyArns: ['arn:aws:kms:us-east-1:111122223333:key/k'],
      responseElements: { keyId: 'arn:aws:kms:us-east-1:111122223333:key/k' },
    });
    expect(deleted).toMatchObject({
      eventName: 'DeleteKey',
      eventType: 'AwsServiceEvent',
      userIdentity: { accountId: '111122223333', invokedBy: 'AWS Internal' },
      requestParameters: null,
      responseElements: { keyId: 'arn:aws:kms:us-east-1:111122223333:key/k' },
      readOnly: false,
      resources: [{ accountId: '111122223333', type: 'AWS::KMS::Key', ARN: 'arn:aws:kms:us-east-1:111122223333:key/k' }],
    });
  });
});
