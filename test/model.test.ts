import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { KmsError } from '../src/kms/errors.js';
import { httpStatusOf } from '../src/http/error-response.js';
import { javaPatternToRegExp, kmsModel, operationNames, parseInput, serializeOutput } from '../src/http/model.js';
import { defaultOutputPath, defaultSourcePath, generateModelJson } from '../scripts/generate-model.js';

const b64 = (bytes: number | string) =>
  (typeof bytes === 'number' ? Buffer.alloc(bytes, 7) : Buffer.from(bytes)).toString('base64');

/** Runs parseInput and returns the KmsError it throws (fails the test if it does not throw one). */
function parseError(operation: string, body: unknown): KmsError {
  try {
    parseInput(operation, body);
  } catch (error) {
    if (error instanceof KmsError) return error;
    throw error;
  }
  throw new Error(`${operation} accepted ${JSON.stringify(body)}`);
}

const notNull = (path: string) => `Value null at '${path}' failed to satisfy constraint: Member must not be null`;
const violation = (value: string | null, path: string, constraint: string) =>
  `Value${value === null ? '' : ` '${value}'`} at '${path}' failed to satisfy constraint: ${constraint}`;
const detected = (...violations: string[]) =>
  `${violations.length} validation error${violations.length === 1 ? '' : 's'} detected: ${violations.join('; ')}`;
const atLeast = (n: number) => `Member must have length greater than or equal to ${n}`;
const atMost = (n: number) => `Member must have length less than or equal to ${n}`;
const valueAtLeast = (n: number) => `Member must have value greater than or equal to ${n}`;
const valueAtMost = (n: number) => `Member must have value less than or equal to ${n}`;
const pattern = (p: string) => `Member must satisfy regular expression pattern: ${p}`;
const ALIAS_PATTERN = '^[a-zA-Z0-9:/_-]+$';
const KEY_ARN = 'arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab';

interface RejectCase {
  name: string;
  operation: string;
  body: unknown;
  type: 'ValidationException' | 'SerializationException';
  message: string;
}

const rejected: RejectCase[] = [
  // required members
  {
    name: 'every missing required member is reported, in model order',
    operation: 'Encrypt',
    body: {},
    type: 'ValidationException',
    message: detected(notNull('keyId'), notNull('plaintext')),
  },
  {
    name: 'a required member sent as JSON null counts as missing',
    operation: 'CreateAlias',
    body: { AliasName: 'alias/a', TargetKeyId: null },
    type: 'ValidationException',
    message: detected(notNull('targetKeyId')),
  },
  {
    name: 'required members of list elements are named tags.N.member.x',
    operation: 'TagResource',
    body: { KeyId: 'k', Tags: [{ TagKey: 'a', TagValue: 'b' }, { TagValue: 'c' }] },
    type: 'ValidationException',
    message: detected(notNull('tags.2.member.tagKey')),
  },
  // lengths: characters for strings, bytes for blobs, entries for lists
  {
    name: 'empty string below min length',
    operation: 'Encrypt',
    body: { KeyId: '', Plaintext: b64(32) },
    type: 'ValidationException',
    message: detected(violation('', 'keyId', atLeast(1))),
  },
  {
    name: 'string max length counts characters (code points), not UTF-16 units or bytes',
    operation: 'TagResource',
    body: { KeyId: 'k', Tags: [{ TagKey: '😀'.repeat(129), TagValue: '' }] },
    type: 'ValidationException',
    message: detected(violation('😀'.repeat(129), 'tags.1.member.tagKey', atMost(128))),
  },
  {
    name: 'blob max length counts decoded bytes (sensitive: value omitted)',
    operation: 'Encrypt',
    body: { KeyId: 'k', Plaintext: b64(4097) },
    type: 'ValidationException',
    message: detected(violation(null, 'plaintext', atMost(4096))),
  },
  {
    name: 'empty sensitive blob: value omitted',
    operation: 'Encrypt',
    body: { KeyId: 'k', Plaintext: '' },
    type: 'ValidationException',
    message: detected(violation(null, 'plaintext', atLeast(1))),
  },
  {
    name: 'non-sensitive blob shows as a Java ByteBuffer, as AWS prints it',
    operation: 'Decrypt',
    body: { CiphertextBlob: '' },
    type: 'ValidationException',
    message: detected(violation('java.nio.HeapByteBuffer[pos=0 lim=0 cap=0]', 'ciphertextBlob', atLeast(1))),
  },
  {
    name: 'list length counts entries; element lengths are checked too',
    operation: 'CreateGrant',
    body: { KeyId: 'k', Operations: ['Encrypt'], GrantTokens: ['', ...Array<string>(10).fill('t')] },
    type: 'ValidationException',
    message: detected(
      violation('', 'grantTokens.1.member', atLeast(1)),
      violation(`[, ${Array<string>(10).fill('t').join(', ')}]`, 'grantTokens', atMost(10)),
    ),
  },
  // numeric ranges
  {
    name: 'integer above max',
    operation: 'GenerateRandom',
    body: { NumberOfBytes: 1025 },
    type: 'ValidationException',
    message: detected(violation('1025', 'numberOfBytes', valueAtMost(1024))),
  },
  {
    name: 'integer below min',
    operation: 'GenerateRandom',
    body: { NumberOfBytes: 0 },
    type: 'ValidationException',
    message: detected(violation('0', 'numberOfBytes', valueAtLeast(1))),
  },
  {
    name: 'PendingWindowInDays uses the model range 1-365 (7-30 is the handler’s business)',
    operation: 'ScheduleKeyDeletion',
    body: { KeyId: 'k', PendingWindowInDays: 366 },
    type: 'ValidationException',
    message: detected(violation('366', 'pendingWindowInDays', valueAtMost(365))),
  },
  {
    name: 'several violations in one request are all counted',
    operation: 'ListKeys',
    body: { Limit: 1001, Marker: '' },
    type: 'ValidationException',
    message: detected(violation('1001', 'limit', valueAtMost(1000)), violation('', 'marker', atLeast(1))),
  },
  // enums
  {
    name: 'enum value outside the set',
    operation: 'Encrypt',
    body: { KeyId: 'k', Plaintext: b64(1), EncryptionAlgorithm: 'AES_GCM' },
    type: 'ValidationException',
    message: detected(
      violation(
        'AES_GCM',
        'encryptionAlgorithm',
        'Member must satisfy enum value set: [SYMMETRIC_DEFAULT, RSAES_OAEP_SHA_1, RSAES_OAEP_SHA_256, SM2PKE]',
      ),
    ),
  },
  {
    name: 'enums are case-sensitive',
    operation: 'CreateKey',
    body: { KeyUsage: 'encrypt_decrypt' },
    type: 'ValidationException',
    message: detected(
      violation(
        'encrypt_decrypt',
        'keyUsage',
        'Member must satisfy enum value set: [SIGN_VERIFY, ENCRYPT_DECRYPT, GENERATE_VERIFY_MAC, KEY_AGREEMENT]',
      ),
    ),
  },
  {
    name: 'enum elements of a list',
    operation: 'CreateGrant',
    body: { KeyId: 'k', Operations: ['Encrypt', 'Delete'] },
    type: 'ValidationException',
    message: detected(
      violation('Delete', 'operations.2.member', `Member must satisfy enum value set: [${kmsModel.shapes.GrantOperation!.enum!.join(', ')}]`),
    ),
  },
  // patterns (Java semantics: the whole value must match)
  {
    name: 'pattern mismatch',
    operation: 'CreateAlias',
    body: { AliasName: 'alias/has space', TargetKeyId: 'k' },
    type: 'ValidationException',
    message: detected(violation('alias/has space', 'aliasName', pattern(ALIAS_PATTERN))),
  },
  {
    name: 'empty value fails both length and pattern',
    operation: 'CreateAlias',
    body: { AliasName: '', TargetKeyId: 'k' },
    type: 'ValidationException',
    message: detected(violation('', 'aliasName', atLeast(1)), violation('', 'aliasName', pattern(ALIAS_PATTERN))),
  },
  {
    name: 'an unanchored model pattern still has to match the whole value',
    operation: 'ListKeys',
    body: { Marker: 'abcĀ' },
    type: 'ValidationException',
    message: detected(violation('abcĀ', 'marker', pattern('[\\u0020-\\u00FF]*'))),
  },
  {
    name: 'Java \\s is ASCII whitespace only (no-break space fails)',
    operation: 'ImportKeyMaterial',
    body: { KeyId: 'k', ImportToken: b64(8), EncryptedKeyMaterial: b64(8), KeyMaterialDescription: 'a\u00a0b' },
    type: 'ValidationException',
    message: detected(violation('a\u00a0b', 'keyMaterialDescription', pattern('^[a-zA-Z0-9:/_\\s.-]+$'))),
  },
  {
    name: 'principal pattern',
    operation: 'CreateGrant',
    body: { KeyId: 'k', Operations: ['Encrypt'], GranteePrincipal: 'not a principal!' },
    type: 'ValidationException',
    message: detected(violation('not a principal!', 'granteePrincipal', pattern('^[\\w+=,.@:/-]+$'))),
  },
  {
    name: 'sensitive strings in a nested structure are not echoed',
    operation: 'CreateCustomKeyStore',
    body: {
      CustomKeyStoreName: 'xks',
      XksProxyAuthenticationCredential: { AccessKeyId: 'lowercase-secret', RawSecretAccessKey: 'x'.repeat(43) },
    },
    type: 'ValidationException',
    message: detected(
      violation(null, 'xksProxyAuthenticationCredential.accessKeyId', atLeast(20)),
      violation(null, 'xksProxyAuthenticationCredential.accessKeyId', pattern('^[A-Z2-7]+$')),
    ),
  },
  // deserialisation: wrong JSON types are SerializationException and nothing else is reported
  { name: 'body is an array', operation: 'ListKeys', body: [], type: 'SerializationException', message: 'Start of list found where not expected.' },
  { name: 'body is a string', operation: 'ListKeys', body: 'x', type: 'SerializationException', message: 'STRING_VALUE can not be converted to a Structure' },
  { name: 'body is null', operation: 'ListKeys', body: null, type: 'SerializationException', message: 'NULL_VALUE can not be converted to a Structure' },
  {
    name: 'number where a string is expected',
    operation: 'Encrypt',
    body: { KeyId: 5, Plaintext: b64(1) },
    type: 'SerializationException',
    message: 'NUMBER_VALUE can not be converted to a String',
  },
  {
    name: 'object where a string is expected',
    operation: 'Encrypt',
    body: { KeyId: { id: 'k' }, Plaintext: b64(1) },
    type: 'SerializationException',
    message: 'Start of structure or map found where not expected.',
  },
  {
    name: 'string where an integer is expected',
    operation: 'GenerateRandom',
    body: { NumberOfBytes: '32' },
    type: 'SerializationException',
    message: 'STRING_VALUE can not be converted to an Integer',
  },
  {
    name: 'fractional integer',
    operation: 'GenerateRandom',
    body: { NumberOfBytes: 1.5 },
    type: 'SerializationException',
    message: 'NUMBER_VALUE can not be converted to an Integer',
  },
  {
    name: 'integer outside the 32-bit range',
    operation: 'ListKeys',
    body: { Limit: 2 ** 31 },
    type: 'SerializationException',
    message: 'NUMBER_VALUE can not be converted to an Integer',
  },
  {
    name: 'string where a boolean is expected',
    operation: 'Encrypt',
    body: { KeyId: 'k', Plaintext: b64(1), DryRun: 'true' },
    type: 'SerializationException',
    message: 'STRING_VALUE can not be converted to a Boolean',
  },
  {
    name: 'string where a list is expected',
    operation: 'TagResource',
    body: { KeyId: 'k', Tags: 'a=b' },
    type: 'SerializationException',
    message: 'STRING_VALUE can not be converted to a List',
  },
  {
    name: 'object where a list is expected',
    operation: 'TagResource',
    body: { KeyId: 'k', Tags: { a: 'b' } },
    type: 'SerializationException',
    message: 'Start of structure or map found where not expected.',
  },
  {
    name: 'list where a structure is expected',
    operation: 'TagResource',
    body: { KeyId: 'k', Tags: [['a', 'b']] },
    type: 'SerializationException',
    message: 'Start of list found where not expected.',
  },
  {
    name: 'encryption context must be a map',
    operation: 'Encrypt',
    body: { KeyId: 'k', Plaintext: b64(1), EncryptionContext: 'purpose=test' },
    type: 'SerializationException',
    message: 'STRING_VALUE can not be converted to a Map',
  },
  {
    name: 'encryption context values must be strings',
    operation: 'Decrypt',
    body: { CiphertextBlob: b64(8), EncryptionContext: { version: 2 } },
    type: 'SerializationException',
    message: 'NUMBER_VALUE can not be converted to a String',
  },
  {
    name: 'a type error wins over constraint violations',
    operation: 'Encrypt',
    body: { KeyId: '', Plaintext: 5 },
    type: 'SerializationException',
    message: 'NUMBER_VALUE can not be converted to a Blob',
  },
  // base64 and timestamps
  ...['not base64!', 'QQ=', 'Q', 'QUJD=', '-_8', 'QUJD\nRA=='].map(
    (text): RejectCase => ({
      name: `invalid base64 ${JSON.stringify(text)}`,
      operation: 'Decrypt',
      body: { CiphertextBlob: text },
      type: 'SerializationException',
      message: 'Invalid base64 encoding in a blob value.',
    }),
  ),
  {
    name: 'timestamp that is neither epoch seconds nor ISO 8601',
    operation: 'ImportKeyMaterial',
    body: { KeyId: 'k', ImportToken: b64(8), EncryptedKeyMaterial: b64(8), ValidTo: 'next week' },
    type: 'SerializationException',
    message: 'STRING_VALUE can not be converted to a Timestamp',
  },
  {
    name: 'boolean timestamp',
    operation: 'ImportKeyMaterial',
    body: { KeyId: 'k', ImportToken: b64(8), EncryptedKeyMaterial: b64(8), ValidTo: true },
    type: 'SerializationException',
    message: 'TRUE_VALUE can not be converted to a Timestamp',
  },
];

describe('parseInput rejects what AWS rejects', () => {
  it.each(rejected)('$operation: $name', ({ operation, body, type, message }) => {
    const error = parseError(operation, body);
    expect({ type: error.type, status: httpStatusOf(error), message: error.message }).toEqual({ type, status: 400, message });
  });

  it('rejects an operation that is not in the model', () => {
    expect(parseError('DeleteEverything', {}).type).toBe('UnknownOperationException');
    expect(parseError('toString', {}).type).toBe('UnknownOperationException');
  });
});

describe('parseInput accepts and converts', () => {
  it('decodes blobs to Buffers and keeps strings, maps and lists', () => {
    const input = parseInput('Encrypt', {
      KeyId: KEY_ARN,
      Plaintext: b64('hello'),
      EncryptionContext: { purpose: 'test' },
      GrantTokens: ['token'],
      EncryptionAlgorithm: 'SYMMETRIC_DEFAULT',
      DryRun: false,
    });
    expect(input).toEqual({
      KeyId: KEY_ARN,
      Plaintext: Buffer.from('hello'),
      EncryptionContext: { purpose: 'test' },
      GrantTokens: ['token'],
      EncryptionAlgorithm: 'SYMMETRIC_DEFAULT',
      DryRun: false,
    });
    expect(Buffer.isBuffer(input.Plaintext)).toBe(true);
  });

  it('applies blob limits to decoded bytes: 4096 bytes (5464 base64 characters) is fine', () => {
    const input = parseInput('Encrypt', { KeyId: 'k', Plaintext: b64(4096) });
    expect((input.Plaintext as Buffer).length).toBe(4096);
  });

  it('accepts unpadded base64, as Java’s decoder does', () => {
    expect(parseInput('Decrypt', { CiphertextBlob: 'QUI' }).CiphertextBlob).toEqual(Buffer.from('AB'));
  });

  it('counts characters, not UTF-16 units: 128 emoji are a valid 128-character tag key', () => {
    const tags = [{ TagKey: '😀'.repeat(128), TagValue: 'é'.repeat(256) }];
    expect(parseInput('TagResource', { KeyId: 'k', Tags: tags }).Tags).toEqual(tags);
  });

  it('reads timestamps as epoch seconds (fractions allowed) or ISO 8601', () => {
    const base = { KeyId: 'k', ImportToken: b64(8), EncryptedKeyMaterial: b64(8) };
    expect(parseInput('ImportKeyMaterial', { ...base, ValidTo: 1700000000.25 }).ValidTo).toEqual(new Date(1700000000250));
    expect(parseInput('ImportKeyMaterial', { ...base, ValidTo: '2030-01-02T03:04:05.5Z' }).ValidTo).toEqual(
      new Date(Date.UTC(2030, 0, 2, 3, 4, 5, 500)),
    );
  });

  it('ignores unknown members at every depth', () => {
    const input = parseInput('TagResource', { KeyId: 'k', Tags: [{ TagKey: 'a', TagValue: 'b', Colour: 'red' }], Extra: 1 });
    expect(input).toEqual({ KeyId: 'k', Tags: [{ TagKey: 'a', TagValue: 'b' }] });
  });

  it('takes member names that Object.prototype knows (constructor, toString, __proto__) for unknown members', () => {
    // A null anywhere takes the slow path, which looks members up by name.
    const body = JSON.parse('{"AliasName":"alias/x","Marker":null,"constructor":{"x":1},"toString":null,"__proto__":[1],"hasOwnProperty":"y"}');
    expect(parseInput('DeleteAlias', body)).toEqual({ AliasName: 'alias/x' });
    const invalid = JSON.parse('{"AliasName":"bad name","Marker":null,"constructor":{"x":1},"valueOf":null}');
    expect(() => parseInput('DeleteAlias', invalid)).toThrow(/validation error detected: Value 'bad name' at 'aliasName'/);
    const nested = JSON.parse('{"KeyId":"k","Tags":[{"TagKey":"a","TagValue":null,"constructor":{"x":1}}]}');
    expect(() => parseInput('TagResource', nested)).toThrow(/Value null at 'tags.1.member.tagValue'/);
  });

  it('treats optional members sent as JSON null as absent', () => {
    expect(parseInput('ListKeys', { Limit: null, Marker: null })).toEqual({});
    expect(parseInput('ListKeys', { Limit: null })).not.toHaveProperty('Limit');
  });

  it('accepts an empty object for operations without required members', () => {
    expect(parseInput('ListKeys', {})).toEqual({});
  });

  it('accepts values at the limits', () => {
    expect(parseInput('GenerateRandom', { NumberOfBytes: 1024 })).toEqual({ NumberOfBytes: 1024 });
    expect(parseInput('ListKeys', { Limit: 1, Marker: 'é~ ÿ' })).toEqual({ Limit: 1, Marker: 'é~ ÿ' });
    expect(parseInput('CreateAlias', { AliasName: 'alias/My_Key:1-2', TargetKeyId: 'k' }).AliasName).toBe('alias/My_Key:1-2');
    const description = { KeyId: 'k', ImportToken: b64(8), EncryptedKeyMaterial: b64(8), KeyMaterialDescription: 'v1 of\tkey' };
    expect(parseInput('ImportKeyMaterial', description).KeyMaterialDescription).toBe('v1 of\tkey');
  });

  it('parses a full CreateKey and CreateGrant', () => {
    const createKey = {
      Description: 'd',
      KeyUsage: 'SIGN_VERIFY',
      KeySpec: 'ECC_NIST_P256',
      Tags: [{ TagKey: 'team', TagValue: '' }],
      MultiRegion: false,
      BypassPolicyLockoutSafetyCheck: true,
    };
    expect(parseInput('CreateKey', createKey)).toEqual(createKey);
    const createGrant = {
      KeyId: KEY_ARN,
      GranteePrincipal: 'arn:aws:iam::111122223333:role/app',
      Operations: ['Encrypt', 'Decrypt'],
      Constraints: { EncryptionContextSubset: { tenant: 't-1' }, SourceArn: 'arn:aws:s3:us-east-1:111122223333:bucket' },
      Name: 'grant-1',
    };
    expect(parseInput('CreateGrant', createGrant)).toEqual(createGrant);
  });

  it('keeps an encryption context key named __proto__ as an ordinary key', () => {
    const body = JSON.parse('{"CiphertextBlob":"AA==","EncryptionContext":{"__proto__":"x","a":"b"}}') as unknown;
    const context = parseInput('Decrypt', body).EncryptionContext as Record<string, string>;
    expect(Object.keys(context)).toEqual(['__proto__', 'a']);
    expect(Object.getPrototypeOf(context)).toBe(Object.prototype);
  });
});

/** The wire text of `output`, checked to be compact JSON, as parsed by a client. */
function wireOf(operation: string, output: Record<string, unknown>): unknown {
  const text = serializeOutput(operation, output);
  const parsed = JSON.parse(text);
  expect(JSON.stringify(parsed)).toBe(text);
  return parsed;
}

describe('serializeOutput', () => {
  it('encodes blobs as base64 and leaves out undefined, null and unknown members', () => {
    const wire = wireOf('GenerateDataKey', {
      CiphertextBlob: Buffer.from('cipher'),
      Plaintext: new Uint8Array([1, 2, 3]),
      KeyId: KEY_ARN,
      CiphertextForRecipient: undefined,
      KeyMaterialId: null,
      internalNote: 'not for the wire',
    });
    expect(wire).toEqual({ CiphertextBlob: b64('cipher'), Plaintext: 'AQID', KeyId: KEY_ARN });
    expect(Object.keys(wire as object)).toEqual(['CiphertextBlob', 'Plaintext', 'KeyId']);
  });

  it('encodes a Uint8Array view over a larger buffer by its own bytes', () => {
    const view = new Uint8Array([9, 9, 1, 2, 3, 9]).subarray(2, 5);
    expect(wireOf('GenerateRandom', { Plaintext: view })).toEqual({ Plaintext: 'AQID' });
  });

  it('turns nested Dates into epoch seconds, fractions included', () => {
    const wire = wireOf('DescribeKey', {
      KeyMetadata: {
        KeyId: 'k',
        CreationDate: new Date(1700000000123),
        DeletionDate: undefined,
        Enabled: true,
        EncryptionAlgorithms: ['SYMMETRIC_DEFAULT'],
        MultiRegionConfiguration: { MultiRegionKeyType: 'PRIMARY', PrimaryKey: { Arn: 'a', Region: 'us-east-1' }, ReplicaKeys: [] },
      },
    });
    expect(wire).toEqual({
      KeyMetadata: {
        KeyId: 'k',
        CreationDate: 1700000000.123,
        Enabled: true,
        EncryptionAlgorithms: ['SYMMETRIC_DEFAULT'],
        MultiRegionConfiguration: { MultiRegionKeyType: 'PRIMARY', PrimaryKey: { Arn: 'a', Region: 'us-east-1' }, ReplicaKeys: [] },
      },
    });
  });

  it('converts dates inside list elements and keeps nested maps', () => {
    const wire = wireOf('ListGrants', {
      Grants: [
        {
          GrantId: 'g',
          CreationDate: new Date(1700000000000),
          Operations: ['Decrypt'],
          Constraints: { EncryptionContextEquals: { tenant: 't-1' } },
        },
      ],
      Truncated: false,
    });
    expect(wire).toEqual({
      Grants: [{ GrantId: 'g', CreationDate: 1700000000, Operations: ['Decrypt'], Constraints: { EncryptionContextEquals: { tenant: 't-1' } } }],
      Truncated: false,
    });
  });

  it('gives {} for operations without output', () => {
    expect(wireOf('CreateAlias', {})).toEqual({});
  });

  it('round-trips through JSON the way an AWS SDK reads it', () => {
    const text = serializeOutput('GetKeyRotationStatus', { KeyRotationEnabled: true, NextRotationDate: new Date('2030-01-01T00:00:00Z') });
    expect(text).toBe('{"KeyRotationEnabled":true,"NextRotationDate":1893456000}');
  });

  it('escapes what JSON needs escaped in strings and map keys, and writes blobs as plain base64', () => {
    const awkward = 'quote " backslash \\ newline \n tab \t nul \u0000 é 𝄞 \u2028';
    const wire = wireOf('ListGrants', {
      Grants: [
        { GrantId: awkward, Name: awkward, Constraints: { EncryptionContextEquals: { [awkward]: awkward } }, CreationDate: new Date(1700000000500), Operations: [] },
        null,
        undefined,
      ],
      NextMarker: awkward,
      Truncated: true,
    });
    expect(wire).toEqual({
      Grants: [{ GrantId: awkward, Name: awkward, Constraints: { EncryptionContextEquals: { [awkward]: awkward } }, CreationDate: 1700000000.5, Operations: [] }, null, null],
      NextMarker: awkward,
      Truncated: true,
    });
    const bytes = Buffer.from([0xfb, 0xff, 0xbf, 0, 1]);
    expect(serializeOutput('Decrypt', { Plaintext: bytes, KeyId: KEY_ARN })).toBe(`{"KeyId":${JSON.stringify(KEY_ARN)},"Plaintext":"${bytes.toString('base64')}"}`);
  });
});

describe('model', () => {
  it('has all 54 operations', () => {
    expect(operationNames.size).toBe(54);
    for (const name of ['Encrypt', 'Decrypt', 'CreateKey', 'GetKeyLastUsage', 'DeriveSharedSecret']) {
      expect(operationNames.has(name)).toBe(true);
    }
  });

  it('builds a schema for every operation', () => {
    // An empty body exercises every input shape's schema; it must fail only with ValidationException.
    for (const operation of operationNames) {
      try {
        parseInput(operation, {});
      } catch (error) {
        expect((error as KmsError).type, operation).toBe('ValidationException');
      }
    }
  });

  const patterns = Object.entries(kmsModel.shapes).filter(([, shape]) => shape.pattern !== undefined);
  it.each(patterns)('pattern of %s compiles as a JavaScript RegExp', (_name, shape) => {
    expect(javaPatternToRegExp(shape.pattern!).flags).toBe('u');
  });

  it('translates Java regex semantics', () => {
    expect(javaPatternToRegExp('[a-z]+').test('abc1')).toBe(false); // whole-value match
    expect(javaPatternToRegExp('^(a)$|^(b)$').test('b')).toBe(true);
    expect(javaPatternToRegExp('a.b').test('a\u0085b')).toBe(false); // Java's . excludes NEL
    expect(javaPatternToRegExp('\\s').test('\u2003')).toBe(false); // Java's \s is ASCII
    expect(javaPatternToRegExp('[\\s]').test('\t')).toBe(true);
    expect(javaPatternToRegExp('[A-Za-z0-9\\-]+\\.\\-').test('a-b.-')).toBe(true);
    expect(javaPatternToRegExp('.').test('😀')).toBe(true); // one code point, as in Java
    for (const javaOnly of ['(?i)abc', 'a++', '[a-z&&[^e]]', '\\p{Alpha}', '\\Qa.b\\E', 'a\\z']) {
      expect(() => javaPatternToRegExp(javaOnly), javaOnly).toThrow(/not supported/);
    }
  });
});

const sourcePath = defaultSourcePath();

describe('kms-model.json', () => {
  it('is exactly what scripts/generate-model.ts produces from the reference model (scripts/model/service-2.json)', () => {
    const regenerated = generateModelJson(readFileSync(sourcePath, 'utf8'));
    expect(regenerated).toBe(readFileSync(defaultOutputPath(), 'utf8'));
  });
});
