/**
 * Symmetric cryptographic operations: Encrypt, Decrypt, ReEncrypt, GenerateDataKey,
 * GenerateDataKeyWithoutPlaintext, GenerateRandom. Encrypt, Decrypt and ReEncrypt also take RSA
 * keys (asymmetric-encryption.ts).
 */
import { inaccessibleCiphertextKeyMessage } from '../../auth/authorize.js';
import { KmsError, accessDenied, constraintViolation, incorrectKey, unsupported, validation } from '../errors.js';
import type { KeyRecord } from '../../store/types.js';
import type { OperationHandler, RequestContext, Services } from '../context.js';
import { isKmsError } from '../arn.js';
import {
  asymmetricSource,
  decryptWithPrivateKey,
  encryptWithPublicKey,
  encryptionAlgorithmFor,
  isSymmetricKey,
  refuseEncryptionContext,
} from '../asymmetric-encryption.js';
import { keyOfBlob, sealSymmetric, unsealSymmetric } from '../envelope.js';
import { arnOfKey, authorize, requireEnabled, requireUsage, resolveAuthorizedKey } from '../keys.js';

const DATA_KEY_BYTES: Record<string, number> = { AES_128: 16, AES_256: 32 };

export const dryRunSucceeded = () => new KmsError('DryRunOperationException', 'The request would have succeeded, but the DryRun option is set.');

export function refuseRecipient(input: Record<string, unknown>): void {
  if (input.Recipient !== undefined) throw unsupported('Recipient (attested enclave delivery) is not supported by this service.');
}

function requireSymmetricAlgorithm(svc: Services, key: KeyRecord, algorithm: string | undefined, operation: string): void {
  if (algorithm !== undefined && algorithm !== 'SYMMETRIC_DEFAULT') {
    throw new KmsError('InvalidKeyUsageException', `${arnOfKey(svc, key)} does not support encryption algorithm ${algorithm} for ${operation}.`);
  }
}

/** A key that can seal data: Enabled, ENCRYPT_DECRYPT, and symmetric unless `acceptsRsa`. */
export async function encryptionKey(svc: Services, ctx: RequestContext, keyId: string, action: string, operation = action, acceptsRsa = false): Promise<KeyRecord> {
  const key = await resolveAuthorizedKey(svc, ctx, keyId, action, { allowAlias: true });
  requireEnabled(svc, key);
  requireUsage(svc, key, 'ENCRYPT_DECRYPT', operation);
  if (!isSymmetricKey(key) && !acceptsRsa) {
    throw new KmsError('InvalidKeyUsageException', `${arnOfKey(svc, key)} key spec is ${key.keySpec}, which is not valid for ${operation}.`);
  }
  return key;
}

/** Finds the key of a symmetric blob and checks everything Decrypt (or ReEncrypt's source side)
 *  requires before the token is asked to open it. */
async function decryptionKey(svc: Services, ctx: RequestContext, blob: Buffer, requestedKeyId: string | undefined, action: string) {
  // A missing key and a key the caller may not use get one answer: no key-existence oracle.
  const hideKey = (e: unknown) => {
    throw isKmsError(e, 'AccessDeniedException') ? accessDenied(inaccessibleCiphertextKeyMessage(ctx.caller.principal.arn, `kms:${action}`)) : e;
  };
  const { key, parsed } = await keyOfBlob(svc, blob).catch(hideKey);
  if (requestedKeyId !== undefined) {
    const requested = await resolveAuthorizedKey(svc, ctx, requestedKeyId, action, { allowAlias: true });
    if (requested.keyId !== key.keyId) {
      throw incorrectKey();
    }
  }
  await authorize(svc, ctx, action, key).catch(hideKey);
  requireEnabled(svc, key);
  return { key, parsed };
}

/** A backing version's KeyMaterialId never changes once written, and Decrypt and GenerateDataKey
 *  answer it on every call: remembered per store instead of a query per request. */
const knownMaterialIds = new WeakMap<object, Map<string, string>>();
const MATERIAL_IDS_REMEMBERED = 10_000;

export async function materialIdOf(svc: Services, keyId: string, version: number): Promise<string | undefined> {
  let known = knownMaterialIds.get(svc.store);
  if (known === undefined) knownMaterialIds.set(svc.store, (known = new Map()));
  const ref = `${keyId}#${version}`;
  const remembered = known.get(ref);
  if (remembered !== undefined) return remembered;
  const id = (await svc.store.listVersions(keyId)).find((v) => v.version === version)?.keyMaterialId;
  if (id !== undefined) {
    if (known.size >= MATERIAL_IDS_REMEMBERED) known.clear();
    known.set(ref, id);
  }
  return id;
}

const encrypt: OperationHandler = async (input, ctx, svc) => {
  const key = await encryptionKey(svc, ctx, input.KeyId, 'Encrypt', 'Encrypt', true);
  if (!isSymmetricKey(key)) {
    const algorithm = encryptionAlgorithmFor(key, input.EncryptionAlgorithm);
    refuseEncryptionContext(input.EncryptionContext);
    if (input.DryRun === true) throw dryRunSucceeded();
    return { CiphertextBlob: await encryptWithPublicKey(svc, key, algorithm, input.Plaintext), KeyId: arnOfKey(svc, key), EncryptionAlgorithm: algorithm };
  }
  requireSymmetricAlgorithm(svc, key, input.EncryptionAlgorithm, 'Encrypt');
  if (input.DryRun === true) throw dryRunSucceeded();
  const blob = await sealSymmetric(svc, key, input.Plaintext, input.EncryptionContext);
  return { CiphertextBlob: blob, KeyId: arnOfKey(svc, key), EncryptionAlgorithm: 'SYMMETRIC_DEFAULT' };
};

const decrypt: OperationHandler = async (input, ctx, svc) => {
  refuseRecipient(input);
  const ignoreCiphertext = input.DryRun === true && (input.DryRunModifiers as string[] | undefined)?.includes('IGNORE_CIPHERTEXT');
  if (ignoreCiphertext) {
    if (input.KeyId === undefined) throw constraintViolation(null, 'keyId', 'Member must not be null');
    const key = await resolveAuthorizedKey(svc, ctx, input.KeyId, 'Decrypt', { allowAlias: true });
    requireEnabled(svc, key);
    throw dryRunSucceeded();
  }
  if (input.CiphertextBlob === undefined) throw validation("1 validation error detected: Value null at 'ciphertextBlob' failed to satisfy constraint: Member must not be null");
  const asymmetric = await asymmetricSource(svc, ctx, input.KeyId, input.CiphertextBlob, 'Decrypt', input.EncryptionAlgorithm, 'Decrypt');
  if (asymmetric !== undefined) {
    if (input.DryRun === true) throw dryRunSucceeded();
    const plaintext = await decryptWithPrivateKey(svc, asymmetric.key, asymmetric.algorithm, input.CiphertextBlob);
    return { KeyId: arnOfKey(svc, asymmetric.key), Plaintext: plaintext, EncryptionAlgorithm: asymmetric.algorithm };
  }
  const { key, parsed } = await decryptionKey(svc, ctx, input.CiphertextBlob, input.KeyId, 'Decrypt');
  requireSymmetricAlgorithm(svc, key, input.EncryptionAlgorithm, 'Decrypt');
  if (input.DryRun === true) throw dryRunSucceeded();
  const { plaintext, version } = await unsealSymmetric(svc, key, parsed, input.EncryptionContext);
  return {
    KeyId: arnOfKey(svc, key),
    Plaintext: plaintext,
    EncryptionAlgorithm: 'SYMMETRIC_DEFAULT',
    KeyMaterialId: await materialIdOf(svc, key.keyId, version),
  };
};

const reEncrypt: OperationHandler = async (input, ctx, svc) => {
  const destination = await encryptionKey(svc, ctx, input.DestinationKeyId, 'ReEncryptTo', 'ReEncrypt', true);
  const destinationAlgorithm = encryptionAlgorithmFor(destination, input.DestinationEncryptionAlgorithm);
  if (!isSymmetricKey(destination)) refuseEncryptionContext(input.DestinationEncryptionContext);
  const ignoreCiphertext = input.DryRun === true && (input.DryRunModifiers as string[] | undefined)?.includes('IGNORE_CIPHERTEXT');
  if (ignoreCiphertext) {
    if (input.SourceKeyId === undefined) throw constraintViolation(null, 'sourceKeyId', 'Member must not be null');
    const source = await resolveAuthorizedKey(svc, ctx, input.SourceKeyId, 'ReEncryptFrom', { allowAlias: true });
    requireEnabled(svc, source);
    throw dryRunSucceeded();
  }
  if (input.CiphertextBlob === undefined) throw validation("1 validation error detected: Value null at 'ciphertextBlob' failed to satisfy constraint: Member must not be null");
  const { source, sourceAlgorithm, plaintext, version } = await openForReEncrypt(svc, ctx, input);
  try {
    const blob = isSymmetricKey(destination)
      ? await sealSymmetric(svc, destination, plaintext, input.DestinationEncryptionContext)
      : await encryptWithPublicKey(svc, destination, destinationAlgorithm, plaintext);
    return {
      CiphertextBlob: blob,
      SourceKeyId: arnOfKey(svc, source),
      KeyId: arnOfKey(svc, destination),
      SourceEncryptionAlgorithm: sourceAlgorithm,
      DestinationEncryptionAlgorithm: destinationAlgorithm,
      SourceKeyMaterialId: version === undefined ? undefined : await materialIdOf(svc, source.keyId, version),
      DestinationKeyMaterialId: isSymmetricKey(destination) ? await materialIdOf(svc, destination.keyId, destination.currentVersion) : undefined,
    };
  } finally {
    plaintext.fill(0);
  }
};

/** ReEncrypt's source side: an RSA key named by SourceKeyId, or the symmetric key of the blob. */
async function openForReEncrypt(svc: Services, ctx: RequestContext, input: Record<string, any>) {
  const asymmetric = await asymmetricSource(svc, ctx, input.SourceKeyId, input.CiphertextBlob, 'ReEncryptFrom', input.SourceEncryptionAlgorithm, 'ReEncrypt');
  if (asymmetric !== undefined) {
    if (input.DryRun === true) throw dryRunSucceeded();
    const plaintext = await decryptWithPrivateKey(svc, asymmetric.key, asymmetric.algorithm, input.CiphertextBlob);
    return { source: asymmetric.key, sourceAlgorithm: asymmetric.algorithm, plaintext, version: undefined };
  }
  const { key: source, parsed } = await decryptionKey(svc, ctx, input.CiphertextBlob, input.SourceKeyId, 'ReEncryptFrom');
  requireSymmetricAlgorithm(svc, source, input.SourceEncryptionAlgorithm, 'ReEncrypt');
  if (input.DryRun === true) throw dryRunSucceeded();
  const { plaintext, version } = await unsealSymmetric(svc, source, parsed, input.SourceEncryptionContext);
  return { source, sourceAlgorithm: 'SYMMETRIC_DEFAULT', plaintext, version: version as number | undefined };
}

function dataKeyLength(input: Record<string, any>): number {
  const bySpec = input.KeySpec === undefined ? undefined : DATA_KEY_BYTES[input.KeySpec as string];
  if ((bySpec === undefined) === (input.NumberOfBytes === undefined)) throw validation('Please specify either number of bytes or key spec.');
  return bySpec ?? (input.NumberOfBytes as number);
}

async function generateDataKey(input: Record<string, any>, ctx: RequestContext, svc: Services, operation: string) {
  const key = await encryptionKey(svc, ctx, input.KeyId, operation);
  const length = dataKeyLength(input);
  if (input.DryRun === true) throw dryRunSucceeded();
  const plaintext = await svc.hsm.generateRandomAsync(length);
  const blob = await sealSymmetric(svc, key, plaintext, input.EncryptionContext);
  return { key, plaintext, blob, keyMaterialId: await materialIdOf(svc, key.keyId, key.currentVersion) };
}

const generateDataKeyWithPlaintext: OperationHandler = async (input, ctx, svc) => {
  refuseRecipient(input);
  const { key, plaintext, blob, keyMaterialId } = await generateDataKey(input, ctx, svc, 'GenerateDataKey');
  return { CiphertextBlob: blob, Plaintext: plaintext, KeyId: arnOfKey(svc, key), KeyMaterialId: keyMaterialId };
};

const generateDataKeyWithoutPlaintext: OperationHandler = async (input, ctx, svc) => {
  const { key, plaintext, blob, keyMaterialId } = await generateDataKey(input, ctx, svc, 'GenerateDataKeyWithoutPlaintext');
  plaintext.fill(0);
  return { CiphertextBlob: blob, KeyId: arnOfKey(svc, key), KeyMaterialId: keyMaterialId };
};

const generateRandom: OperationHandler = async (input, ctx, svc) => {
  refuseRecipient(input);
  await authorize(svc, ctx, 'GenerateRandom', '*');
  if (input.CustomKeyStoreId !== undefined) {
    throw new KmsError('CustomKeyStoreNotFoundException', `Custom key store ${input.CustomKeyStoreId} does not exist.`);
  }
  if (input.NumberOfBytes === undefined) throw constraintViolation(null, 'numberOfBytes', 'Member must not be null');
  return { Plaintext: await svc.hsm.generateRandomAsync(input.NumberOfBytes) };
};

export const cryptoOperations = {
  Encrypt: encrypt,
  Decrypt: decrypt,
  ReEncrypt: reEncrypt,
  GenerateDataKey: generateDataKeyWithPlaintext,
  GenerateDataKeyWithoutPlaintext: generateDataKeyWithoutPlaintext,
  GenerateRandom: generateRandom,
};
