/**
 * Drives load with wrk (Debian's package; installed here when missing). Each point replays one
 * pre-signed request; a Lua `done` hook prints exact counts and percentiles as JSON, and the
 * `--latency` text is parsed as a cross-check. Any non-2xx answer or socket error fails the bench.
 */
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { track } from './common.js';
import type { SignedRequest } from './sign.js';

export interface WrkResult {
  label: string;
  clients: number;
  threads: number;
  seconds: number;
  requests: number;
  rps: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  maxMs: number;
  meanMs: number;
}

function wrkPath(): string | undefined {
  for (const dir of (process.env.PATH ?? '/usr/bin:/bin').split(':')) {
    const candidate = path.join(dir || '.', 'wrk');
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      return candidate;
    } catch {
      // keep looking
    }
  }
  return undefined;
}

/** Returns wrk's path, installing Debian's package first when it is missing (as root). */
export function ensureWrk(): string {
  const found = wrkPath();
  if (found) return found;
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  let hasApt = false;
  try {
    execFileSync('sh', ['-c', 'command -v apt-get'], { stdio: 'ignore' });
    hasApt = true;
  } catch {
    // no apt
  }
  if (!isRoot || !hasApt) {
    throw new Error('wrk is not installed and cannot be installed here: install it as root (Debian/Ubuntu: apt-get install wrk)');
  }
  process.stderr.write('bench: installing wrk (apt-get install wrk)\n');
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  execFileSync('apt-get', ['update', '-qq'], { stdio: ['ignore', 'ignore', 'inherit'], env });
  execFileSync('apt-get', ['install', '-y', '-qq', 'wrk'], { stdio: ['ignore', 'ignore', 'inherit'], env });
  const installed = wrkPath();
  if (!installed) throw new Error('apt-get install wrk finished but wrk is not on PATH');
  return installed;
}

export function wrkVersion(wrk: string): string {
  try {
    execFileSync(wrk, ['-v'], { stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    // `wrk -v` prints its version and usage, then exits 1.
    const out = String((e as { stdout?: Buffer }).stdout ?? '');
    const m = /^wrk (\S+)/m.exec(out);
    if (m) return m[1]!;
  }
  return 'unknown';
}

/** A Lua long bracket that cannot occur inside `text`. */
function luaString(text: string): string {
  let eq = '=';
  while (text.includes(`]${eq}]`)) eq += '=';
  return `[${eq}[${text}]${eq}]`;
}

function luaScript(req: SignedRequest): string {
  const lines = ['wrk.method = "POST"', 'wrk.path = "/"', `wrk.body = ${luaString(req.body)}`];
  for (const [name, value] of Object.entries(req.headers)) lines.push(`wrk.headers[ ${luaString(name)} ] = ${luaString(value)}`);
  lines.push(
    'done = function(summary, latency, requests)',
    '  local e = summary.errors',
    '  io.write(string.format("BENCH_JSON {\\"requests\\":%.0f,\\"duration_us\\":%.0f,\\"status\\":%.0f,\\"connect\\":%.0f,\\"read\\":%.0f,\\"write\\":%.0f,\\"timeout\\":%.0f,\\"p50\\":%.1f,\\"p90\\":%.1f,\\"p99\\":%.1f,\\"max\\":%.1f,\\"mean\\":%.3f}\\n",',
    '    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,',
    '    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))',
    'end',
    '',
  );
  return lines.join('\n');
}

interface DoneJson {
  requests: number;
  duration_us: number;
  status: number;
  connect: number;
  read: number;
  write: number;
  timeout: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
}

/** "412.00us" / "1.23ms" / "2.01s" → ms. */
function toMs(text: string): number {
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(text);
  if (!m) return NaN;
  const v = Number(m[1]);
  return m[2] === 'us' ? v / 1000 : m[2] === 'ms' ? v : m[2] === 's' ? v * 1000 : v * 60_000;
}

export interface WrkPoint {
  label: string;
  port: number;
  clients: number;
  seconds: number;
  request: SignedRequest;
  /** Where the script and wrk's output are kept. */
  workDir: string;
  /** Appended to the file names, so that repeated points with one label keep their outputs. */
  fileTag?: string;
  /** 'https' for a TLS listener (wrk does not check the certificate). */
  scheme?: 'http' | 'https';
}

export async function runWrk(wrk: string, point: WrkPoint): Promise<WrkResult> {
  const threads = point.clients >= 16 ? 2 : 1;
  const slug = `${point.label}${point.fileTag ? ` ${point.fileTag}` : ''}`.replace(/[^A-Za-z0-9]+/g, '-').replace(/^-|-$/g, '').toLowerCase();
  const script = path.join(point.workDir, `${slug}-c${point.clients}.lua`);
  fs.writeFileSync(script, luaScript(point.request));
  const args = ['-t', String(threads), '-c', String(point.clients), '-d', `${point.seconds}s`, '--timeout', '10s', '--latency', '-s', script, `${point.scheme ?? 'http'}://127.0.0.1:${point.port}/`];
  const output = await new Promise<string>((resolve, reject) => {
    const child = spawn(wrk, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    track(child);
    let text = '';
    child.stdout.on('data', (d: Buffer) => (text += d.toString()));
    child.stderr.on('data', (d: Buffer) => (text += d.toString()));
    child.once('error', reject);
    child.once('close', (code) => (code === 0 ? resolve(text) : reject(new Error(`wrk exited ${code} for ${point.label}:\n${text}`))));
  });
  fs.writeFileSync(path.join(point.workDir, `${slug}-c${point.clients}.wrk.txt`), `wrk ${args.join(' ')}\n\n${output}`);

  const jsonLine = output.split('\n').find((l) => l.startsWith('BENCH_JSON '));
  if (!jsonLine) throw new Error(`wrk printed no summary for ${point.label}:\n${output}`);
  const done = JSON.parse(jsonLine.slice('BENCH_JSON '.length)) as DoneJson;
  const non2xx = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(output)?.[1] ?? 0);
  if (done.status > 0 || non2xx > 0) {
    throw new Error(`${point.label} at ${point.clients} clients: ${Math.max(done.status, non2xx)} non-2xx responses out of ${done.requests}; the pre-signed request is being rejected or the service is failing:\n${output}`);
  }
  const socketErrors = done.connect + done.read + done.write + done.timeout;
  if (socketErrors > 0) {
    throw new Error(`${point.label} at ${point.clients} clients: socket errors (connect ${done.connect}, read ${done.read}, write ${done.write}, timeout ${done.timeout}):\n${output}`);
  }
  if (done.requests === 0) throw new Error(`${point.label} at ${point.clients} clients: no request completed:\n${output}`);

  // Cross-check against wrk's own Latency Distribution (rounded to 2 decimals there).
  const textP50 = toMs(/^\s+50%\s+(\S+)/m.exec(output)?.[1] ?? '');
  const textP99 = toMs(/^\s+99%\s+(\S+)/m.exec(output)?.[1] ?? '');
  for (const [name, fromText, fromLua] of [['p50', textP50, done.p50 / 1000], ['p99', textP99, done.p99 / 1000]] as const) {
    if (Number.isFinite(fromText) && Math.abs(fromText - fromLua) > Math.max(0.02, fromLua * 0.02)) {
      process.stderr.write(`bench: warning: ${point.label} ${name} from --latency (${fromText} ms) differs from the Lua summary (${fromLua} ms)\n`);
    }
  }
  return {
    label: point.label,
    clients: point.clients,
    threads,
    seconds: point.seconds,
    requests: done.requests,
    rps: done.requests / (done.duration_us / 1e6),
    p50Ms: done.p50 / 1000,
    p90Ms: done.p90 / 1000,
    p99Ms: done.p99 / 1000,
    maxMs: done.max / 1000,
    meanMs: done.mean / 1000,
  };
}
