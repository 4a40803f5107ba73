/**
 * `p11kms sites export` and `p11kms sites trust`: the operator ceremony that lets two deployments
 * (two sites, two HSMs) carry multi-Region keys to each other (README, "Across sites").
 *
 *  - export: prints this site's public replication key (PEM) and its SHA-256 fingerprint,
 *    creating the key pair in the token on first use. The peer's operator gets both, the
 *    fingerprint read out over a second channel (phone, signed mail).
 *  - trust: installs a peer's public replication key in this token as a trusted wrapping key
 *    (CKA_TRUSTED, which only the security officer can set), labelled with the peer's Region;
 *    refused when the key's fingerprint is not the one given. The SO PIN is read from a file
 *    (--so-pin-file or P11KMS_SO_PIN_FILE), never from the command line, never printed.
 *
 * Exit code: 0 done, 1 refused (fingerprint mismatch, wrong SO PIN), 2 usage or configuration.
 */
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig } from '../config.js';
import { DataDirError, ensureDataDir } from '../data-dir.js';
import { openHsm } from '../hsm/pkcs11-token.js';
import { readPinFile } from '../hsm/provision.js';
import { installTrustedPeerKey, rsaSpkiOf, siteReplicationKey, spkiToPem } from '../hsm/site-replication.js';
import { HsmError } from '../hsm/types.js';
import { runningServices } from '../service-presence.js';

const USAGE =
  'usage: p11kms sites export [--json]\n' +
  '       p11kms sites trust --region <peer Region> --public-key <file> --fingerprint <hex> [--so-pin-file <file>]\n\n' +
  '  export  print this site\'s public replication key (PEM) and its SHA-256 fingerprint\n' +
  '  trust   install a peer site\'s public replication key as trusted (logs in as the security officer;\n' +
  '          SO PIN from --so-pin-file or P11KMS_SO_PIN_FILE)';
const REGION = /^([a-z]+-){2,3}\d+$/;
const FINGERPRINT = /^[0-9a-f]{64}$/;

export async function run(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  let parsed;
  try {
    parsed = parseArgs({
      args: rest,
      options: {
        json: { type: 'boolean' },
        region: { type: 'string' },
        'public-key': { type: 'string' },
        fingerprint: { type: 'string' },
        'so-pin-file': { type: 'string' },
      },
      strict: true,
    }).values;
  } catch (e) {
    console.error(`p11kms sites: ${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  if (sub !== 'export' && sub !== 'trust') {
    console.error(USAGE);
    return 2;
  }
  let config;
  try {
    config = loadConfig();
    ensureDataDir(config.dataDir);
  } catch (e) {
    if (!(e instanceof ConfigError) && !(e instanceof DataDirError)) throw e;
    console.error(`p11kms sites: ${e.message}`);
    return 2;
  }
  try {
    return sub === 'export' ? await exportKey(config, parsed.json === true) : trust(config, parsed);
  } catch (e) {
    if (!(e instanceof HsmError)) throw e;
    console.error(`p11kms sites ${sub}: ${e.message}`);
    return e.ckr === 'CKR_PIN_INCORRECT' || e.ckr === 'CKR_ARGUMENTS_BAD' ? 1 : 2;
  }
}

async function exportKey(config: ReturnType<typeof loadConfig>, json: boolean): Promise<number> {
  const hsm = await openHsm(config.token, config.dataDir, (level, msg) => level === 'warn' && console.error(msg));
  try {
    const key = (await siteReplicationKey(hsm, false)) ?? (await createKey(hsm, config.dataDir));
    const pem = spkiToPem(key.spki);
    if (json) console.log(JSON.stringify({ region: config.region, fingerprint: key.fingerprint, publicKey: pem }));
    else process.stdout.write(`${pem}# region ${config.region}\n# sha256 ${key.fingerprint}\n`);
    return 0;
  } finally {
    await hsm.close();
  }
}

async function createKey(hsm: Parameters<typeof siteReplicationKey>[0], dataDir: string) {
  // A service on the same SoftHSM2 token would not see an object another process wrote
  // (pkcs11-hsm.ts, objectWriteLockPath) until it writes itself: say so rather than guess.
  const running = runningServices(dataDir);
  if (running.length > 0) console.error(`p11kms sites export: warning: a p11kms service runs on ${dataDir} (pid ${running.join(', ')}); restart it after creating the replication key`);
  return (await siteReplicationKey(hsm, true))!;
}

function trust(config: ReturnType<typeof loadConfig>, o: Record<string, string | boolean | undefined>): number {
  const region = o.region as string | undefined;
  const file = o['public-key'] as string | undefined;
  const fingerprint = (o.fingerprint as string | undefined)?.toLowerCase().replace(/[:\s]/g, '');
  const soPinFile = (o['so-pin-file'] as string | undefined) ?? process.env.P11KMS_SO_PIN_FILE;
  if (region === undefined || !REGION.test(region) || file === undefined || fingerprint === undefined) {
    console.error(USAGE);
    return 2;
  }
  if (!FINGERPRINT.test(fingerprint)) {
    console.error('p11kms sites trust: --fingerprint must be the 64 hex digits of the SHA-256 that `p11kms sites export` printed at the peer');
    return 2;
  }
  if (soPinFile === undefined) {
    console.error('p11kms sites trust: the security officer PIN is read from a file: --so-pin-file <file> or P11KMS_SO_PIN_FILE');
    return 2;
  }
  if (config.regions.includes(region)) {
    console.error(`p11kms sites trust: ${region} is served by this deployment (P11KMS_REGIONS), not by a peer`);
    return 2;
  }
  let spki: Buffer;
  try {
    spki = rsaSpkiOf(fs.readFileSync(file));
  } catch (e) {
    console.error(`p11kms sites trust: ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    return 2;
  }
  let soPin: string;
  try {
    soPin = readPinFile(soPinFile);
  } catch (e) {
    console.error(`p11kms sites trust: ${(e as Error).message}`);
    return 2;
  }
  const outcome = installTrustedPeerKey(config.token, config.dataDir, soPin, region, spki, fingerprint);
  console.log(outcome === 'installed' ? `trusted the replication key of ${region} (sha256 ${fingerprint})` : `the replication key of ${region} (sha256 ${fingerprint}) was already trusted`);
  return 0;
}
