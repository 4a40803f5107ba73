/**
 * Symmetric encryption under a KMS key: AES-256-GCM inside the token with the key's current
 * backing version, a fresh IV from the token's RNG, and the blob header plus the canonical
 * encryption context as AAD (see ciphertext.ts).
 */
import { accessDenied, invalidCiphertext } from './errors.js';
import { type BackingKeyRef, HsmError } from '../hsm/types.js';
import type { KeyRecord } from '../store/types.js';
import { IV_LENGTH, additionalData, assembleBlob, encodeHeader, parseBlob } from './ciphertext.js';
import type { Services } from './context.js';
import { isPastDeletionDate } from './lifecycle/deletion.js';
import { requireUsableMaterial } from './lifecycle/expiry.js';

/** IVs are drawn from the token's RNG in blocks (one C_GenerateRandom per IV_BLOCK / 12 IVs
 *  instead of one per Encrypt); every IV is handed out once. Per Hsm: tests run several. */
const IV_BLOCK = 12 * 341;
const ivPools = new WeakMap<object, { block: Buffer; used: number }>();

async function nextIv(svc: Services): Promise<Buffer> {
  let pool = ivPools.get(svc.hsm);
  if (pool === undefined || pool.used + IV_LENGTH > pool.block.length) {
    // Requests that find the block spent at once each draw a block of their own; the last one
    // drawn stays, the rest of the others is dropped: every IV is still handed out once.
    pool = { block: await svc.hsm.generateRandomAsync(IV_BLOCK), used: 0 };
    ivPools.set(svc.hsm, pool);
  }
  const iv = pool.block.subarray(pool.used, pool.used + IV_LENGTH);
  pool.used += IV_LENGTH;
  return iv;
}

export async function sealSymmetric(svc: Services, key: KeyRecord, plaintext: Uint8Array, context: Record<string, string> | undefined): Promise<Buffer> {
  await requireUsableMaterial(svc, key);
  const ref = { keyId: key.keyId, version: key.currentVersion };
  const header = encodeHeader(ref);
  const { iv, sealed } = await sealUnderVersion(svc, ref, additionalData(header, context), plaintext);
  return assembleBlob(header, iv, sealed);
}

/** AES-256-GCM under one backing version with a fresh IV, counted towards the version's GCM
 *  wear-out: the one place where both front doors (KMS API, XKS) seal. Returns IV and
 *  ciphertext‖tag. */
export async function sealUnderVersion(svc: Services, ref: BackingKeyRef, aad: Uint8Array, plaintext: Uint8Array): Promise<{ iv: Buffer; sealed: Buffer }> {
  const iv = await nextIv(svc);
  const sealed = await svc.hsm.encryptAesGcm(ref, iv, aad, plaintext);
  svc.gcmWear?.meter.note(ref.keyId, ref.version);
  return { iv, sealed };
}

/** Which key a blob was sealed under. A blob naming no key we hold is refused without saying
 *  whether the key exists (AWS's wording: no key-existence oracle). */
export async function keyOfBlob(svc: Services, blob: Buffer): Promise<{ key: KeyRecord; parsed: ReturnType<typeof parseBlob> }> {
  const parsed = parseBlob(blob);
  const key = await svc.store.getKey(parsed.keyId);
  if (!key || isPastDeletionDate(key, svc.now())) {
    throw accessDenied('The ciphertext refers to a customer master key that does not exist, does not exist in this region, or you are not allowed to access.');
  }
  return { key, parsed };
}

export async function unsealSymmetric(
  svc: Services,
  key: KeyRecord,
  parsed: ReturnType<typeof parseBlob>,
  context: Record<string, string> | undefined,
): Promise<{ plaintext: Buffer; version: number }> {
  await requireUsableMaterial(svc, key);
  // Only versions the key has had can have sealed anything.
  if (parsed.version < 1 || parsed.version > key.currentVersion) throw invalidCiphertext();
  try {
    const plaintext = await svc.hsm.decryptAesGcm(parsed, parsed.iv, additionalData(parsed.header, context), parsed.sealed);
    return { plaintext, version: parsed.version };
  } catch (e) {
    if (e instanceof HsmError && (e.kind === 'invalid-ciphertext' || e.kind === 'key-not-found')) throw invalidCiphertext();
    throw e;
  }
}
