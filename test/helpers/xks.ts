/**
 * A client for the XKS Proxy API as AWS KMS calls it: POST with a JSON body, SigV4 with the
 * service name kms-xks-proxy over exactly `host;x-amz-date` (no x-amz-content-sha256), the Host
 * header carrying the port. Everything can be bent for negative cases.
 */
import http from 'node:http';
import https from 'node:https';
import { HttpRequest } from '@smithy/protocol-http';
import { SignatureV4 } from '@smithy/signature-v4';
import { NodeSha256 } from './raw.js';
import { REGION } from './service.js';

export const XKS_PREFIX = '/xks/v1prefix';
export const XKS_CREDENTIAL = { accessKeyId: 'XKSAKIDTESTAAAAAAAA2', secretAccessKey: 'xks+test/secret=0123456789abcdefghijklmnopqrst' };
export const XKS_CREDENTIAL_2 = { accessKeyId: 'XKSAKIDTESTBBBBBBBB3', secretAccessKey: 'xks+test/secret=secondxABCDEFGHIJKLMNOPQRSTU' };

export interface XksCallOptions {
  method?: string;
  credentials?: { accessKeyId: string; secretAccessKey: string };
  service?: string;
  region?: string;
  sign?: boolean;
  /** A raw body instead of JSON.stringify(body). */
  rawBody?: string;
  /** Over HTTPS, trusting this CA (PEM). */
  ca?: Buffer;
}

export interface XksAnswer {
  status: number;
  json: any;
  headers: http.IncomingHttpHeaders;
}

export async function xksCall(baseUrl: string, path: string, body: unknown, options: XksCallOptions = {}): Promise<XksAnswer> {
  const { hostname, port, protocol } = new URL(baseUrl);
  const text = options.rawBody ?? JSON.stringify(body);
  const method = options.method ?? 'POST';
  let request = new HttpRequest({
    method,
    protocol,
    hostname,
    port: Number(port),
    path,
    headers: { host: `${hostname}:${port}`, 'content-type': 'application/json' },
    body: text,
  });
  if (options.sign !== false) {
    const signer = new SignatureV4({
      service: options.service ?? 'kms-xks-proxy',
      region: options.region ?? REGION,
      credentials: options.credentials ?? XKS_CREDENTIAL,
      sha256: NodeSha256,
      applyChecksum: false,
    });
    request = (await signer.sign(request, { unsignableHeaders: new Set(['content-type']) })) as HttpRequest;
  }
  return new Promise((resolve, reject) => {
    const target = { host: hostname, port: Number(port), method, path, headers: { ...request.headers, 'content-length': Buffer.byteLength(text) } };
    const onResponse = (res: http.IncomingMessage) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const raw = Buffer.concat(chunks).toString('utf8');
        resolve({ status: res.statusCode!, headers: res.headers, json: raw ? JSON.parse(raw) : undefined });
      });
    };
    const req = protocol === 'https:' ? https.request({ ...target, ca: options.ca }, onResponse) : http.request(target, onResponse);
    req.on('error', reject);
    req.end(text);
  });
}

export const b64 = (s: string | Buffer) => (typeof s === 'string' ? Buffer.from(s) : s).toString('base64');

export function requestMetadata(overrides: Record<string, unknown> = {}) {
  return {
    awsPrincipalArn: 'arn:aws:iam::123456789012:user/Alice',
    kmsKeyArn: 'arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab',
    kmsOperation: 'Encrypt',
    kmsRequestId: '4112f4d6-db54-4af4-ae30-c55a22a8dfae',
    ...overrides,
  };
}

export const keyPath = (keyId: string, op: 'metadata' | 'encrypt' | 'decrypt') => `${XKS_PREFIX}/kms/xks/v1/keys/${keyId}/${op}`;
export const healthPath = () => `${XKS_PREFIX}/kms/xks/v1/health`;
