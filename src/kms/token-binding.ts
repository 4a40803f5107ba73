/**
 * Which token a metadata store belongs to. Keys are rows in the store and objects in one token;
 * opening the store against another token (a forgotten P11KMS_PKCS11_MODULE that makes p11kms
 * provision a fresh SoftHSM2 token, a wrong P11KMS_TOKEN_LABEL, a re-initialised token) would
 * serve every key and answer every Decrypt with InvalidCiphertextException. So:
 *
 * - the store records its token at first use: manufacturer, model, serial, label, module, and
 *   the value of an identity object made in the token (src/hsm/token-identity.ts);
 * - while the store holds keys, the service and `doctor` open only a token carrying that identity
 *   object (in any slot, under any module path: the object is what says "same token"), and a
 *   self-provisioned SoftHSM2 token is created only for an empty store;
 * - P11KMS_REBIND_TOKEN=true binds the store to whatever token it finds, accepting that keys whose
 *   material is not in it are unusable.
 */
import type { Config } from '../config.js';
import { openHsm } from '../hsm/pkcs11-token.js';
import { tokenIdentity } from '../hsm/token-identity.js';
import { type Hsm, HsmError, type TokenInfo } from '../hsm/types.js';
import type { Logger } from '../log.js';
import type { TokenBindingRecord } from '../store/token-binding.js';
import type { MetadataStore } from '../store/types.js';

export class TokenBindingError extends Error {
  override name = 'TokenBindingError';
}

export interface BindOptions {
  /** false (doctor): check only, never record or replace a binding. */
  record: boolean;
}

/** Opens the token `config` names and makes sure it is the store's own (see above). */
export async function openBoundHsm(config: Config, store: MetadataStore, log: Logger, options: BindOptions = { record: true }): Promise<Hsm> {
  const binding = await store.tokenBinding.get();
  const keyCount = await store.countKeys();
  const holdsKeys = keyCount > 0;
  let hsm: Hsm;
  try {
    hsm = await openHsm(config.token, config.dataDir, (level, msg) => log[level](msg), { provision: !holdsKeys || config.rebindToken });
  } catch (err) {
    if (holdsKeys && err instanceof HsmError && err.ckr === 'CKR_TOKEN_NOT_PRESENT') {
      throw new TokenBindingError(mismatch(config, keyCount, binding, undefined, err.message));
    }
    throw err;
  }
  try {
    await checkOrBind(config, store, hsm, keyCount, binding, log, options);
    return hsm;
  } catch (err) {
    await hsm.close();
    throw err;
  }
}

async function checkOrBind(
  config: Config,
  store: MetadataStore,
  hsm: Hsm,
  keyCount: number,
  binding: TokenBindingRecord | undefined,
  log: Logger,
  options: BindOptions,
): Promise<void> {
  const identity = await tokenIdentity(hsm, false);
  if (binding !== undefined && identity === binding.identity) {
    if (binding.serialNumber !== hsm.info.serialNumber || binding.label !== hsm.info.label) {
      log.warn({ was: describe(binding), now: describe(hsm.info) }, 'the token carries the store\'s identity object but its serial or label changed (a cluster member or a restored backup?)');
    }
    return;
  }
  if (keyCount > 0 && !config.rebindToken) {
    // A store from before token binding: adopt the token if it holds the material of its keys.
    if (binding === undefined && (await holdsStoreMaterial(hsm, store))) {
      if (options.record) await record(store, hsm, config, log, 'adopted the token that holds the store\'s key material');
      return;
    }
    throw new TokenBindingError(mismatch(config, keyCount, binding, hsm.info, identity === undefined ? 'it has no p11kms identity object' : 'its identity object differs'));
  }
  if (!options.record) return;
  if (keyCount > 0) log.warn({ keys: keyCount, was: binding && describe(binding) }, 'P11KMS_REBIND_TOKEN: binding the store to this token; keys whose material is not in it are unusable');
  await record(store, hsm, config, log, binding === undefined ? 'bound the store to its token' : 'rebound the store to another token');
}

async function record(store: MetadataStore, hsm: Hsm, config: Config, log: Logger, what: string): Promise<void> {
  const binding: TokenBindingRecord = {
    manufacturerId: hsm.info.manufacturerId,
    model: hsm.info.model,
    serialNumber: hsm.info.serialNumber,
    label: hsm.info.label,
    module: config.token.module ?? null,
    identity: (await tokenIdentity(hsm, true))!,
    boundAt: new Date(),
  };
  const existing = await store.tokenBinding.get();
  if (existing === undefined) {
    const settled = await store.tokenBinding.bindIfUnbound(binding);
    // Another process bound first: it must have bound to this very token (same identity object).
    if (settled.identity !== binding.identity) throw new TokenBindingError(`another p11kms process bound the store to ${describe(settled)} meanwhile`);
  } else {
    await store.tokenBinding.replace(binding);
  }
  log.info({ token: describe(binding) }, what);
}

async function holdsStoreMaterial(hsm: Hsm, store: MetadataStore): Promise<boolean> {
  const inToken = new Set((await hsm.listBackingKeys()).map((r) => `${r.keyId}#${r.version}`));
  return (await store.listAllVersions()).some((r) => inToken.has(`${r.keyId}#${r.version}`));
}

type Described = Pick<TokenInfo, 'label' | 'manufacturerId' | 'model' | 'serialNumber'>;

function describe(t: Described): string {
  return `token '${t.label}' (${t.manufacturerId} ${t.model}, serial ${t.serialNumber})`;
}

/** Names both tokens and the setting that probably went missing or wrong. */
function mismatch(config: Config, keyCount: number, binding: TokenBindingRecord | undefined, found: TokenInfo | undefined, why: string): string {
  const configured = config.token.module === undefined ? 'the self-provisioned SoftHSM2 token in the data dir' : `module ${config.token.module}`;
  const own =
    binding === undefined
      ? 'a token this store has no record of (it predates token binding) and that holds its key material'
      : `${describe(binding)} ${binding.module === null ? 'self-provisioned in the data dir' : `in module ${binding.module}`}`;
  const lines = [
    `the metadata store in ${config.dataDir} holds ${keyCount} key(s) whose material lives in ${own},`,
    found === undefined ? `but no such token is open: ${why}.` : `but the configuration (${configured}) opened ${describe(found)}: ${why}.`,
  ];
  if (binding !== undefined && binding.module !== null && config.token.module === undefined) {
    lines.push(`P11KMS_PKCS11_MODULE is probably missing: set P11KMS_PKCS11_MODULE=${binding.module}, P11KMS_TOKEN_LABEL=${binding.label} and P11KMS_PIN or P11KMS_PIN_FILE as before.`);
  } else if (binding !== undefined && binding.module === null && config.token.module !== undefined) {
    lines.push('The store uses the self-provisioned token: unset P11KMS_PKCS11_MODULE (and P11KMS_TOKEN_LABEL), or restore the data dir\'s softhsm/ folder.');
  } else if (binding !== undefined && binding.label !== config.token.label) {
    lines.push(`P11KMS_TOKEN_LABEL is probably wrong: it is '${config.token.label}', the store's token is '${binding.label}'.`);
  } else if (binding !== undefined && found !== undefined) {
    lines.push('The token was probably re-initialised or replaced: restore it (or its backup) with its objects.');
  } else if (config.token.module === undefined) {
    lines.push(`The data dir's softhsm/ folder is missing or was replaced: restore it, or set P11KMS_PKCS11_MODULE/P11KMS_TOKEN_LABEL to the token that holds the keys.`);
  }
  lines.push('P11KMS_REBIND_TOKEN=true binds the store to this token anyway (its keys then cannot be used).');
  return lines.join(' ');
}
