/**
 * The audit sink: appends CloudTrail-shaped records to this process's hash chain with group
 * commit, signs digests of the chain with the token's audit key (periodically, at every file
 * roll and at shutdown), and applies the retention setting. See format.ts for the layout.
 *
 * Durability: append() resolves only after the record's bytes are on stable storage (the file is
 * opened O_DSYNC, so each write returns once its data is durable, like write + fdatasync in one
 * call, made on the trail's own writer thread (writer-thread.ts), never behind other work on
 * node's shared thread pool). Appends that arrive while a write is in flight are batched into the
 * next one (one write per batch, started as soon as the previous one completes), so under load
 * the cost of a synchronous write is shared by every request that arrived during the previous one.
 *
 * A write failure stops the trail: every append rejects until it heals, so the service answers
 * requests with KMSInternalException rather than act without a record (/readyz goes red). Every
 * second it tries to heal: it cuts the file back to what was acknowledged, rewinds the chain to
 * the last durable record, opens the next file and writes an AuditTrailRecovered service event
 * (when the fault began, what it was, how many appends were refused); once that record is durable
 * the trail accepts appends again. Chain and sequence numbers are assigned synchronously in
 * append(), so the file order is the append order.
 *
 * Anchors outside the audit directory: the chain is registered in the metadata store when it
 * opens, and every digest advances its head there, in the token's head object and in the
 * operator's digest copy (verify.ts cross-checks all of them).
 */
import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { AuditSigningKey } from '../hsm/audit-signing-key.js';
import type { Account } from '../kms/arn.js';
import type { AuditChainRegistry } from '../store/audit-chains.js';
import type { DigestCopy } from './digest-copy.js';
import {
  AUDIT_DIR,
  CHAIN_MEMBER,
  DIGEST_DIR,
  DIGEST_SIGNATURE_ALGORITHM,
  type DigestAnchor,
  type DigestBody,
  type DigestFile,
  GENESIS_HASH,
  digestFileName,
  newChainId,
  parseDigestFileName,
  parseRecordFileName,
  publicKeyFileName,
  recordFileName,
  sha256Hex,
  stringToSign,
} from './format.js';
import { type AuditRecord, type ServiceEvent, eventTimeOf, serviceEventRecord } from './record.js';
import { threadRecordWriter } from './writer-thread.js';

export interface AuditObserver {
  batch(records: number, seconds: number): void;
  digest(signed: boolean): void;
  writeError(): void;
}

export interface AuditTrailOptions {
  dataDir: string;
  account: Account;
  now: () => Date;
  fileMaxBytes: number;
  digestIntervalSeconds: number;
  retentionDays?: number;
  /** The token's signing key; undefined when the token cannot provide one (digests unsigned). */
  signingKey: AuditSigningKey | undefined;
  log: { info(o: object, msg: string): void; warn(o: object, msg: string): void; error(o: object, msg: string): void };
  observer?: AuditObserver;
  /** The metadata store's chain registry; undefined runs without one (tests of the file format). */
  registry?: AuditChainRegistry;
  /** The operator's second copy of the digests (P11KMS_AUDIT_DIGEST_COPY). */
  digestCopy?: DigestCopy;
  /** Writes record batches to the open file; tests wrap the default to make the disk fail. */
  recordWriter?: AuditRecordWriter;
  /** How long a failed trail waits between attempts to heal (default 1000 ms). */
  recoveryIntervalMs?: number;
}

/** The one place record bytes reach the disk (the file is opened O_DSYNC). */
export interface AuditRecordWriter {
  write(fd: number, buf: Buffer): Promise<void>;
  /** Called once the trail has closed its file. */
  close?(): Promise<void>;
}

/** Writes on node's shared libuv pool (fs.write); the trail's default is threadRecordWriter
 *  (writer-thread.ts), a thread of its own. */
export const fileRecordWriter: AuditRecordWriter = { write: (fd, buf) => writeAll(fd, buf) };

export interface AuditTrail {
  readonly enabled: boolean;
  /** Appends a record; resolves once it is on disk. */
  append(record: AuditRecord): Promise<void>;
  /** Records an internal action (rotation, deletion sweep, import expiry...) as an AwsServiceEvent. */
  recordServiceEvent(event: ServiceEvent): Promise<void>;
  /** undefined while healthy, else why the trail cannot record. */
  problem(): string | undefined;
  /** Signs a digest of everything durable now (no-op when nothing new). */
  digestNow(): Promise<void>;
  /** Flushes, signs the final digest and closes the file. */
  close(): Promise<void>;
}

const resolved = Promise.resolve();

/** The trail when P11KMS_AUDIT=off: nothing is recorded. */
export function disabledAuditTrail(): AuditTrail {
  return {
    enabled: false,
    append: () => resolved,
    recordServiceEvent: () => resolved,
    problem: () => undefined,
    digestNow: () => resolved,
    close: () => resolved,
  };
}

interface Mark {
  seq: number;
  hash: string;
  oldest: string;
  newest: string;
}

interface Waiter {
  resolve(): void;
  reject(err: Error): void;
}

export async function openAuditTrail(options: AuditTrailOptions): Promise<AuditTrail> {
  const trail = new FileAuditTrail(options);
  await trail.start();
  return trail;
}

class FileAuditTrail implements AuditTrail {
  readonly enabled = true;
  readonly chainId: string;
  private readonly dir: string;
  private readonly digestDir: string;
  private readonly startedAt: string;

  // chain state (assigned at append time)
  private seq = 0;
  private prev = GENESIS_HASH;
  private queue: string[] = [];
  private queueTimes: string[] = [];
  private waiters: Waiter[] = [];
  private flushScheduled = false;
  private flushing: Promise<void> | undefined;
  private failed: Error | undefined;
  /** Hash of the last durable record line (what a healed trail continues from). */
  private durableHash = GENESIS_HASH;
  private failedAt: Date | undefined;
  private refusedAppends = 0;
  /** While the recovery record is on its way to the disk (appends are accepted again). */
  private healing = false;
  private recoveryTimer: NodeJS.Timeout | undefined;
  private readonly writer: AuditRecordWriter;
  /** Digests not yet in the operator's copy, oldest first (delivered in order, retried). */
  private copyBacklog: { name: string; content: string; anchor: DigestAnchor }[] = [];

  // file state
  private fd: number | undefined;
  private part = 0;
  private fileName = '';
  private fileBytes = 0;
  private fileDay = '';
  private files: { file: string; firstSequence: number; lastSequence: number }[] = [];

  // durable state not yet covered by a digest
  private marks: Mark[] = [];
  private digestedSeq = 0;
  private digestSeq = 0;
  private lastDigestEnd: string;
  private previousDigest: { file: string; hash: string; signature: string | null } | undefined;
  private digestTail: Promise<void> = resolved;
  private timers: NodeJS.Timeout[] = [];
  private closed: Promise<void> | undefined;

  constructor(private readonly o: AuditTrailOptions) {
    this.dir = path.join(o.dataDir, AUDIT_DIR);
    this.digestDir = path.join(this.dir, DIGEST_DIR);
    const now = new Date();
    this.chainId = newChainId(now, process.pid, randomBytes(3).toString('hex'));
    this.startedAt = eventTimeOf(now);
    this.lastDigestEnd = this.startedAt;
    this.openedAt = now;
    this.writer = o.recordWriter ?? threadRecordWriter();
  }

  private readonly openedAt: Date;

  async start(): Promise<void> {
    await fs.promises.mkdir(this.digestDir, { recursive: true, mode: 0o700 });
    if (this.o.signingKey) await this.writePublicKey(this.o.signingKey);
    else this.o.log.warn({}, 'audit digests will be unsigned: the token offers no audit signing key');
    this.knownChains = await latestDigestsOfOtherChains(this.digestDir, this.chainId);
    await this.openNextFile();
    if (this.o.registry) {
      if ((await this.o.registry.listChains()).length === 0) await this.adoptExistingChains(this.o.registry);
      await this.o.registry.registerChain(this.chainId, this.openedAt);
    }
    await this.o.signingKey?.publishHead(unsignedHead(this.chainId)).catch((e: unknown) => {
      this.o.log.error({ err: e instanceof Error ? e.message : String(e), chainId: this.chainId }, "audit chain not registered in the token's head object");
    });
    await this.applyRetention().catch((e: unknown) => this.o.log.warn({ err: String(e) }, 'audit retention failed'));
    const digestTimer = setInterval(() => void this.digestNow(), this.o.digestIntervalSeconds * 1000);
    const retentionTimer = setInterval(() => void this.applyRetention().catch(() => {}), 3600_000);
    digestTimer.unref();
    retentionTimer.unref();
    this.timers.push(digestTimer, retentionTimer);
    this.o.log.info({ chainId: this.chainId, dir: this.dir }, 'audit trail open');
  }

  problem(): string | undefined {
    if (this.failed) return `audit trail cannot write: ${this.failed.message}`;
    if (this.healing) return 'audit trail healing: its recovery record is not yet on disk';
    if (this.closed) return 'audit trail closed';
    return undefined;
  }

  append(record: AuditRecord): Promise<void> {
    if (this.failed) {
      this.refusedAppends++;
      return Promise.reject(this.failed);
    }
    if (this.closed) return Promise.reject(new Error('the audit trail is closed'));
    const seq = ++this.seq;
    const json = JSON.stringify(record);
    const line = `${json.slice(0, -1)},"${CHAIN_MEMBER}":{"chainId":"${this.chainId}","seq":${seq},"prev":"${this.prev}"}}`;
    this.prev = sha256Hex(line);
    this.queue.push(line);
    this.queueTimes.push(record.eventTime);
    return new Promise<void>((resolve, reject) => {
      this.waiters.push({ resolve, reject });
      if (!this.flushScheduled && this.flushing === undefined) {
        this.flushScheduled = true;
        // setImmediate gathers every append of this event-loop turn into the first batch.
        setImmediate(() => {
          this.flushScheduled = false;
          this.flushing ??= this.flushLoop();
        });
      }
    });
  }

  recordServiceEvent(event: ServiceEvent): Promise<void> {
    return this.append(serviceEventRecord(this.o.account, event.eventTime ?? this.o.now(), randomUUID(), event));
  }

  private async flushLoop(): Promise<void> {
    try {
      while (this.queue.length > 0 && !this.failed) {
        const lines = this.queue;
        const times = this.queueTimes;
        const waiters = this.waiters;
        const lastHash = this.prev; // hash of the last line of this batch
        this.queue = [];
        this.queueTimes = [];
        this.waiters = [];
        const firstSeq = this.durableSeq() + 1;
        const lastSeq = firstSeq + lines.length - 1;
        const started = performance.now();
        try {
          const buf = Buffer.from(lines.join('\n') + '\n', 'utf8');
          await this.rollIfNeeded(buf.length);
          // The file is opened O_DSYNC: the write returns once the bytes are durable, one
          // round trip to the writer thread per batch instead of write + fdatasync.
          await this.writer.write(this.fd!, buf);
          this.fileBytes += buf.length;
          this.durableHash = lastHash;
        } catch (e) {
          this.fail(e instanceof Error ? e : new Error(String(e)));
          for (const w of waiters) w.reject(this.failed!);
          break;
        }
        let oldest = times[0]!;
        let newest = times[0]!;
        for (const t of times) {
          if (t < oldest) oldest = t;
          if (t > newest) newest = t;
        }
        this.marks.push({ seq: lastSeq, hash: lastHash, oldest, newest });
        const current = this.files[this.files.length - 1];
        if (current && current.file === this.fileName) current.lastSequence = lastSeq;
        else this.files.push({ file: this.fileName, firstSequence: firstSeq, lastSequence: lastSeq });
        this.o.observer?.batch(lines.length, (performance.now() - started) / 1000);
        for (const w of waiters) w.resolve();
      }
    } finally {
      this.flushing = undefined;
    }
    if (this.failed) {
      const waiters = this.waiters;
      this.waiters = [];
      this.queue = [];
      this.queueTimes = [];
      for (const w of waiters) w.reject(this.failed);
    }
  }

  private durableSeq(): number {
    return this.marks.length > 0 ? this.marks[this.marks.length - 1]!.seq : this.digestedSeq;
  }

  private fail(err: Error): void {
    if (this.failed) return;
    this.failed = err;
    this.failedAt ??= new Date();
    this.o.observer?.writeError();
    this.o.log.error({ err: err.message, chainId: this.chainId }, 'audit trail write failed; refusing requests until it heals');
    this.scheduleRecovery();
  }

  private scheduleRecovery(): void {
    if (this.recoveryTimer || this.closed) return;
    this.recoveryTimer = setTimeout(() => {
      this.recoveryTimer = undefined;
      void this.recover();
    }, this.o.recoveryIntervalMs ?? 1000);
    this.recoveryTimer.unref();
  }

  /**
   * Heals a failed trail: the current file is cut back to its acknowledged bytes (a failed batch
   * may have left part of itself) and closed, the chain rewinds to the last durable record, the
   * next file opens, and an AuditTrailRecovered record must become durable before appends are
   * accepted again. Any step failing leaves the trail failed and tries again later.
   */
  private async recover(): Promise<void> {
    if (!this.failed || this.closed) return;
    if (this.flushing) await this.flushing;
    const failure = this.failed;
    try {
      if (this.fd !== undefined) {
        const fd = this.fd;
        await new Promise<void>((resolve, reject) => fs.ftruncate(fd, this.fileBytes, (err) => (err ? reject(err) : resolve())));
        this.fd = undefined;
        await new Promise<void>((resolve) => fs.close(fd, () => resolve()));
      }
      // A fresh descriptor each attempt; a new part only after records (no empty parts pile up).
      await this.openPart(this.fileBytes > 0 ? this.part + 1 : this.part);
    } catch (e) {
      this.o.log.warn({ err: e instanceof Error ? e.message : String(e), chainId: this.chainId }, 'audit trail still cannot write');
      this.scheduleRecovery();
      return;
    }
    this.seq = this.durableSeq();
    this.prev = this.durableHash;
    const failedAt = this.failedAt!;
    const refused = this.refusedAppends;
    this.failed = undefined;
    this.failedAt = undefined;
    this.refusedAppends = 0;
    this.healing = true;
    try {
      await this.recordServiceEvent({
        eventName: 'AuditTrailRecovered',
        additionalEventData: {
          failedAt: eventTimeOf(failedAt),
          error: (failure as NodeJS.ErrnoException).code ?? failure.message.slice(0, 200),
          refusedRecords: refused,
        },
      });
    } catch {
      // The disk failed again: fail() has scheduled the next attempt; keep the fault's start.
      this.failedAt = failedAt;
      this.refusedAppends += refused;
      return;
    } finally {
      this.healing = false;
    }
    this.o.log.warn({ chainId: this.chainId, failedAt: eventTimeOf(failedAt), refusedRecords: refused }, 'audit trail healed: accepting requests again');
  }

  /** Rolls to the next file at the size limit or a new UTC day; the old file's end gets a digest. */
  private async rollIfNeeded(incoming: number): Promise<void> {
    const day = new Date().toISOString().slice(0, 10);
    if (this.fileBytes === 0 || (this.fileBytes + incoming <= this.o.fileMaxBytes && day === this.fileDay)) return;
    const boundary = this.marks.length > 0 ? this.marks[this.marks.length - 1] : undefined;
    const fd = this.fd!;
    this.fd = undefined;
    await new Promise<void>((resolve) => fs.close(fd, () => resolve()));
    if (boundary) void this.queueDigest(boundary, false);
    await this.openNextFile();
  }

  private openNextFile(): Promise<void> {
    return this.openPart(this.part + 1);
  }

  /** Opens (creating) a part; the state moves on only once the file exists durably (no gap in parts). */
  private async openPart(part: number): Promise<void> {
    const fileName = recordFileName(this.chainId, part);
    const flags = fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT | fs.constants.O_DSYNC;
    const fd = await new Promise<number>((resolve, reject) => fs.open(path.join(this.dir, fileName), flags, 0o600, (err, fd) => (err ? reject(err) : resolve(fd))));
    try {
      await fsyncDir(this.dir);
    } catch (e) {
      await new Promise<void>((resolve) => fs.close(fd, () => resolve()));
      throw e;
    }
    this.part = part;
    this.fileName = fileName;
    this.fileDay = new Date().toISOString().slice(0, 10);
    this.fileBytes = 0;
    this.fd = fd;
  }

  digestNow(): Promise<void> {
    if (this.failed) return resolved;
    const last = this.marks[this.marks.length - 1];
    if (!last) return resolved;
    return this.queueDigest(last, false);
  }

  /** Serialises digests: each needs its predecessor's hash and signature. */
  private queueDigest(end: Mark | undefined, final: boolean): Promise<void> {
    this.digestTail = this.digestTail.then(() =>
      this.writeDigest(end, final).catch((e: unknown) => {
        this.o.log.error({ err: e instanceof Error ? e.message : String(e), chainId: this.chainId }, 'audit digest failed');
      }),
    );
    return this.digestTail;
  }

  private async writeDigest(end: Mark | undefined, final: boolean): Promise<void> {
    const covered = end ? this.marks.filter((m) => m.seq <= end.seq) : [];
    if (covered.length === 0 && !final) return; // already covered by an earlier digest
    const firstSequence = this.digestedSeq + 1;
    const lastSequence = covered.length > 0 ? covered[covered.length - 1]!.seq : this.digestedSeq;
    const lastRecordHash = covered.length > 0 ? covered[covered.length - 1]!.hash : (this.previousDigestLastHash ?? GENESIS_HASH);
    let oldest: string | null = null;
    let newest: string | null = null;
    for (const m of covered) {
      if (oldest === null || m.oldest < oldest) oldest = m.oldest;
      if (newest === null || m.newest > newest) newest = m.newest;
    }
    const key = this.o.signingKey;
    const now = eventTimeOf(new Date());
    const body: DigestBody = {
      digestVersion: 1,
      awsAccountId: this.o.account.accountId,
      chainId: this.chainId,
      digestSequence: this.digestSeq + 1,
      digestStartTime: this.lastDigestEnd,
      digestEndTime: now,
      firstSequence,
      lastSequence,
      recordCount: lastSequence - firstSequence + 1,
      lastRecordHash,
      oldestEventTime: oldest,
      newestEventTime: newest,
      logFiles: this.files
        .filter((f) => f.lastSequence >= firstSequence && f.firstSequence <= lastSequence)
        .map((f) => ({ file: f.file, firstSequence: Math.max(f.firstSequence, firstSequence), lastSequence: Math.min(f.lastSequence, lastSequence) })),
      final,
      previousDigestFile: this.previousDigest?.file ?? null,
      previousDigestHashValue: this.previousDigest?.hash ?? null,
      previousDigestSignature: this.previousDigest?.signature ?? null,
      digestPublicKeyFingerprint: key?.fingerprint ?? null,
      digestSignatureAlgorithm: key ? DIGEST_SIGNATURE_ALGORITHM : null,
    };
    if (this.digestSeq === 0) body.knownChains = this.knownChains;
    let signature: string | null = null;
    if (key) {
      const digest = Buffer.from(sha256Hex(stringToSign(body)), 'hex');
      signature = (await key.signDigest(digest)).toString('hex');
    }
    const file: DigestFile = { ...body, digestSignature: signature };
    const content = JSON.stringify(file) + '\n';
    const name = digestFileName(this.chainId, body.digestSequence);
    const target = path.join(this.digestDir, name);
    const pending = `${target}.tmp`;
    const handle = await fs.promises.open(pending, 'w', 0o600);
    try {
      await handle.writeFile(content);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await fs.promises.rename(pending, target);
    await fsyncDir(this.digestDir);
    // Committed: advance the digest state.
    this.digestSeq = body.digestSequence;
    this.digestedSeq = lastSequence;
    this.previousDigestLastHash = lastRecordHash;
    this.lastDigestEnd = now;
    this.previousDigest = { file: name, hash: sha256Hex(content), signature };
    this.marks = this.marks.filter((m) => m.seq > lastSequence);
    this.files = this.files.filter((f) => f.lastSequence > lastSequence || f.file === this.fileName);
    this.o.observer?.digest(signature !== null);
    await this.publishAnchors(name, content, { chainId: this.chainId, digestSequence: body.digestSequence, digestHash: this.previousDigest.hash, recordCount: lastSequence, final });
  }

  /**
   * Tells the anchors outside the audit directory about a committed digest. A failure leaves that
   * anchor behind (verify accepts an anchor that lags, as later digests link to the one it names)
   * and is logged; the next digest catches it up.
   */
  private async publishAnchors(name: string, content: string, anchor: DigestAnchor): Promise<void> {
    const warn = (what: string) => (e: unknown) => this.o.log.error({ err: e instanceof Error ? e.message : String(e), chainId: this.chainId, digest: name }, `audit digest not recorded in ${what}`);
    const key = this.o.signingKey;
    await this.o.registry
      ?.recordDigest({ ...anchor, openedAt: this.openedAt, signingKeyFingerprint: key?.fingerprint ?? null })
      .catch(warn('the chain registry'));
    await key?.publishHead(anchor).catch(warn("the token's head object"));
    const copy = this.o.digestCopy;
    if (copy) {
      this.copyBacklog.push({ name, content, anchor });
      try {
        while (this.copyBacklog.length > 0) {
          const next = this.copyBacklog[0]!;
          await copy.deliver(next.name, next.content, next.anchor);
          this.copyBacklog.shift();
        }
      } catch (e) {
        warn(`the digest copy (${copy.target})`)(e);
      }
    }
  }

  /**
   * First start with a chain registry (an existing trail, before the registry existed): registers
   * the chains already on disk with their newest digests, so verify can check them from now on.
   */
  private async adoptExistingChains(registry: AuditChainRegistry): Promise<void> {
    const chainIds = new Set<string>();
    for (const name of await fs.promises.readdir(this.dir)) {
      const parsed = parseRecordFileName(name);
      if (parsed && parsed.chainId !== this.chainId) chainIds.add(parsed.chainId);
    }
    const newest = new Map(this.knownChains.map((k) => [k.chainId, k]));
    for (const chainId of new Set([...chainIds, ...newest.keys()])) {
      const known = newest.get(chainId);
      let d: DigestFile | undefined;
      try {
        if (known) d = JSON.parse(await fs.promises.readFile(path.join(this.digestDir, known.digestFile), 'utf8')) as DigestFile;
      } catch {
        d = undefined; // verify reports an unreadable digest
      }
      const openedAt = new Date(Date.parse(d?.digestStartTime ?? '') || Date.now());
      if (known && d) {
        const anchor = { chainId, digestSequence: d.digestSequence, digestHash: known.digestHashValue, recordCount: d.lastSequence, final: d.final };
        await registry.recordDigest({ ...anchor, openedAt, signingKeyFingerprint: d.digestPublicKeyFingerprint });
        await this.o.signingKey?.publishHead(anchor);
      } else {
        await registry.registerChain(chainId, openedAt);
        await this.o.signingKey?.publishHead(unsignedHead(chainId));
      }
    }
    if (chainIds.size + newest.size > 0) this.o.log.warn({ chains: [...new Set([...chainIds, ...newest.keys()])].length }, 'audit chains on disk adopted into the new chain registry');
  }

  private previousDigestLastHash: string | undefined;
  private knownChains: { chainId: string; digestFile: string; digestHashValue: string }[] = [];

  private async writePublicKey(key: AuditSigningKey): Promise<void> {
    const pem = `-----BEGIN PUBLIC KEY-----\n${key.publicKeySpki.toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '')}\n-----END PUBLIC KEY-----\n`;
    try {
      await fs.promises.writeFile(path.join(this.digestDir, publicKeyFileName(key.fingerprint)), pem, { flag: 'wx', mode: 0o644 });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    await this.o.digestCopy?.deliverPublicKey(publicKeyFileName(key.fingerprint), pem).catch((e: unknown) => {
      this.o.log.error({ err: e instanceof Error ? e.message : String(e) }, `audit public key not delivered to the digest copy (${this.o.digestCopy!.target})`);
    });
  }

  /**
   * Deletes record files whose last write is older than the retention period, oldest first and
   * only as a prefix of their chain, and only where a digest vouches for the record that then
   * comes first (its lastSequence is that record's predecessor), so what remains still verifies.
   */
  private async applyRetention(): Promise<void> {
    const days = this.o.retentionDays;
    if (days === undefined) return;
    const cutoff = Date.now() - days * 86400_000;
    const names = await fs.promises.readdir(this.dir);
    const chains = new Map<string, { part: number; name: string }[]>();
    for (const name of names) {
      const parsed = parseRecordFileName(name);
      if (!parsed) continue;
      const list = chains.get(parsed.chainId) ?? [];
      list.push({ part: parsed.part, name });
      chains.set(parsed.chainId, list);
    }
    const digestEnds = new Map<string, Set<number>>();
    const sealed = new Set<string>();
    for (const name of await fs.promises.readdir(this.digestDir)) {
      const parsed = parseDigestFileName(name);
      if (!parsed) continue;
      try {
        const d = JSON.parse(await fs.promises.readFile(path.join(this.digestDir, name), 'utf8')) as DigestFile;
        const set = digestEnds.get(parsed.chainId) ?? new Set<number>();
        set.add(d.lastSequence);
        digestEnds.set(parsed.chainId, set);
        if (d.final) sealed.add(parsed.chainId);
      } catch {
        // unreadable digest: verification reports it; retention just does not rely on it
      }
    }
    for (const [chainId, files] of chains) {
      files.sort((a, b) => a.part - b.part);
      for (let i = 0; i < files.length; i++) {
        const file = files[i]!;
        if (file.name === this.fileName) break;
        const full = path.join(this.dir, file.name);
        const stat = await fs.promises.stat(full);
        if (stat.mtimeMs >= cutoff) break;
        const next = files[i + 1];
        // A chain's last file may still be another live process's open file: only when the chain
        // was sealed by a clean shutdown, or its process is gone, may it go.
        if (!next && !sealed.has(chainId) && processAlive(chainId)) break;
        if (next) {
          const firstSeq = await firstSequenceOf(path.join(this.dir, next.name));
          if (firstSeq === undefined || !digestEnds.get(chainId)?.has(firstSeq - 1)) break;
        }
        await fs.promises.unlink(full);
        this.o.log.info({ file: file.name, retentionDays: days }, 'audit file expired (retention)');
      }
    }
  }

  close(): Promise<void> {
    this.closed ??= (async () => {
      for (const t of this.timers) clearInterval(t);
      if (this.recoveryTimer) clearTimeout(this.recoveryTimer);
      while (this.flushScheduled || this.flushing) {
        if (this.flushing) await this.flushing;
        else await new Promise((r) => setImmediate(r));
      }
      if (!this.failed) await this.queueDigest(this.marks[this.marks.length - 1], true);
      await this.digestTail;
      if (this.fd !== undefined) {
        const fd = this.fd;
        this.fd = undefined;
        await new Promise<void>((resolve) => fs.close(fd, () => resolve()));
      }
      await this.writer.close?.();
    })();
    return this.closed;
  }
}

/** A chain known before its first digest. */
const unsignedHead = (chainId: string): DigestAnchor => ({ chainId, digestSequence: 0, digestHash: '', recordCount: 0, final: false });

/** The newest digest file of every chain but `own`, with the SHA-256 of its bytes. */
async function latestDigestsOfOtherChains(digestDir: string, own: string): Promise<{ chainId: string; digestFile: string; digestHashValue: string }[]> {
  const latest = new Map<string, { seq: number; name: string }>();
  for (const name of await fs.promises.readdir(digestDir)) {
    const parsed = parseDigestFileName(name);
    if (!parsed || parsed.chainId === own) continue;
    const seen = latest.get(parsed.chainId);
    if (!seen || parsed.seq > seen.seq) latest.set(parsed.chainId, { seq: parsed.seq, name });
  }
  const out: { chainId: string; digestFile: string; digestHashValue: string }[] = [];
  for (const [chainId, { name }] of [...latest].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    try {
      out.push({ chainId, digestFile: name, digestHashValue: sha256Hex(await fs.promises.readFile(path.join(digestDir, name))) });
    } catch {
      // removed meanwhile (retention does not remove digests): nothing to vouch for
    }
  }
  return out;
}

/** Whether the process named in a chain ID (…-p<pid>-…) still runs on this host. */
function processAlive(chainId: string): boolean {
  const pid = Number(/-p(\d+)-/.exec(chainId)?.[1]);
  if (!Number.isInteger(pid) || pid <= 0) return true;
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function writeAll(fd: number, buf: Buffer): Promise<void> {
  let offset = 0;
  while (offset < buf.length) {
    offset += await new Promise<number>((resolve, reject) =>
      fs.write(fd, buf, offset, buf.length - offset, null, (err, written) => (err ? reject(err) : resolve(written))),
    );
  }
}

async function fsyncDir(dir: string): Promise<void> {
  const handle = await fs.promises.open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** The chain sequence number of a record file's first record. */
async function firstSequenceOf(file: string): Promise<number | undefined> {
  const handle = await fs.promises.open(file, 'r');
  try {
    const buf = Buffer.alloc(256 * 1024);
    const { bytesRead } = await handle.read(buf, 0, buf.length, 0);
    const text = buf.subarray(0, bytesRead).toString('utf8');
    const nl = text.indexOf('\n');
    if (nl < 0) return undefined;
    const rec = JSON.parse(text.slice(0, nl)) as Record<string, { seq?: number }>;
    return rec[CHAIN_MEMBER]?.seq;
  } catch {
    return undefined;
  } finally {
    await handle.close();
  }
}
