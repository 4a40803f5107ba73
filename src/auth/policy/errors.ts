/** A policy document AWS would refuse; the KMS layer answers MalformedPolicyDocumentException. */
export class MalformedPolicyError extends Error {
  override name = 'MalformedPolicyError';
}
