/**
 * How an XksError travels on the wire: the HTTP status the XKS Proxy API spec assigns to each
 * error name, and its body `{"errorName", "errorMessage"}`.
 */
import type { ServerResponse } from 'node:http';
import type { XksError, XksErrorName } from '../../kms/xks/errors.js';

const STATUS: Record<XksErrorName, number> = {
  ValidationException: 400,
  InvalidStateException: 400,
  InvalidCiphertextException: 400,
  InvalidKeyUsageException: 400,
  AuthenticationFailedException: 401,
  AccessDeniedException: 403,
  KeyNotFoundException: 404,
  InvalidUriPathException: 404,
  ThrottlingException: 429,
  UnsupportedOperationException: 501,
  DependencyTimeoutException: 503,
  InternalException: 500,
};

export const xksHttpStatusOf = (error: Pick<XksError, 'errorName'>): number => STATUS[error.errorName];

export function sendXksError(res: ServerResponse, requestId: string, error: XksError): void {
  if (res.headersSent) return;
  res.writeHead(xksHttpStatusOf(error), { 'Content-Type': 'application/json', 'x-amzn-RequestId': requestId });
  res.end(JSON.stringify({ errorName: error.errorName, errorMessage: error.message }));
}
