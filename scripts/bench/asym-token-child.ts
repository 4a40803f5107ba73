/**
 * Raw token rates for the asymmetric and HMAC operations of the HTTP "asym" table, in a process of
 * its own with its own SoftHSM2 token. The keys are generated with the project's Hsm (the same
 * templates as the service: token objects, sensitive, non-extractable); the loops then run on raw
 * pkcs11js, one session, synchronous calls, one Init + one call per op:
 *  - ECDSA P-256: SHA-256 of a 32-byte message (node:crypto), then CKM_ECDSA over the digest;
 *  - RSA-2048 PSS: SHA-256 digest, then CKM_RSA_PKCS_PSS (SHA-256, MGF1-SHA-256, salt 32) over it
 *    — the mechanism the service uses (it hashes RAW messages itself);
 *  - ECDSA P-256 verify: C_VerifyInit + C_Verify with the public key object;
 *  - HMAC-SHA-256: CKM_SHA256_HMAC over the 32-byte message, 32-byte generic secret.
 * The four kinds run in alternating rounds (median reported).
 * Usage: node asym-token-child.js '{"dataDir":"…","seconds":5,"rounds":3}' → `BENCH_RESULT {json}`.
 */
import crypto from 'node:crypto';
import { performance } from 'node:perf_hooks';
// pkcs11js is CommonJS: under Node ESM only the default import carries the constants.
import pkcs11js from 'pkcs11js';
import type * as P11 from 'pkcs11js';
import type { TokenConfig } from '../../src/config.js';
import { openHsm } from '../../src/hsm/pkcs11-token.js';
import type { BackingKeyRef } from '../../src/hsm/types.js';
import { summariseRounds } from './common.js';
import { openRawSession } from './raw-token.js';

interface Args {
  dataDir: string;
  /** Total seconds per kind, split over the rounds. */
  seconds: number;
  rounds?: number;
}

export type AsymTokenKind = 'ecdsaSign' | 'rsaPssSign' | 'ecdsaVerify' | 'hmacSha256';

export interface AsymTokenRate {
  kind: AsymTokenKind;
  mechanism: string;
  ops: number;
  opsPerSec: number;
  rounds: number[];
}

const args = JSON.parse(process.argv[2]!) as Args;
const LABEL = 'p11kms';
const TOKEN: TokenConfig = { label: LABEL, poolSize: 8, symmetricCalls: 'sync' };
const EC: BackingKeyRef = { keyId: 'bench-ecc-p256', version: 1 };
const RSA: BackingKeyRef = { keyId: 'bench-rsa-2048', version: 1 };
const HMAC: BackingKeyRef = { keyId: 'bench-hmac-256', version: 1 };
const MESSAGE = crypto.randomBytes(32);
const WARM_UP = 50;

function timed(seconds: number, op: () => unknown): { ops: number; elapsed: number } {
  for (let i = 0; i < WARM_UP; i++) op();
  const start = performance.now();
  const end = start + seconds * 1000;
  let n = 0;
  for (;;) {
    for (let k = 0; k < 16; k++) op();
    n += 16;
    if (performance.now() >= end) break;
  }
  return { ops: n, elapsed: (performance.now() - start) / 1000 };
}

const sha256 = (data: Buffer) => crypto.createHash('sha256').update(data).digest();

async function main(): Promise<void> {
  const rounds = Math.max(1, args.rounds ?? 3);
  const slice = args.seconds / rounds;

  // Provision the token and generate the keys with the project's code (the service's templates).
  const setup = await openHsm(TOKEN, args.dataDir);
  await setup.generateKeyPair(EC, { kind: 'ec', curve: 'P-256' }, 'sign');
  await setup.generateKeyPair(RSA, { kind: 'rsa', bits: 2048 }, 'sign');
  await setup.generateHmacKey(HMAC, 'sha256', 32);
  await setup.close();

  const raw = openRawSession(args.dataDir, LABEL);
  try {
    const { p, session } = raw;
    const ecPriv = raw.find(pkcs11js.CKO_PRIVATE_KEY, EC);
    const ecPub = raw.find(pkcs11js.CKO_PUBLIC_KEY, EC);
    const rsaPriv = raw.find(pkcs11js.CKO_PRIVATE_KEY, RSA);
    const hmacKey = raw.find(pkcs11js.CKO_SECRET_KEY, HMAC);

    const ecdsa: P11.Mechanism = { mechanism: pkcs11js.CKM_ECDSA };
    const pssParams: P11.RsaPSS = { type: pkcs11js.CK_PARAMS_RSA_PSS, hashAlg: pkcs11js.CKM_SHA256, mgf: pkcs11js.CKG_MGF1_SHA256, saltLen: 32 };
    const pss: P11.Mechanism = { mechanism: pkcs11js.CKM_RSA_PKCS_PSS, parameter: pssParams };
    const hmac: P11.Mechanism = { mechanism: pkcs11js.CKM_SHA256_HMAC };
    const sigOut = Buffer.alloc(512);
    const digestOfMessage = sha256(MESSAGE);
    p.C_SignInit(session, ecdsa, ecPriv);
    const ecSignature = Buffer.from(p.C_Sign(session, digestOfMessage, sigOut));

    const ops: Record<AsymTokenKind, { mechanism: string; run: () => unknown }> = {
      ecdsaSign: {
        mechanism: 'SHA-256 (node:crypto) + C_SignInit/C_Sign CKM_ECDSA, P-256 token key',
        run: () => {
          p.C_SignInit(session, ecdsa, ecPriv);
          return p.C_Sign(session, sha256(MESSAGE), sigOut);
        },
      },
      rsaPssSign: {
        mechanism: 'SHA-256 (node:crypto) + C_SignInit/C_Sign CKM_RSA_PKCS_PSS (SHA-256, MGF1, salt 32), RSA-2048 token key',
        run: () => {
          p.C_SignInit(session, pss, rsaPriv);
          return p.C_Sign(session, sha256(MESSAGE), sigOut);
        },
      },
      ecdsaVerify: {
        mechanism: 'SHA-256 (node:crypto) + C_VerifyInit/C_Verify CKM_ECDSA, P-256 public key object',
        run: () => {
          p.C_VerifyInit(session, ecdsa, ecPub);
          if (!p.C_Verify(session, sha256(MESSAGE), ecSignature)) throw new Error('C_Verify: the signature did not verify');
        },
      },
      hmacSha256: {
        mechanism: 'C_SignInit/C_Sign CKM_SHA256_HMAC, 32-byte generic secret token key',
        run: () => {
          p.C_SignInit(session, hmac, hmacKey);
          return p.C_Sign(session, MESSAGE, sigOut);
        },
      },
    };
    const kinds = Object.keys(ops) as AsymTokenKind[];
    const samples = new Map<AsymTokenKind, { ops: number; elapsed: number }[]>(kinds.map((k) => [k, []]));
    for (let round = 0; round < rounds; round++) {
      for (const kind of kinds) samples.get(kind)!.push(timed(slice, ops[kind].run));
    }
    raw.logout();

    const result: AsymTokenRate[] = kinds.map((kind) => ({ kind, mechanism: ops[kind].mechanism, ...summariseRounds(samples.get(kind)!) }));
    process.stdout.write(`BENCH_RESULT ${JSON.stringify({ rates: result })}\n`);
  } finally {
    raw.finalize();
  }
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? (e.stack ?? e.message) : String(e));
  process.exit(1);
});
