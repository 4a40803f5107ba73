/**
 * `p11kms doctor [--repair] [--destroy-orphans] [--json]`: compares the token with the metadata
 * database (same configuration as the service: environment variables) and lists divergences:
 * token objects without metadata, metadata whose token objects are gone, key versions out of
 * order, import wrapping keys without parameters. --repair fixes what can be fixed without
 * destroying anything; --destroy-orphans (with --repair) also destroys orphan token objects.
 * Run it while the service is stopped: an operation in flight looks like an orphan.
 * Exit code: 0 consistent, 1 divergences remain, 2 usage or configuration error.
 */
import path from 'node:path';
import { ConfigError, loadConfig } from '../config.js';
import { openHsm } from '../hsm/pkcs11-token.js';
import type { Hsm } from '../hsm/types.js';
import { KEY_SPECS, type KeyUsage, PRIVATE_KEY_USAGE } from '../kms/key-specs.js';
import { type ConsistencyReport, checkConsistency, isConsistent, repairConsistency } from '../kms/lifecycle/consistency.js';
import { DATABASE_FILE } from '../service.js';
import { openSqliteStore } from '../store/sqlite-store.js';

const USAGE = 'usage: p11kms doctor [--repair [--destroy-orphans]] [--json]';

export async function run(args: string[]): Promise<number> {
  const flags = new Set(args);
  const unknown = args.filter((a) => !['--repair', '--destroy-orphans', '--json'].includes(a));
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
  const hsm = await openHsm(config.token, config.dataDir);
  const store = await openSqliteStore(path.join(config.dataDir, DATABASE_FILE));
  try {
    let report = await checkConsistency(hsm, store);
    const actions = flags.has('--repair') ? await repairConsistency(hsm, store, report, { destroyOrphans: flags.has('--destroy-orphans') }) : [];
    if (actions.length > 0) report = await checkConsistency(hsm, store);
    const capabilities = capabilityTable(hsm);
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

export interface Capability {
  keySpec: string;
  keyUsage: KeyUsage;
  algorithms: readonly string[];
  /** undefined: this token can serve it; else why not. */
  unavailable?: string;
}

/** Which key specs and usages this token can serve, by its mechanism list (the same discovery
 *  that answers CreateKey with UnsupportedOperationException). */
export function capabilityTable(hsm: Hsm): Capability[] {
  const rows: Capability[] = [];
  for (const [keySpec, info] of Object.entries(KEY_SPECS)) {
    for (const [usage, algorithms] of Object.entries(info.usages) as Array<[KeyUsage, readonly string[]]>) {
      const material = info.material;
      const missing = hsm.missingMechanisms(material, PRIVATE_KEY_USAGE[usage]);
      let unavailable = missing.length > 0 ? `the token lacks ${missing.join(', ')}` : undefined;
      if (unavailable === undefined && (material.kind === 'ml-dsa' || material.kind === 'sm2')) unavailable = 'not implemented by this service';
      rows.push({ keySpec, keyUsage: usage, algorithms, unavailable });
    }
  }
  return rows;
}

function printCapabilities(hsm: Hsm, rows: Capability[]): void {
  console.log(`token '${hsm.info.label}' (${hsm.info.manufacturerId} ${hsm.info.model}, ${hsm.info.libraryDescription}), ${hsm.info.mechanismCount} mechanisms:`);
  const width = Math.max(...rows.map((r) => `${r.keySpec} ${r.keyUsage}`.length));
  for (const r of rows) {
    const what = `${r.keySpec} ${r.keyUsage}`.padEnd(width);
    console.log(`  ${what}  ${r.unavailable === undefined ? `yes  ${r.algorithms.join(', ')}` : `no   ${r.unavailable}`}`);
  }
}
