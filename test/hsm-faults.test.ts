/**
 * Faults of a real HSM, injected by the fault module (test/fault-module) between the service and
 * a SoftHSM2 token, while the AWS SDK drives Encrypt/Decrypt load: the process stays up, errors
 * during the fault are retryable AWS errors, success is back above 99 % within seconds of the
 * fault lifting without a restart, and every acknowledged ciphertext decrypts. Recovery times are
 * printed (the README's "HSMs in production" section quotes them).
 */
import fs from 'node:fs';
import path from 'node:path';
import { CreateKeyCommand, DecryptCommand } from '@aws-sdk/client-kms';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FaultLoad, sleep, successRate } from './helpers/fault-load.js';
import { type FaultToken, prepareFaultToken } from './helpers/fault-module.js';
import { startTestService, type TestService } from './helpers/service.js';

const RETRYABLE = new Set(['KeyUnavailableException', 'DependencyTimeoutException']);
const CKR_GENERAL_ERROR = 0x5;
const CKR_DEVICE_ERROR = 0x30;

let token: FaultToken;
const recoveryMs: Record<string, number> = {};

beforeAll(async () => {
  token = await prepareFaultToken();
});

afterAll(() => {
  console.log(`recovery after the fault lifted (first successful request), ms: ${JSON.stringify(recoveryMs)}`);
});

async function health(t: TestService): Promise<{ status: number; body: { status: string; reason?: string } }> {
  const res = await fetch(`${t.service.url}/healthz`);
  return { status: res.status, body: (await res.json()) as { status: string; reason?: string } };
}

async function createKey(t: TestService): Promise<string> {
  return (await t.client.send(new CreateKeyCommand({}))).KeyMetadata!.KeyId!;
}

async function expectAllDecrypt(t: TestService, load: FaultLoad): Promise<void> {
  expect(load.wrongResults).toBe(0);
  for (const { plaintext, ciphertext } of load.acknowledged) {
    const out = await t.client.send(new DecryptCommand({ CiphertextBlob: ciphertext }));
    expect(Buffer.from(out.Plaintext!).equals(plaintext)).toBe(true);
  }
}

/**
 * Runs load, injects `fault` for `faultMs`, lifts it and keeps the load going for 3 s; checks the
 * contract and returns the load and the moment the fault lifted.
 */
async function underFault(t: TestService, name: string, fault: Parameters<FaultToken['control']['set']>[0], faultMs: number, opts: { expectFailures: boolean }) {
  const keyId = await createKey(t);
  const load = new FaultLoad(t.client, keyId);
  await sleep(400);
  const faultAt = Date.now();
  token.control.set(fault);
  let sawUnhealthy: { status: number; reason?: string } | undefined;
  const watch = (async () => {
    while (Date.now() - faultAt < faultMs) {
      const h = await health(t);
      if (h.status !== 200) sawUnhealthy ??= { status: h.status, reason: h.body.reason };
      await sleep(50);
    }
  })();
  await sleep(faultMs);
  await watch;
  const liftAt = Date.now();
  token.control.set({});
  await sleep(3000);
  await load.stop();

  const during = load.between(faultAt, liftAt);
  const failures = load.outcomes.filter((o) => !o.ok);
  for (const f of failures) expect(RETRYABLE.has(f.error!), `${f.op} failed with ${f.error} (${f.status})`).toBe(true);
  if (opts.expectFailures) {
    expect(during.some((o) => !o.ok)).toBe(true);
    expect(sawUnhealthy?.status).toBe(503);
    expect(sawUnhealthy?.reason).toContain("'p11kms'");
  }
  const first = load.firstSuccessAfter(liftAt);
  expect(first).toBeDefined();
  recoveryMs[name] = first! - liftAt;
  const settled = load.between(liftAt + 1500, liftAt + 3000);
  expect(settled.length).toBeGreaterThan(10);
  expect(successRate(settled)).toBeGreaterThan(0.99);
  expect((await health(t)).status).toBe(200);
  await expectAllDecrypt(t, load);
  return { load, faultAt, liftAt };
}

describe('sync calls (SoftHSM2 behind the fault module)', () => {
  let t: TestService;
  beforeAll(async () => {
    t = await startTestService({ ...token.env, P11KMS_AUDIT_DIGEST_SECONDS: '3600' });
  });
  afterAll(async () => {
    await t?.stop();
  });

  it('an outage (sessions gone, as after a reboot): fast KeyUnavailable, 503 naming the token, recovery without restart, one login', async () => {
    const loginsBefore = token.control.stats().logins;
    const { load, faultAt, liftAt } = await underFault(t, 'outage', { outage: 1 }, 1500, { expectFailures: true });
    // Failing fast: requests during the outage do not wait for anything.
    const failed = load.between(faultAt + 100, liftAt).filter((o) => !o.ok);
    expect(failed.length).toBeGreaterThan(10);
    // No storm of logins: recovery logs in once (or a few times if an attempt raced the lift).
    expect(token.control.stats().logins - loginsBefore).toBeLessThanOrEqual(3);
  });

  it('re-resolves the audit signing key after the outage: the next digest is signed', async () => {
    await t.service.audit.digestNow();
    const digests = findDigestFiles(t.dataDir);
    const newest = digests.sort((a, b) => fs.statSync(a).mtimeMs - fs.statSync(b).mtimeMs).at(-1)!;
    const digest = JSON.parse(fs.readFileSync(newest, 'utf8')) as { digestSignature: string | null };
    expect(digest.digestSignature).toMatch(/^[0-9a-f]{128}$/);
  });

  it('lost login: the service logs in again by itself', async () => {
    const loginsBefore = token.control.stats().logins;
    await underFault(t, 'lost login', { logout_seq: 1 }, 300, { expectFailures: false });
    expect(token.control.stats().logins - loginsBefore).toBeGreaterThanOrEqual(1);
    expect(token.control.stats().logins - loginsBefore).toBeLessThanOrEqual(3);
  });

  it('5 % failing calls (CKR_DEVICE_ERROR) are retried inside: requests succeed, sessions are kept', async () => {
    const keyId = await createKey(t);
    const opened = token.control.stats().sessions_opened;
    token.control.set({ fail_percent: 5, fail_ckr: CKR_DEVICE_ERROR });
    const load = new FaultLoad(t.client, keyId);
    await sleep(3000);
    await load.stop();
    token.control.set({});
    const rate = successRate(load.outcomes);
    console.log(`5 % failing calls: ${load.outcomes.length} requests, success ${(rate * 100).toFixed(2)} %, sessions opened ${token.control.stats().sessions_opened - opened}`);
    expect(load.outcomes.length).toBeGreaterThan(40);
    expect(rate).toBeGreaterThan(0.99);
    // A failed C_Encrypt ends its operation: the session goes back to the pool.
    expect(token.control.stats().sessions_opened - opened).toBeLessThan(20);
    await expectAllDecrypt(t, load);
  });

  it('a wedged library (CKR_GENERAL_ERROR on everything): C_Finalize/C_Initialize, then service as before', async () => {
    await underFault(t, 'wedged library', { wedge_seq: 1 }, 300, { expectFailures: false });
  });
});

describe('async calls (worker threads, deadlines)', () => {
  let t: TestService;
  beforeAll(async () => {
    t = await startTestService({ ...token.env, P11KMS_SYMMETRIC_CALLS: 'async', P11KMS_HSM_CALL_TIMEOUT_MS: '300' });
  });
  afterAll(async () => {
    await t?.stop();
  });

  it('an outage in async mode recovers the same way', async () => {
    await underFault(t, 'outage (async)', { outage: 1 }, 1000, { expectFailures: true });
  });

  it('a hung token: DependencyTimeoutException at the deadline, never a hang, then recovery', async () => {
    const { load, faultAt, liftAt } = await underFault(t, 'hang (async)', { hang: 1 }, 1500, { expectFailures: true });
    // Outcomes are filed by the time a request started: one in flight when the token hung started
    // just before faultAt, and it is the one that waits out the deadline (those after it fail fast).
    const errors = new Set(load.between(faultAt - 1000, liftAt).filter((o) => !o.ok).map((o) => o.error));
    expect(errors.has('DependencyTimeoutException')).toBe(true);
  });
});

describe('error dialects', () => {
  it('CKR_GENERAL_ERROR on C_Decrypt is a bad tag only on SoftHSM 2.6; elsewhere a retryable fault', async () => {
    for (const [profile, expected] of [
      ['softhsm2', 'InvalidCiphertextException'],
      ['generic', 'KeyUnavailableException'],
    ] as const) {
      token.control.set({});
      const t = await startTestService({ ...token.env, P11KMS_HSM_PROFILE: profile, P11KMS_SYMMETRIC_CALLS: 'sync' });
      try {
        const keyId = await createKey(t);
        const { EncryptCommand } = await import('@aws-sdk/client-kms');
        const blob = (await t.client.send(new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from('x') }))).CiphertextBlob!;
        token.control.set({ fail_percent: 100, fail_ckr: CKR_GENERAL_ERROR, fail_calls: 'C_Decrypt' });
        const err = await t.client.send(new DecryptCommand({ CiphertextBlob: blob })).then(
          () => undefined,
          (e: { name: string }) => e.name,
        );
        expect(err, profile).toBe(expected);
      } finally {
        token.control.set({});
        await t.stop();
      }
    }
  });
});

function findDigestFiles(dir: string): string[] {
  const out: string[] = [];
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...findDigestFiles(full));
    else if (entry.name.endsWith('.json') && fs.readFileSync(full, 'utf8').includes('"digestSignature"')) out.push(full);
  }
  return out;
}
