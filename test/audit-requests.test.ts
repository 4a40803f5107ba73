/**
 * Every request leaves a record, and a failed trail heals (issue 9, item 5): requests outside the
 * API (other paths and methods, signed or not) and malformed but parseable HTTP are recorded with
 * the caller where the signature proves one; when the disk fails, requests fail and /readyz goes
 * red, and once the disk works again the trail heals by itself, without a restart, and never
 * answers a request it could not record. The disk fault is injected at the trail's record writer
 * (the real write path, wrapped), including a batch that reached the disk only in part.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { CreateKeyCommand, EncryptCommand, KMSClient } from '@aws-sdk/client-kms';
import { HttpRequest } from '@smithy/protocol-http';
import { SignatureV4 } from '@smithy/signature-v4';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type AuditRecordWriter, fileRecordWriter } from '../src/audit/trail.js';
import { startService, type RunningService } from '../src/service.js';
import { runCli } from './helpers/process.js';
import { NodeSha256 } from './helpers/raw.js';
import { ACCOUNT_ID, REGION, ROOT, errorOf, tempDir, testConfig } from './helpers/service.js';

type Rec = Record<string, any>;

/** A request with any method and path, SigV4-signed by the AWS SDK's signer unless `sign` is false. */
async function request(url: string, method: string, pathAndQuery: string, options: { sign?: boolean; body?: string } = {}) {
  const { hostname, port } = new URL(url);
  const [p, query] = pathAndQuery.split('?');
  const headers: Record<string, string> = { host: `${hostname}:${port}`, 'content-type': 'application/x-amz-json-1.1', 'x-amz-target': 'TrentService.ListKeys' };
  const body = options.body ?? (method === 'GET' || method === 'HEAD' ? undefined : '{}');
  let req = new HttpRequest({ method, protocol: 'http:', hostname, port: Number(port), path: p!, query: query ? Object.fromEntries(new URLSearchParams(query)) : undefined, headers, body });
  if (options.sign !== false) req = (await new SignatureV4({ service: 'kms', region: REGION, credentials: ROOT, sha256: NodeSha256 }).sign(req)) as HttpRequest;
  const { host: _host, ...sendHeaders } = req.headers;
  const res = await fetch(`${url}${pathAndQuery}`, { method, headers: sendHeaders, body });
  const text = await res.text();
  return { status: res.status, requestId: res.headers.get('x-amzn-requestid') ?? '', json: text ? JSON.parse(text) : undefined };
}

/** Raw bytes over a socket, for HTTP no client library sends; resolves with what came back. */
function rawHttp(port: number, bytes: string, closeAfterWrite = false): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => {
      socket.write(bytes);
      if (closeAfterWrite) socket.end();
    });
    let out = '';
    socket.on('data', (d) => (out += d.toString()));
    socket.on('close', () => resolve(out));
    socket.on('error', reject);
    socket.setTimeout(10_000, () => socket.destroy());
  });
}

function readRecords(dataDir: string): Rec[] {
  const dir = path.join(dataDir, 'audit');
  return fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.jsonl'))
    .sort()
    .flatMap((f) => fs.readFileSync(path.join(dir, f), 'utf8').split('\n').filter((l) => l.length > 0).map((l) => JSON.parse(l) as Rec));
}

const ROOT_IDENTITY = { type: 'Root', principalId: ACCOUNT_ID, arn: `arn:aws:iam::${ACCOUNT_ID}:root`, accountId: ACCOUNT_ID, accessKeyId: ROOT.accessKeyId };

describe('every request leaves a record; a failed trail heals', () => {
  const dataDir = tempDir('p11kms-audit-requests-');
  /** 'partial': the next batch reaches the disk only in part, then the disk is full. */
  let disk: 'ok' | 'partial' | 'full' = 'ok';
  const writer: AuditRecordWriter = {
    async write(fd, buf) {
      if (disk === 'partial') {
        disk = 'full';
        await fileRecordWriter.write(fd, buf.subarray(0, Math.floor(buf.length / 2)));
      }
      if (disk === 'full') throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
      return fileRecordWriter.write(fd, buf);
    },
  };
  let service: RunningService;
  let client: KMSClient;
  const byRequestId = () => new Map(readRecords(dataDir).map((r) => [r.requestID as string, r]));

  beforeAll(async () => {
    service = await startService(testConfig(dataDir), { auditRecordWriter: writer });
    client = new KMSClient({ endpoint: service.url, region: REGION, credentials: ROOT, maxAttempts: 1 });
  });
  afterAll(async () => {
    client?.destroy();
    await service?.close();
  });

  describe('requests outside the API are recorded', () => {
    const cases: [string, string, string, boolean][] = [
      ['signed POST to another path', 'POST', '/other', true],
      ['signed POST to another path with a query', 'POST', '/x/y?a=1', true],
      ['unsigned GET /', 'GET', '/', false],
      ['signed GET /', 'GET', '/', true],
      ['signed PUT /', 'PUT', '/', true],
      ['unsigned DELETE', 'DELETE', '/keys/1', false],
      ['signed PATCH', 'PATCH', '/', true],
      ['OPTIONS', 'OPTIONS', '/', false],
      ['HEAD /', 'HEAD', '/', false],
      ['GET of an unknown probe-like path', 'GET', '/healthz/x', false],
    ];
    for (const [name, method, target, signed] of cases) {
      it(name, async () => {
        const res = await request(service.url, method, target, { sign: signed });
        expect(res.status).toBe(400);
        if (method !== 'HEAD') expect(res.json).toEqual({ __type: 'UnknownOperationException', message: `No route for ${method} ${target.split('?')[0]}.` });
        expect(res.requestId).toMatch(/^[0-9a-f-]{36}$/);
        const rec = byRequestId().get(res.requestId);
        expect(rec, 'no audit record').toBeDefined();
        expect(rec).toMatchObject({ eventName: 'ListKeys', errorCode: 'UnknownOperationException', eventType: 'AwsApiCall', sourceIPAddress: '127.0.0.1' });
        expect(rec!.errorMessage).toBe(`No route for ${method} ${target.split('?')[0]}.`);
        // A valid signature names the caller; otherwise the record says Unknown.
        if (signed) expect(rec!.userIdentity).toEqual(ROOT_IDENTITY);
        else expect(rec!.userIdentity.type).toBe('Unknown');
      });
    }

    it('malformed but parseable HTTP: no Host, a broken percent-encoding, HTTP/1.0', async () => {
      const before = readRecords(dataDir).length;
      const reply = await rawHttp(service.port, 'GET /%ZZ?%%% HTTP/1.0\r\n\r\n');
      expect(reply).toMatch(/^HTTP\/1\.1 400 /);
      expect(reply).toContain('UnknownOperationException');
      const requestId = /x-amzn-requestid: ([0-9a-f-]{36})/i.exec(reply)![1]!;
      expect(byRequestId().get(requestId)).toMatchObject({ eventName: 'UnknownOperation', errorCode: 'UnknownOperationException', userIdentity: { type: 'Unknown' } });
      expect(readRecords(dataDir).length).toBe(before + 1);
    });

    it('HTTP too broken to parse is recorded and answered as node would (400, 431), in AWS JSON', async () => {
      const cases: [string, number, string][] = [
        ['BREW / HTTP/1.1\r\nHost: x\r\n\r\n', 400, 'HPE_INVALID_METHOD'],
        ['POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: TrentService.ListKeys\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n', 400, 'HPE_INVALID_CHUNK_SIZE'],
        [`GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`, 431, 'HPE_HEADER_OVERFLOW'],
      ];
      for (const [bytes, status, code] of cases) {
        const before = readRecords(dataDir).length;
        const reply = await rawHttp(service.port, bytes);
        expect(reply.startsWith(`HTTP/1.1 ${status} `), reply.slice(0, 200)).toBe(true);
        const body = JSON.parse(/\{"__type".*?\}/.exec(reply)![0]); // chunked or not
        expect(body).toEqual({ __type: 'SerializationException', message: `The request is not valid HTTP (${code}).` });
        const requestId = /x-amzn-requestid: ([0-9a-f-]{36})/i.exec(reply)![1]!;
        const records = readRecords(dataDir);
        expect(records.length).toBe(before + 1);
        // The chunked request reached the API path (its target names the event); the others did not.
        expect(records.at(-1)).toMatchObject({ requestID: requestId, eventName: bytes.includes('chunked') ? 'ListKeys' : 'UnknownOperation', errorCode: 'SerializationException', userIdentity: { type: 'Unknown' }, sourceIPAddress: '127.0.0.1' });
      }
    });

    it('a body cut short by the client is recorded', async () => {
      const before = readRecords(dataDir).length;
      await rawHttp(service.port, 'POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Amz-Target: TrentService.ListKeys\r\nContent-Length: 500\r\n\r\n{"Limit":', true);
      // Recorded when the server sees the connection close (durably, shortly after).
      let records = readRecords(dataDir);
      for (let i = 0; i < 50 && records.length === before; i++) {
        await new Promise((r) => setTimeout(r, 50));
        records = readRecords(dataDir);
      }
      expect(records.length).toBe(before + 1);
      expect(records.at(-1)).toMatchObject({ eventName: 'ListKeys', errorCode: 'SerializationException', errorMessage: 'The connection closed before the request body was complete.', sourceIPAddress: '127.0.0.1' });
    });

    it('probes are not API requests and are not recorded', async () => {
      const before = readRecords(dataDir).length;
      for (const probe of ['/healthz', '/readyz', '/metrics']) expect((await fetch(`${service.url}${probe}`)).status).toBe(200);
      expect(readRecords(dataDir).length).toBe(before);
    });
  });

  describe('a failed trail', () => {
    const answered: string[] = [];
    const refused: string[] = [];
    let keyId = '';
    const readyz = async () => (await fetch(`${service.url}/readyz`)).status;

    it('fails requests while the disk is full and /readyz is red', async () => {
      keyId = (await client.send(new CreateKeyCommand({}))).KeyMetadata!.KeyId!;
      answered.push((await client.send(new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from('before') }))).$metadata.requestId!);
      disk = 'partial';
      const results = await Promise.all(Array.from({ length: 8 }, () => errorOf(client.send(new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from('during') })))));
      for (const r of results) expect(r).toMatchObject({ name: 'KMSInternalException', status: 500 });
      expect(await readyz()).toBe(503);
      const body = await (await fetch(`${service.url}/readyz`)).json();
      expect(body.reason).toMatch(/audit trail cannot write: ENOSPC/);
      // Still refused after several heal attempts while the disk stays full.
      await new Promise((r) => setTimeout(r, 2500));
      expect(await readyz()).toBe(503);
      const later = await errorOf(client.send(new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from('still') })));
      expect(later.status).toBe(500);
      const unrouted = await request(service.url, 'GET', '/', { sign: false });
      expect(unrouted.status).toBe(500);
      refused.push(unrouted.requestId);
    });

    it('heals by itself once the disk works again, without a restart', async () => {
      disk = 'ok';
      const started = Date.now();
      while ((await readyz()) !== 200) {
        expect(Date.now() - started, '/readyz did not recover').toBeLessThan(10_000);
        await new Promise((r) => setTimeout(r, 50));
      }
      console.log(`audit trail healed ${Date.now() - started} ms after the disk came back`);
      answered.push((await client.send(new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from('after') }))).$metadata.requestId!);
      const records = readRecords(dataDir);
      const ids = new Set(records.map((r) => r.requestID));
      for (const id of answered) expect(ids.has(id), `answered request ${id} has no record`).toBe(true);
      for (const id of refused) expect(ids.has(id)).toBe(false);
      const recovered = records.filter((r) => r.eventName === 'AuditTrailRecovered');
      expect(recovered).toHaveLength(1);
      expect(recovered[0]).toMatchObject({ eventType: 'AwsServiceEvent', additionalEventData: { error: 'ENOSPC' } });
      expect(recovered[0]!.additionalEventData.refusedRecords).toBeGreaterThanOrEqual(2);
    });

    it('leaves a trail that verifies (the half-written batch was cut away)', async () => {
      await service.close();
      const { code, stdout, stderr } = await runCli(['audit', 'verify'], dataDir);
      expect(stderr).toBe('');
      expect(code).toBe(0);
      expect(stdout).toMatch(/audit trail OK/);
      const parts = fs.readdirSync(path.join(dataDir, 'audit')).filter((f) => f.endsWith('.jsonl'));
      expect(parts).toHaveLength(2); // the healed trail continues in a new file (one, however many attempts)
      for (const f of parts) expect(fs.readFileSync(path.join(dataDir, 'audit', f), 'utf8').endsWith('\n')).toBe(true);
    });
  });
});
