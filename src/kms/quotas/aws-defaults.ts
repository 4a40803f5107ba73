/**
 * AWS KMS's default request quotas (requests per second, per account and Region), from the AWS KMS
 * Developer Guide, "Request quotas" — "Request quotas for each AWS KMS API operation":
 * https://docs.aws.amazon.com/kms/latest/developerguide/requests-per-second.html (read 2026-12-03).
 *
 * The shared cryptographic families as the current page lists them: symmetric 10,000, 20,000 or
 * 100,000 depending on the Region; RSA 1,000 (shared) and ECC 1,000 (shared, SM2 included) —
 * both were 500 and 300 in earlier editions. GenerateDataKeyPair and its WithoutPlaintext form
 * share one quota per key pair spec. The rest are quotas of single operations; operations the
 * table does not name are unlimited here.
 *
 * What could be read of the current page (through excerpts): the families' operation lists, the
 * 10,000 default and the first six 20,000 Regions, RSA and ECC at 1,000, and the control-plane
 * column (where it differs from the 2022 edition: DeleteImportedKeyMaterial 15, was 5). The
 * 100,000 Regions and the 20,000 list beyond eu-west-2 are from the page as last known; check them
 * against the live table before relying on `P11KMS_QUOTAS=aws` in those Regions.
 */
import type { QuotaTable } from './quotas.js';

/** Regions whose symmetric family is 100,000 and 20,000 requests per second; 10,000 elsewhere. */
const SYMMETRIC_100K = new Set(['us-east-1', 'us-west-2', 'eu-west-1']);
const SYMMETRIC_20K = new Set(['us-east-2', 'ap-southeast-1', 'ap-southeast-2', 'ap-northeast-1', 'eu-central-1', 'eu-west-2']);

const OPERATION_QUOTAS: Record<string, number> = {
  CancelKeyDeletion: 5,
  ConnectCustomKeyStore: 5,
  CreateAlias: 5,
  CreateCustomKeyStore: 5,
  CreateGrant: 50,
  CreateKey: 5,
  DeleteAlias: 15,
  DeleteCustomKeyStore: 5,
  DeleteImportedKeyMaterial: 15,
  DescribeCustomKeyStores: 5,
  DescribeKey: 2000,
  DisableKey: 5,
  DisableKeyRotation: 5,
  DisconnectCustomKeyStore: 5,
  EnableKey: 5,
  EnableKeyRotation: 15,
  GetKeyPolicy: 1000,
  GetKeyRotationStatus: 1000,
  GetParametersForImport: 0.25,
  GetPublicKey: 2000,
  ImportKeyMaterial: 5,
  ListAliases: 500,
  ListGrants: 100,
  ListKeyPolicies: 100,
  ListKeys: 500,
  ListResourceTags: 2000,
  ListRetirableGrants: 100,
  PutKeyPolicy: 15,
  ReplicateKey: 5,
  RetireGrant: 30,
  RevokeGrant: 30,
  ScheduleKeyDeletion: 15,
  TagResource: 10,
  UntagResource: 5,
  UpdateAlias: 5,
  UpdateCustomKeyStore: 5,
  UpdateKeyDescription: 5,
  UpdatePrimaryRegion: 5,
};

export function awsDefaultQuotas(region: string): QuotaTable {
  const symmetric = SYMMETRIC_100K.has(region) ? 100_000 : SYMMETRIC_20K.has(region) ? 20_000 : 10_000;
  return {
    families: {
      symmetric,
      rsa: 1000,
      ecc: 1000,
      'GenerateDataKeyPair (ECC_NIST_P256)': 25,
      'GenerateDataKeyPair (ECC_NIST_P384)': 10,
      'GenerateDataKeyPair (ECC_NIST_P521)': 5,
      'GenerateDataKeyPair (ECC_SECG_P256K1)': 25,
      'GenerateDataKeyPair (RSA_2048)': 1,
      'GenerateDataKeyPair (RSA_3072)': 0.5,
      'GenerateDataKeyPair (RSA_4096)': 0.1,
    },
    operations: { ...OPERATION_QUOTAS },
    principals: {},
  };
}
