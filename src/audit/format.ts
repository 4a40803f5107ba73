/**
 * The on-disk format of the audit trail, shared by the writer (trail.ts) and the readers
 * (verify.ts, query.ts, the usage report).
 *
 *   <data dir>/audit/<chainId>_<part>.jsonl        records, one JSON object per line
 *   <data dir>/audit/digests/<chainId>_<seq>.json  signed digests (CloudTrail digest-file style)
 *   <data dir>/audit/digests/public-key-<fp>.pem   public halves of the token's signing keys
 *
 * Every service process writes its own chain (chainId = start time, pid, random suffix), so
 * several processes on one data dir never interleave. Each record line is the CloudTrail record
 * with one extra last member, `p11kmsChain: {chainId, seq, prev}`: seq counts from 1 within the
 * chain and prev is the lower-case hex SHA-256 of the previous line's bytes (64 zeros for the
 * first). A digest vouches for records [firstSequence, lastSequence] through lastRecordHash and is
 * itself linked to the previous digest (hash of its file and its signature), so altering,
 * removing, reordering or truncating records, or replacing a digest, all break something signed.
 */
import { sha256Hex } from '../sha256.js';

export const AUDIT_DIR = 'audit';
export const DIGEST_DIR = 'digests';
export const GENESIS_HASH = '0'.repeat(64);
export const CHAIN_MEMBER = 'p11kmsChain';
export const DIGEST_SIGNATURE_ALGORITHM = 'SHA256withECDSA';

export interface ChainLink {
  chainId: string;
  seq: number;
  prev: string;
}

export { sha256Hex };

const RECORD_FILE = /^(.+)_(\d{5})\.jsonl$/;
const DIGEST_FILE = /^(.+)_(\d{6})\.json$/;

export const recordFileName = (chainId: string, part: number) => `${chainId}_${String(part).padStart(5, '0')}.jsonl`;
export const digestFileName = (chainId: string, seq: number) => `${chainId}_${String(seq).padStart(6, '0')}.json`;
export const publicKeyFileName = (fingerprint: string) => `public-key-${fingerprint}.pem`;

export function parseRecordFileName(name: string): { chainId: string; part: number } | undefined {
  const m = RECORD_FILE.exec(name);
  return m ? { chainId: m[1]!, part: Number(m[2]) } : undefined;
}

export function parseDigestFileName(name: string): { chainId: string; seq: number } | undefined {
  const m = DIGEST_FILE.exec(name);
  return m ? { chainId: m[1]!, seq: Number(m[2]) } : undefined;
}

/** A chain ID that sorts by start time: 20261122T074512Z-p12345-a1b2c3. */
export function newChainId(now: Date, pid: number, random: string): string {
  const stamp = now.toISOString().replace(/[-:]/g, '').slice(0, 15) + 'Z';
  return `${stamp}-p${pid}-${random}`;
}

/** The digest file's content (everything but the signature), in this member order. */
export interface DigestBody {
  digestVersion: 1;
  awsAccountId: string;
  chainId: string;
  digestSequence: number;
  digestStartTime: string;
  digestEndTime: string;
  firstSequence: number;
  lastSequence: number;
  recordCount: number;
  lastRecordHash: string;
  oldestEventTime: string | null;
  newestEventTime: string | null;
  logFiles: { file: string; firstSequence: number; lastSequence: number }[];
  /** True on the digest written at a clean shutdown: no record may follow it. */
  final: boolean;
  previousDigestFile: string | null;
  previousDigestHashValue: string | null;
  previousDigestSignature: string | null;
  digestPublicKeyFingerprint: string | null;
  digestSignatureAlgorithm: string | null;
  /** On a chain's first digest: the newest digest of every other chain present when this process
   *  started (file name and SHA-256 of its bytes), so removing or replacing an earlier chain's
   *  last digest, or a whole earlier chain, is detected too. */
  knownChains?: { chainId: string; digestFile: string; digestHashValue: string }[];
}

/** What an anchor outside the audit directory remembers of a chain's newest digest (the chain
 *  registry in the metadata store, the token's head object, the operator's digest copy). */
export interface DigestAnchor {
  chainId: string;
  /** 0: the chain is known, before its first digest (registry and token only). */
  digestSequence: number;
  /** Lower-case hex SHA-256 of the digest file's bytes ('' before the first digest). */
  digestHash: string;
  /** The digest's lastSequence. */
  recordCount: number;
  final: boolean;
}

export interface DigestFile extends DigestBody {
  /** Hex IEEE-P1363 ECDSA signature over sha256(stringToSign(...)); null when unsigned. */
  digestSignature: string | null;
}

/** What is signed, after CloudTrail's digest signing string: end time, digest name, hash of the
 *  digest body, previous signature. */
export function stringToSign(body: DigestBody): string {
  return [body.digestEndTime, `${body.chainId}/${body.digestSequence}`, sha256Hex(JSON.stringify(body)), body.previousDigestSignature ?? 'null'].join('\n');
}

/** Splits a digest file back into body and signature (member order is preserved by JSON.parse). */
export function splitDigest(file: DigestFile): { body: DigestBody; signature: string | null } {
  const { digestSignature, ...body } = file;
  return { body: body as DigestBody, signature: digestSignature };
}
