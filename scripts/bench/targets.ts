/**
 * Phase "targets" (issue 15): the data-plane targets measured in one run, each as a ratio to
 * references measured in the same run — the bare node:http server, the raw token (phase "token")
 * and, when BENCH_PEER_BIN names one, a peer KMS emulator on loopback:
 *  - Encrypt 32 B at 32 clients, one service process and P11KMS_WORKERS=2;
 *  - Encrypt p99 at 8 clients with the audit trail on (the default);
 *  - Encrypt at 8 clients while CreateKey runs 8 in flight, over Encrypt alone;
 *  - Encrypt and Decrypt p99 while an outside process holds the SQLite write lock
 *    (BENCH_LOCK_SECONDS, default 20), over their p99 alone, and what CreateKey calls meanwhile get;
 *  - Encrypt at 8 clients while 4 CreateKey RSA_4096 are kept in flight, p99 over alone.
 * The services log at info (the per-request line included, as deployed) into their log files.
 * Each "alone" reference is measured right before its loaded point, so drift on a shared machine
 * hits both alike. A scenario that fails is recorded in `errors` and the next one still runs.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { CreateKeyCommand, type KMSClient } from '@aws-sdk/client-kms';
import { DATABASE_FILE } from '../../src/config.js';
import { DIST_BENCH, ROOT_CREDENTIALS, REGION, childEnv, descendants, freePort, median, progress, sleep, startNode, track, waitForOk, type Proc, type Settings } from './common.js';
import {
  WARM_UP_SECONDS,
  bareWrkPoint,
  ciphertextFor,
  createKeys,
  errorMessage,
  errorSummary,
  firstKeys,
  inputFor,
  kmsClient,
  startService,
  stopService,
  wrkPoint,
  type Service,
  type Target,
} from './kms.js';
import { presign, sendOnce } from './sign.js';
import type { WrkResult } from './wrk.js';

export interface BesideLoad {
  alone: WrkResult;
  loaded: WrkResult;
  /** Slow calls that finished during the loaded point, and in all. */
  createdDuringPoint: number;
  created: number;
  failed: number;
  errors: string;
  createMedianMs?: number;
}

export interface LockedWrites {
  calls: number;
  ok: number;
  /** Error name (HTTP status) → count. */
  errors: Record<string, number>;
  p50Ms: number;
  maxMs: number;
}

export interface SqliteLockResult {
  holdSeconds: number;
  encryptAlone: WrkResult;
  decryptAlone: WrkResult;
  encrypt: WrkResult;
  decrypt: WrkResult;
  writes: LockedWrites;
}

export type PeerResult = { skipped: string } | { bin: string; c32: WrkResult; c8: WrkResult };

export interface TargetsResult {
  /** The disk's own durable-write latency (what the audit trail's tail cannot beat). */
  diskSync?: { writes: number; bytes: number; p50Ms: number; p99Ms: number; maxMs: number };
  bare: WrkResult[];
  encrypt: WrkResult[];
  encryptWorkers2?: WrkResult;
  duringCreateKey?: BesideLoad;
  sqliteLock?: SqliteLockResult;
  besideRsa4096?: BesideLoad;
  peer: PeerResult;
  /** Scenario → why it failed (its figures are left out). */
  errors: Record<string, string>;
}

const LOG_LEVEL = 'info';

export async function targetsPhase(wrk: string, settings: Settings, work: string): Promise<TargetsResult> {
  progress('targets: Encrypt against bare node:http, P11KMS_WORKERS=2, a peer; beside CreateKey, a SQLite lock, RSA-4096 key generation');
  const result: TargetsResult = { bare: [], encrypt: [], peer: { skipped: 'BENCH_PEER_BIN is not set' }, errors: {} };
  const attempt = async (name: string, run: () => Promise<void>) => {
    try {
      await run();
    } catch (e) {
      const message = e instanceof Error ? e.message : String(e);
      result.errors[name] = message;
      progress(`targets: ${name} FAILED: ${message.split('\n')[0]}`);
    }
  };
  const dataDir = path.join(work, 'targets-data');
  let main: Service | undefined;
  let workers2: Service | undefined;
  let bare: Proc | undefined;
  let peer: Peer | undefined;
  try {
    result.diskSync = durableWriteLatency(work);
    progress(`O_DSYNC ${result.diskSync.bytes} B appends on the scratch disk: p50 ${result.diskSync.p50Ms.toFixed(2)} ms, p99 ${result.diskSync.p99Ms.toFixed(2)} ms`);
    main = await startService('service-targets', dataDir, work, settings, { P11KMS_LOG_LEVEL: LOG_LEVEL, P11KMS_WORKERS: '1' });
    const [keyId] = await firstKeys(main.client, 1);
    const target: Target = { port: main.port, keyId: keyId!, ciphertext: await ciphertextFor(main.client, keyId!) };
    const barePort = await freePort();
    bare = await startBare(work, main.port, target, barePort);

    await attempt('P11KMS_WORKERS=2', async () => {
      workers2 = await startService('service-targets-workers2', path.join(work, 'targets-workers2-data'), work, settings, { P11KMS_LOG_LEVEL: LOG_LEVEL, P11KMS_WORKERS: '2' });
    });
    const workers2Target: Target | undefined = workers2 ? { port: workers2.port, keyId: (await firstKeys(workers2.client, 1))[0]!, ciphertext: '' } : undefined;
    if (process.env.BENCH_PEER_BIN) {
      // Never required: a peer that cannot run here is a skipped column, not a failed bench.
      try {
        peer = await startPeer(process.env.BENCH_PEER_BIN, work);
      } catch (e) {
        result.peer = { skipped: `${process.env.BENCH_PEER_BIN}: ${(e instanceof Error ? e.message : String(e)).split('\n')[0]}` };
        progress(`targets: peer skipped: ${result.peer.skipped}`);
      }
    }

    // Throughput at 32 clients, then latency at 8: bare, p11kms, its two-process form, the peer.
    const peerPoints: Partial<Record<number, WrkResult>> = {};
    for (const clients of [32, 8]) {
      const bareReq = await presign(barePort, 'Encrypt', inputFor('Encrypt', target), ROOT_CREDENTIALS, REGION);
      result.bare.push(await bareWrkPoint(wrk, settings, work, barePort, bareReq, clients));
      result.encrypt.push(await wrkPoint(wrk, settings, work, 'Encrypt', 'Encrypt', target, clients, 'targets', clients === 32 ? WARM_UP_SECONDS : 0));
      if (clients === 32 && workers2Target) {
        await attempt('P11KMS_WORKERS=2', async () => {
          result.encryptWorkers2 = await wrkPoint(wrk, settings, work, 'Encrypt, P11KMS_WORKERS=2', 'Encrypt', workers2Target, 32, 'targets', WARM_UP_SECONDS);
        });
      }
      if (peer) {
        const p = peer;
        await attempt('peer', async () => {
          peerPoints[clients] = await wrkPoint(wrk, settings, work, 'Encrypt, peer', 'Encrypt', p.target, clients, 'targets', clients === 32 ? WARM_UP_SECONDS : 0);
        });
      }
    }
    if (peer && peerPoints[32] && peerPoints[8]) result.peer = { bin: peer.bin, c32: peerPoints[32], c8: peerPoints[8] };
    if (workers2) await stopService(workers2);
    workers2 = undefined;
    await peer?.stop();
    peer = undefined;

    const service = main;
    await attempt('Encrypt during CreateKey', async () => {
      result.duringCreateKey = await besideSlowCalls(wrk, settings, work, service, target, 'CreateKey ×8', 8, { Description: 'p11kms bench beside Encrypt' });
    });
    await attempt('SQLite write lock', async () => {
      result.sqliteLock = await besideSqliteLock(wrk, settings, work, service, target, path.join(dataDir, DATABASE_FILE));
    });
    await attempt('Encrypt beside RSA-4096 CreateKey', async () => {
      result.besideRsa4096 = await besideSlowCalls(wrk, settings, work, service, target, 'CreateKey RSA_4096 ×4', 4, {
        KeySpec: 'RSA_4096',
        KeyUsage: 'SIGN_VERIFY',
        Description: 'p11kms bench RSA-4096 beside Encrypt',
      });
    });
    return result;
  } finally {
    await peer?.stop();
    await bare?.stop();
    if (workers2) await stopService(workers2);
    if (main) await stopService(main);
  }
}

/** Latency of O_DSYNC appends of an audit batch's size on the scratch dir's disk (the services'
 *  data dirs live there), measured in this process before any service runs. */
function durableWriteLatency(work: string): NonNullable<TargetsResult['diskSync']> {
  const file = path.join(work, 'dsync-probe.bin');
  const fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_APPEND | fs.constants.O_DSYNC);
  const buf = Buffer.alloc(1400, 0x78);
  const times: number[] = [];
  try {
    for (let i = 0; i < 2000; i++) {
      const t0 = performance.now();
      fs.writeSync(fd, buf);
      times.push(performance.now() - t0);
    }
  } finally {
    fs.closeSync(fd);
    fs.rmSync(file, { force: true });
  }
  times.sort((a, b) => a - b);
  const at = (q: number) => times[Math.min(times.length - 1, Math.floor(q * times.length))]!;
  return { writes: times.length, bytes: buf.length, p50Ms: at(0.5), p99Ms: at(0.99), maxMs: times[times.length - 1]! };
}

/** The bare node:http server answering with the body of a real Encrypt response. */
async function startBare(work: string, servicePort: number, target: Target, barePort: number): Promise<Proc> {
  const encryptReq = await presign(servicePort, 'Encrypt', inputFor('Encrypt', target), ROOT_CREDENTIALS, REGION);
  const real = await sendOnce(servicePort, encryptReq);
  if (real.status !== 200) throw new Error(`Encrypt answered ${real.status}: ${real.text}`);
  const bodyFile = path.join(work, 'targets-encrypt-response.json');
  fs.writeFileSync(bodyFile, real.text);
  const bare = startNode('bare-node-http-targets', path.join(DIST_BENCH, 'bare-server.js'), [String(barePort), bodyFile], childEnv({}), path.join(work, 'bare-server-targets.log'));
  await waitForOk(bare, barePort);
  return bare;
}

/** Encrypt at 8 clients alone, then while `concurrency` CreateKey calls with `input` are kept in flight. */
async function besideSlowCalls(
  wrk: string,
  settings: Settings,
  work: string,
  service: Service,
  target: Target,
  what: string,
  concurrency: number,
  input: ConstructorParameters<typeof CreateKeyCommand>[0],
): Promise<BesideLoad> {
  const alone = await wrkPoint(wrk, settings, work, `Encrypt, alone (before ${what})`, 'Encrypt', target, 8, 'targets');
  progress(`Encrypt at 8 clients beside ${what} kept in flight`);
  const createdAt: number[] = [];
  const durations: number[] = [];
  let stop = false;
  const timed = {
    send: async (cmd: CreateKeyCommand) => {
      const t0 = performance.now();
      try {
        return await service.client.send(cmd);
      } finally {
        durations.push(performance.now() - t0);
      }
    },
  };
  const creating = createKeys(timed as unknown as KMSClient, Number.MAX_SAFE_INTEGER, concurrency, createdAt, Infinity, input, () => stop);
  let loaded: WrkResult;
  let windowStart = 0;
  let windowEnd = 0;
  try {
    await sleep(200); // the first calls are under way
    windowStart = performance.now();
    loaded = await wrkPoint(wrk, settings, work, `Encrypt, beside ${what}`, 'Encrypt', target, 8, 'targets');
    windowEnd = performance.now();
  } finally {
    stop = true;
  }
  const created = await creating;
  if (created.failed > 0) throw new Error(`${what}: ${created.failed} calls failed: ${errorSummary(created)}`);
  return {
    alone,
    loaded,
    createdDuringPoint: createdAt.filter((t) => t >= windowStart && t <= windowEnd).length,
    created: created.ids.length,
    failed: created.failed,
    errors: errorSummary(created),
    createMedianMs: durations.length > 0 ? median(durations) : undefined,
  };
}

/** Encrypt and Decrypt at 8 clients alone, then while another process holds the write lock;
 *  meanwhile one CreateKey at a time records what writes get. */
async function besideSqliteLock(wrk: string, settings: Settings, work: string, service: Service, target: Target, dbFile: string): Promise<SqliteLockResult> {
  const holdSeconds = settings.lockSeconds;
  // wrk counts only requests that complete inside a point, so a point must outlast the store's
  // busy wait (5 s) for a stall to show in its latencies; both points fit inside the hold.
  const pointSeconds = Math.max(1, Math.min(Math.max(settings.seconds, 8), Math.floor((holdSeconds - 2) / 2)));
  const short = { ...settings, seconds: pointSeconds };
  const encryptAlone = await wrkPoint(wrk, short, work, 'Encrypt, alone (before the SQLite lock)', 'Encrypt', target, 8, 'targets');
  const decryptAlone = await wrkPoint(wrk, short, work, 'Decrypt, alone (before the SQLite lock)', 'Decrypt', target, 8, 'targets');

  progress(`an outside process holds the SQLite write lock for ${holdSeconds} s`);
  const locker = spawn(process.execPath, [path.join(DIST_BENCH, 'sqlite-lock-child.js'), dbFile, String(holdSeconds)], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  track(locker);
  let lockerOut = '';
  const released = new Promise<void>((resolve, reject) => {
    locker.once('close', (code) => (code === 0 ? resolve() : reject(new Error(`the lock holder exited ${code}: ${lockerOut}`))));
  });
  released.catch(() => {}); // awaited below
  await new Promise<void>((resolve, reject) => {
    const onData = (d: Buffer) => {
      lockerOut += d.toString();
      if (lockerOut.includes('LOCKED')) resolve();
    };
    locker.stdout!.on('data', onData);
    locker.stderr!.on('data', (d: Buffer) => (lockerOut += d.toString()));
    locker.once('close', () => reject(new Error(`the lock holder exited before taking the lock: ${lockerOut}`)));
  });
  const lockedAt = performance.now();

  const writes: LockedWrites = { calls: 0, ok: 0, errors: {}, p50Ms: 0, maxMs: 0 };
  const durations: number[] = [];
  let writing = true;
  const writer = (async () => {
    while (writing) {
      const t0 = performance.now();
      try {
        await service.client.send(new CreateKeyCommand({ Description: 'p11kms bench under a SQLite lock' }));
        writes.ok++;
      } catch (e) {
        const name = errorMessage(e).split(':')[0]!;
        writes.errors[name] = (writes.errors[name] ?? 0) + 1;
      }
      writes.calls++;
      durations.push(performance.now() - t0);
    }
  })();
  let encrypt: WrkResult;
  let decrypt: WrkResult;
  try {
    encrypt = await wrkPoint(wrk, short, work, 'Encrypt, SQLite write-locked', 'Encrypt', target, 8, 'targets');
    decrypt = await wrkPoint(wrk, short, work, 'Decrypt, SQLite write-locked', 'Decrypt', target, 8, 'targets');
  } finally {
    // Writes are sampled while the lock is held only.
    const left = holdSeconds * 1000 - (performance.now() - lockedAt) - 500;
    if (left > 0) await sleep(left);
    writing = false;
  }
  await writer;
  await released;
  if ((performance.now() - lockedAt) / 1000 < pointSeconds * 2) throw new Error('the lock was released before the loaded points ended');
  writes.p50Ms = durations.length > 0 ? median(durations) : 0;
  writes.maxMs = durations.length > 0 ? Math.max(...durations) : 0;
  progress(`writes under the lock: ${writes.calls} CreateKey calls, ${writes.ok} ok, errors ${JSON.stringify(writes.errors)}, p50 ${writes.p50Ms.toFixed(0)} ms, max ${writes.maxMs.toFixed(0)} ms`);
  return { holdSeconds, encryptAlone, decryptAlone, encrypt, decrypt, writes };
}

// ---- the peer --------------------------------------------------------------------------------

interface Peer {
  bin: string;
  target: Target;
  stop(): Promise<void>;
}

/**
 * Starts BENCH_PEER_BIN with PORT=<port> in its environment and BENCH_PEER_ARGS (space-separated,
 * `{port}` replaced) as arguments; it must listen on loopback only — one that listens on any other
 * address is stopped and reported as skipped. One key is created on it through the SDK.
 */
async function startPeer(bin: string, work: string): Promise<Peer> {
  const port = await freePort();
  const args = (process.env.BENCH_PEER_ARGS ?? '').split(' ').filter(Boolean).map((a) => a.replaceAll('{port}', String(port)));
  const dataDir = path.join(work, 'peer-data');
  fs.mkdirSync(dataDir, { recursive: true });
  const log = fs.openSync(path.join(work, 'peer.log'), 'a');
  const child = spawn(bin, args, {
    env: childEnv({ PORT: String(port), KMS_REGION: REGION, KMS_DATA_PATH: dataDir }),
    stdio: ['ignore', log, log],
    detached: true,
    cwd: dataDir,
  });
  fs.closeSync(log);
  track(child);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async () => {
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      // gone
    }
    await exited;
  };
  try {
    const deadline = performance.now() + 30_000;
    while (!(await accepts(port))) {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${bin} exited (${child.exitCode ?? child.signalCode}) before listening on ${port}`);
      if (performance.now() > deadline) throw new Error(`${bin} did not listen on 127.0.0.1:${port} within 30 s`);
      await sleep(50);
    }
    const exposed = nonLoopbackListeners([child.pid!, ...descendants(child.pid!)]);
    if (exposed.length > 0) throw new Error(`listens on ${exposed.join(', ')}, not loopback only: give it loopback-only arguments in BENCH_PEER_ARGS`);
    const client = kmsClient(port, ROOT_CREDENTIALS);
    try {
      const created = await client.send(new CreateKeyCommand({ Description: 'p11kms bench peer' }));
      return { bin, target: { port, keyId: created.KeyMetadata!.KeyId!, ciphertext: '' }, stop };
    } finally {
      client.destroy();
    }
  } catch (e) {
    await stop();
    throw e;
  }
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/** Listening TCP sockets of `pids` bound to anything but 127.0.0.0/8 or ::1 (from /proc). */
export function nonLoopbackListeners(pids: number[]): string[] {
  const inodes = new Set<string>();
  for (const pid of pids) {
    let fds: string[] = [];
    try {
      fds = fs.readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        const m = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/fd/${fd}`));
        if (m) inodes.add(m[1]!);
      } catch {
        // closed meanwhile
      }
    }
  }
  const exposed: string[] = [];
  for (const [table, v6] of [['/proc/net/tcp', false], ['/proc/net/tcp6', true]] as const) {
    let text = '';
    try {
      text = fs.readFileSync(table, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 10 || f[3] !== '0A' || !inodes.has(f[9]!)) continue; // 0A: LISTEN
      const [addr, portHex] = f[1]!.split(':') as [string, string];
      const loopback = v6 ? addr === '00000000000000000000000001000000' || addr.startsWith('0000000000000000FFFF0000') && addr.endsWith('7F') : addr.endsWith('7F');
      if (!loopback) exposed.push(`${v6 ? 'tcp6' : 'tcp'} ${addr}:${parseInt(portHex, 16)}`);
    }
  }
  return exposed;
}
