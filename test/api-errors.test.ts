/**
 * Every operation's documented errors, provoked through the real @aws-sdk/client-kms: one table
 * per operation, each case checked for the error name (`__type`) and the HTTP status AWS sends
 * (400 for every client fault). The model's `errors` list per operation is the checklist: a
 * completeness test below fails when a documented error is neither provoked here nor listed,
 * with the reason, among the errors this service cannot produce on purpose.
 *
 * "AWS: …" in a case names where the behaviour is documented or recorded; "undocumented: …"
 * marks an answer AWS does not document, and why this one was chosen.
 */
import { constants, createCipheriv, createPublicKey, generateKeyPairSync, publicEncrypt, randomBytes } from 'node:crypto';
import * as kms from '@aws-sdk/client-kms';
import { beforeAll, describe, expect, it } from 'vitest';
import { kmsModel } from '../src/http/model.js';
import { operationHandlers } from '../src/kms/operations/index.js';
import { DAY_MS, TestClock } from './helpers/clock.js';
import { ACCOUNT_ID, REGION, errorOf, useTestService } from './helpers/service.js';

const clock = new TestClock();
/** The second Region this deployment serves: multi-Region keys replicate into it. */
const OTHER_REGION = 'eu-west-1';
const t = useTestService({ P11KMS_REGIONS: `${REGION},${OTHER_REGION}` }, clock.now);

type Input = Record<string, unknown>;
/** Sends `<operation>Command` of the SDK: the same serialisation any AWS SDK client does. */
function call(operation: string, input: Input): Promise<any> {
  const Command = (kms as unknown as Record<string, new (input: Input) => unknown>)[`${operation}Command`];
  if (!Command) throw new Error(`@aws-sdk/client-kms has no ${operation}Command`);
  return clock.client.send(new Command(input) as never);
}

/** Keys in every state and kind the cases need, made once. */
interface Fixture {
  sym: string;
  sym2: string;
  disabled: string;
  pending: string;
  external: string;
  imported: string;
  hmac: string;
  disabledHmac: string;
  rsaEncrypt: string;
  disabledRsa: string;
  eccSign: string;
  disabledSign: string;
  eccAgree: string;
  disabledAgree: string;
  blob: Uint8Array;
  rsaBlob: Uint8Array;
  signature: Uint8Array;
  mac: Uint8Array;
  peerPublicKey: Uint8Array;
  aliasName: string;
  grantToken: string;
  /** Multi-Region primary keys: with a replica in OTHER_REGION, without one, disabled (with a
   *  replica), pending deletion, pending replica deletion. */
  mrk: string;
  mrkLonely: string;
  mrkDisabled: string;
  mrkPending: string;
  mrkPendingReplica: string;
}

const MISSING = '00000000-0000-4000-8000-000000000000';
const MISSING_ARN = `arn:aws:kms:${REGION}:${ACCOUNT_ID}:key/${MISSING}`;
/** Not a KMS key or alias ARN. */
const BAD_ARN = `arn:aws:kms:${REGION}:${ACCOUNT_ID}:widget/1`;
const FORGED_GRANT_TOKEN = 'not-a-grant-token';
const bytes = (text: string) => new TextEncoder().encode(text);
const alias = (() => {
  let n = 0;
  return () => `alias/errors-${++n}`;
})();

let f: Fixture;

async function createKey(input: Input = {}): Promise<string> {
  return (await call('CreateKey', input)).KeyMetadata.KeyId;
}

/** A multi-Region primary key with a replica in OTHER_REGION. */
async function replicatedKey(): Promise<string> {
  const keyId = await createKey({ MultiRegion: true });
  await call('ReplicateKey', { KeyId: keyId, ReplicaRegion: OTHER_REGION });
  return keyId;
}

async function disabledKey(input: Input = {}): Promise<string> {
  const keyId = await createKey(input);
  await call('DisableKey', { KeyId: keyId });
  return keyId;
}

/** What an AWS customer does with GetParametersForImport's public key (RSAES_OAEP_SHA_1). */
function wrapForImport(material: Buffer, publicKey: Uint8Array): Buffer {
  const key = createPublicKey({ key: Buffer.from(publicKey), format: 'der', type: 'spki' });
  return publicEncrypt({ key, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha1' }, material);
}

async function importParameters(keyId: string) {
  return call('GetParametersForImport', { KeyId: keyId, WrappingAlgorithm: 'RSAES_OAEP_SHA_1', WrappingKeySpec: 'RSA_2048' });
}

async function importInput(keyId: string, material: Buffer): Promise<Input> {
  const params = await importParameters(keyId);
  return { KeyId: keyId, ImportToken: params.ImportToken, EncryptedKeyMaterial: wrapForImport(material, params.PublicKey), ExpirationModel: 'KEY_MATERIAL_DOES_NOT_EXPIRE' };
}

beforeAll(async () => {
  clock.connect(t.service.url);
  const sym = await createKey();
  const pending = await createKey();
  await call('ScheduleKeyDeletion', { KeyId: pending, PendingWindowInDays: 7 });
  const imported = await createKey({ Origin: 'EXTERNAL' });
  await call('ImportKeyMaterial', await importInput(imported, randomBytes(32)));
  const hmac = await createKey({ KeySpec: 'HMAC_256', KeyUsage: 'GENERATE_VERIFY_MAC' });
  const rsaEncrypt = await createKey({ KeySpec: 'RSA_2048', KeyUsage: 'ENCRYPT_DECRYPT' });
  const eccSign = await createKey({ KeySpec: 'ECC_NIST_P256', KeyUsage: 'SIGN_VERIFY' });
  const eccAgree = await createKey({ KeySpec: 'ECC_NIST_P256', KeyUsage: 'KEY_AGREEMENT' });
  const aliasName = alias();
  await call('CreateAlias', { AliasName: aliasName, TargetKeyId: sym });
  const peer = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const mrkDisabled = await replicatedKey();
  await call('DisableKey', { KeyId: mrkDisabled });
  const mrkPending = await createKey({ MultiRegion: true });
  await call('ScheduleKeyDeletion', { KeyId: mrkPending, PendingWindowInDays: 7 });
  const mrkPendingReplica = await replicatedKey();
  await call('ScheduleKeyDeletion', { KeyId: mrkPendingReplica, PendingWindowInDays: 7 });
  f = {
    mrk: await replicatedKey(),
    mrkLonely: await createKey({ MultiRegion: true }),
    mrkDisabled,
    mrkPending,
    mrkPendingReplica,
    sym,
    sym2: await createKey(),
    disabled: await disabledKey(),
    pending,
    external: await createKey({ Origin: 'EXTERNAL' }),
    imported,
    hmac,
    disabledHmac: await disabledKey({ KeySpec: 'HMAC_256', KeyUsage: 'GENERATE_VERIFY_MAC' }),
    rsaEncrypt,
    disabledRsa: await disabledKey({ KeySpec: 'RSA_2048', KeyUsage: 'ENCRYPT_DECRYPT' }),
    eccSign,
    disabledSign: await disabledKey({ KeySpec: 'ECC_NIST_P256', KeyUsage: 'SIGN_VERIFY' }),
    eccAgree,
    disabledAgree: await disabledKey({ KeySpec: 'ECC_NIST_P256', KeyUsage: 'KEY_AGREEMENT' }),
    blob: (await call('Encrypt', { KeyId: sym, Plaintext: bytes('secret') })).CiphertextBlob,
    rsaBlob: (await call('Encrypt', { KeyId: rsaEncrypt, Plaintext: bytes('secret'), EncryptionAlgorithm: 'RSAES_OAEP_SHA_256' })).CiphertextBlob,
    signature: (await call('Sign', { KeyId: eccSign, Message: bytes('signed'), SigningAlgorithm: 'ECDSA_SHA_256' })).Signature,
    mac: (await call('GenerateMac', { KeyId: hmac, Message: bytes('maced'), MacAlgorithm: 'HMAC_SHA_256' })).Mac,
    peerPublicKey: peer.publicKey.export({ format: 'der', type: 'spki' }),
    aliasName,
    grantToken: (await call('CreateGrant', { KeyId: sym, GranteePrincipal: `arn:aws:iam::${ACCOUNT_ID}:user/grantee`, Operations: ['Encrypt'] })).GrantToken,
  };
});

interface Case {
  error: string;
  /** What provokes it, and where AWS documents (or does not document) the answer. */
  why: string;
  input: (f: Fixture) => Input | Promise<Input>;
  /** Undoes what the case did to shared state (the clock) once it is answered. */
  after?: () => void;
}

const tampered = (blob: Uint8Array) => {
  const copy = Buffer.from(blob);
  copy[copy.length - 1]! ^= 1;
  return copy;
};

/** The key-state errors every cryptographic operation shares (AWS's key-state table). */
function keyStateCases(make: (keyId: string) => Input, keys: { disabled: (f: Fixture) => string }): Case[] {
  return [
    { error: 'NotFoundException', why: 'no such key', input: () => make(MISSING) },
    { error: 'NotFoundException', why: 'no such alias', input: () => make('alias/no-such-alias') },
    { error: 'DisabledException', why: 'AWS key-state table: Disabled', input: (f) => make(keys.disabled(f)) },
    { error: 'KMSInvalidStateException', why: 'AWS key-state table: PendingDeletion (DG also allows DisabledException)', input: (f) => make(f.pending) },
  ];
}

const symmetricStates = { disabled: (f: Fixture) => f.disabled };

const CASES: Record<string, Case[]> = {
  CreateKey: [
    { error: 'MalformedPolicyDocumentException', why: 'a policy that is not a policy document', input: () => ({ Policy: '{"Version":"2012-10-17"}' }) },
    { error: 'MalformedPolicyDocumentException', why: 'the lockout safety check: the caller could not change the policy', input: () => ({ Policy: JSON.stringify({ Version: '2012-10-17', Statement: [{ Effect: 'Allow', Principal: { AWS: `arn:aws:iam::${ACCOUNT_ID}:root` }, Action: 'kms:Encrypt', Resource: '*' }] }) }) },
    { error: 'LimitExceededException', why: 'AWS: key policy quota of 32 KB', input: () => ({ Policy: JSON.stringify({ Version: '2012-10-17', Statement: [{ Sid: 'x'.repeat(33_000), Effect: 'Allow', Principal: { AWS: `arn:aws:iam::${ACCOUNT_ID}:root` }, Action: 'kms:*', Resource: '*' }] }) }) },
    { error: 'TagException', why: 'AWS (recorded): more than 50 tags', input: () => ({ Tags: Array.from({ length: 51 }, (_, i) => ({ TagKey: `k${i}`, TagValue: 'v' })) }) },
    { error: 'TagException', why: 'AWS: tag keys beginning with aws: are reserved', input: () => ({ Tags: [{ TagKey: 'aws:owner', TagValue: 'x' }] }) },
    { error: 'UnsupportedOperationException', why: 'AWS: Origin AWS_CLOUDHSM / EXTERNAL_KEY_STORE need a custom key store (none here)', input: () => ({ Origin: 'EXTERNAL_KEY_STORE' }) },
    { error: 'CustomKeyStoreNotFoundException', why: 'AWS: a CustomKeyStoreId that names no store', input: () => ({ CustomKeyStoreId: 'cks-1234567890abcdef0' }) },
    { error: 'ValidationException', why: 'AWS: KeySpec and CustomerMasterKeySpec together', input: () => ({ KeySpec: 'SYMMETRIC_DEFAULT', CustomerMasterKeySpec: 'SYMMETRIC_DEFAULT' }) },
  ],
  DescribeKey: [
    { error: 'NotFoundException', why: 'no such key', input: () => ({ KeyId: MISSING }) },
    { error: 'NotFoundException', why: 'a key ARN of no key', input: () => ({ KeyId: MISSING_ARN }) },
    { error: 'NotFoundException', why: 'no such alias', input: () => ({ KeyId: 'alias/no-such-alias' }) },
    { error: 'InvalidArnException', why: 'an ARN that is not a key or alias ARN', input: () => ({ KeyId: BAD_ARN }) },
  ],
  ListKeys: [{ error: 'InvalidMarkerException', why: 'a marker this service did not issue', input: () => ({ Marker: 'bogus' }) }],
  ReplicateKey: [
    { error: 'AlreadyExistsException', why: 'AWS: the Region already has a replica of the key', input: (f) => ({ KeyId: f.mrk, ReplicaRegion: OTHER_REGION }) },
    { error: 'DisabledException', why: 'undocumented which error a disabled primary gets; the model lists DisabledException', input: (f) => ({ KeyId: f.mrkDisabled, ReplicaRegion: OTHER_REGION }) },
    { error: 'InvalidArnException', why: 'an ARN that is not a key ARN', input: () => ({ KeyId: BAD_ARN, ReplicaRegion: OTHER_REGION }) },
    { error: 'KMSInvalidStateException', why: 'AWS key-state table: PendingDeletion', input: (f) => ({ KeyId: f.mrkPending, ReplicaRegion: OTHER_REGION }) },
    { error: 'KMSInvalidStateException', why: 'AWS: a primary in PendingReplicaDeletion cannot be replicated', input: (f) => ({ KeyId: f.mrkPendingReplica, ReplicaRegion: 'eu-central-1' }) },
    { error: 'LimitExceededException', why: 'AWS: key policy quota of 32 KB', input: (f) => ({ KeyId: f.mrkLonely, ReplicaRegion: OTHER_REGION, Policy: JSON.stringify({ Version: '2012-10-17', Statement: [{ Sid: 'x'.repeat(33_000), Effect: 'Allow', Principal: { AWS: `arn:aws:iam::${ACCOUNT_ID}:root` }, Action: 'kms:*', Resource: '*' }] }) }) },
    { error: 'MalformedPolicyDocumentException', why: 'a policy that is not a policy document', input: (f) => ({ KeyId: f.mrkLonely, ReplicaRegion: OTHER_REGION, Policy: '{"Version":"2012-10-17"}' }) },
    { error: 'NotFoundException', why: 'no such key', input: () => ({ KeyId: `mrk-${'0'.repeat(32)}`, ReplicaRegion: OTHER_REGION }) },
    { error: 'TagException', why: 'AWS: tag keys beginning with aws: are reserved', input: (f) => ({ KeyId: f.mrkLonely, ReplicaRegion: OTHER_REGION, Tags: [{ TagKey: 'aws:owner', TagValue: 'x' }] }) },
    { error: 'UnsupportedOperationException', why: 'AWS: only a multi-Region primary key replicates', input: (f) => ({ KeyId: f.sym, ReplicaRegion: OTHER_REGION }) },
    { error: 'UnsupportedOperationException', why: 'a Region this deployment does not serve (a peer deployment would serve it)', input: (f) => ({ KeyId: f.mrkLonely, ReplicaRegion: 'ap-south-1' }) },
    { error: 'ValidationException', why: "undocumented: the primary key's own Region", input: (f) => ({ KeyId: f.mrkLonely, ReplicaRegion: REGION }) },
    { error: 'ValidationException', why: 'the model: RegionType pattern', input: (f) => ({ KeyId: f.mrkLonely, ReplicaRegion: 'Mars' }) },
  ],
  UpdatePrimaryRegion: [
    { error: 'DisabledException', why: 'AWS: both keys must be Enabled', input: (f) => ({ KeyId: f.mrkDisabled, PrimaryRegion: OTHER_REGION }) },
    { error: 'InvalidArnException', why: 'an ARN that is not a key ARN', input: () => ({ KeyId: BAD_ARN, PrimaryRegion: OTHER_REGION }) },
    { error: 'KMSInvalidStateException', why: 'AWS key-state table: PendingReplicaDeletion', input: (f) => ({ KeyId: f.mrkPendingReplica, PrimaryRegion: OTHER_REGION }) },
    { error: 'NotFoundException', why: 'AWS: the new primary Region must already have a replica', input: (f) => ({ KeyId: f.mrkLonely, PrimaryRegion: OTHER_REGION }) },
    { error: 'NotFoundException', why: 'no such key', input: () => ({ KeyId: `mrk-${'0'.repeat(32)}`, PrimaryRegion: OTHER_REGION }) },
    { error: 'UnsupportedOperationException', why: 'AWS: a single-Region key has no primary Region', input: (f) => ({ KeyId: f.sym, PrimaryRegion: OTHER_REGION }) },
  ],
  UpdateKeyDescription: [
    { error: 'NotFoundException', why: 'no such key', input: () => ({ KeyId: MISSING, Description: 'd' }) },
    { error: 'InvalidArnException', why: 'not a key ARN', input: () => ({ KeyId: BAD_ARN, Description: 'd' }) },
    { error: 'KMSInvalidStateException', why: 'AWS key-state table: PendingDeletion', input: (f) => ({ KeyId: f.pending, Description: 'd' }) },
  ],
  EnableKey: [
    { error: 'NotFoundException', why: 'no such key', input: () => ({ KeyId: MISSING }) },
    { error: 'InvalidArnException', why: 'not a key ARN', input: () => ({ KeyId: BAD_ARN }) },
    { error: 'KMSInvalidStateException', why: 'AWS key-state table: PendingDeletion', input: (f) => ({ KeyId: f.pending }) },
    { error: 'KMSInvalidStateException', why: 'AWS key-state table: PendingImport', input: (f) => ({ KeyId: f.external }) },
  ],
  DisableKey: [
    { error: 'NotFoundException', why: 'no such key', input: () => ({ KeyId: MISSING }) },
    { error: 'InvalidArnException', why: 'not a key ARN', input: () => ({ KeyId: BAD_ARN }) },
    { error: 'KMSInvalidStateException', why: 'AWS key-state table: PendingDeletion', input: (f) => ({ KeyId: f.pending }) },
  ],
  ScheduleKeyDeletion: [
    { error: 'NotFoundException', why: 'no such key', input: () => ({ KeyId: MISSING }) },
    { error: 'InvalidArnException', why: 'not a key ARN', input: () => ({ KeyId: BAD_ARN }) },
    { error: 'KMSInvalidStateException', why: 'AWS key-state table: already PendingDeletion', input: (f) => ({ KeyId: f.pending }) },
    { error: 'ValidationException', why: 'AWS: PendingWindowInDays is 7-30 (the model allows 1-365)', input: (f) => ({ KeyId: f.sym, PendingWindowInDays: 6 }) },
  ],
  CancelKeyDeletion: [
    { error: 'NotFoundException', why: 'no such key', input: () => ({ KeyId: MISSING }) },
    { error: 'InvalidArnException', why: 'not a key ARN', input: () => ({ KeyId: BAD_ARN }) },
    { error: 'KMSInvalidStateException', why: 'AWS: the key is not pending deletion', input: (f) => ({ KeyId: f.sym }) },
  ],
  PutKeyPolicy: [
    { error: 'NotFoundException', why: 'no such key', input: () => ({ KeyId: MISSING, Policy: '{}' }) },
    { error: 'InvalidArnException', why: 'not a key ARN', input: () => ({ KeyId: BAD_ARN, Policy: '{}' }) },
    { error: 'MalformedPolicyDocumentException', why: 'not a policy document', input: (f) => ({ KeyId: f.sym, Policy: '{"Statement":"no"}' }) },
    { error: 'LimitExceededException', why: 'AWS: key policy quota of 32 KB', input: (f) => ({ KeyId: f.sym, Policy: JSON.stringify({ Version: '2012-10-17', Statement: [{ Sid: 'x'.repeat(33_000), Effect: 'Allow', Principal: { AWS: `arn:aws:iam::${ACCOUNT_ID}:root` }, Action: 'kms:*', Resource: '*' }] }) }) },
    // undocumented: AWS's answer for another policy name; a KMS key has only "default".
    { error: 'NotFoundException', why: 'a PolicyName other than default (undocumented)', input: (f) => ({ KeyId: f.sym, PolicyName: 'other', Policy: '{}' }) },
  ],
  GetKeyPolicy: [
    { error: 'NotFoundException', why: 'no such key', input: () => ({ KeyId: MISSING }) },
    { error: 'InvalidArnException', why: 'not a key ARN', input: () => ({ KeyId: BAD_ARN }) },
  ],
  ListKeyPolicies: [
    { error: 'NotFoundException', why: 'no such key', input: () => ({ KeyId: MISSING }) },
    { error: 'InvalidArnException', why: 'not a key ARN', input: () => ({ KeyId: BAD_ARN }) },
  ],
  GetKeyLastUsage: [
    { error: 'NotFoundException', why: 'no such key', input: () => ({ KeyId: MISSING }) },
    { error: 'InvalidArnException', why: 'not a key ARN', input: () => ({ KeyId: BAD_ARN }) },
  ],
  CreateAlias: [
    { error: 'ValidationException', why: 'AWS (recorded): a name without the alias/ prefix', input: (f) => ({ AliasName: 'no-prefix', TargetKeyId: f.sym }) },
    { error: 'InvalidAliasNameException', why: 'AWS: alias/aws/ is reserved for AWS managed keys', input: (f) => ({ AliasName: 'alias/aws/mine', TargetKeyId: f.sym }) },
    { error: 'AlreadyExistsException', why: 'AWS: the alias exists', input: (f) => ({ AliasName: f.aliasName, TargetKeyId: f.sym }) },
    { error: 'NotFoundException', why: 'no such target key', input: () => ({ AliasName: alias(), TargetKeyId: MISSING }) },
    { error: 'KMSInvalidStateException', why: 'AWS key-state table: target PendingDeletion', input: (f) => ({ AliasName: alias(), TargetKeyId: f.pending }) },
    {
      error: 'LimitExceededException',
      why: 'AWS: at most 50 aliases per key',
      input: async () => {
        const keyId = await createKey();
        for (let i = 0; i < 50; i++) await call('CreateAlias', { AliasName: alias(), TargetKeyId: keyId });
        return { AliasName: alias(), TargetKeyId: keyId };
      },
    },
  ],
  UpdateAlias: [
    { error: 'NotFoundException', why: 'no such alias', input: (f) => ({ AliasName: 'alias/no-such-alias', TargetKeyId: f.sym }) },
    { error: 'NotFoundException', why: 'no such target key', input: (f) => ({ AliasName: f.aliasName, TargetKeyId: MISSING }) },
    { error: 'KMSInvalidStateException', why: 'AWS key-state table: target PendingDeletion', input: (f) => ({ AliasName: f.aliasName, TargetKeyId: f.pending }) },
    { error: 'ValidationException', why: 'AWS: the new target must have the same type and usage', input: (f) => ({ AliasName: f.aliasName, TargetKeyId: f.hmac }) },
    { error: 'ValidationException', why: 'AWS (recorded for CreateAlias): a name without the alias/ prefix', input: (f) => ({ AliasName: 'no-prefix', TargetKeyId: f.sym }) },
    // undocumented: the model gives UpdateAlias no InvalidAliasNameException; a reserved name names no alias of the account.
    { error: 'NotFoundException', why: 'an alias/aws/ name (no InvalidAliasNameException in the model; undocumented)', input: (f) => ({ AliasName: 'alias/aws/ebs', TargetKeyId: f.sym }) },
    {
      error: 'LimitExceededException',
      why: 'AWS: at most 50 aliases per key',
      input: async (f) => {
        const keyId = await createKey();
        for (let i = 0; i < 50; i++) await call('CreateAlias', { AliasName: alias(), TargetKeyId: keyId });
        return { AliasName: f.aliasName, TargetKeyId: keyId };
      },
    },
  ],
  DeleteAlias: [
    { error: 'NotFoundException', why: 'no such alias', input: () => ({ AliasName: 'alias/no-such-alias' }) },
    { error: 'ValidationException', why: 'AWS (recorded for CreateAlias): a name without the alias/ prefix', input: () => ({ AliasName: 'no-prefix' }) },
  ],
  ListAliases: [
    { error: 'NotFoundException', why: 'no such key', input: () => ({ KeyId: MISSING }) },
    { error: 'InvalidArnException', why: 'not a key ARN', input: () => ({ KeyId: BAD_ARN }) },
    { error: 'InvalidMarkerException', why: 'a marker this service did not issue', input: () => ({ Marker: 'bogus' }) },
  ],
  TagResource: [
    { error: 'NotFoundException', why: 'no such key', input: () => ({ KeyId: MISSING, Tags: [{ TagKey: 'k', TagValue: 'v' }] }) },
    { error: 'InvalidArnException', why: 'not a key ARN', input: () => ({ KeyId: BAD_ARN, Tags: [{ TagKey: 'k', TagValue: 'v' }] }) },
    { error: 'KMSInvalidStateException', why: 'AWS key-state table: PendingDeletion', input: (f) => ({ KeyId: f.pending, Tags: [{ TagKey: 'k', TagValue: 'v' }] }) },
    { error: 'TagException', why: 'AWS (recorded): tag keys beginning with aws: are reserved', input: (f) => ({ KeyId: f.sym, Tags: [{ TagKey: 'aws:k', TagValue: 'v' }] }) },
    { error: 'TagException', why: 'as CreateKey: more than 50 tags in one request', input: (f) => ({ KeyId: f.sym, Tags: Array.from({ length: 51 }, (_, i) => ({ TagKey: `k${i}`, TagValue: 'v' })) }) },
    {
      // undocumented: which error AWS gives when the tags already on a key and the new ones together exceed 50.
      error: 'LimitExceededException',
      why: 'the key would have more than 50 tags (quota; undocumented which error)',
      input: async () => {
        const keyId = await createKey({ Tags: Array.from({ length: 50 }, (_, i) => ({ TagKey: `k${i}`, TagValue: 'v' })) });
        return { KeyId: keyId, Tags: [{ TagKey: 'one-more', TagValue: 'v' }] };
      },
    },
  ],
  UntagResource: [
    { error: 'NotFoundException', why: 'no such key', input: () => ({ KeyId: MISSING, TagKeys: ['k'] }) },
    { error: 'InvalidArnException', why: 'not a key ARN', input: () => ({ KeyId: BAD_ARN, TagKeys: ['k'] }) },
    { error: 'KMSInvalidStateException', why: 'AWS key-state table: PendingDeletion', input: (f) => ({ KeyId: f.pending, TagKeys: ['k'] }) },
    { error: 'TagException', why: 'AWS: aws: tag keys are reserved', input: (f) => ({ KeyId: f.sym, TagKeys: ['aws:k'] }) },
  ],
  ListResourceTags: [
    { error: 'NotFoundException', why: 'no such key', input: () => ({ KeyId: MISSING }) },
    { error: 'InvalidArnException', why: 'not a key ARN', input: () => ({ KeyId: BAD_ARN }) },
    { error: 'InvalidMarkerException', why: 'a marker this service did not issue', input: (f) => ({ KeyId: f.sym, Marker: 'bogus' }) },
  ],
  CreateGrant: [
    ...keyStateCases((keyId) => ({ KeyId: keyId, GranteePrincipal: `arn:aws:iam::${ACCOUNT_ID}:user/g`, Operations: ['Encrypt'] }), symmetricStates),
    { error: 'InvalidArnException', why: 'not a key ARN', input: () => ({ KeyId: BAD_ARN, GranteePrincipal: `arn:aws:iam::${ACCOUNT_ID}:user/g`, Operations: ['Encrypt'] }) },
    { error: 'KMSInvalidStateException', why: 'AWS key-state table: PendingImport', input: (f) => ({ KeyId: f.external, GranteePrincipal: `arn:aws:iam::${ACCOUNT_ID}:user/g`, Operations: ['Encrypt'] }) },
    { error: 'InvalidGrantTokenException', why: 'a grant token this service did not issue', input: (f) => ({ KeyId: f.sym, GranteePrincipal: `arn:aws:iam::${ACCOUNT_ID}:user/g`, Operations: ['Encrypt'], GrantTokens: [FORGED_GRANT_TOKEN] }) },
    { error: 'DryRunOperationException', why: 'AWS: DryRun of a call that would succeed', input: (f) => ({ KeyId: f.sym, GranteePrincipal: `arn:aws:iam::${ACCOUNT_ID}:user/g`, Operations: ['Encrypt'], DryRun: true }) },
    { error: 'ValidationException', why: 'AWS: operations the key type does not support (DG calls it a ValidationError)', input: (f) => ({ KeyId: f.sym, GranteePrincipal: `arn:aws:iam::${ACCOUNT_ID}:user/g`, Operations: ['Sign'] }) },
  ],
  ListGrants: [
    { error: 'NotFoundException', why: 'no such key', input: () => ({ KeyId: MISSING }) },
    { error: 'InvalidArnException', why: 'not a key ARN', input: () => ({ KeyId: BAD_ARN }) },
    { error: 'InvalidMarkerException', why: 'a marker this service did not issue', input: (f) => ({ KeyId: f.sym, Marker: 'bogus' }) },
    { error: 'InvalidGrantIdException', why: 'a GrantId filter that cannot be a grant ID', input: (f) => ({ KeyId: f.sym, GrantId: 'not-a-grant-id' }) },
  ],
  ListRetirableGrants: [
    { error: 'InvalidMarkerException', why: 'a marker this service did not issue', input: () => ({ RetiringPrincipal: `arn:aws:iam::${ACCOUNT_ID}:user/g`, Marker: 'bogus' }) },
    // undocumented: which error AWS gives for a RetiringPrincipal that fits the model's pattern but is no principal ARN.
    { error: 'InvalidArnException', why: 'a RetiringPrincipal that is no principal ARN (undocumented)', input: () => ({ RetiringPrincipal: 'not-an-arn' }) },
  ],
  RetireGrant: [
    { error: 'InvalidGrantTokenException', why: 'a grant token this service did not issue', input: () => ({ GrantToken: FORGED_GRANT_TOKEN }) },
    { error: 'InvalidGrantIdException', why: 'a GrantId that cannot be a grant ID', input: (f) => ({ KeyId: f.sym, GrantId: 'not-a-grant-id' }) },
    { error: 'NotFoundException', why: 'no such grant', input: (f) => ({ KeyId: f.sym, GrantId: '0'.repeat(64) }) },
    { error: 'NotFoundException', why: 'no such key', input: () => ({ KeyId: MISSING_ARN, GrantId: '0'.repeat(64) }) },
    { error: 'InvalidArnException', why: 'not a key ARN', input: () => ({ KeyId: BAD_ARN, GrantId: '0'.repeat(64) }) },
    { error: 'DryRunOperationException', why: 'AWS: DryRun of a call that would succeed', input: (f) => ({ GrantToken: f.grantToken, DryRun: true }) },
  ],
  RevokeGrant: [
    { error: 'NotFoundException', why: 'no such key', input: () => ({ KeyId: MISSING, GrantId: '0'.repeat(64) }) },
    { error: 'NotFoundException', why: 'no such grant', input: (f) => ({ KeyId: f.sym, GrantId: '0'.repeat(64) }) },
    { error: 'InvalidArnException', why: 'not a key ARN', input: () => ({ KeyId: BAD_ARN, GrantId: '0'.repeat(64) }) },
    { error: 'InvalidGrantIdException', why: 'a GrantId that cannot be a grant ID', input: (f) => ({ KeyId: f.sym, GrantId: 'not-a-grant-id' }) },
    {
      error: 'DryRunOperationException',
      why: 'AWS: DryRun of a call that would succeed',
      input: async (f) => {
        const { GrantId } = await call('CreateGrant', { KeyId: f.sym, GranteePrincipal: `arn:aws:iam::${ACCOUNT_ID}:user/g`, Operations: ['Encrypt'] });
        return { KeyId: f.sym, GrantId, DryRun: true };
      },
    },
  ],
  Encrypt: [
    ...keyStateCases((keyId) => ({ KeyId: keyId, Plaintext: bytes('x') }), symmetricStates),
    { error: 'KMSInvalidStateException', why: 'AWS key-state table: PendingImport', input: (f) => ({ KeyId: f.external, Plaintext: bytes('x') }) },
    { error: 'InvalidKeyUsageException', why: 'AWS (recorded): a SIGN_VERIFY key', input: (f) => ({ KeyId: f.eccSign, Plaintext: bytes('x') }) },
    { error: 'InvalidKeyUsageException', why: 'AWS: an HMAC key', input: (f) => ({ KeyId: f.hmac, Plaintext: bytes('x') }) },
    { error: 'InvalidKeyUsageException', why: 'AWS: an algorithm the key does not support', input: (f) => ({ KeyId: f.sym, Plaintext: bytes('x'), EncryptionAlgorithm: 'RSAES_OAEP_SHA_256' }) },
    { error: 'InvalidKeyUsageException', why: 'AWS: an RSA key needs an RSA algorithm', input: (f) => ({ KeyId: f.rsaEncrypt, Plaintext: bytes('x') }) },
    { error: 'InvalidGrantTokenException', why: 'a grant token this service did not issue', input: (f) => ({ KeyId: f.sym, Plaintext: bytes('x'), GrantTokens: [FORGED_GRANT_TOKEN] }) },
    { error: 'DryRunOperationException', why: 'AWS: DryRun of a call that would succeed', input: (f) => ({ KeyId: f.sym, Plaintext: bytes('x'), DryRun: true }) },
    { error: 'ValidationException', why: 'AWS: an encryption context with an asymmetric key', input: (f) => ({ KeyId: f.rsaEncrypt, Plaintext: bytes('x'), EncryptionAlgorithm: 'RSAES_OAEP_SHA_256', EncryptionContext: { a: 'b' } }) },
  ],
  Decrypt: [
    { error: 'InvalidCiphertextException', why: 'AWS: a tampered blob', input: (f) => ({ CiphertextBlob: tampered(f.blob) }) },
    { error: 'InvalidCiphertextException', why: 'AWS: the wrong encryption context', input: (f) => ({ CiphertextBlob: f.blob, EncryptionContext: { a: 'b' } }) },
    { error: 'InvalidCiphertextException', why: 'AWS: bytes that are no ciphertext', input: () => ({ CiphertextBlob: randomBytes(64) }) },
    { error: 'IncorrectKeyException', why: 'AWS: KeyId names another symmetric key', input: (f) => ({ CiphertextBlob: f.blob, KeyId: f.sym2 }) },
    { error: 'IncorrectKeyException', why: 'AWS (recorded): KeyId names an HMAC key', input: (f) => ({ CiphertextBlob: f.blob, KeyId: f.hmac }) },
    { error: 'IncorrectKeyException', why: 'AWS (recorded): KeyId names an RSA key', input: (f) => ({ CiphertextBlob: f.blob, KeyId: f.rsaEncrypt }) },
    { error: 'IncorrectKeyException', why: 'AWS (recorded): KeyId names an RSA key, with an RSA algorithm', input: (f) => ({ CiphertextBlob: f.blob, KeyId: f.rsaEncrypt, EncryptionAlgorithm: 'RSAES_OAEP_SHA_256' }) },
    { error: 'IncorrectKeyException', why: 'AWS: KeyId names a signing key', input: (f) => ({ CiphertextBlob: f.blob, KeyId: f.eccSign }) },
    { error: 'InvalidKeyUsageException', why: 'AWS: an RSA ciphertext under a key whose usage is not ENCRYPT_DECRYPT', input: (f) => ({ CiphertextBlob: f.rsaBlob, KeyId: f.eccSign, EncryptionAlgorithm: 'RSAES_OAEP_SHA_256' }) },
    { error: 'InvalidKeyUsageException', why: 'AWS: an RSA ciphertext with an algorithm the key does not support', input: (f) => ({ CiphertextBlob: f.rsaBlob, KeyId: f.rsaEncrypt, EncryptionAlgorithm: 'SYMMETRIC_DEFAULT' }) },
    { error: 'InvalidCiphertextException', why: 'AWS: an RSA ciphertext with the other OAEP hash does not open', input: (f) => ({ CiphertextBlob: f.rsaBlob, KeyId: f.rsaEncrypt, EncryptionAlgorithm: 'RSAES_OAEP_SHA_1' }) },
    // undocumented: an RSA ciphertext names no key; under a symmetric KeyId (or none) it is no blob of ours.
    { error: 'InvalidCiphertextException', why: 'an RSA ciphertext with a symmetric KeyId (undocumented)', input: (f) => ({ CiphertextBlob: f.rsaBlob, KeyId: f.sym }) },
    { error: 'InvalidCiphertextException', why: 'an RSA ciphertext without a KeyId (undocumented)', input: (f) => ({ CiphertextBlob: f.rsaBlob }) },
    { error: 'NotFoundException', why: 'KeyId names no key', input: (f) => ({ CiphertextBlob: f.blob, KeyId: MISSING }) },
    { error: 'DisabledException', why: 'AWS key-state table: Disabled (RSA key named)', input: (f) => ({ CiphertextBlob: f.rsaBlob, KeyId: f.disabledRsa, EncryptionAlgorithm: 'RSAES_OAEP_SHA_256' }) },
    {
      error: 'DisabledException',
      why: 'AWS key-state table: the blob key is Disabled',
      input: async () => {
        const keyId = await createKey();
        const { CiphertextBlob } = await call('Encrypt', { KeyId: keyId, Plaintext: bytes('x') });
        await call('DisableKey', { KeyId: keyId });
        return { CiphertextBlob };
      },
    },
    {
      error: 'KMSInvalidStateException',
      why: 'AWS key-state table: the blob key is PendingDeletion',
      input: async () => {
        const keyId = await createKey();
        const { CiphertextBlob } = await call('Encrypt', { KeyId: keyId, Plaintext: bytes('x') });
        await call('ScheduleKeyDeletion', { KeyId: keyId, PendingWindowInDays: 7 });
        return { CiphertextBlob };
      },
    },
    { error: 'InvalidGrantTokenException', why: 'a grant token this service did not issue', input: (f) => ({ CiphertextBlob: f.blob, GrantTokens: [FORGED_GRANT_TOKEN] }) },
    { error: 'DryRunOperationException', why: 'AWS: DryRun of a call that would succeed', input: (f) => ({ CiphertextBlob: f.blob, DryRun: true }) },
    // AWS documents AccessDeniedException for a blob whose key does not exist (no existence oracle).
    { error: 'AccessDeniedException', why: 'AWS (recorded): the blob names a key that does not exist', input: (f) => ({ CiphertextBlob: Buffer.from(Buffer.from(f.blob).toString('latin1').replace(f.sym, MISSING), 'latin1') }) },
  ],
  ReEncrypt: [
    { error: 'IncorrectKeyException', why: 'AWS: SourceKeyId names another symmetric key', input: (f) => ({ CiphertextBlob: f.blob, SourceKeyId: f.sym2, DestinationKeyId: f.sym }) },
    { error: 'IncorrectKeyException', why: 'AWS (recorded): SourceKeyId names an HMAC key', input: (f) => ({ CiphertextBlob: f.blob, SourceKeyId: f.hmac, DestinationKeyId: f.sym }) },
    { error: 'IncorrectKeyException', why: 'AWS (recorded): SourceKeyId names an RSA key', input: (f) => ({ CiphertextBlob: f.blob, SourceKeyId: f.rsaEncrypt, DestinationKeyId: f.sym }) },
    { error: 'IncorrectKeyException', why: 'AWS: SourceKeyId names an RSA key, with an RSA algorithm', input: (f) => ({ CiphertextBlob: f.blob, SourceKeyId: f.rsaEncrypt, SourceEncryptionAlgorithm: 'RSAES_OAEP_SHA_1', DestinationKeyId: f.sym }) },
    { error: 'InvalidCiphertextException', why: 'AWS: a tampered blob', input: (f) => ({ CiphertextBlob: tampered(f.blob), DestinationKeyId: f.sym }) },
    { error: 'InvalidCiphertextException', why: 'AWS: the wrong source encryption context', input: (f) => ({ CiphertextBlob: f.blob, SourceEncryptionContext: { a: 'b' }, DestinationKeyId: f.sym }) },
    { error: 'InvalidKeyUsageException', why: 'AWS: a destination that cannot encrypt (HMAC)', input: (f) => ({ CiphertextBlob: f.blob, DestinationKeyId: f.hmac }) },
    { error: 'InvalidKeyUsageException', why: 'AWS: an RSA destination needs an RSA algorithm', input: (f) => ({ CiphertextBlob: f.blob, DestinationKeyId: f.rsaEncrypt }) },
    { error: 'NotFoundException', why: 'no such destination key', input: (f) => ({ CiphertextBlob: f.blob, DestinationKeyId: MISSING }) },
    { error: 'DisabledException', why: 'AWS key-state table: destination Disabled', input: (f) => ({ CiphertextBlob: f.blob, DestinationKeyId: f.disabled }) },
    { error: 'KMSInvalidStateException', why: 'AWS key-state table: destination PendingDeletion', input: (f) => ({ CiphertextBlob: f.blob, DestinationKeyId: f.pending }) },
    { error: 'InvalidGrantTokenException', why: 'a grant token this service did not issue', input: (f) => ({ CiphertextBlob: f.blob, DestinationKeyId: f.sym, GrantTokens: [FORGED_GRANT_TOKEN] }) },
    { error: 'DryRunOperationException', why: 'AWS: DryRun of a call that would succeed', input: (f) => ({ CiphertextBlob: f.blob, DestinationKeyId: f.sym, DryRun: true }) },
  ],
  GenerateDataKey: [
    ...keyStateCases((keyId) => ({ KeyId: keyId, KeySpec: 'AES_256' }), symmetricStates),
    { error: 'InvalidKeyUsageException', why: 'AWS: an asymmetric key (notes: unverified IKU vs UO)', input: (f) => ({ KeyId: f.rsaEncrypt, KeySpec: 'AES_256' }) },
    { error: 'InvalidKeyUsageException', why: 'AWS: an HMAC key', input: (f) => ({ KeyId: f.hmac, KeySpec: 'AES_256' }) },
    { error: 'InvalidGrantTokenException', why: 'a grant token this service did not issue', input: (f) => ({ KeyId: f.sym, KeySpec: 'AES_256', GrantTokens: [FORGED_GRANT_TOKEN] }) },
    { error: 'DryRunOperationException', why: 'AWS: DryRun of a call that would succeed', input: (f) => ({ KeyId: f.sym, KeySpec: 'AES_256', DryRun: true }) },
    { error: 'ValidationException', why: 'AWS: neither KeySpec nor NumberOfBytes', input: (f) => ({ KeyId: f.sym }) },
  ],
  GenerateDataKeyWithoutPlaintext: [
    ...keyStateCases((keyId) => ({ KeyId: keyId, KeySpec: 'AES_256' }), symmetricStates),
    { error: 'InvalidKeyUsageException', why: 'AWS: an asymmetric key', input: (f) => ({ KeyId: f.eccSign, KeySpec: 'AES_256' }) },
    { error: 'InvalidGrantTokenException', why: 'a grant token this service did not issue', input: (f) => ({ KeyId: f.sym, KeySpec: 'AES_256', GrantTokens: [FORGED_GRANT_TOKEN] }) },
    { error: 'DryRunOperationException', why: 'AWS: DryRun of a call that would succeed', input: (f) => ({ KeyId: f.sym, KeySpec: 'AES_256', DryRun: true }) },
  ],
  GenerateDataKeyPair: [
    ...keyStateCases((keyId) => ({ KeyId: keyId, KeyPairSpec: 'ECC_NIST_P256' }), symmetricStates),
    { error: 'InvalidKeyUsageException', why: 'AWS: the wrapping key must be symmetric', input: (f) => ({ KeyId: f.rsaEncrypt, KeyPairSpec: 'ECC_NIST_P256' }) },
    { error: 'UnsupportedOperationException', why: 'a key pair spec whose mechanisms the token lacks (SM2 on SoftHSM2)', input: (f) => ({ KeyId: f.sym, KeyPairSpec: 'SM2' }) },
    { error: 'InvalidGrantTokenException', why: 'a grant token this service did not issue', input: (f) => ({ KeyId: f.sym, KeyPairSpec: 'ECC_NIST_P256', GrantTokens: [FORGED_GRANT_TOKEN] }) },
    { error: 'DryRunOperationException', why: 'AWS: DryRun of a call that would succeed', input: (f) => ({ KeyId: f.sym, KeyPairSpec: 'ECC_NIST_P256', DryRun: true }) },
  ],
  GenerateDataKeyPairWithoutPlaintext: [
    ...keyStateCases((keyId) => ({ KeyId: keyId, KeyPairSpec: 'ECC_NIST_P256' }), symmetricStates),
    { error: 'InvalidKeyUsageException', why: 'AWS: the wrapping key must be symmetric', input: (f) => ({ KeyId: f.hmac, KeyPairSpec: 'ECC_NIST_P256' }) },
    { error: 'UnsupportedOperationException', why: 'a key pair spec whose mechanisms the token lacks (SM2 on SoftHSM2)', input: (f) => ({ KeyId: f.sym, KeyPairSpec: 'SM2' }) },
    { error: 'InvalidGrantTokenException', why: 'a grant token this service did not issue', input: (f) => ({ KeyId: f.sym, KeyPairSpec: 'ECC_NIST_P256', GrantTokens: [FORGED_GRANT_TOKEN] }) },
    { error: 'DryRunOperationException', why: 'AWS: DryRun of a call that would succeed', input: (f) => ({ KeyId: f.sym, KeyPairSpec: 'ECC_NIST_P256', DryRun: true }) },
  ],
  GenerateRandom: [
    { error: 'CustomKeyStoreNotFoundException', why: 'AWS: a CustomKeyStoreId that names no store', input: () => ({ NumberOfBytes: 16, CustomKeyStoreId: 'cks-1234567890abcdef0' }) },
    { error: 'UnsupportedOperationException', why: 'Recipient (Nitro attestation) is not offered by this service', input: () => ({ NumberOfBytes: 16, Recipient: { KeyEncryptionAlgorithm: 'RSAES_OAEP_SHA_256', AttestationDocument: bytes('doc') } }) },
  ],
  Sign: [
    ...keyStateCases((keyId) => ({ KeyId: keyId, Message: bytes('m'), SigningAlgorithm: 'ECDSA_SHA_256' }), { disabled: (f) => f.disabledSign }),
    { error: 'InvalidKeyUsageException', why: 'AWS: a key whose usage is not SIGN_VERIFY', input: (f) => ({ KeyId: f.sym, Message: bytes('m'), SigningAlgorithm: 'ECDSA_SHA_256' }) },
    { error: 'InvalidKeyUsageException', why: 'AWS: an algorithm the key spec does not support', input: (f) => ({ KeyId: f.eccSign, Message: bytes('m'), SigningAlgorithm: 'RSASSA_PSS_SHA_256' }) },
    { error: 'ValidationException', why: 'AWS: a DIGEST of the wrong length', input: (f) => ({ KeyId: f.eccSign, Message: bytes('short'), MessageType: 'DIGEST', SigningAlgorithm: 'ECDSA_SHA_256' }) },
    { error: 'InvalidGrantTokenException', why: 'a grant token this service did not issue', input: (f) => ({ KeyId: f.eccSign, Message: bytes('m'), SigningAlgorithm: 'ECDSA_SHA_256', GrantTokens: [FORGED_GRANT_TOKEN] }) },
    { error: 'DryRunOperationException', why: 'AWS: DryRun of a call that would succeed', input: (f) => ({ KeyId: f.eccSign, Message: bytes('m'), SigningAlgorithm: 'ECDSA_SHA_256', DryRun: true }) },
  ],
  Verify: [
    ...keyStateCases((keyId) => ({ KeyId: keyId, Message: bytes('m'), Signature: bytes('s'), SigningAlgorithm: 'ECDSA_SHA_256' }), { disabled: (f) => f.disabledSign }),
    { error: 'KMSInvalidSignatureException', why: 'AWS: a signature that does not verify (never SignatureValid:false)', input: (f) => ({ KeyId: f.eccSign, Message: bytes('other'), Signature: f.signature, SigningAlgorithm: 'ECDSA_SHA_256' }) },
    { error: 'InvalidKeyUsageException', why: 'AWS: a key whose usage is not SIGN_VERIFY', input: (f) => ({ KeyId: f.hmac, Message: bytes('m'), Signature: f.signature, SigningAlgorithm: 'ECDSA_SHA_256' }) },
    { error: 'InvalidGrantTokenException', why: 'a grant token this service did not issue', input: (f) => ({ KeyId: f.eccSign, Message: bytes('signed'), Signature: f.signature, SigningAlgorithm: 'ECDSA_SHA_256', GrantTokens: [FORGED_GRANT_TOKEN] }) },
    { error: 'DryRunOperationException', why: 'AWS: DryRun of a call that would succeed', input: (f) => ({ KeyId: f.eccSign, Message: bytes('signed'), Signature: f.signature, SigningAlgorithm: 'ECDSA_SHA_256', DryRun: true }) },
  ],
  GetPublicKey: [
    ...keyStateCases((keyId) => ({ KeyId: keyId }), { disabled: (f) => f.disabledSign }),
    { error: 'InvalidArnException', why: 'not a key ARN', input: () => ({ KeyId: BAD_ARN }) },
    // undocumented: AWS's answer for a symmetric key is UnsupportedOperationException or InvalidKeyUsageException (unconfirmed).
    { error: 'UnsupportedOperationException', why: 'a symmetric key has no public key (UO vs IKU unconfirmed)', input: (f) => ({ KeyId: f.sym }) },
    { error: 'InvalidGrantTokenException', why: 'a grant token this service did not issue', input: (f) => ({ KeyId: f.eccSign, GrantTokens: [FORGED_GRANT_TOKEN] }) },
  ],
  GenerateMac: [
    ...keyStateCases((keyId) => ({ KeyId: keyId, Message: bytes('m'), MacAlgorithm: 'HMAC_SHA_256' }), { disabled: (f) => f.disabledHmac }),
    { error: 'InvalidKeyUsageException', why: 'AWS: a key whose usage is not GENERATE_VERIFY_MAC', input: (f) => ({ KeyId: f.sym, Message: bytes('m'), MacAlgorithm: 'HMAC_SHA_256' }) },
    { error: 'InvalidKeyUsageException', why: 'AWS: an algorithm the key spec does not support', input: (f) => ({ KeyId: f.hmac, Message: bytes('m'), MacAlgorithm: 'HMAC_SHA_512' }) },
    { error: 'InvalidGrantTokenException', why: 'a grant token this service did not issue', input: (f) => ({ KeyId: f.hmac, Message: bytes('m'), MacAlgorithm: 'HMAC_SHA_256', GrantTokens: [FORGED_GRANT_TOKEN] }) },
    { error: 'DryRunOperationException', why: 'AWS: DryRun of a call that would succeed', input: (f) => ({ KeyId: f.hmac, Message: bytes('m'), MacAlgorithm: 'HMAC_SHA_256', DryRun: true }) },
  ],
  VerifyMac: [
    ...keyStateCases((keyId) => ({ KeyId: keyId, Message: bytes('m'), Mac: bytes('x'), MacAlgorithm: 'HMAC_SHA_256' }), { disabled: (f) => f.disabledHmac }),
    { error: 'KMSInvalidMacException', why: 'AWS: a MAC that does not verify', input: (f) => ({ KeyId: f.hmac, Message: bytes('other'), Mac: f.mac, MacAlgorithm: 'HMAC_SHA_256' }) },
    { error: 'InvalidKeyUsageException', why: 'AWS: a key whose usage is not GENERATE_VERIFY_MAC', input: (f) => ({ KeyId: f.eccSign, Message: bytes('m'), Mac: f.mac, MacAlgorithm: 'HMAC_SHA_256' }) },
    { error: 'InvalidGrantTokenException', why: 'a grant token this service did not issue', input: (f) => ({ KeyId: f.hmac, Message: bytes('maced'), Mac: f.mac, MacAlgorithm: 'HMAC_SHA_256', GrantTokens: [FORGED_GRANT_TOKEN] }) },
    { error: 'DryRunOperationException', why: 'AWS: DryRun of a call that would succeed', input: (f) => ({ KeyId: f.hmac, Message: bytes('maced'), Mac: f.mac, MacAlgorithm: 'HMAC_SHA_256', DryRun: true }) },
  ],
  DeriveSharedSecret: [
    ...keyStateCases((keyId) => ({ KeyId: keyId, KeyAgreementAlgorithm: 'ECDH', PublicKey: f.peerPublicKey }), { disabled: (f) => f.disabledAgree }),
    { error: 'InvalidKeyUsageException', why: 'AWS: a key whose usage is not KEY_AGREEMENT', input: (f) => ({ KeyId: f.eccSign, KeyAgreementAlgorithm: 'ECDH', PublicKey: f.peerPublicKey }) },
    { error: 'ValidationException', why: 'AWS: a public key that is not DER SPKI on the key\'s curve', input: (f) => ({ KeyId: f.eccAgree, KeyAgreementAlgorithm: 'ECDH', PublicKey: bytes('not a key') }) },
    { error: 'InvalidGrantTokenException', why: 'a grant token this service did not issue', input: (f) => ({ KeyId: f.eccAgree, KeyAgreementAlgorithm: 'ECDH', PublicKey: f.peerPublicKey, GrantTokens: [FORGED_GRANT_TOKEN] }) },
    { error: 'DryRunOperationException', why: 'AWS: DryRun of a call that would succeed', input: (f) => ({ KeyId: f.eccAgree, KeyAgreementAlgorithm: 'ECDH', PublicKey: f.peerPublicKey, DryRun: true }) },
  ],
  EnableKeyRotation: [
    { error: 'NotFoundException', why: 'no such key', input: () => ({ KeyId: MISSING }) },
    { error: 'InvalidArnException', why: 'not a key ARN', input: () => ({ KeyId: BAD_ARN }) },
    { error: 'DisabledException', why: 'AWS key-state table: Disabled', input: (f) => ({ KeyId: f.disabled }) },
    { error: 'KMSInvalidStateException', why: 'AWS key-state table: PendingDeletion', input: (f) => ({ KeyId: f.pending }) },
    { error: 'UnsupportedOperationException', why: 'AWS: asymmetric keys do not rotate', input: (f) => ({ KeyId: f.eccSign }) },
    { error: 'UnsupportedOperationException', why: 'AWS: imported keys rotate on demand only', input: (f) => ({ KeyId: f.imported }) },
  ],
  DisableKeyRotation: [
    { error: 'NotFoundException', why: 'no such key', input: () => ({ KeyId: MISSING }) },
    { error: 'InvalidArnException', why: 'not a key ARN', input: () => ({ KeyId: BAD_ARN }) },
    { error: 'DisabledException', why: 'AWS key-state table: Disabled', input: (f) => ({ KeyId: f.disabled }) },
    { error: 'KMSInvalidStateException', why: 'AWS key-state table: PendingDeletion', input: (f) => ({ KeyId: f.pending }) },
    { error: 'UnsupportedOperationException', why: 'AWS: HMAC keys do not rotate', input: (f) => ({ KeyId: f.hmac }) },
  ],
  GetKeyRotationStatus: [
    { error: 'NotFoundException', why: 'no such key', input: () => ({ KeyId: MISSING }) },
    { error: 'InvalidArnException', why: 'not a key ARN', input: () => ({ KeyId: BAD_ARN }) },
    { error: 'UnsupportedOperationException', why: 'AWS: asymmetric keys do not rotate', input: (f) => ({ KeyId: f.rsaEncrypt }) },
  ],
  RotateKeyOnDemand: [
    { error: 'NotFoundException', why: 'no such key', input: () => ({ KeyId: MISSING }) },
    { error: 'InvalidArnException', why: 'not a key ARN', input: () => ({ KeyId: BAD_ARN }) },
    { error: 'DisabledException', why: 'AWS (recorded): Disabled', input: (f) => ({ KeyId: f.disabled }) },
    { error: 'KMSInvalidStateException', why: 'AWS key-state table: PendingDeletion', input: (f) => ({ KeyId: f.pending }) },
    { error: 'KMSInvalidStateException', why: 'AWS: an imported key without material in PENDING_ROTATION', input: (f) => ({ KeyId: f.imported }) },
    { error: 'UnsupportedOperationException', why: 'AWS: asymmetric keys do not rotate', input: (f) => ({ KeyId: f.eccSign }) },
    {
      error: 'LimitExceededException',
      why: 'AWS: at most 25 on-demand rotations per key',
      input: async () => {
        const keyId = await createKey();
        for (let i = 0; i < 25; i++) await call('RotateKeyOnDemand', { KeyId: keyId });
        return { KeyId: keyId };
      },
    },
    {
      error: 'ConflictException',
      why: 'AWS: an automatic rotation is due within 20 minutes',
      input: async () => {
        const keyId = await createKey();
        await call('EnableKeyRotation', { KeyId: keyId, RotationPeriodInDays: 90 });
        clock.advance(90 * DAY_MS - 10 * 60_000);
        return { KeyId: keyId };
      },
      after: () => clock.advance(-(90 * DAY_MS - 10 * 60_000)),
    },
  ],
  ListKeyRotations: [
    { error: 'NotFoundException', why: 'no such key', input: () => ({ KeyId: MISSING }) },
    { error: 'InvalidArnException', why: 'not a key ARN', input: () => ({ KeyId: BAD_ARN }) },
    { error: 'InvalidMarkerException', why: 'a marker this service did not issue', input: (f) => ({ KeyId: f.sym, Marker: 'bogus' }) },
    { error: 'UnsupportedOperationException', why: 'AWS: asymmetric keys do not rotate', input: (f) => ({ KeyId: f.eccSign }) },
  ],
  GetParametersForImport: [
    { error: 'NotFoundException', why: 'no such key', input: () => ({ KeyId: MISSING, WrappingAlgorithm: 'RSAES_OAEP_SHA_1', WrappingKeySpec: 'RSA_2048' }) },
    { error: 'InvalidArnException', why: 'not a key ARN', input: () => ({ KeyId: BAD_ARN, WrappingAlgorithm: 'RSAES_OAEP_SHA_1', WrappingKeySpec: 'RSA_2048' }) },
    { error: 'UnsupportedOperationException', why: 'AWS: the key origin is not EXTERNAL', input: (f) => ({ KeyId: f.sym, WrappingAlgorithm: 'RSAES_OAEP_SHA_1', WrappingKeySpec: 'RSA_2048' }) },
    { error: 'UnsupportedOperationException', why: 'AWS: RSAES_PKCS1_V1_5 is no longer offered', input: (f) => ({ KeyId: f.external, WrappingAlgorithm: 'RSAES_PKCS1_V1_5', WrappingKeySpec: 'RSA_2048' }) },
    {
      error: 'KMSInvalidStateException',
      why: 'AWS key-state table: PendingDeletion',
      input: async () => {
        const keyId = await createKey({ Origin: 'EXTERNAL' });
        await call('ScheduleKeyDeletion', { KeyId: keyId, PendingWindowInDays: 7 });
        return { KeyId: keyId, WrappingAlgorithm: 'RSAES_OAEP_SHA_1', WrappingKeySpec: 'RSA_2048' };
      },
    },
  ],
  ImportKeyMaterial: [
    { error: 'NotFoundException', why: 'no such key', input: async (f) => ({ ...(await importInput(f.external, randomBytes(32))), KeyId: MISSING }) },
    { error: 'InvalidArnException', why: 'not a key ARN', input: async (f) => ({ ...(await importInput(f.external, randomBytes(32))), KeyId: BAD_ARN }) },
    { error: 'UnsupportedOperationException', why: 'AWS: the key origin is not EXTERNAL', input: async (f) => ({ ...(await importInput(f.external, randomBytes(32))), KeyId: f.sym }) },
    { error: 'IncorrectKeyMaterialException', why: 'AWS: material of the wrong size for the key spec', input: (f) => importInput(f.external, randomBytes(16)) },
    { error: 'IncorrectKeyMaterialException', why: 'AWS: other material than the key had', input: (f) => importInput(f.imported, randomBytes(32)) },
    { error: 'InvalidCiphertextException', why: 'AWS: EncryptedKeyMaterial that does not unwrap', input: async (f) => ({ ...(await importInput(f.external, randomBytes(32))), EncryptedKeyMaterial: Buffer.alloc(256, 7) }) },
    {
      error: 'InvalidImportTokenException',
      why: 'AWS: a tampered import token',
      input: async (f) => {
        const input = await importInput(f.external, randomBytes(32));
        return { ...input, ImportToken: tampered(input.ImportToken as Uint8Array) };
      },
    },
    { error: 'InvalidImportTokenException', why: "AWS: another key's import token", input: async (f) => ({ ...(await importInput(f.imported, randomBytes(32))), KeyId: f.external }) },
    {
      error: 'ExpiredImportTokenException',
      why: 'AWS: import parameters are valid for 24 hours',
      input: async (f) => {
        const input = await importInput(f.external, randomBytes(32));
        clock.advance(DAY_MS + 60_000);
        return input;
      },
      after: () => clock.advance(-(DAY_MS + 60_000)),
    },
    { error: 'ValidationException', why: 'AWS: ValidTo is required with KEY_MATERIAL_EXPIRES', input: async (f) => ({ ...(await importInput(f.external, randomBytes(32))), ExpirationModel: 'KEY_MATERIAL_EXPIRES' }) },
    {
      error: 'KMSInvalidStateException',
      why: 'AWS key-state table: PendingDeletion',
      input: async () => {
        const keyId = await createKey({ Origin: 'EXTERNAL' });
        const input = await importInput(keyId, randomBytes(32));
        await call('ScheduleKeyDeletion', { KeyId: keyId, PendingWindowInDays: 7 });
        return input;
      },
    },
  ],
  DeleteImportedKeyMaterial: [
    { error: 'NotFoundException', why: 'no such key', input: () => ({ KeyId: MISSING }) },
    { error: 'InvalidArnException', why: 'not a key ARN', input: () => ({ KeyId: BAD_ARN }) },
    { error: 'UnsupportedOperationException', why: 'AWS: the key origin is not EXTERNAL', input: (f) => ({ KeyId: f.sym }) },
    // undocumented: which error AWS gives for a KeyMaterialId the key never had.
    { error: 'NotFoundException', why: 'a KeyMaterialId the key never had (undocumented which error)', input: (f) => ({ KeyId: f.imported, KeyMaterialId: 'f'.repeat(64) }) },
  ],
  DescribeCustomKeyStores: [
    { error: 'CustomKeyStoreNotFoundException', why: 'AWS: a store ID that names no store', input: () => ({ CustomKeyStoreId: 'cks-1234567890abcdef0' }) },
    { error: 'CustomKeyStoreNotFoundException', why: 'AWS: a store name that names no store', input: () => ({ CustomKeyStoreName: 'none' }) },
    { error: 'InvalidMarkerException', why: 'a marker this service did not issue', input: () => ({ Marker: 'bogus' }) },
  ],
};

/** Documented errors this service cannot produce on purpose, with the reason. */
const NOT_PROVOKABLE: Record<string, string> = {
  DependencyTimeoutException: 'a server fault (503): nothing here depends on a remote system that could time out',
  KMSInternalException: 'a server fault (500): provoked by no input',
  KeyUnavailableException: 'a server fault (500): the token was unreachable; provoked by no input',
  CustomKeyStoreInvalidStateException: 'no custom key stores exist here',
  CloudHsmClusterInvalidConfigurationException: 'no custom key stores exist here',
  XksKeyInvalidConfigurationException: 'no custom key stores exist here',
  XksKeyAlreadyInUseException: 'no custom key stores exist here',
  XksKeyNotFoundException: 'no custom key stores exist here',
};

/** Per operation: documented errors that cannot occur here, with the reason. */
const NOT_PROVOKABLE_FOR: Record<string, Record<string, string>> = {
  CreateKey: { InvalidArnException: 'no member of CreateKey is an ARN here (XksKeyId needs a custom key store; ARNs in Policy are MalformedPolicyDocumentException)' },
  GetPublicKey: { InvalidKeyUsageException: 'every asymmetric key has a public key whatever its usage; symmetric and HMAC keys answer UnsupportedOperationException (AWS: UO or IKU, unconfirmed)' },
  DeleteImportedKeyMaterial: { KMSInvalidStateException: 'AWS: succeeds on a key pending deletion (its state stays); the states that refuse it (Unavailable, Creating) do not exist here' },
  EnableKey: { LimitExceededException: 'AWS: the quota of enabled keys per Region (100,000) is not enforced here' },
  CreateGrant: { LimitExceededException: 'AWS: 50,000 grants per key (test/api-grants.test.ts covers it with a seeded store)' },
  DeleteAlias: { KMSInvalidStateException: 'AWS lets DeleteAlias run in every key state; the model lists the error for other callers' },
  GetKeyPolicy: { KMSInvalidStateException: 'AWS: GetKeyPolicy works in every key state' },
  ListKeyPolicies: { KMSInvalidStateException: 'AWS: ListKeyPolicies works in every key state' },
  ListGrants: { KMSInvalidStateException: 'AWS: ListGrants works in every key state' },
  ListRetirableGrants: { NotFoundException: 'undocumented: the principal is not looked up, an unknown one simply has no grants' },
  RetireGrant: { KMSInvalidStateException: 'AWS: RetireGrant works in every key state' },
  RevokeGrant: { KMSInvalidStateException: 'AWS: RevokeGrant works in every key state' },
  GetKeyRotationStatus: { KMSInvalidStateException: 'AWS: the status reads false while the key is pending deletion, no error' },
  ListKeyRotations: { KMSInvalidStateException: 'AWS: ListKeyRotations works in every key state' },
  PutKeyPolicy: {
    UnsupportedOperationException: 'AWS: only for keys in custom key stores or policy names it does not serve; none here',
    KMSInvalidStateException: 'AWS: PutKeyPolicy works in every key state',
  },
};

const servedOperations = Object.keys(kmsModel.operations).filter((op) => operationHandlers[op] !== undefined);

describe('the error tables', () => {
  it('cover every documented error of every served operation, or say why it cannot occur', () => {
    const uncovered: string[] = [];
    for (const op of servedOperations) {
      const provoked = new Set((CASES[op] ?? []).map((c) => c.error));
      for (const error of kmsModel.operations[op]!.errors) {
        if (!provoked.has(error) && NOT_PROVOKABLE[error] === undefined && NOT_PROVOKABLE_FOR[op]?.[error] === undefined) uncovered.push(`${op}: ${error}`);
      }
    }
    expect(uncovered).toEqual([]);
  });

  it('have a table for every served operation', () => {
    expect(servedOperations.filter((op) => CASES[op] === undefined)).toEqual([]);
  });
});

for (const [operation, cases] of Object.entries(CASES)) {
  it(`${operation}: ${[...new Set(cases.map((c) => c.error))].join(', ')}`, async () => {
    const answers: string[] = [];
    const expected: string[] = [];
    for (const c of cases) {
      const input = await c.input(f);
      const err = await errorOf(call(operation, input))
        .catch((e: Error) => ({ name: `succeeded (${e.message})`, status: undefined }))
        .finally(() => c.after?.());
      answers.push(`${c.why}: ${err.name} ${err.status}`);
      expected.push(`${c.why}: ${c.error} 400`);
    }
    expect(answers).toEqual(expected);
  });
}
