/**
 * The KMS domain's errors, named as AWS KMS names them. Every failure that reaches a client is a
 * KmsError; how it travels on the wire (HTTP status, body shape) is the HTTP layer's business
 * (src/http/error-response.ts). Messages never carry plaintext, key material or secrets.
 */

export class KmsError extends Error {
  constructor(
    readonly type: string,
    message: string,
  ) {
    super(message);
    this.name = type;
  }
}

export const notFound = (message: string) => new KmsError('NotFoundException', message);
export const invalidArn = (message: string) => new KmsError('InvalidArnException', message);
export const validation = (message: string) => new KmsError('ValidationException', message);
export const invalidState = (message: string) => new KmsError('KMSInvalidStateException', message);
export const disabled = (message: string) => new KmsError('DisabledException', message);
export const invalidCiphertext = (message = 'The ciphertext is invalid or was not produced by this service, or the encryption context does not match.') =>
  new KmsError('InvalidCiphertextException', message);
/** Decrypt's KeyId or ReEncrypt's SourceKeyId names another key than the one that sealed the blob. */
export const incorrectKey = () =>
  new KmsError('IncorrectKeyException', 'The key ID in the request does not identify a KMS key that can perform this operation.');
export const internal = (message = 'An internal error occurred.') => new KmsError('KMSInternalException', message);
export const unsupported = (message: string) => new KmsError('UnsupportedOperationException', message);
export const accessDenied = (message: string) => new KmsError('AccessDeniedException', message);

/** A single constraint violation in AWS's ValidationException wording. */
export const constraintViolation = (value: unknown, member: string, constraint: string) =>
  validation(`1 validation error detected: Value '${String(value)}' at '${member}' failed to satisfy constraint: ${constraint}`);
