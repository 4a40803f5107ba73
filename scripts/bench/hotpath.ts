/**
 * One Encrypt point under a CPU profile, for before/after comparisons of hot-path changes:
 * starts a service (P11KMS_* settings from the caller's environment on top of the bench's),
 * runs wrk Encrypt 32 B at `clients` for BENCH_SECONDS after a warm-up, stops the service and
 * prints the rate, the latencies and the profile's top self-time functions in µs per request.
 * Usage: node dist/scripts/bench/hotpath.js [clients] [top]
 */
import fs from 'node:fs';
import path from 'node:path';
import { installCleanupHandlers, killAllChildren, loadSettings, progress, resultsDir } from './common.js';
import { WARM_UP_SECONDS, firstKeys, startService, stopService, wrkPoint } from './kms.js';
import { cpuProfArgs, formatSummary, readProfile, summariseAreas, summariseProfile } from './profile.js';
import { ensureWrk } from './wrk.js';

async function main(): Promise<void> {
  installCleanupHandlers();
  const clients = Number(process.argv[2] ?? 32);
  const top = Number(process.argv[3] ?? 30);
  const settings = loadSettings();
  const wrk = ensureWrk();
  const work = fs.mkdtempSync(path.join(resultsDir(), 'hotpath-'));
  const profiles = path.join(work, 'profiles');
  const extra: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (k.startsWith('P11KMS_') && v !== undefined) extra[k] = v;
  const service = await startService('service-hotpath', path.join(work, 'data'), work, settings, extra, cpuProfArgs(profiles));
  let requests = 0;
  try {
    const [keyId] = await firstKeys(service.client, 1);
    const result = await wrkPoint(wrk, settings, work, 'Encrypt (profiled)', 'Encrypt', { port: service.port, keyId: keyId!, ciphertext: '' }, clients, undefined, WARM_UP_SECONDS);
    requests = result.requests;
    process.stdout.write(`Encrypt c=${clients}: ${Math.round(result.rps)} req/s, p50 ${result.p50Ms.toFixed(2)} ms, p99 ${result.p99Ms.toFixed(2)} ms\n`);
  } finally {
    await stopService(service);
  }
  // The warm-up's requests are in the profile too: count them at the measured rate.
  const files = fs.readdirSync(profiles).filter((f) => f.endsWith('.cpuprofile'));
  for (const file of files) {
    const profile = readProfile(path.join(profiles, file));
    const seconds = (profile.endTime - profile.startTime) / 1e6;
    progress(`${file}: ${seconds.toFixed(1)} s profiled`);
    const perRequestBase = requests * (1 + WARM_UP_SECONDS / settings.seconds);
    process.stdout.write(`${formatSummary(summariseProfile(profile, perRequestBase, top))}\n\nby area:\n`);
    process.stdout.write(`${formatSummary({ totalMs: 0, lines: summariseAreas(profile, perRequestBase) }).split('\n').slice(1).join('\n')}\n`);
  }
  // The service's data and its info-level log grow by hundreds of MB a run: only the profiles stay.
  if (!settings.keep) for (const entry of fs.readdirSync(work)) if (entry !== 'profiles') fs.rmSync(path.join(work, entry), { recursive: true, force: true });
  process.stdout.write(`profiles in ${profiles}\n`);
}

main().catch((e: unknown) => {
  process.stderr.write(`hotpath failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  killAllChildren();
  process.exit(1);
});
