/**
 * AWS-style API errors. Every failure that reaches a client is a KmsError: its `type` becomes the
 * `__type` of the awsJson1_1 error body, its `status` the HTTP status. Messages never carry
 * plaintext, key material or secrets.
 */

/** HTTP status per error name (Smithy @httpError traits of the KMS model, plus the unmodelled
 *  errors AWS JSON services send). Anything not listed is a client error (400). */
const STATUS: Record<string, number> = {
  NotFoundException: 404,
  AlreadyExistsException: 409,
  ConflictException: 409,
  DisabledException: 409,
  KMSInvalidStateException: 409,
  DryRunOperationException: 412,
  KMSInternalException: 500,
  KeyUnavailableException: 500,
  DependencyTimeoutException: 503,
  MissingAuthenticationTokenException: 403,
  InternalFailure: 500,
};

export class KmsError extends Error {
  readonly status: number;
  constructor(
    readonly type: string,
    message: string,
  ) {
    super(message);
    this.name = type;
    this.status = STATUS[type] ?? 400;
  }
}

export const notFound = (message: string) => new KmsError('NotFoundException', message);
export const invalidArn = (message: string) => new KmsError('InvalidArnException', message);
export const validation = (message: string) => new KmsError('ValidationException', message);
export const invalidState = (message: string) => new KmsError('KMSInvalidStateException', message);
export const disabled = (message: string) => new KmsError('DisabledException', message);
export const invalidCiphertext = (message = 'The ciphertext is invalid or was not produced by this service, or the encryption context does not match.') =>
  new KmsError('InvalidCiphertextException', message);
export const internal = (message = 'An internal error occurred.') => new KmsError('KMSInternalException', message);
export const unsupported = (message: string) => new KmsError('UnsupportedOperationException', message);
export const accessDenied = (message: string) => new KmsError('AccessDeniedException', message);

/** A single constraint violation in AWS's ValidationException wording. */
export const constraintViolation = (value: unknown, member: string, constraint: string) =>
  validation(`1 validation error detected: Value '${String(value)}' at '${member}' failed to satisfy constraint: ${constraint}`);
