/**
 * STS GetCallerIdentity on the KMS port, because Terraform, the CDK and many scripts call it first
 * to check their credentials (`aws sts get-caller-identity --endpoint-url …`). AWS's query
 * protocol: POST / with a form body `Action=GetCallerIdentity&Version=2011-06-15`, SigV4 with the
 * signing name `sts`, answered in STS's XML (GetCallerIdentityResponse or ErrorResponse). Only this
 * action: p11kms issues no temporary credentials.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { type Caller, type PrincipalRegistry, uniquePrincipalId } from '../auth/principals.js';
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

/** What an STS request comes to: its answer (sent by the caller once the request is recorded)
 *  and what the audit record and the request log say about it. */
export interface StsAnswer {
  operation: string;
  caller?: Caller;
  status: number;
  xml: string;
  error?: { code: string; message: string };
}

/** Decides one STS request whose body has been read; never throws. */
export function answerStsRequest(deps: StsDeps, req: IncomingMessage, body: Buffer, requestId: string): StsAnswer {
  const form = new URLSearchParams(body.toString('utf8'));
  const action = form.get('Action') ?? '';
  const operation = action.slice(0, 64) || '-';
  let caller: Caller | undefined;
  try {
    const accessKeyId = deps.verifier.verify({ method: req.method ?? 'POST', url: req.url ?? '/', headers: req.headers, rawHeaders: req.rawHeaders, body });
    caller = deps.principals.caller(accessKeyId);
    const p = caller.principal;
    if (action !== 'GetCallerIdentity') {
      return errorAnswer(requestId, operation, caller, 400, 'InvalidAction', `Could not find operation ${action.slice(0, 64)} for version ${STS_VERSION} (p11kms serves only GetCallerIdentity)`);
    }
    const xml =
      `<GetCallerIdentityResponse xmlns="${STS_NAMESPACE}">` +
      `<GetCallerIdentityResult><Arn>${escapeXml(p.arn)}</Arn><UserId>${escapeXml(uniquePrincipalId(p.arn, p.accountId, p.isRoot))}</UserId>` +
      `<Account>${p.accountId}</Account></GetCallerIdentityResult>` +
      `<ResponseMetadata><RequestId>${requestId}</RequestId></ResponseMetadata></GetCallerIdentityResponse>`;
    return { operation, caller, status: 200, xml };
  } catch (e) {
    const [status, code] = e instanceof KmsError ? (STS_ERRORS[e.type] ?? [400, e.type]) : [500, 'InternalFailure'];
    const message = e instanceof KmsError ? e.message : 'An internal error occurred.';
    return errorAnswer(requestId, operation, caller, status, code, message);
  }
}

export function sendStsAnswer(res: ServerResponse, requestId: string, answer: StsAnswer): void {
  res.writeHead(answer.status, { 'Content-Type': 'text/xml', 'x-amzn-RequestId': requestId });
  res.end(answer.xml);
}

/** SigV4 failures (KmsError types) as STS names and statuses them. */
const STS_ERRORS: Record<string, [number, string]> = {
  UnrecognizedClientException: [403, 'InvalidClientTokenId'],
  InvalidSignatureException: [403, 'SignatureDoesNotMatch'],
  IncompleteSignatureException: [400, 'IncompleteSignature'],
  MissingAuthenticationTokenException: [403, 'MissingAuthenticationToken'],
};

function errorAnswer(requestId: string, operation: string, caller: Caller | undefined, status: number, code: string, message: string): StsAnswer {
  const type = status >= 500 ? 'Receiver' : 'Sender';
  const xml =
    `<ErrorResponse xmlns="${STS_NAMESPACE}"><Error><Type>${type}</Type><Code>${code}</Code><Message>${escapeXml(message)}</Message></Error>` +
    `<RequestId>${requestId}</RequestId></ErrorResponse>`;
  return { operation, caller, status, xml, error: { code, message } };
}

function escapeXml(text: string): string {
  return text.replace(/[<>&'"]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', "'": '&apos;', '"': '&quot;' })[c]!);
}
