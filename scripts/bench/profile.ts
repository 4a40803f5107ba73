/**
 * CPU profiles of bench services (BENCH_CPU_PROF=1: every service runs under `node --cpu-prof`,
 * its profiles written to <scratch>/profiles/<service>/ when it stops), and a summary of one
 * profile: the functions with the most self time, with the share of the sampled time and, given
 * the number of requests served meanwhile, microseconds per request.
 *
 * Usage as a script: node dist/scripts/bench/profile.js <file.cpuprofile> [requests] [top]
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

interface CpuProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}

interface CpuProfile {
  nodes: CpuProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileLine {
  name: string;
  selfMs: number;
  share: number;
  usPerRequest?: number;
}

/** Where a frame comes from, short: node internals, a package, or a project file. */
function origin(url: string): string {
  if (url === '') return '';
  if (url.startsWith('node:')) return url;
  const nm = url.lastIndexOf('node_modules/');
  if (nm >= 0) return url.slice(nm + 'node_modules/'.length).split('/').slice(0, url.includes('/@', nm) ? 2 : 1).join('/');
  const dist = url.indexOf('/dist/');
  return dist >= 0 ? url.slice(dist + '/dist/'.length) : path.basename(url);
}

/** Self time per function (summed over its call sites), largest first. */
export function summariseProfile(profile: CpuProfile, requests?: number, top = 25): { totalMs: number; lines: ProfileLine[] } {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<string, number>();
  let totalUs = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    const node = byId.get(profile.samples[i]!);
    const delta = profile.timeDeltas[i] ?? 0;
    if (!node) continue;
    const { functionName, url, lineNumber } = node.callFrame;
    const where = origin(url);
    const name = `${functionName || '(anonymous)'}${where ? ` ${where}${url.startsWith('node:') || !where.endsWith('.js') ? '' : `:${lineNumber + 1}`}` : ''}`;
    selfUs.set(name, (selfUs.get(name) ?? 0) + delta);
    totalUs += delta;
  }
  const lines = [...selfUs]
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([name, us]) => ({
      name,
      selfMs: us / 1000,
      share: totalUs > 0 ? us / totalUs : 0,
      usPerRequest: requests ? us / requests : undefined,
    }));
  return { totalMs: totalUs / 1000, lines };
}

/** Where a frame's self time belongs, for the per-area summary. */
function areaOf(functionName: string, url: string): string {
  if (functionName === '(idle)') return 'idle';
  if (functionName === '(garbage collector)') return 'GC';
  if (functionName === '(program)') return 'V8/native (program)';
  if (url.includes('pkcs11js') || url.includes('/src/hsm/')) return 'token (pkcs11js, src/hsm)';
  if (functionName === 'postMessage' || functionName === 'writeBuffer') return 'audit'; // posting to the writer thread; the thread's own write
  if (functionName === 'writeString') return 'logging'; // pino's fs.write of the lines
  if (url.includes('node:internal/modules') || url.includes('node:internal/bootstrap') || ['openFileHandle', 'readFileUtf8', 'internalModuleStat'].includes(functionName)) return 'start-up (module loading)';
  if (['runMicrotasks', 'processTicksAndRejections', 'processImmediate'].includes(functionName)) return 'promises, ticks';
  if (url.includes('zod')) return 'KMS operation + authorization';
  if (url.includes('signature-v4') || url.includes('/src/auth/sigv4') || url.includes('@smithy')) return 'SigV4';
  if (url.includes('/src/audit/')) return 'audit';
  if (url.includes('pino') || url.includes('sonic-boom') || url.includes('/src/log.')) return 'logging';
  if (url.includes('prom-client') || url.includes('/src/metrics')) return 'metrics';
  if (url.includes('/src/http/') || /^node:(_http|http|net|stream|internal\/(http|stream|streams|net))/.test(url) || ['writev', 'writeBuffer', 'writeUtf8String', 'writeLatin1String', 'onStreamRead'].includes(functionName)) return 'HTTP (node:http, src/http)';
  if (functionName.startsWith('Hash') || functionName === 'Hmac' || functionName === 'digest' || functionName === 'update' || url.includes('node:internal/crypto')) return 'hashing (SigV4 + audit chain)';
  if (url.includes('/src/kms/') || url.includes('/src/auth/')) return 'KMS operation + authorization';
  if (url.includes('/src/store/') || url.includes('better-sqlite3')) return 'store';
  return 'other';
}

/** Self time per area (see areaOf), largest first. */
export function summariseAreas(profile: CpuProfile, requests?: number): ProfileLine[] {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const areas = new Map<string, number>();
  let totalUs = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    const node = byId.get(profile.samples[i]!);
    const delta = profile.timeDeltas[i] ?? 0;
    if (!node) continue;
    const area = areaOf(node.callFrame.functionName, node.callFrame.url);
    areas.set(area, (areas.get(area) ?? 0) + delta);
    totalUs += delta;
  }
  return [...areas]
    .sort((a, b) => b[1] - a[1])
    .map(([name, us]) => ({ name, selfMs: us / 1000, share: totalUs > 0 ? us / totalUs : 0, usPerRequest: requests ? us / requests : undefined }));
}

export function readProfile(file: string): CpuProfile {
  return JSON.parse(fs.readFileSync(file, 'utf8')) as CpuProfile;
}

export function formatSummary(summary: { totalMs: number; lines: ProfileLine[] }): string {
  const rows = summary.lines.map((l) => {
    const per = l.usPerRequest === undefined ? '' : `${l.usPerRequest.toFixed(1).padStart(7)} µs/req  `;
    return `${(l.share * 100).toFixed(1).padStart(5)}%  ${per}${l.name}`;
  });
  return [`sampled ${(summary.totalMs / 1000).toFixed(1)} s`, ...rows].join('\n');
}

/** node's options that make a service write its profiles into `dir` (node refuses them in
 *  NODE_OPTIONS, so they go on the command line; a clustered service's workers inherit them). */
export function cpuProfArgs(dir: string): string[] {
  fs.mkdirSync(dir, { recursive: true });
  return ['--cpu-prof', `--cpu-prof-dir=${dir}`];
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const [file, requests, top] = process.argv.slice(2);
  if (!file) {
    process.stderr.write('usage: node dist/scripts/bench/profile.js <file.cpuprofile> [requests] [top]\n');
    process.exit(2);
  }
  const profile = readProfile(file);
  const n = requests ? Number(requests) : undefined;
  process.stdout.write(`${formatSummary(summariseProfile(profile, n, top ? Number(top) : 25))}\n\nby area:\n`);
  process.stdout.write(`${formatSummary({ totalMs: 0, lines: summariseAreas(profile, n) }).split('\n').slice(1).join('\n')}\n`);
}
