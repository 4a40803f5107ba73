/**
 * The operator API the console reads (GET /audit, /audit/verification, /usage, /service): signed
 * with SigV4 like the KMS API, authorized on the product's own actions (deny by default), audited,
 * and answered in AWS's error shape. And the console's static files with their security headers.
 */
import fs from 'node:fs';
import path from 'node:path';
import { CreateKeyCommand, EncryptCommand } from '@aws-sdk/client-kms';
import { HttpRequest } from '@smithy/protocol-http';
import { SignatureV4 } from '@smithy/signature-v4';
import { describe, expect, it } from 'vitest';
import { queryAuditRecords } from '../src/audit/query.js';
import { NodeSha256 } from './helpers/raw.js';
import { REGION, ROOT, tempDir, useTestService } from './helpers/service.js';

const AUDITOR = { accessKeyId: 'AKIAAUDITOR000000001', secretAccessKey: 'auditor-secret-0123456789abcdefghij' };
const NOBODY = { accessKeyId: 'AKIANOBODY0000000001', secretAccessKey: 'nobody-secret-0123456789abcdefghijk' };

function principalsFile(): string {
  const file = path.join(tempDir('p11kms-operator-'), 'principals.json');
  fs.writeFileSync(
    file,
    JSON.stringify({
      principals: [
        {
          arn: 'arn:aws:iam::111122223333:user/auditor',
          ...AUDITOR,
          policies: [{ Version: '2012-10-17', Statement: [{ Effect: 'Allow', Action: ['p11kms:ReadAuditTrail', 'p11kms:GetUsageReport'], Resource: '*' }] }],
        },
        { arn: 'arn:aws:iam::111122223333:user/nobody', ...NOBODY, policies: [{ Version: '2012-10-17', Statement: [{ Effect: 'Allow', Action: 'kms:*', Resource: '*' }] }] },
      ],
    }),
  );
  return file;
}

const t = useTestService(() => ({ P11KMS_PRINCIPALS_FILE: principalsFile() }));

async function signedGet(pathName: string, query: Record<string, string> = {}, credentials = ROOT): Promise<{ status: number; json: any; headers: Headers }> {
  const url = new URL(t.service.url);
  const signer = new SignatureV4({ service: 'kms', region: REGION, credentials, sha256: NodeSha256 });
  const request = await signer.sign(new HttpRequest({ method: 'GET', protocol: 'http:', hostname: url.hostname, port: Number(url.port), path: pathName, query, headers: { host: url.host } }));
  const { host: _host, ...headers } = request.headers;
  const search = new URLSearchParams(query).toString();
  const res = await fetch(`${t.service.url}${pathName}${search ? `?${search}` : ''}`, { headers });
  return { status: res.status, json: await res.json(), headers: res.headers };
}

describe('operator API', () => {
  it('GET /audit answers CloudTrail records, newest first, filtered', async () => {
    const key = (await t.client.send(new CreateKeyCommand({}))).KeyMetadata!;
    await t.client.send(new EncryptCommand({ KeyId: key.KeyId, Plaintext: Buffer.from('x') }));
    const res = await signedGet('/audit', { key: key.KeyId!, limit: '10' });
    expect(res.status).toBe(200);
    const names = res.json.records.map((r: { eventName: string }) => r.eventName);
    expect(names.slice(0, 2)).toEqual(['Encrypt', 'CreateKey']);
    expect(res.json.records[0]).toMatchObject({ eventSource: 'kms.amazonaws.com', userIdentity: { type: 'Root' }, resources: [{ ARN: key.Arn }] });
    const onlyCreate = await signedGet('/audit', { eventName: 'CreateKey', limit: '1' });
    expect(onlyCreate.json.records).toHaveLength(1);
    expect(onlyCreate.json.records[0].eventName).toBe('CreateKey');
  });

  it('is deny by default: a principal with kms:* may not read the audit trail; one allowed may', async () => {
    const denied = await signedGet('/audit', {}, NOBODY);
    expect(denied.status).toBe(400);
    expect(denied.json).toMatchObject({ __type: 'AccessDeniedException', message: expect.stringContaining('p11kms:ReadAuditTrail') });
    expect((await signedGet('/audit', {}, AUDITOR)).status).toBe(200);
    expect((await signedGet('/service', {}, AUDITOR)).json.__type).toBe('AccessDeniedException');
  });

  it('refuses unsigned, wrongly signed and malformed requests in AWS\'s words', async () => {
    expect((await fetch(`${t.service.url}/audit`).then((r) => r.json())).__type).toBe('MissingAuthenticationTokenException');
    expect((await signedGet('/audit', {}, { accessKeyId: ROOT.accessKeyId, secretAccessKey: 'wrong-secret-0000000000000000000000' })).json.__type).toBe('InvalidSignatureException');
    const bad = await signedGet('/audit', { limit: '100000' });
    expect(bad).toMatchObject({ status: 400, json: { __type: 'ValidationException' } });
    expect((await signedGet('/audit', { unknown: 'x' })).json.__type).toBe('ValidationException');
    expect((await signedGet('/usage', { month: '2026-13' })).json.__type).toBe('ValidationException');
  });

  it('audits its own use, denied or not', async () => {
    await signedGet('/service');
    await signedGet('/audit', {}, NOBODY);
    const seen: { eventName: string; errorCode?: string; who?: string }[] = [];
    for await (const r of queryAuditRecords(t.dataDir, {})) seen.push({ eventName: r.eventName, errorCode: r.errorCode, who: r.userIdentity?.accessKeyId });
    expect(seen).toContainEqual({ eventName: 'DescribeService', errorCode: undefined, who: ROOT.accessKeyId });
    expect(seen).toContainEqual({ eventName: 'ReadAuditTrail', errorCode: 'AccessDenied', who: NOBODY.accessKeyId });
  });

  it('GET /audit/verification verifies the chains off the event loop', async () => {
    const res = await signedGet('/audit/verification');
    expect(res.status).toBe(200);
    expect(res.json).toMatchObject({ ok: true, state: expect.stringMatching(/^(intact|unanchored tail)$/), chains: 1 });
    expect(res.json.records).toBeGreaterThan(3);
  });

  it('GET /usage gives the monthly report and per-day counts', async () => {
    const month = new Date().toISOString().slice(0, 7);
    const res = await signedGet('/usage', { month, prices: 'true' });
    expect(res.status).toBe(200);
    expect(res.json.report).toMatchObject({ month, estimate: { currency: 'USD' } });
    expect(res.json.daily.some((d: { operation: string; requests: number }) => d.operation === 'Encrypt' && d.requests >= 1)).toBe(true);
  });

  it('GET /service reports the token, health and capability table', async () => {
    const res = await signedGet('/service');
    expect(res.json).toMatchObject({ version: expect.stringMatching(/^\d+\.\d+\.\d+/), health: { status: 'ok' }, token: { model: expect.stringContaining('SoftHSM') } });
    const caps = res.json.capabilities as { keySpec: string; keyUsage: string; served: boolean; reason?: string }[];
    expect(caps).toContainEqual(expect.objectContaining({ keySpec: 'SYMMETRIC_DEFAULT', keyUsage: 'ENCRYPT_DECRYPT', served: true }));
    expect(caps.find((c) => c.keySpec.startsWith('ML_DSA'))).toMatchObject({ served: false, reason: expect.stringContaining('not supported') });
  });
});

describe('console static files', () => {
  it('serves /console/ with a strict Content-Security-Policy and no inline script', async () => {
    const res = await fetch(`${t.service.url}/console/`);
    expect(res.status).toBe(200);
    const csp = res.headers.get('content-security-policy')!;
    expect(csp).toContain("script-src 'self'");
    expect(csp).toContain("default-src 'none'");
    expect(csp).not.toContain('unsafe-inline');
    expect(res.headers.get('x-frame-options')).toBe('DENY');
    const html = await res.text();
    expect(html).toMatch(/<script type="module" crossorigin src="\/console\/assets\/[^"]+\.js"><\/script>/);
    expect(html).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/);
    expect(html).not.toMatch(/https?:\/\//);
    expect((await fetch(`${t.service.url}/console/settings.json`).then((r) => r.json())).region).toBe(REGION);
  });
});
