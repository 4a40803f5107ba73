/**
 * How a KmsError travels on the wire. Real AWS KMS answers every client fault with HTTP 400,
 * whatever the Smithy model's @httpError traits say (404/409/412 are not what AWS sends; see the
 * recorded responses digested in shared/notes §1.3). Server faults are 5xx.
 */
import type { ServerResponse } from 'node:http';
import type { KmsError } from '../kms/errors.js';

const NON_400_STATUS: Record<string, number> = {
  // AWS's common-errors page lists a missing signature as 403 (the one client fault that is not 400).
  MissingAuthenticationTokenException: 403,
  // A body over the size limit. KMS documents neither the limit nor the answer; HTTP's own status
  // for it tells proxies and clients not to retry the same request.
  RequestEntityTooLargeException: 413,
  KMSInternalException: 500,
  KeyUnavailableException: 500,
  InternalFailure: 500,
  DependencyTimeoutException: 503,
  ServiceUnavailable: 503,
};

/** HTTP status AWS sends for an error of this name: 400 unless listed above. */
export function httpStatusOf(error: Pick<KmsError, 'type'>): number {
  return NON_400_STATUS[error.type] ?? 400;
}

/** Writes `error` as AWS's JSON error body, with the status AWS sends and its type header.
 *  `contentType`: the KMS API's awsJson1_1 type, or plain JSON for the non-API routes. */
export function sendKmsError(res: ServerResponse, requestId: string, error: KmsError, contentType = 'application/json'): void {
  if (res.headersSent) return;
  res.writeHead(httpStatusOf(error), { 'Content-Type': contentType, 'x-amzn-RequestId': requestId, 'X-Amzn-ErrorType': error.type });
  res.end(JSON.stringify({ __type: error.type, message: error.message }));
}

/** A JSON answer of the non-API routes (operator and peer APIs): never cached. */
export function sendJsonAnswer(res: ServerResponse, requestId: string, body: unknown): void {
  res.writeHead(200, { 'Content-Type': 'application/json', 'x-amzn-RequestId': requestId, 'Cache-Control': 'no-store' });
  res.end(JSON.stringify(body));
}
