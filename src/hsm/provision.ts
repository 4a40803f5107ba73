/**
 * Finding the token, and the embedded default: a SoftHSM2 token provisioned under
 * <dataDir>/softhsm/ on first start, with random PINs kept in 0600 files and the token
 * initialised through PKCS#11 itself (C_InitToken, SO login, C_InitPIN) so that no PIN ever
 * appears on a command line.
 *
 *   <dataDir>/softhsm/            0700
 *     softhsm2.conf               0600  (SOFTHSM2_CONF points here)
 *     tokens/                     0700  SoftHSM2 token directory
 *     user.pin, so.pin            0600
 *     provision.lock              exists only while a process is provisioning
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
// pkcs11js is CommonJS with a spread export: under Node ESM only the default import carries the
// constants (a namespace import sees just PKCS11). Types come through the namespace.
import pkcs11js from 'pkcs11js';
import type * as P11 from 'pkcs11js';
import { toHsmError } from './errors.js';
import { HsmError } from './types.js';

export interface SoftHsmPaths {
  dir: string;
  confPath: string;
  tokenDir: string;
  userPinPath: string;
  soPinPath: string;
  lockPath: string;
  /** Serialises token object creation/destruction between processes (see Pkcs11Hsm.tokenWrite). */
  objectWriteLockPath: string;
}

export function softHsmPaths(dataDir: string): SoftHsmPaths {
  const dir = path.join(path.resolve(dataDir), 'softhsm');
  return {
    dir,
    confPath: path.join(dir, 'softhsm2.conf'),
    tokenDir: path.join(dir, 'tokens'),
    userPinPath: path.join(dir, 'user.pin'),
    soPinPath: path.join(dir, 'so.pin'),
    lockPath: path.join(dir, 'provision.lock'),
    objectWriteLockPath: path.join(dir, 'object-writes.lock'),
  };
}

/**
 * The object-write lock of a SoftHSM2 token that an operator configured (P11KMS_PKCS11_MODULE)
 * and that several independent service processes share (several nodes on one database): a file
 * in the token directory named by SOFTHSM2_CONF (or SoftHSM2's default configuration), which
 * every process using that token can write. SoftHSM2 takes only sub-directories there for tokens.
 * Undefined for other modules: a real HSM serialises its own writers.
 */
export function softHsmModuleLockPath(modulePath: string): string | undefined {
  if (!/softhsm/i.test(path.basename(modulePath))) return undefined;
  const confPath = process.env.SOFTHSM2_CONF ?? '/etc/softhsm/softhsm2.conf';
  let conf: string;
  try {
    conf = fs.readFileSync(confPath, 'utf8');
  } catch {
    return undefined;
  }
  const tokenDir = /^\s*directories\.tokendir\s*=\s*(.+?)\s*$/m.exec(conf)?.[1];
  return tokenDir === undefined ? undefined : path.join(tokenDir, 'p11kms-object-writes.lock');
}

/** Creates the directories and the config file (if missing) and points SOFTHSM2_CONF at it.
 *  Must run before C_Initialize: SoftHSM2 reads the variable there. */
export function prepareSoftHsmDir(paths: SoftHsmPaths): void {
  for (const dir of [paths.dir, paths.tokenDir]) {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    fs.chmodSync(dir, 0o700);
  }
  if (!fs.existsSync(paths.confPath)) {
    const conf = [
      '# Written by p11kms for its embedded SoftHSM2 token.',
      `directories.tokendir = ${paths.tokenDir}`,
      'objectstore.backend = file',
      'log.level = ERROR',
      'slots.removable = false',
      'slots.mechanisms = ALL',
      'library.reset_on_fork = false',
      '',
    ].join('\n');
    writeFileAtomic(paths.confPath, conf);
  }
  process.env.SOFTHSM2_CONF = paths.confPath;
}

/** Where distributions install libsofthsm2.so. */
export function locateSoftHsmModule(): string {
  const multiarch = process.arch === 'arm64' ? 'aarch64-linux-gnu' : process.arch === 'x64' ? 'x86_64-linux-gnu' : undefined;
  const candidates = [
    ...(multiarch ? [`/usr/lib/${multiarch}/softhsm/libsofthsm2.so`] : []),
    '/usr/lib/softhsm/libsofthsm2.so', // Debian/Ubuntu compatibility symlink
    ...multiarchDirs().map((dir) => path.join(dir, 'softhsm', 'libsofthsm2.so')),
    '/usr/lib64/pkcs11/libsofthsm2.so', // RHEL/Fedora
    '/usr/lib64/softhsm/libsofthsm2.so',
    '/usr/lib/pkcs11/libsofthsm2.so',
    '/usr/local/lib/softhsm/libsofthsm2.so', // built from source
    '/opt/homebrew/lib/softhsm/libsofthsm2.so',
  ];
  const found = candidates.find((candidate) => fs.existsSync(candidate));
  if (!found) {
    throw new HsmError(
      'unavailable',
      'CKR_LIBRARY_LOAD_FAILED',
      'locateSoftHsmModule',
      `SoftHSM2 is not installed (no libsofthsm2.so in ${candidates.join(', ')}): install the package "softhsm2" ` +
        '(apt-get install softhsm2 / dnf install softhsm) or set P11KMS_PKCS11_MODULE to your HSM\'s PKCS#11 module',
    );
  }
  return found;
}

function multiarchDirs(): string[] {
  try {
    return fs
      .readdirSync('/usr/lib', { withFileTypes: true })
      .filter((entry) => entry.isDirectory() && entry.name.endsWith('-linux-gnu'))
      .map((entry) => path.join('/usr/lib', entry.name));
  } catch {
    return [];
  }
}

/**
 * Serialises provisioning between processes sharing one data dir (two workers starting at once
 * must not both create a token with the same label). Taken before C_Initialize because SoftHSM2
 * only sees tokens that existed when it was initialised. A lock older than `staleMs` is left over
 * from a crash and is broken.
 */
export async function withProvisionLock<T>(lockPath: string, fn: () => Promise<T> | T, staleMs = 60_000): Promise<T> {
  const deadline = Date.now() + 30_000;
  const waitingPath = `${lockPath}.waiting`;
  // Fairness: a process taking the lock again right after releasing it would win every time
  // against others that poll every 5 ms (seen: one node's CreateKeys starved another's for 30 s).
  // So it first lets a process that announced itself waiting go first.
  if (Date.now() - (lastReleased.get(lockPath) ?? -Infinity) < 50 && anotherIsWaiting(waitingPath)) await sleep(15);
  for (;;) {
    try {
      fs.writeFileSync(lockPath, `${process.pid}\n`, { flag: 'wx', mode: 0o600 });
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      fs.writeFileSync(waitingPath, `${process.pid}\n`, { mode: 0o600 });
      if (breakAbandonedLock(lockPath, staleMs)) continue;
      if (Date.now() > deadline) {
        throw new HsmError('unavailable', 'CKR_FUNCTION_FAILED', 'provision', `timed out waiting for ${lockPath} (another p11kms is provisioning; remove the file if none is)`);
      }
      await sleep(5);
    }
  }
  try {
    return await fn();
  } finally {
    fs.rmSync(lockPath, { force: true });
    lastReleased.set(lockPath, Date.now());
  }
}

/** When this process last released each lock. */
const lastReleased = new Map<string, number>();

/** True when another process marked itself waiting for the lock within the last 25 ms. */
function anotherIsWaiting(waitingPath: string): boolean {
  try {
    if (Date.now() - fs.statSync(waitingPath).mtimeMs > 25) return false;
    return Number.parseInt(fs.readFileSync(waitingPath, 'utf8'), 10) !== process.pid;
  } catch {
    return false;
  }
}

/**
 * Removes the lock file when its holder is gone: it names a process of this machine that no
 * longer exists (a node killed mid-write: waiting staleMs would stall every process sharing the
 * token), or it is older than staleMs. One process at a time decides, under `<lock>.break`, and
 * looks again there: two waiters that both saw the dead holder's file must not both remove it,
 * or the second would remove the first one's fresh lock and both would write at once.
 */
function breakAbandonedLock(lockPath: string, staleMs: number): boolean {
  const abandoned = () => {
    const age = lockAge(lockPath);
    return (age !== undefined && age > staleMs) || holderIsGone(lockPath);
  };
  if (!abandoned()) return false;
  const breakPath = `${lockPath}.break`;
  try {
    fs.writeFileSync(breakPath, `${process.pid}\n`, { flag: 'wx', mode: 0o600 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    // Another waiter is deciding; a break file left by one that died there is cleared after 5 s.
    if ((lockAge(breakPath) ?? 0) > 5000 || holderIsGone(breakPath)) fs.rmSync(breakPath, { force: true });
    return false;
  }
  try {
    if (!abandoned()) return false;
    fs.rmSync(lockPath, { force: true });
    return true;
  } finally {
    fs.rmSync(breakPath, { force: true });
  }
}

/** True when the lock file names a process of this machine that no longer exists. */
function holderIsGone(lockPath: string): boolean {
  let pid: number;
  try {
    pid = Number.parseInt(fs.readFileSync(lockPath, 'utf8'), 10);
  } catch {
    return false;
  }
  if (!Number.isInteger(pid) || pid <= 0 || pid === process.pid) return false;
  try {
    process.kill(pid, 0);
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

function lockAge(lockPath: string): number | undefined {
  try {
    return Date.now() - fs.statSync(lockPath).mtimeMs;
  } catch {
    return undefined;
  }
}

/** The slot holding an initialised token with this label, or undefined. */
export function findTokenSlot(p: P11.PKCS11, label: string): P11.Handle | undefined {
  for (const slot of p.C_GetSlotList(true)) {
    const info = p.C_GetTokenInfo(slot);
    if (info.flags & pkcs11js.CKF_TOKEN_INITIALIZED && trimPadded(info.label) === label) return slot;
  }
  return undefined;
}

/** Labels of all initialised tokens, for "no such token" messages. */
export function tokenLabels(p: P11.PKCS11): string[] {
  return p
    .C_GetSlotList(true)
    .map((slot) => p.C_GetTokenInfo(slot))
    .filter((info) => info.flags & pkcs11js.CKF_TOKEN_INITIALIZED)
    .map((info) => trimPadded(info.label));
}

export function trimPadded(text: string): string {
  return text.replace(/[\s\0]+$/, '');
}

/**
 * Makes sure the SoftHSM2 token `label` exists with a user PIN and returns its slot and user PIN.
 * Idempotent and crash-safe: PINs are written (0600) before the token is initialised and reused
 * on the next attempt, and a token whose user PIN was never set gets it set on the next start.
 */
export function ensureSoftHsmToken(
  p: P11.PKCS11,
  label: string,
  paths: SoftHsmPaths,
  log: (level: 'info' | 'warn', msg: string) => void,
  mayCreate = true,
): { slot: P11.Handle; userPin: string } {
  let slot = findTokenSlot(p, label);
  if (slot === undefined && !mayCreate) {
    throw new HsmError('unavailable', 'CKR_TOKEN_NOT_PRESENT', 'C_GetTokenInfo', `no SoftHSM2 token '${label}' in ${paths.tokenDir}`);
  }
  if (slot === undefined) {
    const soPin = readOrCreatePin(paths.soPinPath);
    readOrCreatePin(paths.userPinPath);
    const free = p.C_GetSlotList(true).find((s) => !(p.C_GetTokenInfo(s).flags & pkcs11js.CKF_TOKEN_INITIALIZED));
    if (free === undefined) {
      throw new HsmError('unavailable', 'CKR_SLOT_ID_INVALID', 'C_InitToken', 'SoftHSM2 offers no free slot to initialise a token in');
    }
    try {
      // The label argument is a fixed 32-byte blank-padded field; pkcs11js passes the string as is.
      p.C_InitToken(free, soPin, label.padEnd(32, ' '));
    } catch (err) {
      throw toHsmError(err, 'C_InitToken', `initialising SoftHSM2 token '${label}'`);
    }
    // SoftHSM2 may move the new token to another slot id: look it up by label again.
    slot = findTokenSlot(p, label);
    if (slot === undefined) {
      throw new HsmError('unavailable', 'CKR_TOKEN_NOT_PRESENT', 'C_InitToken', `SoftHSM2 token '${label}' not found after C_InitToken`);
    }
    log('info', `provisioned SoftHSM2 token '${label}' in ${paths.tokenDir}`);
  }
  if (!(p.C_GetTokenInfo(slot).flags & pkcs11js.CKF_USER_PIN_INITIALIZED)) {
    initUserPin(p, slot, label, readPinFile(paths.soPinPath), readOrCreatePin(paths.userPinPath));
  }
  if (!fs.existsSync(paths.userPinPath)) {
    throw new HsmError(
      'unavailable',
      'CKR_PIN_INCORRECT',
      'provision',
      `SoftHSM2 token '${label}' exists but its PIN file ${paths.userPinPath} is missing; restore it or remove ${paths.tokenDir} to start afresh`,
    );
  }
  return { slot, userPin: readPinFile(paths.userPinPath) };
}

function initUserPin(p: P11.PKCS11, slot: P11.Handle, label: string, soPin: string, userPin: string): void {
  const what = `setting the user PIN of SoftHSM2 token '${label}'`;
  let session: P11.Handle;
  try {
    session = p.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
  } catch (err) {
    throw toHsmError(err, 'C_OpenSession', what);
  }
  let fn = 'C_Login';
  try {
    p.C_Login(session, pkcs11js.CKU_SO, soPin);
    fn = 'C_InitPIN';
    p.C_InitPIN(session, userPin);
    fn = 'C_Logout';
    p.C_Logout(session);
  } catch (err) {
    throw toHsmError(err, fn, what);
  } finally {
    try {
      p.C_CloseSession(session);
    } catch {
      // nothing to clean up
    }
  }
}

function readOrCreatePin(file: string): string {
  if (fs.existsSync(file)) return readPinFile(file);
  // 32 hex digits: 128 bits, and only characters every token accepts in a PIN.
  const pin = crypto.randomBytes(16).toString('hex');
  writeFileAtomic(file, `${pin}\n`);
  return pin;
}

/** Reads a PIN file, dropping one trailing newline. Errors name the file, never the content. */
export function readPinFile(file: string): string {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    throw new HsmError('unavailable', 'CKR_PIN_INCORRECT', 'readPinFile', `cannot read PIN file ${file} (${code})`);
  }
  const pin = text.replace(/\r?\n$/, '');
  if (pin.length === 0) throw new HsmError('unavailable', 'CKR_PIN_LEN_RANGE', 'readPinFile', `PIN file ${file} is empty`);
  return pin;
}

/** Writes a 0600 file via a temporary name so a crash never leaves a half-written file. */
function writeFileAtomic(file: string, content: string): void {
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, content, { mode: 0o600 });
  fs.chmodSync(tmp, 0o600);
  fs.renameSync(tmp, file);
}
