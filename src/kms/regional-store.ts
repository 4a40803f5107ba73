/**
 * One Region's view of the metadata store (P11KMS_REGIONS): keys of other Regions and the grants
 * on them do not exist in it, as a key of one AWS Region is NotFound in every other; aliases are
 * the Region's own (the store keys them by Region).
 *
 * Multi-Region keys: one key ID, one key material, a row per Region. The material (backing
 * versions, rotation, key-material lifecycle) hangs off a row under the bare key ID that no
 * Region sees; each Region's key (primary or replica: its own description, policy, state,
 * tags, aliases, grants, last use) is a row under `<key ID>/<Region>`. This view speaks the key
 * ID that AWS shows and maps it to the Region's row for everything regional; the lifecycle store
 * and the backing versions go to the material row, so that rotating the primary is seen
 * by every replica and all of them use the same token objects.
 */
import type { AliasRecord, GrantRecord, KeyRecord, MetadataStore } from '../store/types.js';

/** Multi-Region key IDs (AWS: "mrk-" and 32 hex digits); nothing else starts so. */
export const isMultiRegionKeyId = (keyId: string): boolean => keyId.startsWith('mrk-');

/** The store row of a multi-Region key in one Region. */
export const regionalRowId = (keyId: string, region: string): string => `${keyId}/${region}`;

/** The store row that holds `key` as a Region sees it (for code that holds the whole store). */
export const storeKeyId = (key: Pick<KeyRecord, 'keyId' | 'region'>): string =>
  isMultiRegionKeyId(key.keyId) && !key.keyId.includes('/') ? regionalRowId(key.keyId, key.region) : key.keyId;

/** The key ID AWS shows for a store row. */
export const apiKeyId = (rowId: string): string => (rowId.includes('/') ? rowId.slice(0, rowId.indexOf('/')) : rowId);

export function regionalStore(base: MetadataStore, region: string): MetadataStore {
  // A key ID with a '/' is no key ID: it maps to no row (never to another Region's).
  const toRow = (keyId: string): string => (isMultiRegionKeyId(keyId) ? regionalRowId(keyId, region) : keyId);
  const inRegion = async (rowId: string) => (await base.getKey(rowId))?.region === region;
  const aliasOut = (a: AliasRecord): AliasRecord => (a.targetKeyId.includes('/') ? { ...a, targetKeyId: apiKeyId(a.targetKeyId) } : a);
  const grantOut = (g: GrantRecord): GrantRecord => (g.keyId.includes('/') ? { ...g, keyId: apiKeyId(g.keyId) } : g);
  /** A Region's row as the API sees it: the shared key ID, and the material's current version. */
  const keyOut = async (row: KeyRecord): Promise<KeyRecord> => {
    if (!row.keyId.includes('/')) return row;
    const keyId = apiKeyId(row.keyId);
    const material = await base.getKey(keyId);
    return Object.freeze({ ...row, keyId, currentVersion: material?.currentVersion ?? row.currentVersion });
  };

  const view: Partial<MetadataStore> = {
    async getKey(keyId) {
      const row = await base.getKey(toRow(keyId));
      return row?.region === region ? keyOut(row) : undefined;
    },
    listKeys: async (afterKeyId, limit) => {
      const rows = await filteredPage<KeyRecord>(
        (after, n) => base.listKeys(after, n),
        (k) => k.keyId,
        async (k) => k.region === region,
        afterKeyId === undefined ? undefined : toRow(afterKeyId),
        limit,
      );
      return Promise.all(rows.map(keyOut));
    },
    updateKey: (keyId, update) => base.updateKey(toRow(keyId), update),
    deleteKey: (keyId) => base.deleteKey(toRow(keyId)),
    // The key's own Region: a primary also records its replicas at peer sites (site-replication.ts).
    createRegionalKey: (key, tags) => base.createRegionalKey({ ...key, keyId: regionalRowId(key.keyId, key.region) }, tags),
    multiRegionKeys: async (keyId) => (await base.multiRegionKeys(keyId)).map((row) => ({ ...row, keyId: apiKeyId(row.keyId) })),

    createAlias: (alias) => base.createAlias({ ...alias, targetKeyId: toRow(alias.targetKeyId) }),
    getAlias: async (aliasRegion, aliasName) => {
      const alias = await base.getAlias(aliasRegion, aliasName);
      return alias && aliasOut(alias);
    },
    updateAlias: (aliasRegion, aliasName, targetKeyId, at) => base.updateAlias(aliasRegion, aliasName, toRow(targetKeyId), at),
    updateAliasIfTarget: (aliasRegion, aliasName, decidedKeyId, targetKeyId, at) =>
      base.updateAliasIfTarget(aliasRegion, aliasName, toRow(decidedKeyId), toRow(targetKeyId), at),
    deleteAliasIfTarget: (aliasRegion, aliasName, decidedKeyId) => base.deleteAliasIfTarget(aliasRegion, aliasName, toRow(decidedKeyId)),
    listAliases: async (filter) =>
      (await base.listAliases({ ...filter, targetKeyId: filter.targetKeyId === undefined ? undefined : toRow(filter.targetKeyId) })).map(aliasOut),
    countAliasesForKey: (keyId) => base.countAliasesForKey(toRow(keyId)),

    getKeyUse: async (keyId) => {
      const use = await base.getKeyUse(toRow(keyId));
      return use && { ...use, keyId };
    },

    listTags: (keyId) => base.listTags(toRow(keyId)),
    putTags: (keyId, tags) => base.putTags(toRow(keyId), tags),
    removeTags: (keyId, tagKeys) => base.removeTags(toRow(keyId), tagKeys),

    createGrant: (grant) => base.createGrant({ ...grant, keyId: toRow(grant.keyId) }),
    getGrant: async (keyId, grantId) => {
      const grant = await base.getGrant(toRow(keyId), grantId);
      return grant && grantOut(grant);
    },
    listGrants: async (filter) => (await base.listGrants({ ...filter, keyId: toRow(filter.keyId) })).map(grantOut),
    grantsForGrantees: async (keyId, grantees) => (await base.grantsForGrantees(toRow(keyId), grantees)).map(grantOut),
    grantsNamed: async (keyId, name) => (await base.grantsNamed(toRow(keyId), name)).map(grantOut),
    countGrants: (keyId) => base.countGrants(toRow(keyId)),
    deleteGrant: (keyId, grantId) => base.deleteGrant(toRow(keyId), grantId),
    listRetirableGrants: async ({ retiringPrincipal, afterGrantId, limit }) =>
      (
        await filteredPage<GrantRecord>(
          (after, n) => base.listRetirableGrants({ retiringPrincipal, afterGrantId: after, limit: n }),
          (g) => g.grantId,
          (g) => inRegion(g.keyId),
          afterGrantId,
          limit,
        )
      ).map(grantOut),
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
