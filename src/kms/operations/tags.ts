/**
 * TagResource, UntagResource, ListResourceTags — and the tag rules CreateKey shares.
 */
import { KmsError } from '../errors.js';
import type { TagRecord } from '../../store/types.js';
import type { OperationHandler, Services } from '../context.js';
import { requireNotPendingDeletion, resolveAuthorizedKey } from '../keys.js';
import { paginate } from '../pagination.js';

export const MAX_TAGS_PER_KEY = 50;

/** AWS reserves the aws: prefix and rejects a request naming one tag key twice, or more tags than
 *  a key can have (TagException, recorded for CreateKey with 51 tags). */
export function checkTagKeys(tagKeys: string[]): void {
  if (tagKeys.length > MAX_TAGS_PER_KEY) throw new KmsError('TagException', `A request can carry at most ${MAX_TAGS_PER_KEY} tags.`);
  const reserved = tagKeys.find((k) => k.toLowerCase().startsWith('aws:'));
  if (reserved !== undefined) throw new KmsError('TagException', `Tag keys beginning with 'aws:' are reserved: ${reserved}`);
  if (new Set(tagKeys).size !== tagKeys.length) throw new KmsError('TagException', 'Duplicate tag keys in the request.');
}

/** Tags already on the key plus the new ones: the per-key quota. AWS's answer for this case is not
 *  recorded; LimitExceededException is its error for a quota. */
export function checkTagCount(count: number): void {
  if (count > MAX_TAGS_PER_KEY) throw new KmsError('LimitExceededException', `A KMS key can have at most ${MAX_TAGS_PER_KEY} tags.`);
}

const tagResource: OperationHandler = async (input, ctx, svc) => {
  const key = await resolveAuthorizedKey(svc, ctx, input.KeyId, 'TagResource', { allowAlias: false });
  requireNotPendingDeletion(svc, key);
  const tags = input.Tags as TagRecord[];
  checkTagKeys(tags.map((t) => t.TagKey));
  const existing = new Set((await svc.store.listTags(key.keyId)).map((t) => t.TagKey));
  checkTagCount(existing.size + tags.filter((t) => !existing.has(t.TagKey)).length);
  await svc.store.putTags(key.keyId, tags.map((t) => ({ TagKey: t.TagKey, TagValue: t.TagValue })));
  return undefined;
};

const untagResource: OperationHandler = async (input, ctx, svc) => {
  const key = await resolveAuthorizedKey(svc, ctx, input.KeyId, 'UntagResource', { allowAlias: false });
  requireNotPendingDeletion(svc, key);
  const tagKeys = input.TagKeys as string[];
  const reserved = tagKeys.find((k) => k.toLowerCase().startsWith('aws:'));
  if (reserved !== undefined) throw new KmsError('TagException', `Tag keys beginning with 'aws:' are reserved: ${reserved}`);
  await svc.store.removeTags(key.keyId, tagKeys);
  return undefined;
};

const listResourceTags: OperationHandler = async (input, ctx, svc: Services) => {
  const key = await resolveAuthorizedKey(svc, ctx, input.KeyId, 'ListResourceTags', { allowAlias: false });
  const all = await svc.store.listTags(key.keyId);
  const page = await paginate(
    `tag:${key.keyId}`,
    input,
    50,
    50,
    async (after, limit) => all.filter((t) => after === undefined || t.TagKey > after).slice(0, limit),
    (t) => t.TagKey,
  );
  return { Tags: page.items, Truncated: page.Truncated, NextMarker: page.NextMarker };
};

export const tagOperations = { TagResource: tagResource, UntagResource: untagResource, ListResourceTags: listResourceTags };
