/**
 * Applies a seed file at start: creates what is missing and brings what differs in line, so the
 * second application changes nothing. Imported material enters the token the same way as through
 * the API: wrapped here under a fresh wrapping public key, then unwrapped by C_UnwrapKey in the
 * token. Plain hex exists only in the seed file and this process's memory; wrapped hex is
 * unwrapped by the token only (this process sees just the transport key).
 */
import { constants, createCipheriv, createPublicKey, publicEncrypt, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { parse as parseYaml } from 'yaml';
import type { Logger } from '../../log.js';
import type { KeyRecord } from '../../store/types.js';
import type { Services } from '../context.js';
import { checkKeySpecAndUsage, generateBackingKey } from '../key-generation.js';
import { createImportParameters, importKeyMaterial, markAwaitingImport, requireImportableSpec } from '../lifecycle/key-import.js';
import { DAY_MS, newKeyMaterialId } from '../lifecycle/materials.js';
import { defaultKeyPolicy } from '../policy-defaults.js';
import { type SeedKey, seedFileSchema } from './schema.js';

export class SeedError extends Error {}

export async function applySeedFile(svc: Services, file: string, log: Logger): Promise<void> {
  let raw: unknown;
  try {
    const text = fs.readFileSync(file, 'utf8');
    raw = /\.ya?ml$/i.test(file) ? parseYaml(text) : JSON.parse(text);
  } catch (err) {
    throw new SeedError(`seed file ${file}: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}`);
  }
  const parsed = seedFileSchema.safeParse(raw);
  if (!parsed.success) {
    // Paths and messages only: never echo values (the file may hold key material).
    const problems = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
    throw new SeedError(`seed file ${file} is invalid:\n  ${problems.join('\n  ')}`);
  }
  let changes = 0;
  for (const seed of parsed.data.keys) changes += await applySeedKey(svc, seed);
  log.info({ file, keys: parsed.data.keys.length, changes }, 'seed file applied');
}

/** Returns how many things it changed. */
async function applySeedKey(svc: Services, seed: SeedKey): Promise<number> {
  const policy = seed.policy === undefined ? defaultKeyPolicy(svc.account.partition, svc.account.accountId) : typeof seed.policy === 'string' ? seed.policy : JSON.stringify(seed.policy);
  let key = await svc.store.getKey(seed.keyId);
  let changes = 0;
  if (!key) {
    key = await createSeedKey(svc, seed, policy);
    changes++;
  } else if (key.keySpec !== seed.keySpec || key.origin !== seed.origin) {
    throw new SeedError(`seed key ${seed.keyId}: the existing key is ${key.keySpec}/${key.origin}, the seed says ${seed.keySpec}/${seed.origin}`);
  }
  if (key.description !== seed.description || key.policy !== policy) {
    await svc.store.updateKey(key.keyId, { description: seed.description, policy });
    changes++;
  }
  changes += await applyTags(svc, key, seed);
  changes += await applyAliases(svc, key, seed);
  changes += await applyRotation(svc, key, seed);
  if (seed.keyMaterial) changes += await applyMaterial(svc, key, seed.keyMaterial);
  changes += await applyEnabled(svc, key.keyId, seed.enabled);
  return changes;
}

async function createSeedKey(svc: Services, seed: SeedKey, policy: string): Promise<KeyRecord> {
  const keyUsage = checkKeySpecAndUsage(svc, seed.keySpec, seed.keyUsage);
  if (seed.origin === 'EXTERNAL') requireImportableSpec(seed.keySpec, keyUsage);
  const now = svc.now();
  const key: KeyRecord = {
    keyId: seed.keyId,
    accountId: svc.account.accountId,
    region: svc.account.region,
    createdAt: now,
    description: seed.description,
    keyState: seed.origin === 'EXTERNAL' ? 'PendingImport' : 'Enabled',
    keySpec: seed.keySpec,
    keyUsage,
    origin: seed.origin,
    policy,
    currentVersion: 1,
    deletionDate: null,
    pendingWindowInDays: null,
  };
  const ref = { keyId: key.keyId, version: 1 };
  if (seed.origin === 'AWS_KMS') {
    await svc.hsm.destroyKey(ref); // a leftover of a seeding that crashed before its row was written
    await generateBackingKey(svc, ref, seed.keySpec, keyUsage);
  }
  await svc.store.createKey(key, { keyId: key.keyId, version: 1, createdAt: now, keyMaterialId: newKeyMaterialId() }, []);
  if (seed.origin === 'EXTERNAL') await markAwaitingImport(svc, key.keyId);
  return key;
}

async function applyTags(svc: Services, key: KeyRecord, seed: SeedKey): Promise<number> {
  const current = new Map((await svc.store.listTags(key.keyId)).map((t) => [t.TagKey, t.TagValue]));
  const wanted = Object.entries(seed.tags);
  const missing = wanted.filter(([k, v]) => current.get(k) !== v).map(([TagKey, TagValue]) => ({ TagKey, TagValue }));
  const extra = [...current.keys()].filter((k) => !(k in seed.tags));
  if (missing.length > 0) await svc.store.putTags(key.keyId, missing);
  if (extra.length > 0) await svc.store.removeTags(key.keyId, extra);
  return missing.length + extra.length;
}

async function applyAliases(svc: Services, key: KeyRecord, seed: SeedKey): Promise<number> {
  let changes = 0;
  const now = svc.now();
  for (const aliasName of seed.aliases) {
    const alias = await svc.store.getAlias(aliasName);
    if (!alias) {
      await svc.store.createAlias({ aliasName, targetKeyId: key.keyId, createdAt: now, lastUpdatedAt: now });
      changes++;
    } else if (alias.targetKeyId !== key.keyId) {
      await svc.store.updateAlias(aliasName, key.keyId, now);
      changes++;
    }
  }
  return changes;
}

async function applyRotation(svc: Services, key: KeyRecord, seed: SeedKey): Promise<number> {
  if (seed.rotation === undefined) return 0;
  const schedule = await svc.store.lifecycle.rotationSchedule(key.keyId, svc.now());
  const period = seed.rotation.enabled ? seed.rotation.periodInDays : null;
  if ((schedule?.periodInDays ?? null) === period) return 0;
  const next = period === null ? null : new Date(svc.now().getTime() + period * DAY_MS);
  await svc.store.lifecycle.setRotationSchedule(key.keyId, period, next);
  return 1;
}

/** Imports the material when the token does not hold it (first start, or after deletion). */
async function applyMaterial(svc: Services, key: KeyRecord, seeded: NonNullable<SeedKey['keyMaterial']>): Promise<number> {
  const materials = await svc.store.lifecycle.listMaterials(key.keyId);
  const current = materials.find((m) => m.version === key.currentVersion);
  if (current?.importState === 'IMPORTED') return 0;
  const fresh = (await svc.store.getKey(key.keyId))!;
  // A plain private key (PKCS#8) is too long for RSA-OAEP alone: wrap it here under a one-off
  // transport key, the RSA_AES_KEY_WRAP layout below. It is in the seed file in the clear anyway.
  const secretKey = fresh.keySpec === 'SYMMETRIC_DEFAULT' || fresh.keySpec.startsWith('HMAC_');
  const given = 'plainHex' in seeded && !secretKey ? wrapUnderTransportKey(Buffer.from(seeded.plainHex, 'hex')) : seeded;
  const algorithm = 'plainHex' in given ? 'RSAES_OAEP_SHA_1' : 'RSA_AES_KEY_WRAP_SHA_1';
  const parameters = await createImportParameters(svc, fresh, algorithm, 'RSA_2048');
  // Plain: OAEP(material). Wrapped: OAEP(transport key) ‖ AES-KWP(material), RSA_AES_KEY_WRAP's
  // layout, so the token unwraps the material with the transport key itself.
  const secret = Buffer.from('plainHex' in given ? given.plainHex : given.wrappingKeyHex, 'hex');
  let wrapped: Buffer;
  try {
    const publicKey = createPublicKey({ key: parameters.publicKey, format: 'der', type: 'spki' });
    wrapped = publicEncrypt({ key: publicKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha1' }, secret);
  } finally {
    secret.fill(0);
  }
  if ('wrappedHex' in given) wrapped = Buffer.concat([wrapped, Buffer.from(given.wrappedHex, 'hex')]);
  await importKeyMaterial(svc, fresh, {
    importToken: parameters.importToken,
    encryptedKeyMaterial: wrapped,
    expirationModel: 'KEY_MATERIAL_DOES_NOT_EXPIRE',
  });
  return 1;
}

/** AES-KWP (RFC 5649) of `material` under a fresh transport key; wipes both buffers it made. */
function wrapUnderTransportKey(material: Buffer): { wrappedHex: string; wrappingKeyHex: string } {
  const transportKey = randomBytes(32);
  try {
    const kwp = createCipheriv('id-aes256-wrap-pad', transportKey, Buffer.from('A65959A6', 'hex'));
    const wrappedHex = Buffer.concat([kwp.update(material), kwp.final()]).toString('hex');
    return { wrappedHex, wrappingKeyHex: transportKey.toString('hex') };
  } finally {
    material.fill(0);
    transportKey.fill(0);
  }
}

async function applyEnabled(svc: Services, keyId: string, enabled: boolean): Promise<number> {
  const key = (await svc.store.getKey(keyId))!;
  if (key.keyState !== 'Enabled' && key.keyState !== 'Disabled') return 0;
  const wanted = enabled ? 'Enabled' : 'Disabled';
  if (key.keyState === wanted) return 0;
  await svc.store.updateKey(keyId, { keyState: wanted });
  return 1;
}
