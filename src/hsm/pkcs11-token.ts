/**
 * The Hsm implementation over a PKCS#11 token (pkcs11js): openHsm and the entry points the rest
 * of the service and the tests use. This folder is the only code that talks PKCS#11; see
 * pkcs11-hsm.ts for the Hsm class (and the token differences worth knowing), token-module.ts for
 * module loading and login, object-naming.ts for how keys are addressed, key-objects.ts and
 * handle-cache.ts for finding them, session-pool.ts for session rules, provision.ts for the
 * embedded SoftHSM2 token, diagnostics.ts for inspectBackingKey and errors.ts for error
 * translation.
 *
 * Why pkcs11js only, not graphene-pk11: a process may C_Initialize a module once, so graphene
 * could only wrap this same pkcs11js instance (`new graphene.Module(lib)`), and its inventory
 * API then saves three calls while bringing callback-only async and a second error and type
 * vocabulary; the hot path needs raw pkcs11js anyway. The same holds for the inventory and the
 * capability table of `p11kms doctor` (issue 14): they need C_GetMechanismList and C_FindObjects,
 * which pkcs11js already answers, and the worker threads of async mode (call-workers.ts) load a
 * pkcs11js instance each, which graphene could not share across threads either.
 */
import { performance } from 'node:perf_hooks';
import type { TokenConfig } from '../config.js';
import type { BackingKeyInspection } from './diagnostics.js';
import { Pkcs11Hsm } from './pkcs11-hsm.js';
import { ensureSoftHsmToken, findTokenSlot, locateSoftHsmModule, prepareSoftHsmDir, softHsmModuleLockPath, softHsmPaths, tokenLabels, withProvisionLock } from './provision.js';
import type { HsmLog, TokenAccess } from './token-access.js';
import { type Connection, configuredPin, connect, shutDownModule } from './token-module.js';
import { type BackingKeyRef, type Hsm, HsmError } from './types.js';

export type { BackingKeyInspection } from './diagnostics.js';
export type { HsmLog, TokenAccess } from './token-access.js';

const noLog: HsmLog = () => {};

export interface OpenOptions {
  /** false: a missing self-provisioned SoftHSM2 token is not created but reported
   *  (CKR_TOKEN_NOT_PRESENT), because the metadata store belongs to a token already. */
  provision?: boolean;
}

/**
 * Opens the token named by `token` (self-provisioning SoftHSM2 under <dataDir>/softhsm when
 * `token.module` is absent), logs in, checks mechanisms and primes the key-handle cache.
 * One open Hsm per process and module: PKCS#11 allows a single C_Initialize per process.
 */
export async function openHsm(token: TokenConfig, dataDir: string, log: HsmLog = noLog, options: OpenOptions = {}): Promise<Hsm> {
  const started = performance.now();
  if (Buffer.byteLength(token.label, 'utf8') > 32 || token.label.length === 0) {
    throw new HsmError('other', 'CKR_ARGUMENTS_BAD', 'openHsm', 'token label must be 1-32 bytes of UTF-8');
  }
  const objectWriteLockPath = sharedObjectWriteLock(token, dataDir);
  let connection: Connection;
  if (token.module === undefined) {
    const paths = softHsmPaths(dataDir);
    prepareSoftHsmDir(paths);
    const modulePath = locateSoftHsmModule();
    const connectAndProvision = () =>
      connect(modulePath, log, (p) => {
        const { slot, userPin } = ensureSoftHsmToken(p, token.label, paths, log, options.provision ?? true);
        return { slot, pin: userPin };
      });
    // With several processes, loading, token lookup and login read the token's files too: they
    // must not overlap another process's object writes (seen once: CKR_GENERAL_ERROR at start-up
    // while another worker generated the audit signing key). Lock order: provisioning, then objects.
    connection = await withProvisionLock(paths.lockPath, () =>
      objectWriteLockPath ? withProvisionLock(objectWriteLockPath, connectAndProvision) : connectAndProvision(),
    );
  } else {
    const modulePath = token.module;
    const connectToToken = () => connect(modulePath, log, (p) => {
      const slot = findTokenSlot(p, token.label);
      if (slot === undefined) {
        const labels = tokenLabels(p).map((l) => `'${l}'`);
        throw new HsmError(
          'unavailable',
          'CKR_TOKEN_NOT_PRESENT',
          'C_GetTokenInfo',
          `no token labelled '${token.label}' in PKCS#11 module ${modulePath} (tokens present: ${labels.join(', ') || 'none'})`,
        );
      }
      return { slot, pin: configuredPin(token) };
    });
    // Other nodes may be writing objects to a shared SoftHSM2 token while this one logs in.
    connection = objectWriteLockPath ? await withProvisionLock(objectWriteLockPath, connectToToken) : connectToToken();
  }
  try {
    const hsm = new Pkcs11Hsm(connection, token, log);
    hsm.objectWriteLockPath = objectWriteLockPath;
    const keys = await hsm.primeHandleCache();
    await hsm.warmUp();
    log('info', `PKCS#11 token '${token.label}' (${hsm.info.libraryDescription}) open: ${keys} backing keys, ${Math.round(performance.now() - started)} ms`);
    return hsm;
  } catch (err) {
    shutDownModule(connection.p, connection.slot);
    throw err;
  }
}

/**
 * The cross-process object-write lock, when several service processes share a SoftHSM2 token
 * (P11KMS_WORKERS > 1, or several nodes on one database): under the data dir for the
 * self-provisioned token, P11KMS_TOKEN_LOCK_FILE or the token directory for an operator's one.
 */
function sharedObjectWriteLock(token: TokenConfig, dataDir: string): string | undefined {
  if (!token.sharedAcrossProcesses) return undefined;
  if (token.module === undefined) return softHsmPaths(dataDir).objectWriteLockPath;
  return token.objectWriteLockFile ?? softHsmModuleLockPath(token.module);
}

/** Inspects the token object behind `ref` on a separate session; never returns key material. */
export function inspectBackingKey(hsm: Hsm, ref: BackingKeyRef): Promise<BackingKeyInspection> {
  if (!(hsm instanceof Pkcs11Hsm)) throw new TypeError('inspectBackingKey needs an Hsm from openHsm');
  return hsm.inspect(ref);
}

/** Raw token access for sibling modules of src/hsm that add token features (key-import.ts);
 *  never used outside src/hsm. */
export function tokenAccessOf(hsm: Hsm): TokenAccess {
  if (!(hsm instanceof Pkcs11Hsm)) throw new TypeError('tokenAccessOf needs an Hsm from openHsm');
  return hsm.tokenAccess();
}
