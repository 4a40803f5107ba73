/**
 * P11KMS_PEERS_FILE: the peer deployments (other sites, other HSMs) that multi-Region keys of
 * this deployment replicate to and from (README, "Across sites"). JSON, or YAML for a .yaml/.yml
 * name:
 *
 *   peers:
 *     - region: eu-central-1                       # a Region the peer serves, not this deployment
 *       endpoint: https://kms-b.example.net:4000   # the peer's front door
 *       accessKeyId: P11KMSPEERAB0000001           # the credential pair both sites share; each
 *       secretAccessKeyFile: /etc/p11kms/peer-b    #   signs its calls to the other with it
 *       fingerprint: 3f1c…(64 hex)                 # SHA-256 of the peer's replication key, as
 *                                                  #   `p11kms sites export` printed it there
 *
 * (`secretAccessKey` inline instead of the file is accepted too.) Secrets stay in this module's
 * objects; nothing here logs them.
 */
import fs from 'node:fs';
import path from 'node:path';
import { readStructuredFile } from '../structured-file.js';
import { z } from 'zod';

const peerSchema = z
  .object({
    region: z.string().regex(/^([a-z]+-){2,3}\d+$/, 'must look like an AWS region, e.g. eu-central-1'),
    endpoint: z.url({ protocol: /^https?$/ }),
    accessKeyId: z.string().regex(/^[A-Z0-9]{16,128}$/, 'must be 16-128 upper-case letters and digits'),
    secretAccessKey: z.string().min(16).optional(),
    secretAccessKeyFile: z.string().min(1).optional(),
    fingerprint: z
      .string()
      .transform((f) => f.toLowerCase().replace(/[:\s]/g, ''))
      .pipe(z.string().regex(/^[0-9a-f]{64}$/, 'must be the 64 hex digits of a SHA-256')),
  })
  .strict()
  .refine((p) => (p.secretAccessKey === undefined) !== (p.secretAccessKeyFile === undefined), 'give exactly one of secretAccessKey and secretAccessKeyFile');

const peersFileSchema = z.object({ peers: z.array(peerSchema).max(64) }).strict();

export interface Peer {
  region: string;
  /** Without a trailing slash. */
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
  fingerprint: string;
}

export class PeersConfigError extends Error {}

export class Peers {
  private readonly regions = new Map<string, Peer>();
  private readonly keys = new Map<string, Peer>();

  constructor(peers: Peer[]) {
    for (const p of peers) {
      this.regions.set(p.region, p);
      this.keys.set(p.accessKeyId, p);
    }
  }

  /** The peer serving `region`, if any. */
  ofRegion(region: string): Peer | undefined {
    return this.regions.get(region);
  }

  /** The peer whose calls are signed with `accessKeyId`, if any. */
  ofAccessKey(accessKeyId: string): Peer | undefined {
    return this.keys.get(accessKeyId);
  }

  all(): Peer[] {
    return [...this.regions.values()];
  }
}

/** Reads and validates the peers file; `served` are this deployment's Regions (never a peer's). */
export function loadPeers(file: string, served: readonly string[]): Peers {
  let raw: unknown;
  try {
    raw = readStructuredFile(file);
  } catch (e) {
    throw new PeersConfigError(`P11KMS_PEERS_FILE ${file} cannot be read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  const parsed = peersFileSchema.safeParse(raw);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.join('.') || '(top level)'}: ${i.message}`).join('; ');
    throw new PeersConfigError(`P11KMS_PEERS_FILE ${file} is invalid: ${problems}`);
  }
  const peers: Peer[] = [];
  for (const [i, p] of parsed.data.peers.entries()) {
    const where = `P11KMS_PEERS_FILE ${file}: peers.${i}`;
    if (served.includes(p.region)) throw new PeersConfigError(`${where}: ${p.region} is served by this deployment (P11KMS_REGIONS), not by a peer`);
    if (peers.some((q) => q.region === p.region)) throw new PeersConfigError(`${where}: the Region ${p.region} is named twice`);
    if (peers.some((q) => q.accessKeyId === p.accessKeyId)) throw new PeersConfigError(`${where}: the access key id is used by another peer`);
    let secret = p.secretAccessKey;
    if (p.secretAccessKeyFile !== undefined) {
      const secretFile = path.resolve(path.dirname(file), p.secretAccessKeyFile);
      try {
        secret = fs.readFileSync(secretFile, 'utf8').replace(/\r?\n$/, '');
      } catch (e) {
        throw new PeersConfigError(`${where}: cannot read secretAccessKeyFile ${secretFile} (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
      }
      if (secret.length < 16) throw new PeersConfigError(`${where}: the secret in ${secretFile} is shorter than 16 characters`);
    }
    peers.push({ region: p.region, endpoint: p.endpoint.replace(/\/+$/, ''), accessKeyId: p.accessKeyId, secretAccessKey: secret!, fingerprint: p.fingerprint });
  }
  return new Peers(peers);
}
