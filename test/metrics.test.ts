/**
 * Operations visibility: /metrics scraped and parsed with a strict Prometheus text-format parser
 * (test/helpers/prom-text.ts, which also checks histogram consistency), /healthz deep check and
 * /readyz.
 */
import { CreateKeyCommand, DecryptCommand, DescribeKeyCommand, EncryptCommand } from '@aws-sdk/client-kms';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type PromFamily, parsePrometheusText, sampleOf } from './helpers/prom-text.js';
import { errorOf, startTestService, type TestService } from './helpers/service.js';

describe('metrics and health endpoints', () => {
  let t: TestService;
  let families: Map<string, PromFamily>;
  const ENCRYPTS = 25;

  beforeAll(async () => {
    t = await startTestService();
    const key = (await t.client.send(new CreateKeyCommand({}))).KeyMetadata!;
    let blob: Uint8Array | undefined;
    for (let i = 0; i < ENCRYPTS; i++) {
      blob = (await t.client.send(new EncryptCommand({ KeyId: key.KeyId, Plaintext: Buffer.from(`metrics ${i}`) }))).CiphertextBlob;
    }
    const bad = Buffer.from(blob!);
    bad[bad.length - 1] ^= 1;
    expect((await errorOf(t.client.send(new DecryptCommand({ CiphertextBlob: bad })))).name).toBe('InvalidCiphertextException');
    expect((await errorOf(t.client.send(new DescribeKeyCommand({ KeyId: '00000000-0000-0000-0000-000000000000' })))).name).toBe('NotFoundException');
    const res = await fetch(`${t.service.url}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain/);
    families = parsePrometheusText(await res.text());
  });

  afterAll(async () => {
    await t?.stop();
  });

  const value = (family: string, name: string, labels: Record<string, string> = {}) => sampleOf(families, family, name, labels)?.value;

  it('counts requests by operation and error code', () => {
    expect(families.get('p11kms_requests_total')?.type).toBe('counter');
    const v = (labels: Record<string, string>) => value('p11kms_requests_total', 'p11kms_requests_total', labels);
    expect(v({ operation: 'Encrypt', code: 'OK' })).toBe(ENCRYPTS);
    expect(v({ operation: 'CreateKey', code: 'OK' })).toBe(1);
    expect(v({ operation: 'DescribeKey', code: 'NotFoundException' })).toBe(1);
    expect(v({ operation: 'Decrypt', code: 'InvalidCiphertextException' })).toBe(1);
  });

  it('has request latency histograms per operation', () => {
    const f = 'p11kms_request_duration_seconds';
    expect(families.get(f)?.type).toBe('histogram');
    expect(value(f, `${f}_count`, { operation: 'Encrypt' })).toBe(ENCRYPTS);
    expect(value(f, `${f}_count`, { operation: 'CreateKey' })).toBe(1);
    expect(value(f, `${f}_sum`, { operation: 'Encrypt' })).toBeGreaterThan(0);
    expect(value(f, `${f}_bucket`, { operation: 'Encrypt', le: '+Inf' })).toBe(ENCRYPTS);
  });

  it('measures PKCS#11 calls and errors by function', () => {
    const f = 'p11kms_pkcs11_call_duration_seconds';
    expect(value(f, `${f}_count`, { function: 'C_Encrypt' })).toBeGreaterThanOrEqual(ENCRYPTS);
    // Encrypt IVs come from the token RNG in blocks (kms/envelope.ts nextIv): one call serves many.
    expect(value(f, `${f}_count`, { function: 'C_GenerateRandom' })).toBeGreaterThanOrEqual(1);
    expect(value(f, `${f}_count`, { function: 'C_GenerateKey' })).toBeGreaterThanOrEqual(1);
    expect(value('p11kms_pkcs11_errors_total', 'p11kms_pkcs11_errors_total', { function: 'C_Decrypt' })).toBeGreaterThanOrEqual(1);
  });

  it('shows session-pool use, token status, audit commits and event-loop delay', () => {
    const pool = (state: string) => value('p11kms_session_pool_sessions', 'p11kms_session_pool_sessions', { state });
    expect(pool('max')).toBe(8);
    expect(pool('open')).toBeGreaterThanOrEqual(0); // the session that saw the tag failure was discarded
    expect(pool('busy')).toBeGreaterThanOrEqual(0);
    expect(pool('waiting')).toBe(0);
    expect(value('p11kms_token_up', 'p11kms_token_up')).toBe(1);
    expect(sampleOf(families, 'p11kms_token_info', 'p11kms_token_info')?.labels.label).toBe('p11kms');
    expect(value('p11kms_audit_records_total', 'p11kms_audit_records_total')).toBe(ENCRYPTS + 3);
    expect(value('p11kms_audit_commit_duration_seconds', 'p11kms_audit_commit_duration_seconds_count')).toBeGreaterThan(0);
    expect(families.has('nodejs_eventloop_lag_p99_seconds')).toBe(true);
  });

  it('answers /healthz with a cached deep check and /readyz', async () => {
    const first = await fetch(`${t.service.url}/healthz`);
    expect(first.status).toBe(200);
    expect(await first.json()).toEqual({ status: 'ok' });
    const ready = await fetch(`${t.service.url}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({ status: 'ready' });
  });
});
