/**
 * `p11kms doctor [--repair] [--destroy-orphans] [--json]`: compares the token with the metadata
 * database (same configuration as the service: environment variables) and lists divergences:
 * token objects without metadata, metadata whose token objects are gone, key versions out of
 * order, import wrapping keys without parameters. --repair fixes what can be fixed without
 * destroying anything; --destroy-orphans (with --repair) also destroys orphan token objects.
 * Run it while the service is stopped: an operation in flight looks like an orphan. It warns while
 * a service runs on the data dir (src/service-presence.ts) and refuses --repair then (--force).
 * Exit code: 0 consistent, 1 divergences remain, 2 usage or configuration error.
 */
import { ConfigError, loadConfig } from '../config.js';
import { DataDirError, ensureDataDir } from '../data-dir.js';
import type { Hsm } from '../hsm/types.js';
import { capabilityTable, type Capability } from '../kms/capabilities.js';
import { type ConsistencyReport, checkConsistency, isConsistent, repairConsistency } from '../kms/lifecycle/consistency.js';
import { openBoundHsm, TokenBindingError } from '../kms/token-binding.js';
import { createLogger } from '../log.js';
import { runningServices } from '../service-presence.js';
import { openStore } from '../store/open.js';

const USAGE = 'usage: p11kms doctor [--repair [--destroy-orphans] [--force]] [--json]';

export async function run(args: string[]): Promise<number> {
  const flags = new Set(args);
  const unknown = args.filter((a) => !['--repair', '--destroy-orphans', '--force', '--json'].includes(a));
  if (unknown.length > 0 || (flags.has('--destroy-orphans') && !flags.has('--repair'))) {
    console.error(USAGE);
    return 2;
  }
  let config;
  try {
    config = loadConfig();
  } catch (e) {
    if (e instanceof ConfigError) {
      console.error(`p11kms doctor: ${e.message}`);
      return 2;
    }
    throw e;
  }
  try {
    ensureDataDir(config.dataDir);
  } catch (e) {
    if (!(e instanceof DataDirError)) throw e;
    console.error(`p11kms doctor: ${e.message}`);
    return 2;
  }
  const running = runningServices(config.dataDir);
  if (running.length > 0) {
    const what = `a p11kms service is running on ${config.dataDir} (pid ${running.join(', ')}): operations in flight look like divergences`;
    if (flags.has('--repair') && !flags.has('--force')) {
      console.error(`p11kms doctor: ${what}; stop it before --repair (or add --force)`);
      return 2;
    }
    console.error(`p11kms doctor: warning: ${what}`);
  }
  const store = await openStore(config.database);
  let hsm;
  try {
    // The same token check as the service: comparing a store with another token's objects would
    // call every key's material missing (and --repair would act on that).
    hsm = await openBoundHsm(config, store, createLogger('warn', process.stderr), { record: false });
  } catch (e) {
    await store.close();
    if (!(e instanceof TokenBindingError)) throw e;
    console.error(`p11kms doctor: ${e.message}`);
    return 2;
  }
  try {
    let report = await checkConsistency(hsm, store);
    const actions = flags.has('--repair') ? await repairConsistency(hsm, store, report, { destroyOrphans: flags.has('--destroy-orphans') }) : [];
    if (actions.length > 0) report = await checkConsistency(hsm, store);
    const capabilities = capabilityTable({ hsm });
    if (flags.has('--json')) console.log(JSON.stringify({ consistent: isConsistent(report), report, actions, capabilities }, null, 2));
    else {
      printCapabilities(hsm, capabilities);
      printReport(report, actions);
    }
    return isConsistent(report) ? 0 : 1;
  } finally {
    await store.close();
    await hsm.close();
  }
}

function printReport(report: ConsistencyReport, actions: string[]): void {
  for (const action of actions) console.log(`repaired: ${action}`);
  const lines = [
    ...report.orphanObjects.map((r) => `orphan token object: ${r.keyId}#${r.version} (no metadata)`),
    ...report.missingObjects.map((r) => `missing token object: ${r.keyId}#${r.version} (metadata without key material)`),
    ...report.versionProblems.map((p) => `versions out of order: ${p.keyId} has [${p.versions.join(', ')}], current ${p.currentVersion}`),
    ...report.orphanWrappingKeys.map((id) => `orphan import wrapping key: ${id}`),
    ...report.staleImportParameters.map((id) => `import parameters without wrapping key: ${id}`),
  ];
  console.log(lines.length === 0 ? 'token and database are consistent' : lines.join('\n'));
}

// ---- the token's capability table -------------------------------------------------------------

function printCapabilities(hsm: Hsm, rows: Capability[]): void {
  console.log(`token '${hsm.info.label}' (${hsm.info.manufacturerId} ${hsm.info.model}, ${hsm.info.libraryDescription}), ${hsm.info.mechanismCount} mechanisms:`);
  const width = Math.max(...rows.map((r) => `${r.keySpec} ${r.keyUsage}`.length));
  for (const r of rows) {
    const what = `${r.keySpec} ${r.keyUsage}`.padEnd(width);
    console.log(`  ${what}  ${r.served ? `yes  ${r.algorithms.join(', ')}` : `no   ${r.reason}`}`);
  }
}
