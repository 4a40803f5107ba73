/** The trust ceremony between two sites' data dirs, through the built CLI (test helper). */
import fs from 'node:fs';
import path from 'node:path';
import { runCli } from '../helpers/process.js';

export interface Site {
  dataDir: string;
  region: string;
}

export async function exportKey(site: Site): Promise<{ region: string; fingerprint: string; publicKey: string }> {
  const r = await runCli(['sites', 'export', '--json'], site.dataDir, { P11KMS_REGION: site.region });
  if (r.code !== 0) throw new Error(`sites export failed (${r.code}): ${r.stderr}`);
  return JSON.parse(r.stdout);
}

export const soPinFile = (site: Site): string => path.join(site.dataDir, 'softhsm', 'so.pin');

/** `sites trust` at `site` of `peer`'s exported key (fingerprint as given, or the right one). */
export async function trust(site: Site, peer: Site, fingerprint?: string, extra: string[] = []) {
  const exported = await exportKey(peer);
  const file = path.join(site.dataDir, `peer-${peer.region}.pem`);
  fs.writeFileSync(file, exported.publicKey);
  return runCli(['sites', 'trust', '--region', peer.region, '--public-key', file, '--fingerprint', fingerprint ?? exported.fingerprint, ...extra], site.dataDir, {
    P11KMS_REGION: site.region,
    P11KMS_SO_PIN_FILE: soPinFile(site),
  });
}

/** A peers file (JSON) naming `peer` at `endpoint` with the pair's credentials and its fingerprint. */
export async function peersFileOf(peer: Site, endpoint: string, key: { accessKeyId: string; secretAccessKey: string }): Promise<string> {
  return JSON.stringify({ peers: [{ region: peer.region, endpoint, ...key, fingerprint: (await exportKey(peer)).fingerprint }] });
}
