/**
 * The seed file (P11KMS_SEED_FILE, JSON): keys with fixed key IDs and everything around them,
 * so CI gets the same keys, aliases and — with imported material — the same ciphertexts on every
 * run. Applying a seed is idempotent, and it never changes a key that exists already or moves an
 * alias that names another key unless that entry says so (`update: true`, `repoint: true`).
 *
 *   { "keys": [ { "keyId": "1234abcd-…", "description": "ci key", "aliases": ["alias/ci", { "name": "alias/app", "repoint": true }],
 *                 "tags": { "env": "ci" }, "rotation": { "enabled": true, "periodInDays": 90 },
 *                 "origin": "EXTERNAL", "keyMaterial": { "plainHex": "<64 hex>" } } ] }
 *
 * keyMaterial may instead be { "wrappedHex": "<AES-KWP of the material>", "wrappingKeyHex":
 * "<256-bit transport key>" }. For RSA and ECC keys (keySpec and keyUsage given) the material is
 * the private key in PKCS#8 DER, as ImportKeyMaterial takes it.
 */
import { z } from 'zod';

const uuid = z.string().regex(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/, 'must be a lower-case UUID key ID');
const hex = z.string().regex(/^([0-9a-fA-F]{2})+$/, 'must be hex');
const aliasName = z.string().regex(/^alias\/[a-zA-Z0-9:/_-]+$/, 'must be alias/<name>').refine((n) => !n.startsWith('alias/aws/'), 'alias/aws/ is reserved');

const seedKey = z
  .object({
    keyId: uuid,
    description: z.string().max(8192).default(''),
    keySpec: z.string().default('SYMMETRIC_DEFAULT'),
    keyUsage: z.string().optional(),
    origin: z.enum(['AWS_KMS', 'EXTERNAL']).default('AWS_KMS'),
    enabled: z.boolean().default(true),
    /** May the seed change this key when it exists already (description, policy, tags,
     *  rotation, enabled state, material)? Absent: an existing key is left as it is. */
    update: z.boolean().default(false),
    /** A name, or { name, repoint: true } to move an alias that names another key to this one. */
    aliases: z
      .array(z.union([aliasName.transform((name) => ({ name, repoint: false })), z.object({ name: aliasName, repoint: z.boolean().default(false) }).strict()]))
      .max(50)
      .default([]),
    tags: z.record(z.string().min(1).max(128), z.string().max(256)).default({}),
    /** A policy document (object or JSON text); absent: the default key policy. */
    policy: z.union([z.string().min(1), z.record(z.string(), z.unknown())]).optional(),
    rotation: z
      .object({ enabled: z.boolean(), periodInDays: z.number().int().min(90).max(2560).default(365) })
      .strict()
      .optional(),
    /** EXTERNAL keys: the material, imported through the token's C_UnwrapKey path. Either plain,
     *  or wrapped with AES-KWP (RFC 5649, openssl id-aes256-wrap-pad) under a transport key: then
     *  the material itself is never unwrapped outside the token. */
    keyMaterial: z
      .union([
        z.object({ plainHex: hex }).strict(),
        z.object({ wrappedHex: hex, wrappingKeyHex: z.string().regex(/^[0-9a-fA-F]{64}$/, 'must be a 256-bit AES key in hex') }).strict(),
      ])
      .optional(),
  })
  .strict()
  .refine((k) => k.keyMaterial === undefined || k.origin === 'EXTERNAL', { message: 'keyMaterial needs origin EXTERNAL', path: ['keyMaterial'] })
  .refine((k) => k.rotation?.enabled !== true || k.origin === 'AWS_KMS', { message: 'automatic rotation needs origin AWS_KMS', path: ['rotation'] });

export const seedFileSchema = z
  .object({ keys: z.array(seedKey).default([]) })
  .strict()
  .refine((s) => new Set(s.keys.map((k) => k.keyId)).size === s.keys.length, { message: 'key IDs must be unique', path: ['keys'] })
  .refine((s) => new Set(s.keys.flatMap((k) => k.aliases.map((a) => a.name))).size === s.keys.flatMap((k) => k.aliases).length, {
    message: 'an alias can name one key only',
    path: ['keys'],
  });

export type SeedFile = z.infer<typeof seedFileSchema>;
export type SeedKey = SeedFile['keys'][number];
