/**
 * CreateAlias, UpdateAlias, DeleteAlias, ListAliases.
 */
import { KmsError, internal, notFound, validation } from '../errors.js';
import { StoreConflictError, type AliasRecord, type KeyRecord } from '../../store/types.js';
import { aliasArn } from '../arn.js';
import type { OperationHandler, Services } from '../context.js';
import { authorize, requireNotPendingDeletion, resolveAuthorizedKey, resolveKey } from '../keys.js';
import { paginate } from '../pagination.js';
import { aliasesWithPredefined } from '../managed-keys.js';

export const MAX_ALIASES_PER_KEY = 50;

/** Every AliasName must carry the alias/ prefix: a ValidationException in AWS's words. */
function checkAliasPrefix(aliasName: string): void {
  if (!aliasName.startsWith('alias/')) {
    throw validation('Alias must start with the prefix "alias/". Please see https://docs.aws.amazon.com/kms/latest/developerguide/kms-alias.html');
  }
}

/** A new alias also needs a name after the prefix, outside alias/aws/. */
function checkAliasName(aliasName: string): void {
  checkAliasPrefix(aliasName);
  if (aliasName.length === 'alias/'.length) throw new KmsError('InvalidAliasNameException', 'The alias name after the prefix "alias/" must not be empty.');
  if (aliasName.startsWith('alias/aws/')) {
    throw new KmsError('InvalidAliasNameException', 'Alias names that begin with "alias/aws/" are reserved for AWS managed keys.');
  }
}

const keyKind = (k: KeyRecord) => (k.keySpec === 'SYMMETRIC_DEFAULT' ? 'SYMMETRIC' : k.keySpec.startsWith('HMAC_') ? 'HMAC' : 'ASYMMETRIC');

async function checkAliasQuota(svc: Services, key: KeyRecord): Promise<void> {
  if ((await svc.store.countAliasesForKey(key.keyId)) >= MAX_ALIASES_PER_KEY) {
    throw new KmsError('LimitExceededException', `A KMS key can have at most ${MAX_ALIASES_PER_KEY} aliases.`);
  }
}

const createAlias: OperationHandler = async (input, ctx, svc) => {
  const aliasName: string = input.AliasName;
  checkAliasName(aliasName);
  await authorize(svc, ctx, 'CreateAlias', aliasArn(svc.account, aliasName));
  const key = await resolveAuthorizedKey(svc, ctx, input.TargetKeyId, 'CreateAlias', { allowAlias: false });
  requireNotPendingDeletion(svc, key);
  await checkAliasQuota(svc, key);
  const now = svc.now();
  try {
    await svc.store.createAlias({ region: svc.account.region, aliasName, targetKeyId: key.keyId, createdAt: now, lastUpdatedAt: now });
  } catch (e) {
    if (e instanceof StoreConflictError) {
      throw new KmsError('AlreadyExistsException', `An alias with the name ${aliasArn(svc.account, aliasName)} already exists`);
    }
    throw e;
  }
  return undefined;
};

const ALIAS_CHANGE_ATTEMPTS = 5;

/**
 * Decides on the key an alias points to, then changes the alias only if it still points there
 * (`change` gets the key ID decided on and reports whether the alias still had it): a concurrent
 * UpdateAlias must not slip another key under a decision already made. If it did, decide again.
 */
async function changeAliasAsDecided<T>(
  svc: Services,
  aliasName: string,
  decide: (alias: AliasRecord) => Promise<T>,
  change: (decidedKeyId: string, decided: T) => Promise<boolean>,
): Promise<void> {
  for (let attempt = 0; attempt < ALIAS_CHANGE_ATTEMPTS; attempt++) {
    const alias = await svc.store.getAlias(svc.account.region, aliasName);
    if (!alias) throw notFound(`Alias '${aliasArn(svc.account, aliasName)}' is not found.`);
    if (await change(alias.targetKeyId, await decide(alias))) return;
  }
  throw internal(`Alias '${aliasArn(svc.account, aliasName)}' kept changing while this request was decided; retry.`);
}

const updateAlias: OperationHandler = async (input, ctx, svc) => {
  const aliasName: string = input.AliasName;
  // Only the prefix: the model gives UpdateAlias no InvalidAliasNameException, and an alias that
  // CreateAlias refuses (alias/aws/…, alias/) does not exist to be updated (NotFoundException).
  checkAliasPrefix(aliasName);
  await authorize(svc, ctx, 'UpdateAlias', aliasArn(svc.account, aliasName));
  const decide = async (alias: AliasRecord): Promise<KeyRecord> => {
    // AWS requires kms:UpdateAlias on the alias, the key it points to now and the new key: whoever
    // may not use the current key must not be able to redirect its callers elsewhere.
    const current = await svc.store.getKey(alias.targetKeyId);
    if (current) await authorize(svc, ctx, 'UpdateAlias', current);
    const target = await resolveAuthorizedKey(svc, ctx, input.TargetKeyId, 'UpdateAlias', { allowAlias: false });
    requireNotPendingDeletion(svc, target);
    if (current && (keyKind(current) !== keyKind(target) || current.keyUsage !== target.keyUsage)) {
      throw validation(
        `The new target key must be the same type and key usage as the current one (${keyKind(current)} ${current.keyUsage}); ` +
          `use DeleteAlias and CreateAlias to move an alias to a different type of key.`,
      );
    }
    if (target.keyId !== alias.targetKeyId) await checkAliasQuota(svc, target);
    return target;
  };
  await changeAliasAsDecided(svc, aliasName, decide, (decidedKeyId, target) => svc.store.updateAliasIfTarget(svc.account.region, aliasName, decidedKeyId, target.keyId, svc.now()));
  return undefined;
};

const deleteAlias: OperationHandler = async (input, ctx, svc) => {
  const aliasName: string = input.AliasName;
  checkAliasPrefix(aliasName);
  await authorize(svc, ctx, 'DeleteAlias', aliasArn(svc.account, aliasName));
  const decide = (alias: AliasRecord) => resolveAuthorizedKey(svc, ctx, alias.targetKeyId, 'DeleteAlias', { allowAlias: false });
  await changeAliasAsDecided(svc, aliasName, decide, (decidedKeyId) => svc.store.deleteAliasIfTarget(svc.account.region, aliasName, decidedKeyId));
  return undefined;
};

const listAliases: OperationHandler = async (input, ctx, svc) => {
  // AWS: kms:ListAliases in an IAM policy, with or without KeyId; the key's policy is not asked.
  await authorize(svc, ctx, 'ListAliases', '*');
  const targetKeyId = input.KeyId === undefined ? undefined : (await resolveKey(svc, input.KeyId, { allowAlias: false })).keyId;
  const page = await paginate(
    `alias:${targetKeyId ?? '*'}`,
    input,
    50,
    100,
    (afterAliasName, limit) =>
      targetKeyId === undefined
        ? aliasesWithPredefined(svc, afterAliasName, limit)
        : svc.store.listAliases({ region: svc.account.region, targetKeyId, afterAliasName, limit }),
    (a) => a.aliasName,
  );
  return {
    Aliases: page.items.map((a) => ({
      AliasName: a.aliasName,
      AliasArn: aliasArn(svc.account, a.aliasName),
      TargetKeyId: a.targetKeyId,
      CreationDate: a.createdAt,
      LastUpdatedDate: a.lastUpdatedAt,
    })),
    Truncated: page.Truncated,
    NextMarker: page.NextMarker,
  };
};

export const aliasOperations = { CreateAlias: createAlias, UpdateAlias: updateAlias, DeleteAlias: deleteAlias, ListAliases: listAliases };
