/**
 * Token-level baselines, in a process of its own with its own SoftHSM2 token:
 *  1. raw pkcs11js: C_EncryptInit + C_Encrypt, AES-256-GCM, 32 B, token key, counter IV, sync;
 *  2. the project's Hsm.encryptAesGcm (sync mode) on the same key;
 *  3. Node's crypto AES-256-GCM, 32 B.
 * The token is provisioned and the key generated with the project's own openHsm. The three run in
 * alternating rounds (median reported) so that load from other processes hits them alike; the
 * module is initialised once per round and side (one C_Initialize per process at a time).
 * Usage: node token-child.js '{"dataDir":"…","seconds":5,"rounds":5}' → `BENCH_RESULT {json}`.
 */
import crypto from 'node:crypto';
import { performance } from 'node:perf_hooks';
// pkcs11js is CommonJS: under Node ESM only the default import carries the constants.
import pkcs11js from 'pkcs11js';
import type * as P11 from 'pkcs11js';
import type { TokenConfig } from '../../src/config.js';
import { openHsm } from '../../src/hsm/pkcs11-token.js';
import type { BackingKeyRef, TokenInfo } from '../../src/hsm/types.js';
import { summariseRounds } from './common.js';
import { openRawSession } from './raw-token.js';

interface Args {
  dataDir: string;
  /** Total seconds per kind, split over the rounds. */
  seconds: number;
  rounds?: number;
}

const args = JSON.parse(process.argv[2]!) as Args;
const PLAINTEXT = crypto.randomBytes(32);
const AAD = Buffer.alloc(0);
const LABEL = 'p11kms';
const TOKEN: TokenConfig = { label: LABEL, poolSize: 8, symmetricCalls: 'sync' };
const REF: BackingKeyRef = { keyId: 'bench-raw-token-key', version: 1 };
const WARM_UP = 1000;

/** IV counter shared by every loop on the token key, so no IV is ever used twice with it. */
let ivCounter = 0;

function counterIv(iv: Buffer): Buffer {
  const i = ++ivCounter;
  iv.writeUInt32BE(0, 0);
  iv.writeUInt32BE(Math.floor(i / 0x1_0000_0000), 4);
  iv.writeUInt32BE(i >>> 0, 8);
  return iv;
}

/** Runs `op` (after a warm-up) for `seconds`, checking the clock every 256 calls; ops and s. */
async function timed(seconds: number, op: () => unknown, isAsync: boolean): Promise<{ ops: number; elapsed: number }> {
  for (let i = 0; i < WARM_UP; i++) {
    if (isAsync) await op();
    else op();
  }
  const start = performance.now();
  const end = start + seconds * 1000;
  let n = 0;
  for (;;) {
    if (isAsync) for (let k = 0; k < 256; k++) await op();
    else for (let k = 0; k < 256; k++) op();
    n += 256;
    if (performance.now() >= end) break;
  }
  return { ops: n, elapsed: (performance.now() - start) / 1000 };
}

async function wrapperRound(seconds: number): Promise<{ ops: number; elapsed: number; info: TokenInfo }> {
  const hsm = await openHsm(TOKEN, args.dataDir);
  try {
    const iv = Buffer.alloc(12);
    const check = await hsm.encryptAesGcm(REF, counterIv(iv), AAD, PLAINTEXT);
    if (check.length !== 48) throw new Error(`Hsm.encryptAesGcm returned ${check.length} bytes, expected 48`);
    return { ...(await timed(seconds, () => hsm.encryptAesGcm(REF, counterIv(iv), AAD, PLAINTEXT), true)), info: hsm.info };
  } finally {
    await hsm.close();
  }
}

/** Raw pkcs11js on the same token and key: one session, one C_EncryptInit + C_Encrypt per op.
 *  (openHsm set SOFTHSM2_CONF to this token's config.) */
async function rawRound(seconds: number): Promise<{ ops: number; elapsed: number }> {
  const raw = openRawSession(args.dataDir, LABEL);
  try {
    const { p, session } = raw;
    const key = raw.find(pkcs11js.CKO_SECRET_KEY, REF);
    const iv = Buffer.alloc(12);
    const mechanism: P11.Mechanism = {
      mechanism: pkcs11js.CKM_AES_GCM,
      parameter: { type: pkcs11js.CK_PARAMS_GCM, iv, ivBits: 96, aad: AAD, tagBits: 128 } as P11.GcmParams,
    };
    const out = Buffer.alloc(48);
    const encrypt = () => {
      counterIv(iv); // the mechanism parameter references this buffer
      p.C_EncryptInit(session, mechanism, key);
      return p.C_Encrypt(session, PLAINTEXT, out);
    };
    const first = encrypt();
    if (first.length !== 48) throw new Error(`C_Encrypt returned ${first.length} bytes, expected 48`);
    const result = await timed(seconds, encrypt, false);
    raw.logout();
    return result;
  } finally {
    raw.finalize();
  }
}

async function nodeRound(seconds: number): Promise<{ ops: number; elapsed: number }> {
  const key = crypto.randomBytes(32);
  const iv = Buffer.alloc(12);
  let counter = 0;
  return timed(
    seconds,
    () => {
      iv.writeUInt32BE(++counter, 8);
      const c = crypto.createCipheriv('aes-256-gcm', key, iv);
      const ct = c.update(PLAINTEXT);
      c.final();
      return [ct, c.getAuthTag()];
    },
    false,
  );
}

async function main(): Promise<void> {
  const rounds = Math.max(1, args.rounds ?? 5);
  const slice = args.seconds / rounds;

  // Provision the token and generate the key with the project's code.
  const setup = await openHsm(TOKEN, args.dataDir);
  await setup.generateAesKey(REF);
  await setup.close();

  const raw: { ops: number; elapsed: number }[] = [];
  const wrapper: { ops: number; elapsed: number }[] = [];
  const node: { ops: number; elapsed: number }[] = [];
  let info: TokenInfo | undefined;
  for (let round = 0; round < rounds; round++) {
    raw.push(await rawRound(slice));
    const w = await wrapperRound(slice);
    info = w.info;
    wrapper.push(w);
    node.push(await nodeRound(slice));
  }

  process.stdout.write(
    `BENCH_RESULT ${JSON.stringify({
      token: { library: info!.libraryDescription, model: info!.model, manufacturer: info!.manufacturerId },
      rawPkcs11: summariseRounds(raw),
      hsmWrapper: summariseRounds(wrapper),
      nodeCrypto: summariseRounds(node),
    })}\n`,
  );
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? (e.stack ?? e.message) : String(e));
  process.exit(1);
});
