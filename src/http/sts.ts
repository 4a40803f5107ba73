/**
 * STS GetCallerIdentity on the KMS port, because Terraform, the CDK and many scripts call it first
 * to check their credentials (`aws sts get-caller-identity --endpoint-url …`). AWS's query
 * protocol: POST / with a form body `Action=GetCallerIdentity&Version=2011-06-15`, SigV4 with the
 * signing name `sts`, answered in STS's XML (GetCallerIdentityResponse or ErrorResponse). Only this
 * action: p11kms issues no temporary credentials.
 */
import { createHash } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { PrincipalRegistry } from '../auth/principals.js';
import type { SigV4Verifier } from '../auth/sigv4.js';
import { KmsError } from '../kms/errors.js';

const STS_NAMESPACE = 'https://sts.amazonaws.com/doc/2011-06-15/';
const STS_VERSION = '2011-06-15';

export interface StsDeps {
  principals: PrincipalRegistry;
  /** A verifier with the signing name 'sts' (the KMS one expects 'kms'). */
  verifier: SigV4Verifier;
}

/** A query-protocol request: a form body and no X-Amz-Target (which every KMS request carries). */
export function isStsRequest(req: IncomingMessage): boolean {
  return req.headers['x-amz-target'] === undefined && (req.headers['content-type'] ?? '').startsWith('application/x-www-form-urlencoded');
}

export interface StsOutcome {
  operation: string;
  principal?: string;
  status: number;
  error?: string;
}

/** Answers one STS request whose body has been read; never throws. */
export function handleStsRequest(deps: StsDeps, req: IncomingMessage, res: ServerResponse, body: Buffer, requestId: string): StsOutcome {
  const form = new URLSearchParams(body.toString('utf8'));
  const action = form.get('Action') ?? '';
  const operation = `sts:${action.slice(0, 64) || '-'}`;
  let principal: string | undefined;
  try {
    const accessKeyId = deps.verifier.verify({ method: req.method ?? 'POST', url: req.url ?? '/', headers: req.headers, rawHeaders: req.rawHeaders, body });
    const caller = deps.principals.caller(accessKeyId).principal;
    principal = caller.arn;
    if (action !== 'GetCallerIdentity') {
      return sendError(res, requestId, operation, principal, 400, 'InvalidAction', `Could not find operation ${action.slice(0, 64)} for version ${STS_VERSION} (p11kms serves only GetCallerIdentity)`);
    }
    const xml =
      `<GetCallerIdentityResponse xmlns="${STS_NAMESPACE}">` +
      `<GetCallerIdentityResult><Arn>${escapeXml(caller.arn)}</Arn><UserId>${escapeXml(userIdOf(caller.arn, caller.accountId, caller.isRoot))}</UserId>` +
      `<Account>${caller.accountId}</Account></GetCallerIdentityResult>` +
      `<ResponseMetadata><RequestId>${requestId}</RequestId></ResponseMetadata></GetCallerIdentityResponse>`;
    res.writeHead(200, { 'Content-Type': 'text/xml', 'x-amzn-RequestId': requestId });
    res.end(xml);
    return { operation, principal, status: 200 };
  } catch (e) {
    const [status, code] = e instanceof KmsError ? (STS_ERRORS[e.type] ?? [400, e.type]) : [500, 'InternalFailure'];
    const message = e instanceof KmsError ? e.message : 'An internal error occurred.';
    return sendError(res, requestId, operation, principal, status, code, message);
  }
}

/** SigV4 failures (KmsError types) as STS names and statuses them. */
const STS_ERRORS: Record<string, [number, string]> = {
  UnrecognizedClientException: [403, 'InvalidClientTokenId'],
  InvalidSignatureException: [403, 'SignatureDoesNotMatch'],
  IncompleteSignatureException: [400, 'IncompleteSignature'],
  MissingAuthenticationTokenException: [403, 'MissingAuthenticationToken'],
};

/**
 * IAM's unique ID shape: the account ID for the root, AIDA… for users, AROA… for roles (21
 * characters). Derived from the ARN, so it is stable across restarts.
 */
function userIdOf(arn: string, accountId: string, isRoot: boolean): string {
  if (isRoot) return accountId;
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  const digest = createHash('sha256').update(arn).digest();
  const suffix = [...digest.subarray(0, 17)].map((b) => alphabet[b % 32]).join('');
  return `${arn.includes(':role/') ? 'AROA' : 'AIDA'}${suffix}`;
}

function sendError(res: ServerResponse, requestId: string, operation: string, principal: string | undefined, status: number, code: string, message: string): StsOutcome {
  const type = status >= 500 ? 'Receiver' : 'Sender';
  res.writeHead(status, { 'Content-Type': 'text/xml', 'x-amzn-RequestId': requestId });
  res.end(
    `<ErrorResponse xmlns="${STS_NAMESPACE}"><Error><Type>${type}</Type><Code>${code}</Code><Message>${escapeXml(message)}</Message></Error>` +
      `<RequestId>${requestId}</RequestId></ErrorResponse>`,
  );
  return { operation, principal, status, error: code };
}

function escapeXml(text: string): string {
  return text.replace(/[<>&'"]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', "'": '&apos;', '"': '&quot;' })[c]!);
}
