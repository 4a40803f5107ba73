/**
 * Imported key material (BYOK) on the KMS side: import parameters, ImportKeyMaterial's
 * semantics (import types, key material IDs, expiry, same-material detection) and
 * DeleteImportedKeyMaterial. The token side (wrapping keys, C_UnwrapKey) is src/hsm/key-import.ts.
 *
 * Same material, without ever reading it: at import the token computes a check value (a hashed
 * known-answer encryption under the new object). A re-import unwraps the candidate and compares
 * its check value with the stored one. The KeyMaterialId is derived from the key ID and the
 * check value, so, as AWS describes it, it follows from the key and the material.
 */
import { createHash, randomUUID } from 'node:crypto';
import { KmsError, invalidCiphertext, invalidState, notFound, unsupported, validation } from '../errors.js';
import { KeyImportError, type MaterialCustody, type MaterialKind, type WrappingAlgorithm, type WrappingKeySpec, keyImporterOf } from '../../hsm/key-import.js';
import type { ExpirationModel, ImportParametersRecord, MaterialRecord } from '../../store/lifecycle.js';
import type { KeyRecord } from '../../store/types.js';
import { keyArn, keyEventScope } from '../arn.js';
import { storeKeyId } from '../regional-store.js';
import { KEY_SPECS, type KeyUsage, PRIVATE_KEY_USAGE } from '../key-specs.js';
import type { Services } from '../context.js';
import { removeImportedMaterial } from './expiry.js';
import { encodeImportTokenBody, parseImportToken } from './import-token.js';
import { DAY_MS, isUsable, withKeyClaim } from './materials.js';

export const IMPORT_PARAMETERS_VALIDITY_MS = DAY_MS;
const MAX_VALID_TO_MS = 365 * DAY_MS;
const SYMMETRIC_MATERIAL_BYTES = 32;
const SUPPORTED_ALGORITHMS = new Set<string>(['RSAES_OAEP_SHA_1', 'RSAES_OAEP_SHA_256', 'RSA_AES_KEY_WRAP_SHA_1', 'RSA_AES_KEY_WRAP_SHA_256']);
const SUPPORTED_WRAPPING_SPECS = new Set<string>(['RSA_2048', 'RSA_3072', 'RSA_4096']);

/** AWS's accepted lengths of imported HMAC keys, by hash. */
const HMAC_KEY_LENGTHS: Record<string, [number, number]> = { sha224: [28, 64], sha256: [32, 64], sha384: [48, 128], sha512: [64, 128] };

/** What imported material must be for `keySpec` (and, for key pairs, `keyUsage`); undefined
 *  where this service cannot import. */
function materialKindOf(keySpec: string, keyUsage: string | undefined): MaterialKind | undefined {
  if (keySpec === 'SYMMETRIC_DEFAULT') return { kind: 'aes', bytes: SYMMETRIC_MATERIAL_BYTES };
  const material = KEY_SPECS[keySpec]?.material;
  if (material?.kind === 'hmac') {
    const [minBytes, maxBytes] = HMAC_KEY_LENGTHS[material.hash]!;
    return { kind: 'hmac', hash: material.hash, minBytes, maxBytes };
  }
  const usage = keyUsage === undefined ? undefined : PRIVATE_KEY_USAGE[keyUsage as KeyUsage];
  if (usage === undefined) return undefined;
  if (material?.kind === 'rsa') return { kind: 'rsa', bits: material.bits, usage };
  if (material?.kind === 'ec') return { kind: 'ec', curve: material.curve, usage };
  return undefined;
}

/** CreateKey with Origin EXTERNAL: which specs this service can import material for. Asymmetric
 *  specs need the key usage (the private key gets exactly that one); seeds do not import them. */
export function requireImportableSpec(keySpec: string, keyUsage?: string): MaterialKind {
  const kind = materialKindOf(keySpec, keyUsage);
  if (kind) return kind;
  const material = KEY_SPECS[keySpec]?.material.kind;
  if (keyUsage === undefined && (material === 'rsa' || material === 'ec')) {
    throw unsupported(`Importing key material for KeySpec ${keySpec} needs the key's KeyUsage; seed files cannot import asymmetric key material.`);
  }
  if (keySpec === 'ECC_NIST_EDWARDS25519') {
    throw unsupported(
      'Importing key material for KeySpec ECC_NIST_EDWARDS25519 is not supported by this service: the HSM does not reveal the public key of an imported Ed25519 private key and has no Edwards key-derivation mechanism to compute it without reading the private key.',
    );
  }
  throw unsupported(`Importing key material for KeySpec ${keySpec} is not supported by this service (SYMMETRIC_DEFAULT, HMAC, RSA and ECC NIST/SECG keys are).`);
}

/** CreateKey with Origin EXTERNAL: the first material row waits for its import. */
export async function markAwaitingImport(svc: Services, keyId: string): Promise<void> {
  await svc.store.lifecycle.updateMaterial(keyId, 1, { importState: 'PENDING_IMPORT' });
}

function requireExternal(svc: Services, key: KeyRecord): MaterialKind {
  const arn = keyArn(svc.account, key.keyId);
  if (key.origin !== 'EXTERNAL') throw unsupported(`${arn} origin is ${key.origin} which is not valid for this operation.`);
  return requireImportableSpec(key.keySpec, key.keyUsage);
}

function requireNotPendingDeletion(svc: Services, key: KeyRecord): void {
  if (key.keyState === 'PendingDeletion') throw invalidState(`${keyArn(svc.account, key.keyId)} is pending deletion.`);
}

// ---- GetParametersForImport -----------------------------------------------------------------

export interface ImportParameters {
  importToken: Buffer;
  publicKey: Buffer;
  validTo: Date;
}

export async function createImportParameters(svc: Services, key: KeyRecord, algorithm: string, spec: string): Promise<ImportParameters> {
  const kind = requireExternal(svc, key);
  requireNotPendingDeletion(svc, key);
  if (!SUPPORTED_ALGORITHMS.has(algorithm)) throw unsupported(`WrappingAlgorithm ${algorithm} is not supported.`);
  if (!SUPPORTED_WRAPPING_SPECS.has(spec)) throw unsupported(`WrappingKeySpec ${spec} is not supported.`);
  const importer = keyImporterOf(svc.hsm);
  if ((kind.kind === 'rsa' || kind.kind === 'ec') && algorithm.startsWith('RSAES_OAEP')) await requireDirectKeyPairWrap(importer, kind, algorithm, spec);
  if (kind.kind === 'ec') {
    // The public point is found with ECDH and ECDSA in the token (src/hsm/key-import.ts).
    const missing = [...new Set([...svc.hsm.missingMechanisms({ kind: 'ec', curve: kind.curve }, 'sign'), ...svc.hsm.missingMechanisms({ kind: 'ec', curve: kind.curve }, 'derive')])];
    if (missing.length > 0) throw unsupported(`Importing ${key.keySpec} key material needs ${missing.join(', ')} in the HSM, which it does not offer.`);
  }
  if (svc.strictKeyCustody && algorithm.endsWith('SHA_256') && !(await importer.hasOaepSha256())) throw custodyRefused(algorithm);
  const importId = randomUUID();
  const createdAt = svc.now();
  const validTo = new Date(createdAt.getTime() + IMPORT_PARAMETERS_VALIDITY_MS);
  const publicKey = await importer.createWrappingKey(importId, spec as WrappingKeySpec, algorithm as WrappingAlgorithm);
  // Bound to the Region's key: a multi-Region key's other Regions import with their own tokens.
  const keyRow = storeKeyId(key);
  await svc.store.lifecycle.addImportParameters({ importId, keyId: keyRow, wrappingAlgorithm: algorithm, wrappingKeySpec: spec, createdAt, validTo });
  const body = encodeImportTokenBody({ importId, keyId: keyRow, validTo });
  const mac = await importer.macImportToken(importId, body);
  return { importToken: Buffer.concat([body, mac]), publicKey, validTo };
}

/**
 * RSAES_OAEP_* with asymmetric material, as AWS allows it: never for RSA private keys, not for
 * ECC_NIST_P521 under an RSA_2048 wrapping key (too long for OAEP), and here only where the token
 * does that OAEP hash itself: the OAEP-SHA-256 fallback (raw RSA, unpadding in the service) would
 * put the private key in service memory, which this service never allows, strict custody or not.
 */
async function requireDirectKeyPairWrap(importer: ReturnType<typeof keyImporterOf>, kind: MaterialKind, algorithm: string, spec: string): Promise<void> {
  if (kind.kind === 'rsa') {
    throw unsupported(`WrappingAlgorithm ${algorithm} cannot wrap RSA private key material. Use RSA_AES_KEY_WRAP_SHA_1 or RSA_AES_KEY_WRAP_SHA_256.`);
  }
  if (kind.kind === 'ec' && kind.curve === 'P-521' && spec === 'RSA_2048') {
    throw unsupported(`ECC_NIST_P521 key material cannot be wrapped with ${algorithm} under an RSA_2048 wrapping key. Use a larger wrapping key or RSA_AES_KEY_WRAP_SHA_*.`);
  }
  if (algorithm.endsWith('SHA_256') && !(await importer.hasOaepSha256())) {
    throw unsupported(
      `${algorithm} needs CKM_RSA_PKCS_OAEP with SHA-256 to unwrap a private key in the HSM, which this HSM does not provide; the service never removes the padding of private key material itself. Use RSAES_OAEP_SHA_1 or RSA_AES_KEY_WRAP_SHA_*.`,
    );
  }
}

/** The import parameters an ImportToken names, once it is shown to be ours, for this key, and valid. */
async function openImportToken(svc: Services, key: KeyRecord, token: Buffer): Promise<ImportParametersRecord> {
  const parsed = parseImportToken(token);
  const keyRow = storeKeyId(key);
  if (!parsed || parsed.fields.keyId !== keyRow) throw invalidImportToken();
  const now = svc.now().getTime();
  const parameters = await svc.store.lifecycle.getImportParameters(parsed.fields.importId);
  if (!parameters) {
    // Swept after expiry, or never ours: only a token whose own date has passed is "expired".
    throw parsed.fields.validTo.getTime() <= now ? expiredImportToken() : invalidImportToken();
  }
  if (parameters.keyId !== keyRow || parameters.validTo.getTime() !== parsed.fields.validTo.getTime()) throw invalidImportToken();
  if (!(await keyImporterOf(svc.hsm).verifyImportToken(parameters.importId, parsed.body, parsed.mac))) throw invalidImportToken();
  if (parameters.validTo.getTime() <= now) throw expiredImportToken();
  return parameters;
}

// ---- ImportKeyMaterial ----------------------------------------------------------------------

export interface ImportRequest {
  importToken: Buffer;
  encryptedKeyMaterial: Buffer;
  expirationModel?: string;
  validTo?: Date;
  importType?: string;
  description?: string;
  keyMaterialId?: string;
}

interface Expiry {
  expirationModel: ExpirationModel;
  validTo: Date | null;
}

export async function importKeyMaterial(svc: Services, key: KeyRecord, request: ImportRequest): Promise<{ keyMaterialId: string; custody: MaterialCustody }> {
  const kind = requireExternal(svc, key);
  requireNotPendingDeletion(svc, key);
  if (kind.kind !== 'aes' && (request.importType !== undefined || request.keyMaterialId !== undefined || request.description !== undefined)) {
    // AWS: HMAC and asymmetric keys keep their first material for good.
    throw validation('ImportType, KeyMaterialId and KeyMaterialDescription are valid for symmetric encryption keys only.');
  }
  const expiry = checkExpiry(svc, request);
  const parameters = await openImportToken(svc, key, request.importToken);
  return withKeyClaim(svc, key, 'material-import', async () => {
    const materials = await svc.store.lifecycle.listMaterials(key.keyId);
    const everImported = materials.some((m) => m.checkValue !== null);
    const importType = request.importType ?? (everImported ? 'EXISTING_KEY_MATERIAL' : 'NEW_KEY_MATERIAL');
    if (importType === 'NEW_KEY_MATERIAL' && request.keyMaterialId !== undefined) {
      throw validation('You cannot specify a KeyMaterialId when ImportType is NEW_KEY_MATERIAL.');
    }
    const unwrap = unwrapperFor(svc, parameters, request.encryptedKeyMaterial, kind);
    // A multi-Region key's Region that has no material yet, where another Region's key imported
    // it: its first import (NEW_KEY_MATERIAL for AWS) must be that same material.
    const sharedFirst = key.primaryRegion !== undefined && key.keyState === 'PendingImport' && everImported && request.keyMaterialId === undefined;
    const result =
      importType === 'NEW_KEY_MATERIAL' && !sharedFirst
        ? await importNewMaterial(svc, key, materials, unwrap, expiry, request.description)
        : await reimportMaterial(svc, key, materials, unwrap, expiry, request);
    await enableIfComplete(svc, key);
    if (result.custody !== 'token-unwrap') {
      await svc.audit
        ?.recordServiceEvent({
          eventName: 'ImportKeyMaterialCustody',
          ...keyEventScope(svc.account, key),
          additionalEventData: { keyMaterialId: result.keyMaterialId, custody: result.custody },
        })
        .catch(() => undefined);
    }
    return result;
  });
}

type Unwrapper = (target: { keyId: string; version: number } | 'probe') => Promise<{ checkValue: string; custody: MaterialCustody }>;

function unwrapperFor(svc: Services, parameters: ImportParametersRecord, wrapped: Buffer, material: MaterialKind): Unwrapper {
  return async (target) => {
    try {
      return await keyImporterOf(svc.hsm).unwrap({
        importId: parameters.importId,
        algorithm: parameters.wrappingAlgorithm as WrappingAlgorithm,
        wrapped,
        target,
        allowSoftwareUnpadding: svc.strictKeyCustody !== true,
        material,
      });
    } catch (err) {
      if (!(err instanceof KeyImportError)) throw err;
      if (err.failure === 'custody-refused') throw custodyRefused(parameters.wrappingAlgorithm);
      if (err.failure === 'wrong-length') throw new KmsError('IncorrectKeyMaterialException', `The key material does not fit the key spec: ${err.message}.`);
      throw invalidCiphertext('The encrypted key material could not be decrypted with the wrapping key of this import token.');
    }
  };
}

/** NEW_KEY_MATERIAL: the key's first material, or the next one, pending rotation. */
async function importNewMaterial(svc: Services, key: KeyRecord, materials: MaterialRecord[], unwrap: Unwrapper, expiry: Expiry, description: string | undefined) {
  const first = materials.find((m) => m.version === 1);
  if (first && first.checkValue === null) {
    const { checkValue, custody } = await unwrap({ keyId: key.keyId, version: 1 });
    const keyMaterialId = materialIdFor(key.keyId, checkValue);
    await svc.store.lifecycle.updateMaterial(key.keyId, 1, {
      importState: 'IMPORTED', checkValue, keyMaterialId, custody: custodyMark(custody), ...expiry, description: description ?? null,
    });
    return { keyMaterialId, custody };
  }
  if (key.primaryRegion !== undefined) {
    // AWS rotates an imported multi-Region key once the new material is in every Region's key
    // (PENDING_MULTI_REGION_IMPORT_AND_ROTATION); with one shared token object that is not done.
    throw unsupported(`${keyArn(svc.account, key.keyId)} is a multi-Region key: importing new key material for an on-demand rotation of it is not supported by this service.`);
  }
  if (materials.some((m) => m.version > key.currentVersion)) {
    throw invalidState(`${keyArn(svc.account, key.keyId)} already has key material pending rotation. Rotate the key or delete that material first.`);
  }
  const probe = await unwrap('probe');
  if (materials.some((m) => m.checkValue === probe.checkValue)) {
    throw new KmsError('IncorrectKeyMaterialException', 'This key material was imported into this KMS key before. Import it with ImportType EXISTING_KEY_MATERIAL.');
  }
  const version = Math.max(...materials.map((m) => m.version)) + 1;
  const ref = { keyId: key.keyId, version };
  await svc.hsm.destroyKey(ref); // a leftover of an import that crashed before its row was written
  const { checkValue, custody } = await unwrap(ref);
  const keyMaterialId = materialIdFor(key.keyId, checkValue);
  await svc.store.lifecycle.addMaterial({
    keyId: key.keyId, version, createdAt: svc.now(), keyMaterialId, rotationType: null, rotatedAt: null,
    importState: 'IMPORTED', ...expiry, description: description ?? null, checkValue, custody: custodyMark(custody),
  });
  return { keyMaterialId, custody };
}

/** EXISTING_KEY_MATERIAL: the same material again (after deletion or expiry, or to change its
 *  expiry). Different material is IncorrectKeyMaterialException and leaves nothing behind. */
async function reimportMaterial(svc: Services, key: KeyRecord, materials: MaterialRecord[], unwrap: Unwrapper, expiry: Expiry, request: ImportRequest) {
  const target =
    request.keyMaterialId === undefined
      ? materials.find((m) => m.version === key.currentVersion)
      : materials.find((m) => m.keyMaterialId === request.keyMaterialId);
  if (!target) throw notFound(`Key material ${request.keyMaterialId} is not associated with ${keyArn(svc.account, key.keyId)}.`);
  if (target.checkValue === null) {
    throw new KmsError('IncorrectKeyMaterialException', 'No key material was imported into this KMS key yet. Import it with ImportType NEW_KEY_MATERIAL.');
  }
  const ref = { keyId: key.keyId, version: target.version };
  const inToken = target.importState === 'IMPORTED';
  if (!inToken) await svc.hsm.destroyKey(ref);
  const { checkValue, custody } = await unwrap(inToken ? 'probe' : ref);
  if (checkValue !== target.checkValue) {
    if (!inToken) await svc.hsm.destroyKey(ref);
    throw new KmsError('IncorrectKeyMaterialException', 'The key material does not match the key material previously imported into this KMS key.');
  }
  await svc.store.lifecycle.updateMaterial(key.keyId, target.version, {
    importState: 'IMPORTED',
    ...expiry,
    // AWS keeps the last description when none is given.
    description: request.description ?? target.description,
    custody: inToken ? target.custody : custodyMark(custody),
  });
  return { keyMaterialId: target.keyMaterialId, custody };
}

async function enableIfComplete(svc: Services, key: KeyRecord): Promise<void> {
  const fresh = await svc.store.getKey(key.keyId);
  if (!fresh || fresh.keyState !== 'PendingImport') return;
  const materials = await svc.store.lifecycle.listMaterials(key.keyId);
  const now = svc.now();
  const complete = materials.filter((m) => m.version <= fresh.currentVersion).every((m) => isUsable(m, now));
  if (complete) await svc.store.updateKey(key.keyId, { keyState: 'Enabled' });
}

function checkExpiry(svc: Services, request: ImportRequest): Expiry {
  const model = (request.expirationModel ?? 'KEY_MATERIAL_EXPIRES') as ExpirationModel;
  if (model === 'KEY_MATERIAL_DOES_NOT_EXPIRE') {
    if (request.validTo !== undefined) throw validation('ValidTo must not be set when ExpirationModel is KEY_MATERIAL_DOES_NOT_EXPIRE.');
    return { expirationModel: model, validTo: null };
  }
  if (request.validTo === undefined) throw validation('ValidTo is required when ExpirationModel is KEY_MATERIAL_EXPIRES.');
  const now = svc.now().getTime();
  if (request.validTo.getTime() <= now) throw validation('ValidTo must be in the future.');
  if (request.validTo.getTime() > now + MAX_VALID_TO_MS) throw validation('ValidTo must be at most 365 days from now.');
  return { expirationModel: model, validTo: request.validTo };
}

// ---- DeleteImportedKeyMaterial ----------------------------------------------------------------

export async function deleteImportedKeyMaterial(svc: Services, key: KeyRecord, keyMaterialId: string | undefined): Promise<string | undefined> {
  requireExternal(svc, key);
  const materials = await svc.store.lifecycle.listMaterials(key.keyId);
  const target =
    keyMaterialId === undefined ? materials.find((m) => m.version === key.currentVersion) : materials.find((m) => m.keyMaterialId === keyMaterialId);
  if (!target) throw notFound(`Key material ${keyMaterialId} is not associated with ${keyArn(svc.account, key.keyId)}.`);
  // Deleting material that is not in the token (never imported, expired, deleted) changes nothing.
  if (target.importState === 'IMPORTED') {
    if (await heldElsewhere(svc, key)) await svc.store.updateKey(key.keyId, { keyState: 'PendingImport' });
    else await removeImportedMaterial(svc, key, target);
  }
  return target.checkValue === null ? undefined : target.keyMaterialId;
}

/** Whether another Region's key of this multi-Region key still has the shared material (AWS:
 *  deleting it from one key leaves the others' alone; the token object goes with the last). */
async function heldElsewhere(svc: Services, key: KeyRecord): Promise<boolean> {
  if (key.primaryRegion === undefined) return false;
  const others = (await svc.store.multiRegionKeys(key.keyId)).filter((k) => k.region !== key.region);
  return others.some((k) => k.keyState === 'Enabled' || k.keyState === 'Disabled');
}

// ---- helpers --------------------------------------------------------------------------------

function materialIdFor(keyId: string, checkValue: string): string {
  return createHash('sha256').update(`p11kms:key-material-id:${keyId}:${checkValue}`).digest('hex');
}

function custodyMark(custody: MaterialCustody): string | null {
  return custody === 'token-unwrap' ? null : custody;
}

function custodyRefused(algorithm: string): KmsError {
  return unsupported(
    `${algorithm} needs CKM_RSA_PKCS_OAEP with SHA-256, which this HSM does not provide; with P11KMS_STRICT_KEY_CUSTODY=true the service will not remove the padding outside the HSM. Use RSAES_OAEP_SHA_1 or RSA_AES_KEY_WRAP_SHA_1.`,
  );
}

const invalidImportToken = () => new KmsError('InvalidImportTokenException', 'The import token is not valid for the specified KMS key.');
const expiredImportToken = () => new KmsError('ExpiredImportTokenException', 'The import token has expired. Call GetParametersForImport for a new one.');
