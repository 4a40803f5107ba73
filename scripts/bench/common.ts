/**
 * Shared plumbing for `npm run bench`: settings from the environment, child processes (always
 * killed on the way out), free loopback ports, health polling and RSS.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** Repository root (this file compiles to dist/scripts/bench/common.js). */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const DIST_BENCH = path.dirname(fileURLToPath(import.meta.url));
export const SERVICE_MAIN = path.join(REPO_ROOT, 'dist/src/main.js');

export const ROOT_CREDENTIALS = { accessKeyId: 'AKIAP11KMSBENCHROOT1', secretAccessKey: 'p11kms-bench-root-secret-0123456789abcdef' };
export const REGION = 'us-east-1';

/** The phases of a run, in the order they run; BENCH_PHASES picks a subset. */
export const PHASES = ['token', 'targets', 'loop', 'http', 'scale', 'asym', 'authz', 'audit', 'frontdoor', 'nodes'] as const;
/** BENCH_QUICK=1: the phases that measure issue 15's targets, in a few minutes. */
export const QUICK_PHASES: readonly Phase[] = ['token', 'targets'];
export type Phase = (typeof PHASES)[number];

export interface Settings {
  /** Phases to run (BENCH_PHASES, comma-separated; default all). */
  phases: Phase[];
  /** Seconds per wrk point. */
  seconds: number;
  /** Seconds per in-process token loop (raw pkcs11js, Hsm wrapper, Node crypto). */
  tokenSeconds: number;
  /** Keys in the scale phase. */
  keys: number;
  /** Concurrent CreateKey calls in the scale phase. */
  createConcurrency: number;
  /** CreateKey stops after this many seconds even when fewer than `keys` exist (bounded run). */
  createSeconds: number;
  /** Concurrent generateAesKey calls in the event-loop phase. */
  keygens: number;
  /** Passed to the service as P11KMS_WORKERS when set. */
  workers: string | undefined;
  /** Keep the scratch data dirs (tokens, databases, logs). */
  keep: boolean;
  /** asym phase: concurrent RSA-4096 CreateKey loops beside the Encrypt point (0: skip that comparison). */
  rsa4096Concurrency: number;
  /** authz phase: grants on the policied key. */
  grants: number;
  /** authz phase: rounds of (root, user) pairs per client count (median reported). */
  authzRounds: number;
  /** audit phase: rounds of (on, off) pairs per client count (median reported). */
  auditRounds: number;
  /** targets phase: seconds an outside process holds the SQLite write lock. */
  lockSeconds: number;
  /** BENCH_QUICK: fewer phases and shorter points by default. */
  quick: boolean;
}

const isOn = (name: string) => process.env[name] === '1' || process.env[name] === 'true';

function phasesEnv(quick: boolean): Phase[] {
  const raw = process.env.BENCH_PHASES;
  if (raw === undefined || raw.trim() === '') return quick ? [...QUICK_PHASES] : [...PHASES];
  if (raw.trim() === 'all') return [...PHASES];
  const wanted = raw.split(',').map((p) => p.trim()).filter(Boolean);
  const unknown = wanted.filter((p) => !(PHASES as readonly string[]).includes(p));
  if (unknown.length > 0) throw new Error(`BENCH_PHASES: unknown phase(s) ${unknown.join(', ')} (known: ${PHASES.join(', ')})`);
  return PHASES.filter((p) => wanted.includes(p));
}

function intEnv(name: string, fallback: number, min: number, max: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value < min || value > max) {
    throw new Error(`${name} must be a number between ${min} and ${max} (got '${raw}')`);
  }
  return value;
}

export function loadSettings(): Settings {
  // ≤ 240 s: a point replays one signature, which the service accepts for its clock-skew window
  // (300 s by default) after signing.
  const quick = isOn('BENCH_QUICK');
  const seconds = Math.round(intEnv('BENCH_SECONDS', quick ? 3 : 5, 1, 240));
  return {
    seconds,
    tokenSeconds: intEnv('BENCH_TOKEN_SECONDS', Math.min(seconds, quick ? 2 : 5), 0.5, 600),
    keys: Math.round(intEnv('BENCH_KEYS', 2000, 20, 100_000)),
    createConcurrency: Math.round(intEnv('BENCH_CREATE_CONCURRENCY', 8, 1, 256)),
    createSeconds: intEnv('BENCH_CREATE_SECONDS', 150, 5, 3600),
    keygens: Math.round(intEnv('BENCH_KEYGENS', 1000, 1, 100_000)),
    workers: process.env.BENCH_WORKERS || undefined,
    keep: isOn('BENCH_KEEP'),
    phases: phasesEnv(quick),
    rsa4096Concurrency: Math.round(intEnv('BENCH_RSA4096_CONCURRENCY', 2, 0, 16)),
    grants: Math.round(intEnv('BENCH_GRANTS', 100, 0, 10_000)),
    authzRounds: Math.round(intEnv('BENCH_AUTHZ_ROUNDS', 2, 1, 20)),
    auditRounds: Math.round(intEnv('BENCH_AUDIT_ROUNDS', 2, 1, 20)),
    lockSeconds: Math.round(intEnv('BENCH_LOCK_SECONDS', 20, 4, 600)),
    quick,
  };
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export function progress(msg: string): void {
  const t = ((performance.now() - benchStarted) / 1000).toFixed(1).padStart(6);
  process.stderr.write(`[bench ${t}s] ${msg}\n`);
}
const benchStarted = performance.now();

// ---- child processes --------------------------------------------------------------------------

const live = new Set<ChildProcess>();

/** Kills a child's whole process group (children are spawned detached, so the group is theirs
 *  alone: a clustered service's workers go with it). */
function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    try {
      child.kill(signal);
    } catch {
      // already gone
    }
  }
}

/** Registers a child started elsewhere (wrk) so that it is killed on the way out too. */
export function track(child: ChildProcess): void {
  live.add(child);
  child.once('exit', () => live.delete(child));
}

export function killAllChildren(): void {
  for (const child of live) killGroup(child, 'SIGKILL');
  live.clear();
}

/** Scratch dir removed when a signal ends the bench (unless BENCH_KEEP). */
let scratchOnSignal: string | undefined;
export function removeOnSignal(dir: string | undefined): void {
  scratchOnSignal = dir;
}

let handlersInstalled = false;
export function installCleanupHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.on('exit', killAllChildren);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(signal, () => {
      process.stderr.write(`bench: ${signal}, stopping child processes\n`);
      killAllChildren();
      if (scratchOnSignal) fs.rmSync(scratchOnSignal, { recursive: true, force: true });
      process.exit(130);
    });
  }
}

export interface Proc {
  name: string;
  child: ChildProcess;
  pid: number;
  /** performance.now() right before spawn(). */
  spawnedAt: number;
  logFile: string;
  exited: Promise<number | null>;
  stop(graceMs?: number): Promise<void>;
  logTail(lines?: number): string;
}

/** Environment for children: ours minus any P11KMS_* of the caller's shell. */
export function childEnv(extra: Record<string, string | undefined>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('P11KMS_') && !k.startsWith('SOFTHSM2_')) env[k] = v;
  for (const [k, v] of Object.entries(extra)) if (v !== undefined) env[k] = v;
  return env;
}

/** Spawns `node …nodeArgs <script> …args` detached (own process group), output to `logFile`. */
export function startNode(name: string, script: string, args: string[], env: NodeJS.ProcessEnv, logFile: string, nodeArgs: string[] = []): Proc {
  const fd = fs.openSync(logFile, 'a');
  const spawnedAt = performance.now();
  const child = spawn(process.execPath, [...nodeArgs, script, ...args], { env, stdio: ['ignore', fd, fd], detached: true, cwd: REPO_ROOT });
  fs.closeSync(fd);
  if (child.pid === undefined) throw new Error(`could not start ${name}`);
  live.add(child);
  const exited = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => {
      live.delete(child);
      resolve(code);
    }),
  );
  const logTail = (lines = 30) => {
    try {
      return fs.readFileSync(logFile, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
    } catch {
      return '';
    }
  };
  return {
    name,
    child,
    pid: child.pid,
    spawnedAt,
    logFile,
    exited,
    logTail,
    async stop(graceMs = 10_000) {
      killGroup(child, 'SIGTERM');
      const timer = setTimeout(() => killGroup(child, 'SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
      killGroup(child, 'SIGKILL'); // stragglers in the group (workers)
    },
  };
}

/** Runs `node <script> <json arg>` to completion and returns the JSON it printed on its last
 *  `BENCH_RESULT ` line; throws with its output when it fails. */
export async function runNodeJson<T>(name: string, script: string, arg: unknown, env: NodeJS.ProcessEnv, logFile: string, timeoutMs: number): Promise<T> {
  const child = spawn(process.execPath, [script, JSON.stringify(arg)], { env, stdio: ['ignore', 'pipe', 'pipe'], detached: true, cwd: REPO_ROOT });
  live.add(child);
  let out = '';
  let err = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const timer = setTimeout(() => killGroup(child, 'SIGKILL'), timeoutMs);
  const code = await new Promise<number | null>((resolve) => child.once('close', (c) => resolve(c)));
  clearTimeout(timer);
  live.delete(child);
  fs.writeFileSync(logFile, `${out}\n--- stderr ---\n${err}`);
  const line = out
    .split('\n')
    .reverse()
    .find((l) => l.startsWith('BENCH_RESULT '));
  if (code !== 0 || line === undefined) {
    throw new Error(`${name} failed (exit ${code}):\n${(out + err).trim().split('\n').slice(-30).join('\n')}`);
  }
  return JSON.parse(line.slice('BENCH_RESULT '.length)) as T;
}

// ---- network ------------------------------------------------------------------------------------

export { freePort } from './free-port.js';

function getStatus(port: number, urlPath: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: urlPath, agent: false, timeout: 2000 }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

/** Polls GET `urlPath` every 5 ms until it answers 200; returns ms since the process was
 *  spawned. Throws (with the log tail) when the process exits or the deadline passes. */
export async function waitForOk(proc: Proc, port: number, urlPath = '/healthz', timeoutMs = 60_000): Promise<number> {
  const deadline = performance.now() + timeoutMs;
  let last = 'no answer';
  while (performance.now() < deadline) {
    if (proc.child.exitCode !== null || proc.child.signalCode !== null) {
      throw new Error(`${proc.name} exited (${proc.child.exitCode ?? proc.child.signalCode}) before answering ${urlPath}:\n${proc.logTail()}`);
    }
    try {
      const status = await getStatus(port, urlPath);
      if (status === 200) return performance.now() - proc.spawnedAt;
      last = `HTTP ${status}`;
    } catch (e) {
      last = e instanceof Error ? e.message : String(e);
    }
    await sleep(5);
  }
  throw new Error(`${proc.name} did not answer 200 on ${urlPath} within ${timeoutMs} ms (last: ${last}):\n${proc.logTail()}`);
}

// ---- memory -----------------------------------------------------------------------------------

function vmRssKb(pid: number): number {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/** Descendants of `pid` (a clustered service's workers), from /proc/<pid>/stat parent ids. */
export function descendants(pid: number): number[] {
  const parent = new Map<number, number>();
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      parent.set(Number(entry), Number(fields[1]));
    } catch {
      // exited meanwhile
    }
  }
  const out: number[] = [];
  const queue = [pid];
  while (queue.length > 0) {
    const p = queue.shift()!;
    for (const [child, pp] of parent) {
      if (pp === p) {
        out.push(child);
        queue.push(child);
      }
    }
  }
  return out;
}

/** VmRSS of the process and all its descendants, MiB; `processes` = how many were summed. */
export function rssMiB(pid: number): { mib: number; processes: number } {
  const pids = [pid, ...descendants(pid)];
  const kb = pids.reduce((sum, p) => sum + vmRssKb(p), 0);
  return { mib: kb / 1024, processes: pids.length };
}

// ---- misc -------------------------------------------------------------------------------------

export function resultsDir(): string {
  const dir = path.join(os.tmpdir(), 'p11kms-bench');
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}

export function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** A token loop's rate over its rounds: all ops, the median ops/s, and each round's ops/s (sorted). */
export function summariseRounds(rounds: { ops: number; elapsed: number }[]): { ops: number; opsPerSec: number; rounds: number[] } {
  const rates = rounds.map((r) => r.ops / r.elapsed).sort((a, b) => a - b);
  return { ops: rounds.reduce((sum, r) => sum + r.ops, 0), opsPerSec: median(rates), rounds: rates };
}

/** Median req/s of the wrk points measured at `clients` (one per round). */
export function medianRps(points: { clients: number; rps: number }[], clients: number): number {
  return median(points.filter((w) => w.clients === clients).map((w) => w.rps));
}

/** Runs two measurements of a round in an order that alternates with the round (a, b; then b, a),
 *  so that neither side always goes first onto a warmer or cooler machine. */
export async function alternately(round: number, a: () => Promise<unknown>, b: () => Promise<unknown>): Promise<void> {
  const [first, second] = round % 2 === 0 ? [a, b] : [b, a];
  await first();
  await second();
}
