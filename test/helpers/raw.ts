/**
 * Hand-made awsJson1_1 requests (malformed bodies, odd headers) signed with the AWS SDK's own
 * SigV4 signer, for the protocol cases a well-behaved SDK never sends.
 */
import { createHash, createHmac, type Hash, type Hmac } from 'node:crypto';
import http from 'node:http';
import { HttpRequest } from '@smithy/protocol-http';
import { SignatureV4 } from '@smithy/signature-v4';
import { REGION, ROOT } from './service.js';

/** The Checksum interface the signer expects, over node:crypto. */
export class NodeSha256 {
  private readonly h: Hash | Hmac;
  constructor(secret?: string | Uint8Array) {
    this.h = secret === undefined ? createHash('sha256') : createHmac('sha256', secret);
  }
  update(data: string | Uint8Array): void {
    this.h.update(data);
  }
  async digest(): Promise<Uint8Array> {
    return this.h.digest();
  }
  reset(): void {}
}

export interface RawOptions {
  target?: string | null;
  body?: string;
  credentials?: { accessKeyId: string; secretAccessKey: string };
  sign?: boolean;
  signingDate?: Date;
  extraHeaders?: Record<string, string>;
}

/** The headers of an awsJson1_1 POST / with `body`, SigV4-signed unless `sign` is false. */
export async function signedHeaders(url: string, body: string | Uint8Array, options: Omit<RawOptions, 'body'> = {}): Promise<Record<string, string>> {
  const { hostname, port } = new URL(url);
  const headers: Record<string, string> = {
    host: `${hostname}:${port}`,
    'content-type': 'application/x-amz-json-1.1',
    ...options.extraHeaders,
  };
  if (options.target !== null) headers['x-amz-target'] = options.target ?? 'TrentService.ListKeys';
  let request = new HttpRequest({ method: 'POST', protocol: 'http:', hostname, port: Number(port), path: '/', headers, body });
  if (options.sign !== false) {
    const signer = new SignatureV4({ service: 'kms', region: REGION, credentials: options.credentials ?? ROOT, sha256: NodeSha256 });
    request = (await signer.sign(request, { signingDate: options.signingDate })) as HttpRequest;
  }
  return request.headers;
}

export async function rawCall(url: string, options: RawOptions = {}): Promise<{ status: number; headers: Headers; json: any }> {
  const body = options.body ?? '{}';
  const { host: _host, ...sendHeaders } = await signedHeaders(url, body, options);
  const res = await fetch(url, { method: 'POST', headers: sendHeaders, body });
  const text = await res.text();
  return { status: res.status, headers: res.headers, json: text ? JSON.parse(text) : undefined };
}

export type Exchange =
  | { answered: true; status: number; headers: Record<string, string | string[] | undefined>; text: string }
  | { answered: false; failure: string };

/**
 * One POST / over node:http on a fresh connection, reporting what the client saw: the complete
 * answer, or why there was none (a reset, a close without bytes, a timeout). Never rejects.
 */
export function exchange(url: string, headers: Record<string, string>, body: string | Uint8Array | AsyncIterable<Uint8Array>, timeoutMs = 20_000): Promise<Exchange> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    let settled = false;
    const settle = (e: Exchange) => {
      if (!settled) {
        settled = true;
        resolve(e);
      }
    };
    const req = http.request({ host: hostname, port: Number(port), method: 'POST', path: '/', headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => settle({ answered: true, status: res.statusCode!, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', (e) => settle({ answered: false, failure: `response: ${e.message}` }));
    });
    req.setTimeout(timeoutMs, () => {
      settle({ answered: false, failure: `no answer within ${timeoutMs} ms` });
      req.destroy();
    });
    // Writing may fail (EPIPE, reset) once the server has answered and closed: the answer counts.
    req.on('error', (e) => setTimeout(() => settle({ answered: false, failure: `request: ${e.message}` }), 50));
    if (typeof body === 'string' || body instanceof Uint8Array) {
      req.end(body);
    } else {
      void (async () => {
        try {
          for await (const chunk of body) if (!req.write(chunk)) await new Promise((r) => req.once('drain', r));
          req.end();
        } catch {
          // the connection is gone; the outcome is already reported
        }
      })();
    }
  });
}
