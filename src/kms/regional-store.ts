/**
 * One Region's view of the metadata store (P11KMS_REGIONS): keys of other Regions, the aliases
 * pointing at them and the grants on them do not exist in it, as a key of one AWS Region is
 * NotFound in every other. Everything reached by key ID after a getKey passes through unchanged
 * (key IDs are unique across the deployment's Regions).
 */
import type { AliasRecord, GrantRecord, KeyRecord, MetadataStore } from '../store/types.js';

export function regionalStore(base: MetadataStore, region: string): MetadataStore {
  const inRegion = async (keyId: string) => (await base.getKey(keyId))?.region === region;
  const view: Partial<MetadataStore> = {
    async getKey(keyId) {
      const key = await base.getKey(keyId);
      return key?.region === region ? key : undefined;
    },
    listKeys: (afterKeyId, limit) =>
      filteredPage<KeyRecord>((after, n) => base.listKeys(after, n), (k) => k.keyId, async (k) => k.region === region, afterKeyId, limit),
    async getAlias(aliasName) {
      const alias = await base.getAlias(aliasName);
      return alias && (await inRegion(alias.targetKeyId)) ? alias : undefined;
    },
    listAliases: ({ targetKeyId, afterAliasName, limit }) =>
      filteredPage<AliasRecord>(
        (after, n) => base.listAliases({ targetKeyId, afterAliasName: after, limit: n }),
        (a) => a.aliasName,
        (a) => inRegion(a.targetKeyId),
        afterAliasName,
        limit,
      ),
    listRetirableGrants: ({ retiringPrincipal, afterGrantId, limit }) =>
      filteredPage<GrantRecord>(
        (after, n) => base.listRetirableGrants({ retiringPrincipal, afterGrantId: after, limit: n }),
        (g) => g.grantId,
        (g) => inRegion(g.keyId),
        afterGrantId,
        limit,
      ),
  };
  return new Proxy(base, {
    get(target, member) {
      if (Object.hasOwn(view, member)) return view[member as keyof MetadataStore];
      const value = Reflect.get(target, member);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}

/** Up to `limit` items of the ordered listing `page` that pass `keep`, strictly after `after`:
 *  the store's pages are read on until enough are kept or the listing ends. */
async function filteredPage<T>(
  page: (after: string | undefined, limit: number) => Promise<T[]>,
  markerOf: (item: T) => string,
  keep: (item: T) => Promise<boolean>,
  after: string | undefined,
  limit: number,
): Promise<T[]> {
  const kept: T[] = [];
  for (;;) {
    const items = await page(after, limit);
    for (const item of items) {
      if (await keep(item)) kept.push(item);
      if (kept.length === limit) return kept;
    }
    if (items.length < limit) return kept;
    after = markerOf(items.at(-1)!);
  }
}
