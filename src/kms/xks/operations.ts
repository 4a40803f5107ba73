/**
 * The XKS Proxy API v1 on p11kms's own keys: AWS KMS (in the cloud) asks for metadata, encrypt,
 * decrypt and health; every cryptographic step runs in the token, under the same backing keys the
 * KMS API uses.
 *
 * Which keys: a SYMMETRIC_DEFAULT key carrying the tag `p11kms:xks` = `enabled` is served under its
 * KeyId as the externalKeyId; any other key is invisible (KeyNotFoundException). A tagged key of
 * another spec shows its spec and usage but refuses encrypt and decrypt (InvalidKeyUsageException).
 * The order of checks follows the spec and AWS's reference proxy: key found, secondary
 * authorization, key state, key usage, sizes, then the token.
 */
import { createHash } from 'node:crypto';
import { HsmError } from '../../hsm/types.js';
import type { KeyRecord } from '../../store/types.js';
import { keyArn } from '../arn.js';
import type { Services } from '../context.js';
import { sealUnderVersion } from '../envelope.js';
import { KmsError } from '../errors.js';
import { isPastDeletionDate } from '../lifecycle/deletion.js';
import { requireUsableMaterial } from '../lifecycle/expiry.js';
import type { XksAuthorization, XksAction } from './authorization.js';
import { decodeCiphertextMetadata, encodeCiphertextMetadata, tokenAad } from './ciphertext-metadata.js';
import { XksError, xksInvalidCiphertext } from './errors.js';

export const XKS_TAG_KEY = 'p11kms:xks';
export const XKS_TAG_ENABLED = 'enabled';

/** The spec's minimum sizes, which this proxy also takes as its maximum (beyond them the spec
 *  prescribes UnsupportedOperationException). */
export const MAX_PLAINTEXT_BYTES = 4300;
export const MAX_AAD_BYTES = 8192;
const TAG_BYTES = 16;
const OUR_IV_BYTES = 12;

export interface XksRequestMetadata {
  awsPrincipalArn?: string;
  kmsOperation: string;
  kmsRequestId: string;
  kmsKeyArn?: string;
  kmsViaService?: string;
  awsSourceVpc?: string;
  awsSourceVpce?: string;
}

export interface XksEncryptInput {
  requestMetadata: XksRequestMetadata;
  plaintext: Buffer;
  encryptionAlgorithm: 'AES_GCM';
  additionalAuthenticatedData?: Buffer;
  ciphertextDataIntegrityValueAlgorithm?: 'SHA_256';
}

export interface XksDecryptInput {
  requestMetadata: XksRequestMetadata;
  ciphertext: Buffer;
  ciphertextMetadata?: Buffer;
  encryptionAlgorithm: 'AES_GCM';
  additionalAuthenticatedData?: Buffer;
  initializationVector: Buffer;
  authenticationTag: Buffer;
}

export interface XksKeyMetadata {
  keySpec: string;
  keyUsage: string[];
  keyStatus: 'ENABLED' | 'DISABLED';
}

export interface XksEncryptOutput {
  ciphertext: Buffer;
  ciphertextMetadata: Buffer;
  initializationVector: Buffer;
  authenticationTag: Buffer;
  ciphertextDataIntegrityValue?: Buffer;
}

export interface XksHealth {
  xksProxyFleetSize: number;
  xksProxyVendor: string;
  xksProxyModel: string;
  ekmVendor: string;
  ekmFleetDetails: { id: string; model: string; healthStatus: 'ACTIVE' | 'DEGRADED' | 'UNAVAILABLE' }[];
}

export interface XksServices {
  svc: Services;
  /** Secondary authorization on requestMetadata; absent: none configured. */
  authorization?: XksAuthorization;
  /** Reported as xksProxyModel. */
  productVersion: string;
}

export async function getKeyMetadata(x: XksServices, externalKeyId: string, input: { requestMetadata: XksRequestMetadata }): Promise<XksKeyMetadata> {
  const key = await servedKey(x.svc, externalKeyId);
  authorize(x, 'xks:GetKeyMetadata', key, input.requestMetadata);
  return { keySpec: xksKeySpec(key.keySpec), keyUsage: xksKeyUsage(key), keyStatus: (await isUsable(x.svc, key)) ? 'ENABLED' : 'DISABLED' };
}

export async function encrypt(x: XksServices, externalKeyId: string, input: XksEncryptInput): Promise<XksEncryptOutput> {
  const key = await usableKey(x, 'xks:Encrypt', externalKeyId, input.requestMetadata);
  limitSize(input.plaintext, MAX_PLAINTEXT_BYTES, 'plaintext');
  if (input.additionalAuthenticatedData) limitSize(input.additionalAuthenticatedData, MAX_AAD_BYTES, 'additionalAuthenticatedData');
  const ref = { keyId: key.keyId, version: key.currentVersion };
  const metadata = encodeCiphertextMetadata(ref.version);
  const aad = tokenAad(input.additionalAuthenticatedData, metadata);
  const { iv, sealed } = await sealUnderVersion(x.svc, ref, aad, input.plaintext);
  const out: XksEncryptOutput = {
    ciphertext: sealed.subarray(0, sealed.length - TAG_BYTES),
    ciphertextMetadata: metadata,
    initializationVector: iv,
    authenticationTag: sealed.subarray(sealed.length - TAG_BYTES),
  };
  if (input.ciphertextDataIntegrityValueAlgorithm === 'SHA_256') {
    // Appendix C: the hash first, then a decryption of exactly what is returned, so a bit flip
    // after encryption cannot hide behind a CDIV computed over the flipped bytes.
    out.ciphertextDataIntegrityValue = createHash('sha256')
      .update(input.additionalAuthenticatedData ?? Buffer.alloc(0))
      .update(out.ciphertextMetadata)
      .update(out.initializationVector)
      .update(out.ciphertext)
      .update(out.authenticationTag)
      .digest();
    const check = await openSealed(x.svc, ref, out.initializationVector, aad, sealed);
    if (!check.equals(input.plaintext)) throw new XksError('InternalException', 'The encryption could not be verified; retry the request.');
  }
  return out;
}

export async function decrypt(x: XksServices, externalKeyId: string, input: XksDecryptInput): Promise<{ plaintext: Buffer }> {
  const key = await usableKey(x, 'xks:Decrypt', externalKeyId, input.requestMetadata);
  limitSize(input.ciphertext, MAX_PLAINTEXT_BYTES, 'ciphertext');
  if (input.additionalAuthenticatedData) limitSize(input.additionalAuthenticatedData, MAX_AAD_BYTES, 'additionalAuthenticatedData');
  // Only a 12-byte IV, a 16-byte tag and our own metadata can belong to a ciphertext of ours.
  if (input.initializationVector.length !== OUR_IV_BYTES || input.authenticationTag.length !== TAG_BYTES) throw xksInvalidCiphertext();
  const version = decodeCiphertextMetadata(input.ciphertextMetadata);
  if (version > key.currentVersion) throw xksInvalidCiphertext();
  const aad = tokenAad(input.additionalAuthenticatedData, input.ciphertextMetadata!);
  const plaintext = await openSealed(x.svc, { keyId: key.keyId, version }, input.initializationVector, aad, Buffer.concat([input.ciphertext, input.authenticationTag]));
  return { plaintext };
}

/** Deep health: the token must answer a login check and an RNG call, the store a query. A
 *  failing token is reported as UNAVAILABLE in a 200 answer, as the spec has AWS KMS read it. */
export async function getHealthStatus(x: XksServices): Promise<XksHealth> {
  let healthStatus: 'ACTIVE' | 'UNAVAILABLE' = 'ACTIVE';
  try {
    await x.svc.hsm.ping();
    await x.svc.store.ping();
  } catch {
    healthStatus = 'UNAVAILABLE';
  }
  const info = x.svc.hsm.info;
  return {
    xksProxyFleetSize: 1,
    xksProxyVendor: 'p11kms',
    xksProxyModel: `p11kms ${x.productVersion}`,
    ekmVendor: info.manufacturerId || 'unknown',
    ekmFleetDetails: [{ id: info.serialNumber || info.label, model: `${info.model} (${info.libraryDescription})`, healthStatus }],
  };
}

/** The key behind an externalKeyId, if it is one we serve over XKS. */
async function servedKey(svc: Services, externalKeyId: string): Promise<KeyRecord> {
  const key = await svc.store.getKey(externalKeyId);
  if (key && !isPastDeletionDate(key, svc.now())) {
    const tags = await svc.store.listTags(key.keyId);
    if (tags.some((t) => t.TagKey === XKS_TAG_KEY && t.TagValue === XKS_TAG_ENABLED)) return key;
  }
  throw new XksError('KeyNotFoundException', `No external key ${externalKeyId} is served by this proxy.`);
}

async function usableKey(x: XksServices, action: XksAction, externalKeyId: string, metadata: XksRequestMetadata): Promise<KeyRecord> {
  const key = await servedKey(x.svc, externalKeyId);
  authorize(x, action, key, metadata);
  if (!(await isUsable(x.svc, key))) throw new XksError('InvalidStateException', `External key ${externalKeyId} is not enabled.`);
  if (key.keySpec !== 'SYMMETRIC_DEFAULT' || key.keyUsage !== 'ENCRYPT_DECRYPT') {
    throw new XksError('InvalidKeyUsageException', `External key ${externalKeyId} is a ${key.keySpec} ${key.keyUsage} key; XKS encrypts and decrypts with AES-256 keys only.`);
  }
  return key;
}

function authorize(x: XksServices, action: XksAction, key: KeyRecord, metadata: XksRequestMetadata): void {
  x.authorization?.check(action, keyArn(x.svc.account, key.keyId), metadata);
}

async function isUsable(svc: Services, key: KeyRecord): Promise<boolean> {
  if (key.keyState !== 'Enabled') return false;
  try {
    await requireUsableMaterial(svc, key); // imported material may have expired
    return true;
  } catch (e) {
    if (e instanceof KmsError && e.type === 'KMSInvalidStateException') return false;
    throw e;
  }
}

async function openSealed(svc: Services, ref: { keyId: string; version: number }, iv: Buffer, aad: Buffer, sealed: Buffer): Promise<Buffer> {
  try {
    return await svc.hsm.decryptAesGcm(ref, iv, aad, sealed);
  } catch (e) {
    if (e instanceof HsmError && (e.kind === 'invalid-ciphertext' || e.kind === 'key-not-found')) throw xksInvalidCiphertext();
    throw e;
  }
}

function limitSize(value: Buffer, max: number, member: string): void {
  if (value.length > max) {
    throw new XksError('UnsupportedOperationException', `${member} of ${value.length} bytes exceeds the ${max} bytes this proxy supports.`);
  }
}

/** KMS key specs as XKS names them: the spec requires AES_256 for a 256-bit AES key. */
export function xksKeySpec(keySpec: string): string {
  return keySpec === 'SYMMETRIC_DEFAULT' ? 'AES_256' : keySpec;
}

/** What the key can do, in the spec's PKCS#11-flavoured words (MACs are C_Sign/C_Verify). */
export function xksKeyUsage(key: KeyRecord): string[] {
  switch (key.keyUsage) {
    case 'ENCRYPT_DECRYPT':
      return ['ENCRYPT', 'DECRYPT'];
    case 'SIGN_VERIFY':
    case 'GENERATE_VERIFY_MAC':
      return ['SIGN', 'VERIFY'];
    case 'KEY_AGREEMENT':
      return ['DERIVE'];
    default:
      return [];
  }
}
