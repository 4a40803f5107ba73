/**
 * The authorization fixture shared by the "authz" bench phase (through HTTP and SigV4) and
 * scripts/authorization-microbench.ts (KmsAuthorizer alone), so that both measure the same
 * policies.
 */

/** The caller's identity policy (2 statements): Encrypt/Decrypt/GenerateDataKey* on the account's
 *  keys, and a conditional Deny that does not match a caller tagged team=blue. */
export function appIdentityPolicy(account: string): unknown {
  return {
    Version: '2012-10-17',
    Statement: [
      { Effect: 'Allow', Action: ['kms:Encrypt', 'kms:Decrypt', 'kms:GenerateDataKey*'], Resource: `arn:aws:kms:*:${account}:key/*` },
      { Effect: 'Deny', Action: 'kms:*', Resource: '*', Condition: { Bool: { 'aws:SecureTransport': 'true' }, StringEquals: { 'aws:PrincipalTag/team': 'red' } } },
    ],
  };
}

/** A realistic 10-statement key policy: root delegation (so identity policies count), `admins`,
 *  users with conditions, and denies that do not match the benchmarked Encrypt. */
export function tenStatementPolicy(account: string, admins: string[]): string {
  const statements = [
    { Sid: 'root', Effect: 'Allow', Principal: { AWS: `arn:aws:iam::${account}:root` }, Action: 'kms:*', Resource: '*' },
    { Sid: 'admins', Effect: 'Allow', Principal: { AWS: admins }, Action: ['kms:Create*', 'kms:Describe*', 'kms:Enable*', 'kms:List*', 'kms:Put*', 'kms:Update*', 'kms:Revoke*', 'kms:Disable*', 'kms:Get*', 'kms:Delete*', 'kms:TagResource', 'kms:UntagResource', 'kms:ScheduleKeyDeletion', 'kms:CancelKeyDeletion'], Resource: '*' },
    { Sid: 'use', Effect: 'Allow', Principal: { AWS: admins }, Action: ['kms:Decrypt', 'kms:GenerateDataKey*'], Resource: '*', Condition: { StringEquals: { 'kms:EncryptionContext:app': 'billing' } } },
    { Sid: 'grants', Effect: 'Allow', Principal: { AWS: admins }, Action: ['kms:CreateGrant', 'kms:ListGrants', 'kms:RevokeGrant'], Resource: '*', Condition: { Bool: { 'kms:GrantIsForAWSResource': 'true' } } },
    { Sid: 'ip', Effect: 'Deny', Principal: '*', Action: 'kms:*', Resource: '*', Condition: { NotIpAddress: { 'aws:SourceIp': ['127.0.0.0/8', '10.0.0.0/8', '::1/128'] } } },
    { Sid: 'deletion', Effect: 'Deny', Principal: '*', Action: 'kms:ScheduleKeyDeletion', Resource: '*', Condition: { NumericLessThan: { 'kms:ScheduleKeyDeletionPendingWindowInDays': 30 } } },
    { Sid: 'ec-keys', Effect: 'Deny', Principal: '*', Action: 'kms:Encrypt', Resource: '*', Condition: { 'ForAnyValue:StringLike': { 'kms:EncryptionContextKeys': 'forbidden*' } } },
    { Sid: 'account', Effect: 'Deny', Principal: '*', Action: 'kms:*', Resource: '*', Condition: { StringNotEquals: { 'kms:CallerAccount': [account, '444455556666'] } } },
    { Sid: 'time', Effect: 'Deny', Principal: '*', Action: 'kms:*', Resource: '*', Condition: { DateGreaterThan: { 'aws:CurrentTime': '2099-01-01T00:00:00Z' } } },
    { Sid: 'bypass', Effect: 'Deny', Principal: '*', Action: 'kms:PutKeyPolicy', Resource: '*', Condition: { Bool: { 'kms:BypassPolicyLockoutSafetyCheck': 'true' } } },
  ];
  return JSON.stringify({ Version: '2012-10-17', Statement: statements });
}
