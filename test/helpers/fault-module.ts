/**
 * The fault-injecting PKCS#11 module (test/fault-module/fault.c) for tests: built here with the
 * machine's compiler into a temporary directory, placed in front of a SoftHSM2 token that the
 * service's own provisioning created, and steered through its control file.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { openHsm } from '../../src/hsm/pkcs11-token.js';
import { locateSoftHsmModule, softHsmPaths } from '../../src/hsm/provision.js';
import { tempDir } from './service.js';

const SOURCE_DIR = new URL('../fault-module/', import.meta.url).pathname;

/** Builds libp11fault.so (make, cc) into a directory of its own; returns its path. */
export function buildFaultModule(): string {
  const out = tempDir('p11fault-build-');
  execFileSync('make', ['-s', '-C', SOURCE_DIR, `OUT=${out}`], { stdio: ['ignore', 'ignore', 'inherit'] });
  return path.join(out, 'libp11fault.so');
}

export interface FaultSettings {
  outage?: 0 | 1;
  outage_ckr?: number;
  latency_us?: number;
  hang?: 0 | 1;
  /** With hang: only these calls block (comma-separated names). */
  hang_calls?: string;
  fail_percent?: number;
  fail_ckr?: number;
  fail_calls?: string;
  logout_seq?: number;
  wedge_seq?: number;
  iv_mode?: 'caller' | 'hsm-writes-iv' | 'hsm-appends-iv';
  manufacturer?: string;
  library?: string;
  model?: string;
  max_sessions?: number;
}

export interface FaultStats {
  logins: number;
  sessions_opened: number;
  sessions_open: number;
  calls: number;
  faults: number;
  /** Calls blocked in a hang right now. */
  hanging: number;
}

export class FaultControl {
  private settings: FaultSettings = {};
  constructor(readonly path: string) {}

  /** Replaces the settings (atomically: the module sees the old file or the new one). */
  set(settings: FaultSettings): void {
    this.settings = { ...settings };
    const text = Object.entries(this.settings)
      .map(([k, v]) => `${k} ${v}`)
      .join('\n');
    const tmp = `${this.path}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, `${text}\n`);
    fs.renameSync(tmp, this.path);
  }

  /** Changes some settings, keeping the others. */
  update(settings: FaultSettings): void {
    this.set({ ...this.settings, ...settings });
  }

  get current(): FaultSettings {
    return { ...this.settings };
  }

  stats(): FaultStats {
    const text = fs.readFileSync(`${this.path}.stats`, 'utf8');
    const out: Record<string, number> = {};
    for (const line of text.trim().split('\n')) {
      const [k, v] = line.split(' ');
      out[k!] = Number(v);
    }
    return out as unknown as FaultStats;
  }
}

export interface FaultToken {
  /** Environment for startTestService: the fault module in front of the provisioned token. */
  env: Record<string, string>;
  control: FaultControl;
  dataDir: string;
  modulePath: string;
}

/**
 * Provisions a SoftHSM2 token under a new data dir (through openHsm, as the service does), then
 * points P11FAULT_MODULE/P11FAULT_CONTROL of this process at it. The module reads both at
 * C_Initialize, so the control file path is fixed per process.
 */
export async function prepareFaultToken(settings: FaultSettings = {}): Promise<FaultToken> {
  const modulePath = buildFaultModule();
  const dataDir = tempDir('p11kms-fault-');
  const provisioned = await openHsm({ label: 'p11kms', poolSize: 1, symmetricCalls: 'sync' }, dataDir);
  await provisioned.close();
  const control = new FaultControl(path.join(dataDir, 'faults.ctl'));
  control.set(settings);
  process.env.P11FAULT_MODULE = locateSoftHsmModule();
  process.env.P11FAULT_CONTROL = control.path;
  const env = {
    P11KMS_DATA_DIR: dataDir,
    P11KMS_PKCS11_MODULE: modulePath,
    P11KMS_TOKEN_LABEL: 'p11kms',
    P11KMS_PIN_FILE: softHsmPaths(dataDir).userPinPath,
  };
  return { env, control, dataDir, modulePath };
}
