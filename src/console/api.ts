/**
 * The console's only way to the server: the real AWS SDK KMS client and SigV4-signed GETs to the
 * operator API, both signed here in the browser. The credential lives in this module's memory for
 * as long as the tab is open; it is never stored and never sent (only signatures made with it).
 */
import { KMSClient, ListKeysCommand } from '@aws-sdk/client-kms';
import { Sha256 } from '@smithy/core/checksum';
import { HttpRequest } from '@smithy/protocol-http';
import { SignatureV4 } from '@smithy/signature-v4';

export interface Session {
  accessKeyId: string;
  region: string;
  accountId: string;
  kms: KMSClient;
  signer: SignatureV4;
}

/** An error as the API named it (AccessDeniedException, MalformedPolicyDocumentException...). */
export class ApiError extends Error {
  constructor(
    readonly type: string,
    message: string,
  ) {
    super(message);
    this.name = type;
  }
}

let current: Session | undefined;

export const session = (): Session => {
  if (!current) throw new ApiError('NotSignedIn', 'Sign in first.');
  return current;
};

export async function signIn(accessKeyId: string, secretAccessKey: string): Promise<Session> {
  const res = await fetch('/console/settings.json', { cache: 'no-store' });
  const settings = (await res.json()) as { region: string; accountId: string };
  const credentials = { accessKeyId: accessKeyId.trim(), secretAccessKey: secretAccessKey.trim() };
  const kms = new KMSClient({ region: settings.region, endpoint: window.location.origin, credentials, maxAttempts: 1 });
  const signer = new SignatureV4({ service: 'kms', region: settings.region, credentials, sha256: Sha256 });
  const candidate: Session = { accessKeyId: credentials.accessKeyId, region: settings.region, accountId: settings.accountId, kms, signer };
  // A signed call tells a wrong credential (refused) from a right one without rights (AccessDenied:
  // the user is signed in and sees what they may not do).
  try {
    await kms.send(new ListKeysCommand({ Limit: 1 }));
  } catch (e) {
    const err = asApiError(e);
    if (err.type !== 'AccessDeniedException') throw err;
  }
  current = candidate;
  return candidate;
}

export function signOut(): void {
  current?.kms.destroy();
  current = undefined;
}

/** Sends a KMS API command with the signed-in credential; errors become ApiError. */
export async function kms<T = unknown>(command: object): Promise<T> {
  try {
    return (await session().kms.send(command as never)) as T;
  } catch (e) {
    throw asApiError(e);
  }
}

/** A signed GET to the operator API (/audit, /usage, /service). */
export async function operatorGet<T>(path: string, query: Record<string, string | undefined> = {}): Promise<T> {
  const s = session();
  const q: Record<string, string> = {};
  for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== '') q[k] = v;
  const url = new URL(window.location.origin);
  const request = new HttpRequest({
    method: 'GET',
    protocol: url.protocol,
    hostname: url.hostname,
    port: url.port ? Number(url.port) : undefined,
    path,
    query: q,
    headers: { host: url.host },
  });
  const signed = await s.signer.sign(request);
  const { host: _host, ...headers } = signed.headers;
  const search = new URLSearchParams(q).toString();
  const res = await fetch(`${path}${search ? `?${search}` : ''}`, { headers, cache: 'no-store' });
  const body = (await res.json().catch(() => ({}))) as Record<string, unknown>;
  if (!res.ok) throw new ApiError(String(body.__type ?? `HTTP ${res.status}`), String(body.message ?? res.statusText));
  return body as T;
}

export function asApiError(e: unknown): ApiError {
  if (e instanceof ApiError) return e;
  if (e instanceof Error) return new ApiError(e.name, e.message);
  return new ApiError('Error', String(e));
}
