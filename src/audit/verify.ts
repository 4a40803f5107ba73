/**
 * Offline verification of the audit trail under a data dir: every chain's records (hash links and
 * sequence numbers), every digest (signature with the public key stored beside the digests, link
 * to the previous digest, the record range it vouches for), and what may legitimately be missing
 * (a prefix removed by retention, vouched for by a digest; an unsigned tail after a crash).
 *
 * Then the anchors outside the audit directory, which survive the directory's deletion: every
 * chain the metadata store's registry names must be there up to the digest it recorded (same
 * bytes), and every chain in the trail must be registered; the token's head object and the
 * operator's digest copy name digests that must be there unchanged; and the digests must be
 * signed by the token's audit key (or, without the token, by the key the registry names).
 *
 * Findings name the first record that was altered, removed or reordered. Notes are not findings.
 */
import { createPublicKey, verify as verifySignature, type KeyObject } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { AuditChainHead } from '../store/audit-chains.js';
import {
  AUDIT_DIR,
  CHAIN_MEMBER,
  DIGEST_DIR,
  type DigestAnchor,
  type DigestFile,
  digestFileName,
  GENESIS_HASH,
  parseDigestFileName,
  parseRecordFileName,
  sha256Hex,
  splitDigest,
  stringToSign,
} from './format.js';

export interface VerifyOptions {
  /** Several nodes share the registry and the token (PostgreSQL): a chain they name that is not in
   *  this audit directory may be another node's, so it is a note, not a finding. Verify the whole
   *  deployment with every node's audit files collected in one directory, without this option. */
  otherNodesPossible?: boolean;
  /** Pin the signing key: only digests signed by this fingerprint are accepted. */
  expectedFingerprint?: string;
  /** With a retention period, a missing prefix must be older than this many days. */
  retentionDays?: number;
  now?: Date;
  /** What is known about the trail outside its directory; each one given is cross-checked. */
  anchors?: TrailAnchors;
}

export interface TrailAnchors {
  /** Every chain the metadata store's registry names. */
  registry?: AuditChainHead[];
  /** The token: its audit key's fingerprint (undefined when it holds none) and its chain heads. */
  token?: { fingerprint: string | undefined; heads: DigestAnchor[] };
  /** The operator's digest copy: where it was read and what it vouches for. */
  copy?: { source: string; anchors: DigestAnchor[]; problems: string[] };
}

export interface VerifyResult {
  ok: boolean;
  findings: string[];
  notes: string[];
  chains: number;
  records: number;
  digests: number;
  lastVerifiedEventId: string | undefined;
  lastVerifiedEventTime: string | undefined;
  fingerprints: string[];
}

interface Line {
  file: string;
  lineNo: number;
  raw: string;
  hash: string;
  seq: number | undefined;
  prev: string | undefined;
  eventId: string | undefined;
  eventTime: string | undefined;
  torn: boolean;
}

export function verifyAuditTrail(dataDir: string, options: VerifyOptions = {}): VerifyResult {
  const dir = path.join(dataDir, AUDIT_DIR);
  const digestDir = path.join(dir, DIGEST_DIR);
  const result: VerifyResult = { ok: true, findings: [], notes: [], chains: 0, records: 0, digests: 0, lastVerifiedEventId: undefined, lastVerifiedEventTime: undefined, fingerprints: [] };
  if (!fs.existsSync(dir)) result.notes.push(`no audit trail under ${dir}`);
  const recordFiles = new Map<string, { part: number; name: string }[]>();
  for (const name of fs.existsSync(dir) ? fs.readdirSync(dir) : []) {
    const parsed = parseRecordFileName(name);
    if (!parsed) continue;
    const list = recordFiles.get(parsed.chainId) ?? [];
    list.push({ part: parsed.part, name });
    recordFiles.set(parsed.chainId, list);
  }
  const digestFiles = new Map<string, { seq: number; name: string }[]>();
  const keys = new Map<string, KeyObject>();
  if (fs.existsSync(digestDir)) {
    for (const name of fs.readdirSync(digestDir)) {
      const parsed = parseDigestFileName(name);
      if (parsed) {
        const list = digestFiles.get(parsed.chainId) ?? [];
        list.push({ seq: parsed.seq, name });
        digestFiles.set(parsed.chainId, list);
        continue;
      }
      const key = /^public-key-([0-9a-f]{64})\.pem$/.exec(name);
      if (key) {
        try {
          const object = createPublicKey(fs.readFileSync(path.join(digestDir, name), 'utf8'));
          const der = object.export({ type: 'spki', format: 'der' });
          if (sha256Hex(der) !== key[1]) result.findings.push(`public key file ${name} does not match the fingerprint in its name`);
          else keys.set(key[1]!, object);
        } catch {
          result.findings.push(`public key file ${name} is not a readable public key`);
        }
      }
    }
  }
  const chainIds = [...new Set([...recordFiles.keys(), ...digestFiles.keys()])].sort();
  const used = new Set<string>();
  let lastVerified: Line | undefined;
  for (const chainId of chainIds) {
    result.chains++;
    const last = verifyChain(chainId, dir, digestDir, recordFiles.get(chainId) ?? [], digestFiles.get(chainId) ?? [], keys, used, options, result);
    if (last && (lastVerified === undefined || (last.eventTime ?? '') >= (lastVerified.eventTime ?? ''))) lastVerified = last;
  }
  // Cross-chain anchors: every chain's first digest names the newest digest of each chain that
  // existed when its process started; those files must still be there, unchanged.
  if (fs.existsSync(digestDir)) {
    for (const [chainId, list] of digestFiles) {
      const first = list.find((d) => d.seq === 1);
      if (!first) continue;
      let body: DigestFile;
      try {
        body = JSON.parse(fs.readFileSync(path.join(digestDir, first.name), 'utf8')) as DigestFile;
      } catch {
        continue; // reported with the chain
      }
      for (const anchor of body.knownChains ?? []) {
        const file = path.join(digestDir, anchor.digestFile);
        if (!fs.existsSync(file)) {
          result.findings.push(`chain ${anchor.chainId}: digest ${anchor.digestFile} is missing (chain ${chainId} vouches for it; a digest or a whole chain was removed)`);
        } else if (sha256Hex(fs.readFileSync(file)) !== anchor.digestHashValue) {
          result.findings.push(`chain ${anchor.chainId}: digest ${anchor.digestFile} was replaced or altered (chain ${chainId} vouches for its hash)`);
        }
      }
    }
  }
  result.fingerprints = [...used];
  if (options.anchors) checkAnchors(options.anchors, digestDir, chainIds, options, result);
  result.lastVerifiedEventId = lastVerified?.eventId;
  result.lastVerifiedEventTime = lastVerified?.eventTime;
  result.ok = result.findings.length === 0;
  return result;
}

/** The cross-checks with what lives outside the audit directory (see the file comment). */
function checkAnchors(anchors: TrailAnchors, digestDir: string, chainIds: string[], options: VerifyOptions, result: VerifyResult): void {
  const findings = result.findings;
  const present = new Set(chainIds);
  const otherNodes = new Set<string>();
  const requireDigest = (source: string, a: DigestAnchor) => {
    const name = digestFileName(a.chainId, a.digestSequence);
    const what = `digest ${name} (records 1-${a.recordCount}${a.final ? ', final' : ''})`;
    const file = path.join(digestDir, name);
    if (!fs.existsSync(file) && options.otherNodesPossible && !present.has(a.chainId)) {
      otherNodes.add(a.chainId);
    } else if (!fs.existsSync(file)) findings.push(`chain ${a.chainId}: ${source} names ${what}, which is missing from the trail (deleted)`);
    else if (sha256Hex(fs.readFileSync(file)) !== a.digestHash) findings.push(`chain ${a.chainId}: ${what} is not the one ${source} recorded (replaced or re-signed)`);
  };
  if (anchors.registry) {
    const registered = new Map(anchors.registry.map((c) => [c.chainId, c]));
    for (const chainId of chainIds) {
      if (!registered.has(chainId)) findings.push(`chain ${chainId} is not in the chain registry of the metadata store (added: no service on this store wrote it)`);
    }
    for (const head of anchors.registry) {
      if (head.digestSequence > 0 && head.digestHash !== null) {
        requireDigest('the chain registry', { chainId: head.chainId, digestSequence: head.digestSequence, digestHash: head.digestHash, recordCount: head.recordCount, final: head.final });
      } else if (!present.has(head.chainId)) {
        if (retentionAllows(head.openedAt.toISOString(), options)) result.notes.push(`chain ${head.chainId}: expired before its first digest (retention)`);
        else if (options.otherNodesPossible) otherNodes.add(head.chainId);
        else findings.push(`chain ${head.chainId} is in the chain registry (opened ${head.openedAt.toISOString()}) but none of its files remain (deleted)`);
      }
    }
  }
  if (anchors.token && anchors.token.heads.length > 0) {
    // The token names every chain since its head object exists (registered at open): one it does
    // not know was added, even with a registry row forged beside it.
    const known = new Set(anchors.token.heads.map((h) => h.chainId));
    for (const chainId of chainIds) if (!known.has(chainId)) findings.push(`chain ${chainId} is unknown to the token's head object (added: no service process registered it)`);
    for (const head of anchors.token.heads) {
      if (head.digestSequence > 0) requireDigest("the token's head object", head);
      else if (!present.has(head.chainId) && !anchors.registry?.some((c) => c.chainId === head.chainId)) {
        if (options.otherNodesPossible) otherNodes.add(head.chainId);
        else findings.push(`chain ${head.chainId} is in the token's head object but none of its files remain (deleted)`);
      }
    }
  }
  if (anchors.copy) {
    findings.push(...anchors.copy.problems);
    for (const a of anchors.copy.anchors) requireDigest(`the digest copy in ${anchors.copy.source}`, a);
  }
  // Which key may have signed: the token's, when it was reached; else the one the registry names.
  let pinned: string[] | undefined;
  let pinnedBy = '';
  if (anchors.token) {
    pinned = anchors.token.fingerprint ? [anchors.token.fingerprint] : [];
    pinnedBy = anchors.token.fingerprint ? `the token's audit key ${anchors.token.fingerprint}` : 'any key in the token (it holds no audit signing key)';
  } else if (anchors.registry) {
    const named = [...new Set(anchors.registry.map((c) => c.signingKeyFingerprint).filter((f): f is string => f !== null))];
    if (named.length > 0) {
      pinned = named;
      pinnedBy = `the key the chain registry names (${named.join(', ')})`;
    }
  }
  const foreign = pinned ? result.fingerprints.filter((f) => !pinned.includes(f)) : [];
  if (foreign.length > 0) findings.push(`digests are signed by key(s) ${foreign.join(', ')}, not by ${pinnedBy} (re-signed, public key file swapped)`);
  if (otherNodes.size > 0) {
    result.notes.push(
      `${otherNodes.size} chain(s) the shared registry or token names are not in this audit directory (other nodes' chains?): ` +
        `${[...otherNodes].slice(0, 5).join(', ')}${otherNodes.size > 5 ? ', …' : ''}; collect every node's audit files in one directory and verify it with --deployment to check them`,
    );
  }
}

function describe(line: Line): string {
  const id = line.eventId ? ` (eventID ${line.eventId})` : '';
  return `record ${line.seq ?? '?'}${id} at ${line.file}:${line.lineNo}`;
}

function readLines(dir: string, files: { part: number; name: string }[], findings: string[]): Line[] {
  const lines: Line[] = [];
  const sorted = [...files].sort((a, b) => a.part - b.part);
  for (let i = 0; i < sorted.length; i++) {
    const file = sorted[i]!;
    if (i > 0 && file.part !== sorted[i - 1]!.part + 1) findings.push(`audit file part ${sorted[i - 1]!.part + 1} of chain before ${file.name} is missing`);
    const text = fs.readFileSync(path.join(dir, file.name), 'utf8');
    const parts = text.split('\n');
    const complete = text.endsWith('\n');
    if (complete) parts.pop();
    parts.forEach((raw, idx) => {
      const torn = !complete && idx === parts.length - 1;
      if (raw.length === 0 && torn) return;
      let seq: number | undefined;
      let prev: string | undefined;
      let eventId: string | undefined;
      let eventTime: string | undefined;
      try {
        const rec = JSON.parse(raw) as Record<string, unknown>;
        const link = rec[CHAIN_MEMBER] as { seq?: unknown; prev?: unknown } | undefined;
        if (typeof link?.seq === 'number') seq = link.seq;
        if (typeof link?.prev === 'string') prev = link.prev;
        if (typeof rec.eventID === 'string') eventId = rec.eventID;
        if (typeof rec.eventTime === 'string') eventTime = rec.eventTime;
      } catch {
        // Unparseable: still hashed, and named by what can be read of it.
        eventId = /"eventID":"([^"]*)"/.exec(raw)?.[1];
        const s = /"seq":(\d+)/.exec(raw)?.[1];
        seq = s === undefined ? undefined : Number(s);
      }
      lines.push({ file: file.name, lineNo: idx + 1, raw, hash: sha256Hex(raw), seq, prev, eventId, eventTime, torn });
    });
  }
  return lines;
}

function verifyChain(
  chainId: string,
  dir: string,
  digestDir: string,
  files: { part: number; name: string }[],
  digestNames: { seq: number; name: string }[],
  keys: Map<string, KeyObject>,
  used: Set<string>,
  options: VerifyOptions,
  result: VerifyResult,
): Line | undefined {
  const findings = result.findings;
  const findingsBefore = findings.length;
  const at = `chain ${chainId}`;
  // ---- digests --------------------------------------------------------------------------------
  const digests: DigestFile[] = [];
  let previous: { body: DigestFile; hash: string; name: string } | undefined;
  const sortedDigests = [...digestNames].sort((a, b) => a.seq - b.seq);
  for (let i = 0; i < sortedDigests.length; i++) {
    const { seq, name } = sortedDigests[i]!;
    if (seq !== i + 1) {
      findings.push(`${at}: digest ${i + 1} is missing (next present: ${name})`);
      return undefined;
    }
    const content = fs.readFileSync(path.join(digestDir, name), 'utf8');
    let d: DigestFile;
    try {
      d = JSON.parse(content) as DigestFile;
    } catch {
      findings.push(`${at}: digest ${name} is not valid JSON (altered)`);
      return undefined;
    }
    const { body, signature } = splitDigest(d);
    if (body.chainId !== chainId || body.digestSequence !== seq) findings.push(`${at}: digest ${name} names another chain or sequence`);
    if (signature === null || body.digestPublicKeyFingerprint === null) {
      findings.push(`${at}: digest ${name} is unsigned (the token had no signing key)`);
    } else {
      const key = keys.get(body.digestPublicKeyFingerprint);
      if (options.expectedFingerprint && body.digestPublicKeyFingerprint !== options.expectedFingerprint) {
        findings.push(`${at}: digest ${name} is signed by key ${body.digestPublicKeyFingerprint}, not the expected ${options.expectedFingerprint}`);
      } else if (!key) {
        findings.push(`${at}: digest ${name} names public key ${body.digestPublicKeyFingerprint}, which is not beside the digests`);
      } else {
        used.add(body.digestPublicKeyFingerprint);
        let valid = false;
        try {
          valid = verifySignature('sha256', Buffer.from(stringToSign(body), 'utf8'), { key, dsaEncoding: 'ieee-p1363' }, Buffer.from(signature, 'hex'));
        } catch {
          valid = false;
        }
        if (!valid) findings.push(`${at}: digest ${name} has an invalid signature (digest or signature replaced or altered)`);
      }
    }
    if (previous) {
      if (body.previousDigestFile !== previous.name || body.previousDigestHashValue !== previous.hash || body.previousDigestSignature !== previous.body.digestSignature) {
        findings.push(`${at}: digest ${name} does not link to digest ${previous.name} (a digest was replaced or altered)`);
      }
      if (body.firstSequence !== previous.body.lastSequence + 1) findings.push(`${at}: digest ${name} does not continue the range of ${previous.name}`);
      if (previous.body.final) findings.push(`${at}: digest ${name} follows the final digest ${previous.name}`);
    } else if (body.previousDigestFile !== null || body.firstSequence !== 1) {
      findings.push(`${at}: digest ${name} is the first present but names a predecessor (earlier digests removed)`);
    }
    digests.push(d);
    result.digests++;
    previous = { body: d, hash: sha256Hex(content), name };
  }
  const finalDigest = digests.length > 0 && digests[digests.length - 1]!.final ? digests[digests.length - 1] : undefined;
  const signedUpTo = digests.length > 0 ? digests[digests.length - 1]!.lastSequence : 0;
  const digestByEnd = new Map<number, DigestFile>();
  for (const d of digests) if (d.recordCount > 0) digestByEnd.set(d.lastSequence, d);

  // ---- records --------------------------------------------------------------------------------
  const lines = readLines(dir, files, findings);
  if (lines.length === 0) {
    if (signedUpTo > 0) {
      const newest = digests[digests.length - 1]!.newestEventTime ?? digests[digests.length - 1]!.digestEndTime;
      if (retentionAllows(newest, options)) result.notes.push(`${at}: records 1-${signedUpTo} expired (retention); digests verified`);
      else findings.push(`${at}: records 1-${signedUpTo} vouched for by digests are missing (deleted)`);
    }
    return undefined;
  }
  let lastGood: Line | undefined;
  let first = true;
  let expectedPrev: string | undefined;
  let expectedSeq = 0;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (line.torn) {
      const n = line.seq ?? (first ? 1 : expectedSeq);
      if (n <= signedUpTo) findings.push(`${at}: ${line.file} truncated — record ${n} is incomplete and records ${n}-${signedUpTo} vouched for by digests are missing`);
      else if (finalDigest) findings.push(`${describe(line)}: incomplete record after the final digest (file altered)`);
      else result.notes.push(`${at}: last record ${line.file}:${line.lineNo} is incomplete (the process stopped mid-write; it was never acknowledged)`);
      break;
    }
    if (line.seq === undefined || line.prev === undefined) {
      findings.push(`${describe(line)}: not a valid chained record (altered)`);
      break;
    }
    if (first) {
      first = false;
      if (line.seq !== 1 || line.prev !== GENESIS_HASH) {
        const vouch = digestByEnd.get(line.seq - 1);
        if (line.seq === 1) {
          findings.push(`${describe(line)}: first record of the chain does not start from the genesis hash (altered)`);
          break;
        }
        if (!vouch || vouch.lastRecordHash !== line.prev) {
          findings.push(`${describe(line)}: records 1-${line.seq - 1} are missing and no digest vouches for this record's predecessor (records removed)`);
          break;
        }
        const newest = vouch.newestEventTime ?? vouch.digestEndTime;
        if (retentionAllows(newest, options)) result.notes.push(`${at}: records 1-${line.seq - 1} expired (retention); the remainder is anchored by a digest`);
        else findings.push(`${at}: records 1-${line.seq - 1} were removed although younger than the retention period`);
      }
    } else {
      if (line.seq !== expectedSeq) {
        if (line.seq < expectedSeq) findings.push(`${describe(line)}: out of order — expected record ${expectedSeq} here (records reordered)`);
        else findings.push(`${describe(line)}: records ${expectedSeq}-${line.seq - 1} before it are missing (removed)`);
        break;
      }
      if (line.prev !== expectedPrev) {
        const before = lines[i - 1]!;
        findings.push(`${describe(before)}: altered — its hash does not match the previous-record hash of ${describe(line)}`);
        break;
      }
    }
    const vouch = digestByEnd.get(line.seq);
    if (vouch && vouch.lastRecordHash !== line.hash) {
      findings.push(`${describe(line)}: altered — its hash does not match digest ${vouch.chainId}/${vouch.digestSequence}`);
      break;
    }
    expectedSeq = line.seq + 1;
    expectedPrev = line.hash;
    lastGood = line;
    result.records++;
  }
  const lastSeq = lastGood?.seq ?? 0;
  if (findings.length === findingsBefore) {
    if (lastSeq < signedUpTo) {
      findings.push(`${at}: records ${lastSeq + 1}-${signedUpTo} vouched for by digests are missing after ${lastGood ? describe(lastGood) : 'the start'} (truncated or removed)`);
    } else if (lastSeq > signedUpTo) {
      if (finalDigest) findings.push(`${at}: records ${signedUpTo + 1}-${lastSeq} follow the final digest (appended after shutdown)`);
      else result.notes.push(`${at}: records ${signedUpTo + 1}-${lastSeq} are not yet covered by a signed digest (service running, or stopped without shutdown); their hash chain is intact`);
    }
  }
  return lastGood;
}

function retentionAllows(newestEventTime: string, options: VerifyOptions): boolean {
  if (options.retentionDays === undefined) return false;
  const now = options.now ?? new Date();
  // One day of slack: files are removed by their last write, digests name event times.
  return Date.parse(newestEventTime) <= now.getTime() - (options.retentionDays - 1) * 86400_000;
}
