/**
 * PutKeyPolicy, GetKeyPolicy and ListKeyPolicies: a KMS key has exactly one policy, named "default".
 */
import { notFound } from '../errors.js';
import type { KeyRecord } from '../../store/types.js';
import type { OperationHandler, RequestContext, Services } from '../context.js';
import { arnOfKey, resolveAuthorizedKey } from '../keys.js';

/**
 * The checks CreateKey and PutKeyPolicy make on a key policy: 32 KB quota, a valid document, and
 * (unless bypassed) the lockout safety check against `key` as it will be.
 */
export async function checkKeyPolicy(svc: Services, ctx: RequestContext, key: KeyRecord, policy: string, bypassLockoutSafetyCheck: boolean): Promise<void> {
  await svc.authorizer.checkKeyPolicy(
    {
      caller: ctx.caller,
      action: `kms:${ctx.operation}`,
      resource: arnOfKey(svc, key),
      key: { ...key, policy },
      operation: ctx.operation,
      input: ctx.input,
      sourceIp: ctx.sourceIp,
      secureTransport: ctx.secureTransport,
      now: svc.now(),
    },
    policy,
    bypassLockoutSafetyCheck,
  );
}

function requireDefaultPolicyName(policyName: string | undefined): void {
  const name = policyName ?? 'default';
  if (name !== 'default') throw notFound(`Key policy '${name}' does not exist; a KMS key has only the policy named "default".`);
}

const putKeyPolicy: OperationHandler = async (input, ctx, svc) => {
  const key = await resolveAuthorizedKey(svc, ctx, input.KeyId, 'PutKeyPolicy', { allowAlias: false });
  requireDefaultPolicyName(input.PolicyName);
  await checkKeyPolicy(svc, ctx, key, input.Policy, input.BypassPolicyLockoutSafetyCheck === true);
  await svc.store.updateKey(key.keyId, { policy: input.Policy });
  return undefined;
};

const getKeyPolicy: OperationHandler = async (input, ctx, svc) => {
  const key = await resolveAuthorizedKey(svc, ctx, input.KeyId, 'GetKeyPolicy', { allowAlias: false });
  const policyName: string = input.PolicyName ?? 'default';
  if (policyName !== 'default') throw notFound(`Key policy '${policyName}' does not exist; a KMS key has only the policy named "default".`);
  return { Policy: key.policy, PolicyName: 'default' };
};

const listKeyPolicies: OperationHandler = async (input, ctx, svc) => {
  await resolveAuthorizedKey(svc, ctx, input.KeyId, 'ListKeyPolicies', { allowAlias: false });
  return { PolicyNames: ['default'], Truncated: false };
};

export const policyOperations = { PutKeyPolicy: putKeyPolicy, GetKeyPolicy: getKeyPolicy, ListKeyPolicies: listKeyPolicies };
