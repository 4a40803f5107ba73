/**
 * Applies a seed file at start: creates what is missing, so the second application changes
 * nothing. A key that exists already is changed only when its entry says `"update": true`, and an
 * alias naming another key is moved only with `"repoint": true`; what the seed would otherwise
 * change is skipped with a warning. planSeed computes the changes from the store alone (the dry
 * run, `p11kms seed --check`, prints them); applySeedFile runs them, logging each by name and
 * recording each in the audit trail as an AwsServiceEvent. Imported material enters the token the same way as through
 * the API: wrapped here under a fresh wrapping public key, then unwrapped by C_UnwrapKey in the
 * token. Plain hex exists only in the seed file and this process's memory; wrapped hex is
 * unwrapped by the token only (this process sees just the transport key).
 */
import { constants, createCipheriv, createPublicKey, publicEncrypt, randomBytes } from 'node:crypto';
import { readStructuredFile } from '../../structured-file.js';
import type { Logger } from '../../log.js';
import type { KeyRecord } from '../../store/types.js';
import { keyArn } from '../arn.js';
import type { Services } from '../context.js';
import { checkKeySpecAndUsage, generateBackingKey } from '../key-generation.js';
import { createImportParameters, importKeyMaterial, markAwaitingImport, requireImportableSpec } from '../lifecycle/key-import.js';
import { DAY_MS, newKeyMaterialId } from '../lifecycle/materials.js';
import { defaultKeyPolicy } from '../policy-defaults.js';
import { type SeedFile, type SeedKey, seedFileSchema } from './schema.js';

export class SeedError extends Error {}

/** One change a seed makes, named as the API operation it amounts to (also the audit eventName). */
export interface SeedChange {
  action: string;
  keyId: string;
  /** What it changes, by name (alias names, tag keys, fields); never material or policy text. */
  detail: string;
  aliasName?: string;
  run(svc: Services): Promise<void>;
}

/** A difference the seed leaves alone because its entry does not allow the change. */
export interface SeedSkip {
  keyId: string;
  detail: string;
}

export interface SeedPlan {
  file: string;
  keys: number;
  changes: SeedChange[];
  skipped: SeedSkip[];
}

type PlanContext = Pick<Services, 'store' | 'account' | 'now'>;

/** Reads and validates a seed file (JSON, or YAML when named *.yaml/*.yml). */
export function readSeedFile(file: string): SeedFile {
  let raw: unknown;
  try {
    raw = readStructuredFile(file);
  } catch (err) {
    throw new SeedError(`seed file ${file}: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}`);
  }
  const parsed = seedFileSchema.safeParse(raw);
  if (!parsed.success) {
    // Paths and messages only: never echo values (the file may hold key material).
    const problems = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
    throw new SeedError(`seed file ${file} is invalid:\n  ${problems.join('\n  ')}`);
  }
  return parsed.data;
}

export async function applySeedFile(svc: Services, file: string, log: Logger): Promise<SeedPlan> {
  const plan = await planSeed(svc, readSeedFile(file), file);
  for (const skip of plan.skipped) log.warn({ seedFile: file, keyId: skip.keyId }, `seed: skipped ${skip.detail}`);
  for (const change of plan.changes) {
    await change.run(svc);
    log.info({ seedFile: file, action: change.action, keyId: change.keyId }, `seed: ${change.action} ${change.detail}`);
    const arn = keyArn(svc.account, change.keyId);
    await svc.audit?.recordServiceEvent({
      eventName: change.action,
      keyArns: [arn],
      requestParameters: { KeyId: arn, ...(change.aliasName && { AliasName: change.aliasName }) },
      additionalEventData: { seedFile: file, seedChange: change.detail },
    });
  }
  log.info({ seedFile: file, keys: plan.keys, changes: plan.changes.length, skipped: plan.skipped.length }, 'seed file applied');
  return plan;
}

/** What applying `seed` would change now, read from the store only (the token is not needed). */
export async function planSeed(ctx: PlanContext, seed: SeedFile, file: string): Promise<SeedPlan> {
  const plan: SeedPlan = { file, keys: seed.keys.length, changes: [], skipped: [] };
  for (const entry of seed.keys) await planKey(ctx, entry, plan);
  return plan;
}

async function planKey(ctx: PlanContext, seed: SeedKey, plan: SeedPlan): Promise<void> {
  const keyId = seed.keyId;
  const policy = seed.policy === undefined ? defaultKeyPolicy(ctx.account.partition, ctx.account.accountId) : typeof seed.policy === 'string' ? seed.policy : JSON.stringify(seed.policy);
  const add = (action: string, detail: string, run: SeedChange['run'], aliasName?: string) => plan.changes.push({ action, keyId, detail, run, aliasName });
  const key = await ctx.store.getKey(keyId);
  // Changes to a key that exists already need the entry's consent.
  const propose = (action: string, detail: string, run: SeedChange['run']) => {
    if (key === undefined || seed.update) add(action, detail, run);
    else plan.skipped.push({ keyId, detail: `${action} ${detail}: the key exists (set "update": true in its entry to apply)` });
  };
  if (key === undefined) {
    add('CreateKey', `key ${keyId} (${seed.keySpec}, ${seed.origin})`, async (svc) => {
      await createSeedKey(svc, seed, policy);
    });
  } else if (key.keyManager === 'AWS') {
    // As through the API: nothing about an AWS managed key can be changed.
    throw new SeedError(`seed key ${keyId}: the existing key is an AWS managed key, which a seed cannot manage`);
  } else if (key.keySpec !== seed.keySpec || key.origin !== seed.origin) {
    throw new SeedError(`seed key ${keyId}: the existing key is ${key.keySpec}/${key.origin}, the seed says ${seed.keySpec}/${seed.origin}`);
  } else {
    if (key.description !== seed.description) propose('UpdateKeyDescription', `description of key ${keyId}`, (svc) => svc.store.updateKey(keyId, { description: seed.description }).then(() => undefined));
    if (key.policy !== policy) propose('PutKeyPolicy', `key policy of key ${keyId}`, (svc) => svc.store.updateKey(keyId, { policy }).then(() => undefined));
  }

  const current = new Map(key ? (await ctx.store.listTags(keyId)).map((t) => [t.TagKey, t.TagValue]) : []);
  const missing = Object.entries(seed.tags).filter(([k, v]) => current.get(k) !== v).map(([TagKey, TagValue]) => ({ TagKey, TagValue }));
  const extra = [...current.keys()].filter((k) => !(k in seed.tags));
  if (missing.length > 0) propose('TagResource', `tags ${missing.map((t) => t.TagKey).join(', ')} of key ${keyId}`, (svc) => svc.store.putTags(keyId, missing));
  if (extra.length > 0) propose('UntagResource', `tags ${extra.join(', ')} of key ${keyId}`, (svc) => svc.store.removeTags(keyId, extra));

  for (const { name, repoint } of seed.aliases) {
    const alias = await ctx.store.getAlias(ctx.account.region, name);
    if (!alias) {
      add('CreateAlias', `${name} -> key ${keyId}`, (svc) => svc.store.createAlias({ region: svc.account.region, aliasName: name, targetKeyId: keyId, createdAt: svc.now(), lastUpdatedAt: svc.now() }), name);
    } else if (alias.targetKeyId !== keyId) {
      if (repoint) add('UpdateAlias', `${name} from key ${alias.targetKeyId} to key ${keyId}`, (svc) => svc.store.updateAlias(svc.account.region, name, keyId, svc.now()).then(() => undefined), name);
      else plan.skipped.push({ keyId, detail: `${name}: it names key ${alias.targetKeyId} (set "repoint": true on the alias to move it to ${keyId})` });
    }
  }

  if (seed.rotation !== undefined) {
    const schedule = key ? await ctx.store.lifecycle.rotationSchedule(keyId, ctx.now()) : undefined;
    const period = seed.rotation.enabled ? seed.rotation.periodInDays : null;
    if ((schedule?.periodInDays ?? null) !== period) {
      const action = period === null ? 'DisableKeyRotation' : 'EnableKeyRotation';
      propose(action, `key ${keyId}${period === null ? '' : ` every ${period} days`}`, async (svc) => {
        const next = period === null ? null : new Date(svc.now().getTime() + period * DAY_MS);
        await svc.store.lifecycle.setRotationSchedule(keyId, period, next);
      });
    }
  }

  let importing = false;
  if (seed.keyMaterial) {
    const material = seed.keyMaterial;
    const materials = key ? await ctx.store.lifecycle.listMaterials(keyId) : [];
    const imported = materials.find((m) => m.version === key?.currentVersion)?.importState === 'IMPORTED';
    if (!imported) {
      importing = true;
      const detail = `material of key ${keyId}`;
      const run = (svc: Services) => applyMaterial(svc, keyId, material);
      // Completing a key still waiting for its material (e.g. a seeding interrupted) changes
      // nothing anyone could use yet.
      if (key?.keyState === 'PendingImport') add('ImportKeyMaterial', detail, run);
      else propose('ImportKeyMaterial', detail, run);
    }
  }

  // A new or re-imported key ends up Enabled; a key still waiting for material has no such state.
  const state = key === undefined || importing ? (seed.origin === 'AWS_KMS' || importing ? 'Enabled' : undefined) : key.keyState;
  const wanted = seed.enabled ? 'Enabled' : 'Disabled';
  if ((state === 'Enabled' || state === 'Disabled') && state !== wanted) {
    propose(seed.enabled ? 'EnableKey' : 'DisableKey', `key ${keyId}`, (svc) => svc.store.updateKey(keyId, { keyState: wanted }).then(() => undefined));
  }
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

/** Imports the material into the key's current version (planned when the token lacks it). */
async function applyMaterial(svc: Services, keyId: string, seeded: NonNullable<SeedKey['keyMaterial']>): Promise<void> {
  const fresh = (await svc.store.getKey(keyId))!;
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
