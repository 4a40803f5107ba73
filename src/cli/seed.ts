/**
 * `p11kms seed --check FILE`: the dry run of a seed file against the metadata store the service
 * uses (P11KMS_DATA_DIR): prints each change applying it at start (P11KMS_SEED_FILE) would make
 * and each difference it would leave alone. Reads the store only; the token is not opened, so a
 * key spec the token lacks shows up only when the seed is applied.
 * Exit code: 0 (whether or not there are changes), 2 usage, configuration or seed file error.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig } from '../config.js';
import { planSeed, readSeedFile, SeedError } from '../kms/seed/apply.js';
import { DATABASE_FILE } from '../service.js';
import { openStore } from '../store/open.js';
import { openSqliteStore } from '../store/sqlite/store.js';

export const USAGE = 'usage: p11kms seed --check FILE   (dry run: what applying FILE as P11KMS_SEED_FILE would change)';

export async function run(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args, options: { check: { type: 'boolean' } }, allowPositionals: true });
  } catch (e) {
    console.error(`p11kms seed: ${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  const [file, ...more] = parsed.positionals;
  if (!parsed.values.check || file === undefined || more.length > 0) {
    console.error(`${parsed.values.check ? '' : 'p11kms seed: only the dry run exists here (a seed is applied by the service at start, P11KMS_SEED_FILE)\n'}${USAGE}`);
    return 2;
  }
  let config;
  let seed;
  try {
    config = loadConfig();
    seed = readSeedFile(file);
  } catch (e) {
    if (e instanceof ConfigError || e instanceof SeedError) {
      console.error(`p11kms seed: ${e.message}`);
      return 2;
    }
    throw e;
  }
  // A data dir without a database is an empty store: plan against a throw-away one.
  const db = config.database;
  const scratch = db.kind === 'sqlite' && !fs.existsSync(db.file) ? fs.mkdtempSync(path.join(os.tmpdir(), 'p11kms-seed-check-')) : undefined;
  const store = scratch ? await openSqliteStore(path.join(scratch, DATABASE_FILE)) : await openStore(db);
  try {
    const account = { partition: config.partition, region: config.region, accountId: config.accountId };
    const plan = await planSeed({ store, account, now: () => new Date() }, seed, file);
    for (const c of plan.changes) console.log(`would ${c.action} ${c.detail}`);
    for (const s of plan.skipped) console.log(`would skip ${s.detail}`);
    console.log(`${plan.keys} key entries: ${plan.changes.length} change(s), ${plan.skipped.length} skipped${scratch ? ' (no metadata store yet in ' + config.dataDir + ')' : ''}`);
    return 0;
  } catch (e) {
    if (!(e instanceof SeedError)) throw e;
    console.error(`p11kms seed: ${e.message}`);
    return 2;
  } finally {
    await store.close();
    if (scratch) fs.rmSync(scratch, { recursive: true, force: true });
  }
}
