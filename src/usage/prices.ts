/**
 * AWS KMS list prices used for the optional chargeback estimate of `p11kms usage`. The one place
 * these figures live; no network access at run time.
 *
 * Source: https://aws.amazon.com/kms/pricing/ (US East (N. Virginia)), the figures as published
 * in 2025; written down on 2026-11-22 without network access, so not re-checked against the live
 * page. Other regions and later price changes differ: check the page before quoting an estimate.
 */
export const KMS_PRICE_LIST = {
  source: 'https://aws.amazon.com/kms/pricing/',
  region: 'us-east-1',
  asOf: 'published 2025, recorded 2026-11-22 (not re-checked online)',
  currency: 'USD',
  /** Each customer managed key, per month, prorated hourly. */
  keyPerMonth: 1.0,
  /** Each of the first two rotations of a key adds this per month (later rotations are free). */
  rotationPerMonth: 1.0,
  maxChargedRotations: 2,
  /** Requests per month that cost nothing (the free tier), taken from symmetric requests. */
  freeRequestsPerMonth: 20_000,
  /** Prices per 10,000 requests. */
  per10kRequests: {
    /** Symmetric keys, HMAC keys, and requests involving RSA 2048 keys (other than data key pairs). */
    symmetric: 0.03,
    /** Asymmetric requests except RSA 2048. */
    asymmetric: 0.15,
    /** GenerateDataKeyPair(WithoutPlaintext) for an ECC key pair. */
    eccGenerateDataKeyPair: 0.1,
    /** GenerateDataKeyPair(WithoutPlaintext) for an RSA key pair. */
    rsaGenerateDataKeyPair: 12.0,
  },
} as const;

export type RequestPriceClass = keyof typeof KMS_PRICE_LIST.per10kRequests;

/** The price class of one request, from the key's spec and the operation. */
export function priceClassOf(keySpec: string | undefined, eventName: string, keyPairSpec: unknown): RequestPriceClass {
  if (eventName.startsWith('GenerateDataKeyPair')) {
    return typeof keyPairSpec === 'string' && keyPairSpec.startsWith('RSA_') ? 'rsaGenerateDataKeyPair' : 'eccGenerateDataKeyPair';
  }
  if (keySpec === undefined || keySpec === 'SYMMETRIC_DEFAULT' || keySpec.startsWith('HMAC_') || keySpec === 'RSA_2048') return 'symmetric';
  return 'asymmetric';
}
