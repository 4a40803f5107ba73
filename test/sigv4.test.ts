import { createHash, createHmac } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SignatureV4 } from '@smithy/signature-v4';
import { Sha256 } from '@smithy/core/checksum'; // the hash the SDK's KMS client signs with
import { EncryptCommand, KMSClient, ListKeysCommand } from '@aws-sdk/client-kms';
import { SigV4Verifier, type SignedRequest } from '../src/auth/sigv4.js';
import { KmsError } from '../src/kms/errors.js';
import { httpStatusOf } from '../src/http/error-response.js';

const AKID = 'AKIDEXAMPLE0000001';
const SECRET = 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY';
const ROTATED = 'a-rotated-secret-value-0000000000000000';
const NOW = new Date('2026-01-01T00:10:00Z');
const MISMATCH = /^The request signature we calculated does not match the signature you provided\./;
const lookup = (akid: string): string | undefined => (akid === AKID ? SECRET : undefined);

function verifier(now = NOW, lookupSecret: (akid: string) => string | undefined = lookup): SigV4Verifier {
  return new SigV4Verifier({ region: 'us-east-1', service: 'kms', maxSkewSeconds: 300, now: () => now }, lookupSecret);
}

interface SignOptions {
  body?: string;
  path?: string;
  query?: Record<string, string | string[]>;
  /** What goes on the wire, when it differs from `path`. */
  url?: string;
  headers?: Record<string, string>;
  region?: string;
  service?: string;
  accessKeyId?: string;
  secret?: string;
  sessionToken?: string;
  date?: Date;
  applyChecksum?: boolean;
}

/** Signs with the AWS SDK's own signer and returns what node would hand the server. */
async function sign(o: SignOptions = {}): Promise<SignedRequest> {
  const signer = new SignatureV4({
    service: o.service ?? 'kms',
    region: o.region ?? 'us-east-1',
    credentials: { accessKeyId: o.accessKeyId ?? AKID, secretAccessKey: o.secret ?? SECRET, sessionToken: o.sessionToken },
    sha256: Sha256,
    applyChecksum: o.applyChecksum ?? false,
  });
  const body = o.body ?? '{}';
  const headers = {
    host: 'kms.local:8080',
    'content-type': 'application/x-amz-json-1.1',
    'x-amz-target': 'TrentService.ListKeys',
    ...o.headers,
  };
  const signed = await signer.sign(
    { method: 'POST', protocol: 'http:', hostname: 'kms.local', path: o.path ?? '/', query: o.query ?? {}, headers, body },
    { signingDate: o.date ?? NOW },
  );
  const lowerCased = Object.fromEntries(Object.entries(signed.headers).map(([k, v]) => [k.toLowerCase(), v]));
  return { method: 'POST', url: o.url ?? o.path ?? '/', headers: lowerCased, body: Buffer.from(body) };
}

const withHeaders = (req: SignedRequest, headers: Record<string, string>): SignedRequest => ({
  ...req,
  headers: { ...req.headers, ...headers },
});

/** The KmsError that verify throws for `req`. */
function rejected(req: SignedRequest, v = verifier()): KmsError {
  try {
    v.verify(req);
  } catch (err) {
    expect(err).toBeInstanceOf(KmsError);
    return err as KmsError;
  }
  throw new Error('expected verify to throw');
}

describe('SigV4Verifier with signatures from @smithy/signature-v4', () => {
  it('accepts a correctly signed request and returns the access key id', async () => {
    expect(verifier().verify(await sign({ body: '{"Limit":5}' }))).toBe(AKID);
  });

  it('accepts a query string and a path that needs normalising, as the SDK signed them', async () => {
    const path = '/a/./b/../c%20d';
    const query = { b: '2', a: ['z', 'y'], 'sp ace': 'v/w' };
    const req = await sign({ path, query, url: `${path}?b=2&a=z&a=y&sp%20ace=v%2Fw` });
    expect(verifier().verify(req)).toBe(AKID);
    expect(rejected({ ...req, url: `${path}?b=3&a=z&a=y&sp%20ace=v%2Fw` }).message).toMatch(MISMATCH);
  });

  it('folds whitespace in header values as the signer did', async () => {
    const req = await sign({ headers: { 'x-custom': 'a   b\t c' } });
    expect(req.headers['x-custom']).toBe('a   b\t c');
    expect(verifier().verify(req)).toBe(AKID);
  });

  it('assembles the canonical request of a plain KMS call exactly as the SDK assembles it', () => {
    const v = verifier();
    // Values with every kind of whitespace the canonical form trims or folds, seeded so a failure
    // can be replayed; names always sorted and lower case (the direct path), then shuffled or
    // upper-cased (the SDK path, trivially equal) and with a header repeated in rawHeaders.
    let seed = 15;
    const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    const pieces = [' ', '  ', '\t', '\r\n', 'a', 'b c', ',', 'é', ''];
    const value = () => Array.from({ length: Math.floor(random() * 6) }, () => pieces[Math.floor(random() * pieces.length)]).join('');
    for (let round = 0; round < 300; round++) {
      const headers: Record<string, string | string[]> = { host: value(), 'x-amz-date': '20260101T001000Z', 'x-amz-target': value(), 'x-custom': value() };
      if (round % 3 === 0) headers['x-list'] = [value(), value()];
      const signed = ['host', 'x-amz-date', 'x-amz-target', 'x-custom', ...(round % 3 === 0 ? ['x-list'] : []), ...(round % 5 === 0 ? ['x-absent'] : [])];
      const rawHeaders = Object.entries(headers).flatMap(([k, v]) => (Array.isArray(v) ? v.flatMap((item) => [k.toUpperCase(), item]) : [k, v]));
      if (round % 4 === 0) rawHeaders.push('X-Custom', value());
      const req: SignedRequest = { method: 'POST', url: '/', headers, rawHeaders, body: Buffer.from('{}') };
      const lists = [signed, [...signed].reverse(), signed.map((n, i) => (i === 1 ? n.toUpperCase() : n)), [...signed, 'host']];
      for (const list of lists) expect(v.canonicalRequest(req, list, 'hash')).toBe(v.sdkCanonicalRequest(req, list, 'hash'));
    }
  });

  it('joins a repeated header with "," when rawHeaders are given', async () => {
    const req = await sign({ headers: { 'x-custom': 'a,b c' } });
    const rawHeaders = Object.entries(req.headers).flatMap(([k, v]) => (k === 'x-custom' ? [] : [k, String(v)]));
    rawHeaders.push('X-Custom', 'a', 'x-custom', '  b   c  '); // each value is trimmed before joining
    // What node makes of the repeat, which alone would not verify:
    const nodeView = withHeaders(req, { 'x-custom': 'a, b   c' });
    expect(rejected(nodeView).message).toMatch(MISMATCH);
    expect(verifier().verify({ ...nodeView, rawHeaders })).toBe(AKID);
  });

  it('accepts a signed x-amz-content-sha256 that matches the body, rejects one that lies', async () => {
    const good = await sign({ applyChecksum: true, body: '{"KeyId":"k"}' });
    expect(good.headers['x-amz-content-sha256']).toBe(createHash('sha256').update('{"KeyId":"k"}').digest('hex'));
    expect(verifier().verify(good)).toBe(AKID);

    const err = rejected(await sign({ applyChecksum: true, headers: { 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' } }));
    expect(err.type).toBe('InvalidSignatureException');
    expect(err.message).toMatch(/x-amz-content-sha256/);
  });

  it('ignores headers that were not signed', async () => {
    const req = await sign();
    expect(req.headers['user-agent']).toBeUndefined();
    expect(verifier().verify(withHeaders(req, { 'user-agent': 'something/else' }))).toBe(AKID);
    // An unsigned x-amz-content-sha256 (say, added by a proxy) neither replaces nor vetoes the body hash.
    expect(verifier().verify(withHeaders(req, { 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' }))).toBe(AKID);
  });

  it('rejects a tampered body', async () => {
    const req = await sign({ body: '{"KeyId":"alias/a"}' });
    const err = rejected({ ...req, body: Buffer.from('{"KeyId":"alias/b"}') });
    expect(err.type).toBe('InvalidSignatureException');
    expect(httpStatusOf(err)).toBe(400);
    expect(err.message).toMatch(MISMATCH);
  });

  it('rejects a tampered signed header', async () => {
    const err = rejected(withHeaders(await sign(), { 'x-amz-target': 'TrentService.ScheduleKeyDeletion' }));
    expect(err.type).toBe('InvalidSignatureException');
    expect(err.message).toMatch(MISMATCH);
  });

  it('rejects a signature made with the wrong secret, without leaking secret or expected signature', async () => {
    const err = rejected(await sign({ secret: 'not-the-secret-at-all' }));
    expect(err.type).toBe('InvalidSignatureException');
    expect(err.message).toMatch(MISMATCH);
    expect(err.message).not.toContain(SECRET);
    expect(err.message).not.toMatch(/[0-9a-f]{64}/);
  });

  it('treats a signature of the wrong length or format as a mismatch', async () => {
    const req = await sign();
    const good = req.headers.authorization!.slice(-64);
    for (const signature of ['abcd', good.toUpperCase(), `${good}00`, 'zz'.repeat(32)]) {
      const authorization = req.headers.authorization!.replace(good, signature);
      expect(rejected(withHeaders(req, { authorization })).message, signature).toMatch(MISMATCH);
    }
  });

  it('rejects an unknown access key', async () => {
    const err = rejected(await sign({ accessKeyId: 'AKIDUNKNOWN0000000' }));
    expect(err.type).toBe('UnrecognizedClientException');
    expect(err.message).toBe('The security token included in the request is invalid.');
  });

  it('rejects a credential scoped to another region or service', async () => {
    const region = rejected(await sign({ region: 'eu-west-1' }));
    expect(region.type).toBe('InvalidSignatureException');
    expect(region.message).toBe("Credential should be scoped to a valid region. This service signs in region 'us-east-1', the request in 'eu-west-1': set the client's region to us-east-1. ");

    const service = rejected(await sign({ service: 's3' }));
    expect(service.type).toBe('InvalidSignatureException');
    expect(service.message).toBe("Credential should be scoped to correct service: 'kms'. ");
  });

  it('rejects clocks skewed beyond the window on either side, with AWS wording', async () => {
    const req = await sign({ date: new Date('2026-01-01T00:00:00Z') });
    const late = rejected(req, verifier(new Date('2026-01-01T00:10:00Z')));
    expect(late.type).toBe('InvalidSignatureException');
    expect(late.message).toBe(
      'Signature expired: 20260101T000000Z is now earlier than 20260101T000500Z (20260101T001000Z - 5 min.)',
    );
    const early = rejected(req, verifier(new Date('2025-12-31T23:50:00Z')));
    expect(early.type).toBe('InvalidSignatureException');
    expect(early.message).toBe(
      'Signature not yet current: 20260101T000000Z is still later than 20251231T235500Z (20251231T235000Z + 5 min.)',
    );
    // The window's edges are inside it; a second beyond is not.
    expect(verifier(new Date('2026-01-01T00:05:00Z')).verify(req)).toBe(AKID);
    expect(verifier(new Date('2025-12-31T23:55:00Z')).verify(req)).toBe(AKID);
    expect(rejected(req, verifier(new Date('2026-01-01T00:05:01Z'))).message).toMatch(/^Signature expired/);
    expect(rejected(req, verifier(new Date('2025-12-31T23:54:59Z'))).message).toMatch(/^Signature not yet current/);
  });

  it('answers a request without Authorization with MissingAuthenticationToken (403)', async () => {
    const { authorization: _, ...headers } = (await sign()).headers;
    const err = rejected({ method: 'POST', url: '/', headers, body: Buffer.from('{}') });
    expect(err.type).toBe('MissingAuthenticationTokenException');
    expect(err.message).toBe('Request is missing Authentication Token');
    expect(httpStatusOf(err)).toBe(403);
  });

  it('rejects garbage, unsupported or incomplete Authorization headers as IncompleteSignature', async () => {
    const req = await sign();
    const cases: [string, RegExp][] = [
      ['garbage', /Unsupported AWS 'algorithm'/],
      ['Bearer abc.def', /Unsupported AWS 'algorithm': 'Bearer'/],
      ['AWS4-HMAC-SHA512 Credential=a/b/c/d/e, SignedHeaders=host, Signature=00', /Unsupported AWS 'algorithm'/],
      ['AWS4-HMAC-SHA256 ', /missing equal-sign/],
      [
        'AWS4-HMAC-SHA256 SignedHeaders=host;x-amz-date',
        /^Authorization header requires 'Credential' parameter\. Authorization header requires 'Signature' parameter\.$/,
      ],
      [`AWS4-HMAC-SHA256 Credential=${AKID}/20260101/kms/aws4_request, SignedHeaders=host, Signature=00`, /exactly 5 slash/],
      ['AWS4-HMAC-SHA256 Credential=a, Credential=b, SignedHeaders=host, Signature=00', /repeated 'Credential'/],
    ];
    for (const [authorization, message] of cases) {
      const err = rejected(withHeaders(req, { authorization }));
      expect(err.type, authorization).toBe('IncompleteSignatureException');
      expect(err.message, authorization).toMatch(message);
    }
  });

  it('reads the Authorization parameters in any order and spacing, as signed', async () => {
    const req = await sign();
    const auth = req.headers.authorization as string;
    const params = Object.fromEntries(auth.slice(auth.indexOf(' ') + 1).split(', ').map((p) => [p.slice(0, p.indexOf('=')), p.slice(p.indexOf('=') + 1)]));
    const { Credential, SignedHeaders, Signature } = params as Record<string, string>;
    const forms = [
      `AWS4-HMAC-SHA256 Credential=${Credential},SignedHeaders=${SignedHeaders},Signature=${Signature}`,
      `AWS4-HMAC-SHA256 Signature=${Signature}, Credential=${Credential}, SignedHeaders=${SignedHeaders}`,
      `AWS4-HMAC-SHA256 Credential=${Credential},  SignedHeaders=${SignedHeaders} ,\tSignature=${Signature}`,
    ];
    for (const authorization of forms) expect(verifier().verify(withHeaders(req, { authorization })), authorization).toBe(AKID);
    // An empty scope part (the general reading: a Region '') or a wrong signature: refused.
    expect(rejected(withHeaders(req, { authorization: auth.replace('/us-east-1/', '//') })).message).toMatch(/^Credential should be scoped to a valid region/);
    expect(rejected(withHeaders(req, { authorization: auth.replace(/Signature=\w+/, 'Signature=00') })).message).toMatch(MISMATCH);
  });

  it('treats odd or absent signed header names as a plain mismatch', async () => {
    const req = await sign();
    for (const names of ['constructor;host;x-amz-date;x-amz-target', '__proto__;host;toString;x-amz-date;x-amz-target', 'host;x-amz-date;x-amz-target;x-not-sent']) {
      const authorization = req.headers.authorization!.replace(/SignedHeaders=[^,]+/, `SignedHeaders=${names}`);
      const err = rejected(withHeaders(req, { authorization }));
      expect(err.type, names).toBe('InvalidSignatureException');
      expect(err.message, names).toMatch(MISMATCH);
    }
  });

  it('rejects a wrong scope terminator and a scope date that differs from X-Amz-Date', async () => {
    const req = await sign();
    const terminator = req.headers.authorization!.replace('/aws4_request', '/aws5_request');
    expect(rejected(withHeaders(req, { authorization: terminator })).message).toMatch(
      /valid terminator: 'aws4_request', not 'aws5_request'/,
    );
    const otherDay = req.headers.authorization!.replace('/20260101/', '/20251231/');
    const err = rejected(withHeaders(req, { authorization: otherDay }));
    expect(err.type).toBe('InvalidSignatureException');
    expect(err.message).toMatch(/'20251231' != '20260101'/);
  });

  it('requires a valid, signed date and a signed host', async () => {
    const req = await sign();
    const { 'x-amz-date': _, ...noDate } = req.headers;
    expect(rejected({ ...req, headers: noDate }).message).toMatch(/either a 'X-Amz-Date' or a 'Date' header/);

    for (const bad of ['2026-01-01T00:10:00Z', '20261301T001000Z', '20260230T001000Z', 'yesterday']) {
      const err = rejected(withHeaders(req, { 'x-amz-date': bad }));
      expect(err.type, bad).toBe('IncompleteSignatureException');
      expect(err.message, bad).toMatch(/ISO-8601 'basic format'/);
    }

    const hostUnsigned = req.headers.authorization!.replace('SignedHeaders=content-type;host;', 'SignedHeaders=content-type;');
    expect(hostUnsigned).not.toBe(req.headers.authorization);
    expect(rejected(withHeaders(req, { authorization: hostUnsigned })).message).toMatch(/'Host' must be a 'SignedHeader'/);

    const dateUnsigned = req.headers.authorization!.replace(';x-amz-date', '');
    expect(dateUnsigned).not.toBe(req.headers.authorization);
    expect(rejected(withHeaders(req, { authorization: dateUnsigned })).message).toMatch(/'X-Amz-Date' must be a 'SignedHeader'/);
  });

  it('requires X-Amz-Target to be signed, so a request cannot be replayed as another operation', () => {
    const headers = { host: 'kms.local', 'x-amz-date': '20260101T001000Z' };
    const authorization = manualAuthorization(headers, '{}'); // signs host and x-amz-date only
    const req = { method: 'POST', url: '/', headers: { ...headers, 'x-amz-target': 'TrentService.ListKeys', authorization }, body: Buffer.from('{}') };
    const err = rejected(req);
    expect(err.type).toBe('IncompleteSignatureException');
    expect(err.message).toMatch(/'X-Amz-Target' must be a 'SignedHeader'/);
    const { 'x-amz-target': _, ...untargeted } = req.headers;
    expect(verifier().verify({ ...req, headers: untargeted })).toBe(AKID); // the signature itself is good
  });

  it('falls back to the HTTP Date header when X-Amz-Date is absent', () => {
    const headers = { host: 'kms.local', date: 'Thu, 01 Jan 2026 00:10:00 GMT', 'x-amz-target': 'TrentService.ListKeys' };
    const authorization = manualAuthorization(headers, '{}');
    const req = { method: 'POST', url: '/', headers: { ...headers, authorization }, body: Buffer.from('{}') };
    expect(verifier().verify(req)).toBe(AKID);
    expect(rejected(withHeaders(req, { date: 'Thu, 01 Jan 2026 00:10:01 GMT' })).message).toMatch(MISMATCH);
  });

  it('rejects any session token, signed or not', async () => {
    expect(rejected(await sign({ sessionToken: 'FQoGZXIvYXdzE' })).type).toBe('UnrecognizedClientException');
    expect(rejected(withHeaders(await sign(), { 'x-amz-security-token': 't' })).type).toBe('UnrecognizedClientException');
  });

  it('does not let a cached signing key outlive a changed secret', async () => {
    let secret = SECRET;
    const v = verifier(NOW, (akid) => (akid === AKID ? secret : undefined));
    const oldReq = await sign();
    expect(v.verify(oldReq)).toBe(AKID); // derives and caches the key for SECRET

    secret = ROTATED;
    expect(rejected(oldReq, v).message).toMatch(MISMATCH);
    expect(v.verify(await sign({ secret: ROTATED }))).toBe(AKID);
  });
});

describe('SigV4Verifier behind node:http, called by @aws-sdk/client-kms', () => {
  let server: http.Server;
  let endpoint: string;
  let host: string;
  const verified: { target: string | undefined; body: string }[] = [];
  let serverClock = () => new Date();

  beforeAll(async () => {
    const v = new SigV4Verifier({ region: 'us-east-1', service: 'kms', maxSkewSeconds: 300, now: () => serverClock() }, lookup);
    server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (chunk: Buffer) => chunks.push(chunk));
      req.on('end', () => {
        const body = Buffer.concat(chunks);
        let status = 200;
        let payload = '{}';
        try {
          v.verify({ method: req.method!, url: req.url!, headers: req.headers, rawHeaders: req.rawHeaders, body });
          verified.push({ target: req.headers['x-amz-target'] as string | undefined, body: body.toString() });
        } catch (err) {
          if (!(err instanceof KmsError)) throw err;
          status = httpStatusOf(err);
          payload = JSON.stringify({ __type: err.type, message: err.message });
        }
        // Date from the server's clock: the SDK corrects its own clock from it after a skew error.
        res.writeHead(status, { 'content-type': 'application/x-amz-json-1.1', date: serverClock().toUTCString() }).end(payload);
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
    endpoint = `http://${host}`;
  });

  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve));
  });

  type Credentials = { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
  const client = (credentials: Credentials, region = 'us-east-1', maxAttempts = 1) =>
    new KMSClient({ endpoint, region, credentials, maxAttempts });

  /** The error name and message a call ends with, or undefined on success. */
  const outcome = (kms: KMSClient) =>
    kms.send(new ListKeysCommand({})).then(
      () => undefined,
      (e: Error) => ({ name: e.name, message: e.message }),
    );

  it('verifies the real SDK signature for ListKeys and for Encrypt with a body', async () => {
    verified.length = 0;
    const kms = client({ accessKeyId: AKID, secretAccessKey: SECRET });
    await expect(kms.send(new ListKeysCommand({}))).resolves.toBeDefined();
    const plaintext = Buffer.from('hello, world');
    await expect(kms.send(new EncryptCommand({ KeyId: 'alias/x', Plaintext: plaintext }))).resolves.toBeDefined();
    expect(verified.map((r) => r.target)).toEqual(['TrentService.ListKeys', 'TrentService.Encrypt']);
    expect(JSON.parse(verified[1]!.body)).toEqual({ KeyId: 'alias/x', Plaintext: plaintext.toString('base64') });
  });

  it('turns our errors into the SDK exceptions: wrong secret, unknown key, wrong region, session token', async () => {
    expect(await outcome(client({ accessKeyId: AKID, secretAccessKey: 'wrong' }))).toEqual({
      name: 'InvalidSignatureException',
      message: expect.stringMatching(MISMATCH),
    });
    expect(await outcome(client({ accessKeyId: 'AKIDUNKNOWN0000000', secretAccessKey: SECRET }))).toEqual({
      name: 'UnrecognizedClientException',
      message: 'The security token included in the request is invalid.',
    });
    expect(await outcome(client({ accessKeyId: AKID, secretAccessKey: SECRET }, 'eu-west-1'))).toEqual({
      name: 'InvalidSignatureException',
      message: "Credential should be scoped to a valid region. This service signs in region 'us-east-1', the request in 'eu-west-1': set the client's region to us-east-1. ",
    });
    expect((await outcome(client({ accessKeyId: AKID, secretAccessKey: SECRET, sessionToken: 'tok' })))?.name).toBe(
      'UnrecognizedClientException',
    );
  });

  it('reports skew so that the SDK corrects its clock from Date and retries', async () => {
    serverClock = () => new Date(Date.now() + 60 * 60 * 1000); // server one hour ahead
    try {
      expect((await outcome(client({ accessKeyId: AKID, secretAccessKey: SECRET })))?.message).toMatch(/^Signature expired/);

      verified.length = 0;
      const retrying = client({ accessKeyId: AKID, secretAccessKey: SECRET }, 'us-east-1', 2);
      expect(await outcome(retrying)).toBeUndefined();
      expect(verified).toHaveLength(1); // only the corrected retry got through
      expect(retrying.config.systemClockOffset).toBeGreaterThan(59 * 60 * 1000);
    } finally {
      serverClock = () => new Date();
    }
  });

  it('verifies a header sent twice on the wire (values joined with ",")', async () => {
    const req = await sign({ date: new Date(), headers: { host, 'x-custom': 'one,two  words' } });
    const status = await new Promise<number | undefined>((resolve, reject) => {
      const headers = { ...req.headers, 'x-custom': ['one', 'two  words'] };
      http
        .request(`${endpoint}/`, { method: 'POST', headers }, (res) => resolve(res.resume().statusCode))
        .on('error', reject)
        .end(req.body);
    });
    expect(status).toBe(200);
  });
});

/** An independent SigV4 signer (from the spec, not the SDK) for the Date-header case the SDK never produces. */
function manualAuthorization(headers: Record<string, string>, body: string): string {
  const sha256 = (data: string) => createHash('sha256').update(data).digest('hex');
  const names = Object.keys(headers).sort();
  const canonical = ['POST', '/', '', ...names.map((n) => `${n}:${headers[n]!.trim()}`), '', names.join(';'), sha256(body)];
  const scope = '20260101/us-east-1/kms/aws4_request';
  const stringToSign = ['AWS4-HMAC-SHA256', '20260101T001000Z', scope, sha256(canonical.join('\n'))].join('\n');
  let key: Buffer = createHmac('sha256', `AWS4${SECRET}`).update('20260101').digest();
  for (const part of ['us-east-1', 'kms', 'aws4_request']) key = createHmac('sha256', key).update(part).digest();
  const signature = createHmac('sha256', key).update(stringToSign).digest('hex');
  return `AWS4-HMAC-SHA256 Credential=${AKID}/${scope}, SignedHeaders=${names.join(';')}, Signature=${signature}`;
}
