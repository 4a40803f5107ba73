/**
 * The operator's second copy of the audit digests (P11KMS_AUDIT_DIGEST_COPY), as CloudTrail
 * delivers digest files to an S3 bucket with object lock: a directory on another mount (each
 * digest written once with O_EXCL, never overwritten) or `syslog` (one line per digest through
 * logger(1): chain, sequence, SHA-256 of the digest file, records covered). Whoever rewrites the
 * data dir cannot rewrite this copy, so `p11kms audit verify --digest-copy` finds the digests a
 * rewrite replaced or removed.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { type DigestAnchor, type DigestFile, parseDigestFileName, sha256Hex } from './format.js';

export interface DigestCopy {
  /** The directory, or 'syslog'. */
  readonly target: string;
  /** Delivers one digest file (name and exact bytes) and the anchor it yields. */
  deliver(name: string, content: string, anchor: DigestAnchor): Promise<void>;
  /** Delivers the public key file beside the digests (directories only). */
  deliverPublicKey(name: string, pem: string): Promise<void>;
}

/** The tag of a digest line in syslog (and in an exported log file verify reads). */
export const SYSLOG_DIGEST_TAG = 'p11kms-audit-digest';

export function openDigestCopy(target: string): DigestCopy {
  return target === 'syslog' ? syslogCopy() : directoryCopy(target);
}

function directoryCopy(dir: string): DigestCopy {
  const ready = fs.promises.mkdir(dir, { recursive: true, mode: 0o700 });
  const writeOnce = async (name: string, content: string, mode: number) => {
    await ready;
    const file = path.join(dir, name);
    let handle: fs.promises.FileHandle;
    try {
      handle = await fs.promises.open(file, 'wx', mode);
    } catch (e) {
      // Already delivered (a retry after a partial failure): fine only with the same bytes.
      if ((e as NodeJS.ErrnoException).code === 'EEXIST' && (await fs.promises.readFile(file, 'utf8')) === content) return;
      throw e;
    }
    try {
      await handle.writeFile(content);
      await handle.sync();
    } finally {
      await handle.close();
    }
  };
  return {
    target: dir,
    deliver: (name, content) => writeOnce(name, content, 0o400),
    deliverPublicKey: (name, pem) => writeOnce(name, pem, 0o444),
  };
}

function syslogCopy(): DigestCopy {
  return {
    target: 'syslog',
    deliver: (_name, _content, anchor) =>
      new Promise((resolve, reject) => {
        const child = spawn('logger', ['-t', SYSLOG_DIGEST_TAG, '--', JSON.stringify(anchor)], { stdio: 'ignore' });
        child.once('error', reject);
        child.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`logger exited with ${code}`))));
      }),
    deliverPublicKey: async () => {},
  };
}

/** What a copy vouches for: a directory's digest files, or the digest lines of a log file. */
export function readDigestCopy(source: string): { anchors: DigestAnchor[]; problems: string[] } {
  const anchors: DigestAnchor[] = [];
  const problems: string[] = [];
  if (fs.statSync(source).isDirectory()) {
    for (const name of fs.readdirSync(source).sort()) {
      const parsed = parseDigestFileName(name);
      if (!parsed) continue;
      const bytes = fs.readFileSync(path.join(source, name));
      try {
        const d = JSON.parse(bytes.toString('utf8')) as DigestFile;
        anchors.push({ chainId: d.chainId, digestSequence: d.digestSequence, digestHash: sha256Hex(bytes), recordCount: d.lastSequence, final: d.final });
      } catch {
        problems.push(`digest copy ${name} in ${source} is not valid JSON`);
      }
    }
    return { anchors, problems };
  }
  for (const line of fs.readFileSync(source, 'utf8').split('\n')) {
    const at = line.indexOf(`${SYSLOG_DIGEST_TAG}`);
    const json = at < 0 ? -1 : line.indexOf('{', at);
    if (json < 0) continue;
    try {
      anchors.push(JSON.parse(line.slice(json)) as DigestAnchor);
    } catch {
      problems.push(`a ${SYSLOG_DIGEST_TAG} line in ${source} is not valid JSON`);
    }
  }
  return { anchors, problems };
}
