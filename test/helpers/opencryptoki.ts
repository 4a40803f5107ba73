/**
 * openCryptoki's software token (Debian `opencryptoki`) as a second PKCS#11 stack: installed
 * with apt-get when missing (as root, like SoftHSM2 in scripts/prepare.sh), its slot daemon
 * pkcsslotd started by hand when not running (containers have no init system to do it), and the
 * software token (re-)initialised through PKCS#11 itself for each test file: C_InitToken with the
 * factory SO PIN wipes it, C_InitPIN sets the test user PIN.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import pkcs11js from 'pkcs11js';
import { tempDir } from './service.js';

const MODULE_CANDIDATES = ['/usr/lib/x86_64-linux-gnu/pkcs11/libopencryptoki.so', '/usr/lib/aarch64-linux-gnu/pkcs11/libopencryptoki.so', '/usr/lib64/pkcs11/libopencryptoki.so', '/usr/lib/pkcs11/libopencryptoki.so'];
/** openCryptoki's documented factory SO PIN. */
const FACTORY_SO_PIN = '87654321';
export const OCK_LABEL = 'p11kms-ock';
const USER_PIN = '24681357'; // a test token's PIN (openCryptoki allows 4-8 characters)

function findModule(): string | undefined {
  return MODULE_CANDIDATES.find((p) => fs.existsSync(p));
}

function ensureInstalled(): string {
  let modulePath = findModule();
  if (modulePath) return modulePath;
  if (process.getuid?.() !== 0) throw new Error('openCryptoki is not installed; as root: apt-get install opencryptoki');
  // A new machine's package lists may be empty: update them first, as the other set-ups do.
  execFileSync('apt-get', ['update', '-qq'], { stdio: 'ignore' });
  execFileSync('apt-get', ['install', '-y', '-qq', 'opencryptoki'], { stdio: 'ignore', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
  modulePath = findModule();
  if (!modulePath) throw new Error('apt-get install opencryptoki did not provide libopencryptoki.so');
  return modulePath;
}

function ensureSlotDaemon(): void {
  if (spawnSync('pgrep', ['-x', 'pkcsslotd']).status === 0) return;
  fs.mkdirSync('/run/opencryptoki', { recursive: true });
  spawnSync('chown', ['root:pkcs11', '/run/opencryptoki']);
  fs.chmodSync('/run/opencryptoki', 0o770);
  execFileSync('pkcsslotd', { stdio: 'ignore' }); // daemonises
}

/** Installs, starts and initialises the software token; returns the service environment. */
export function prepareOpenCryptokiToken(): Record<string, string> {
  const modulePath = ensureInstalled();
  ensureSlotDaemon();
  const p = new pkcs11js.PKCS11();
  p.load(modulePath);
  p.C_Initialize();
  try {
    const slot = p.C_GetSlotList(true).find((s) => p.C_GetTokenInfo(s).model.trim() === 'IBM SoftTok');
    if (slot === undefined) throw new Error('openCryptoki has no software token (slot with model IBM SoftTok)');
    p.C_InitToken(slot, FACTORY_SO_PIN, OCK_LABEL.padEnd(32));
    const session = p.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
    p.C_Login(session, pkcs11js.CKU_SO, FACTORY_SO_PIN);
    p.C_InitPIN(session, USER_PIN);
    p.C_Logout(session);
    p.C_CloseSession(session);
  } finally {
    p.C_Finalize();
    p.close();
  }
  const pinFile = path.join(tempDir('p11kms-ock-'), 'user.pin');
  fs.writeFileSync(pinFile, USER_PIN, { mode: 0o600 });
  return { P11KMS_PKCS11_MODULE: modulePath, P11KMS_TOKEN_LABEL: OCK_LABEL, P11KMS_PIN_FILE: pinFile };
}
