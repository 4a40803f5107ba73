/**
 * Pre-signed awsJson1_1 requests for wrk: signed once with the AWS SDK's own SigV4 signer, then
 * replayed (a SigV4 signature stays valid for the service's clock-skew window, 5 minutes by
 * default, so each point is signed right before it runs).
 */
import { createHash, createHmac, type Hash, type Hmac } from 'node:crypto';
import https from 'node:https';
import { HttpRequest } from '@smithy/protocol-http';
import { SignatureV4 } from '@smithy/signature-v4';

type SourceData = string | ArrayBuffer | ArrayBufferView;

function bytes(data: SourceData): string | Uint8Array {
  if (typeof data === 'string') return data;
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return new Uint8Array(data);
}

/** The Checksum interface the signer expects, over node:crypto. */
class NodeSha256 {
  private readonly h: Hash | Hmac;
  constructor(secret?: SourceData) {
    this.h = secret === undefined ? createHash('sha256') : createHmac('sha256', bytes(secret));
  }
  update(data: SourceData): void {
    this.h.update(bytes(data));
  }
  async digest(): Promise<Uint8Array> {
    return this.h.digest();
  }
  reset(): void {}
}

export interface SignedRequest {
  /** Every header to send, including Host (wrk adds Content-Length itself). */
  headers: Record<string, string>;
  body: string;
  signedAt: Date;
}

export interface Credentials {
  accessKeyId: string;
  secretAccessKey: string;
}

export async function presign(port: number, operation: string, input: unknown, credentials: Credentials, region: string): Promise<SignedRequest> {
  const body = JSON.stringify(input);
  const hostname = '127.0.0.1';
  const request = new HttpRequest({
    method: 'POST',
    protocol: 'http:',
    hostname,
    port,
    path: '/',
    headers: {
      host: `${hostname}:${port}`,
      'content-type': 'application/x-amz-json-1.1',
      'x-amz-target': `TrentService.${operation}`,
    },
    body,
  });
  const signer = new SignatureV4({ service: 'kms', region, credentials, sha256: NodeSha256 });
  const signedAt = new Date();
  const signed = (await signer.sign(request, { signingDate: signedAt })) as HttpRequest;
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(signed.headers)) headers[name.toLowerCase() === 'host' ? 'Host' : name] = value;
  return { headers, body, signedAt };
}

/** Sends a signed request once (fetch sets Host itself, to the same value) and returns status and
 *  body: the sanity check before every wrk point. With `ca`, over HTTPS trusting that CA. */
export async function sendOnce(port: number, req: SignedRequest, ca?: Buffer): Promise<{ status: number; text: string }> {
  if (ca) return sendOnceTls(port, req, ca);
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(req.headers)) if (name !== 'Host') headers[name] = value;
  const res = await fetch(`http://127.0.0.1:${port}/`, { method: 'POST', headers, body: req.body });
  return { status: res.status, text: await res.text() };
}

function sendOnceTls(port: number, req: SignedRequest, ca: Buffer): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const r = https.request({ host: '127.0.0.1', port, method: 'POST', path: '/', headers: req.headers, ca }, (res) => {
      let text = '';
      res.on('data', (d: Buffer) => (text += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
    });
    r.on('error', reject);
    r.end(req.body);
  });
}
