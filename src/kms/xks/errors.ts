/**
 * The XKS Proxy API's own error vocabulary (spec "Error codes"): a second front door answers in
 * its own language, not in KMS API error names. How each travels on the wire (HTTP status, body)
 * is src/http/xks/error-response.ts.
 */
export type XksErrorName =
  | 'ValidationException'
  | 'InvalidStateException'
  | 'InvalidCiphertextException'
  | 'InvalidKeyUsageException'
  | 'AuthenticationFailedException'
  | 'AccessDeniedException'
  | 'KeyNotFoundException'
  | 'InvalidUriPathException'
  | 'ThrottlingException'
  | 'UnsupportedOperationException'
  | 'DependencyTimeoutException'
  | 'InternalException';

export class XksError extends Error {
  constructor(
    readonly errorName: XksErrorName,
    message: string,
  ) {
    // The spec allows printable ASCII only, under 512 characters.
    super(message.replace(/[^\x20-\x7e]/g, '?').slice(0, 511));
    this.name = errorName;
  }
}

export const xksValidation = (message: string) => new XksError('ValidationException', message);
export const xksInvalidCiphertext = () =>
  new XksError('InvalidCiphertextException', 'The ciphertext, initialization vector, additional authenticated data or authentication tag is invalid.');
