/**
 * Hand-made awsJson1_1 requests (malformed bodies, odd headers) signed with the AWS SDK's own
 * SigV4 signer, for the protocol cases a well-behaved SDK never sends.
 */
import { createHash, createHmac, type Hash, type Hmac } from 'node:crypto';
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

export async function rawCall(url: string, options: RawOptions = {}): Promise<{ status: number; headers: Headers; json: any }> {
  const { hostname, port } = new URL(url);
  const headers: Record<string, string> = {
    host: `${hostname}:${port}`,
    'content-type': 'application/x-amz-json-1.1',
    ...options.extraHeaders,
  };
  if (options.target !== null) headers['x-amz-target'] = options.target ?? 'TrentService.ListKeys';
  const body = options.body ?? '{}';
  let request = new HttpRequest({ method: 'POST', protocol: 'http:', hostname, port: Number(port), path: '/', headers, body });
  if (options.sign !== false) {
    const signer = new SignatureV4({ service: 'kms', region: REGION, credentials: options.credentials ?? ROOT, sha256: NodeSha256 });
    request = (await signer.sign(request, { signingDate: options.signingDate })) as HttpRequest;
  }
  const { host: _host, ...sendHeaders } = request.headers;
  const res = await fetch(url, { method: 'POST', headers: sendHeaders, body });
  const text = await res.text();
  return { status: res.status, headers: res.headers, json: text ? JSON.parse(text) : undefined };
}
