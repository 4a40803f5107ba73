/**
 * The PostgreSQL store's caches of what the hot path reads on every request: key records (with
 * their policies), aliases, and the grants of a key by grantee. Entries, misses included, are
 * served only while the change feed is fresh (changes.ts); a change committed anywhere removes
 * them, on this node at once after its own commits.
 *
 * A read that raced with an invalidation must not put its (possibly older) row back: every
 * invalidation bumps `generation`, and a read stores its result only if no invalidation happened
 * since it was sent.
 */
import type { Change } from './database.js';
import type { Invalidation } from './changes.js';
import type { AliasRecord, GrantRecord, KeyRecord } from '../types.js';

const MAX_ENTRIES = 10_000;

export class MetadataCache implements Invalidation {
  generation = 0;
  readonly keys = new BoundedMap<string, KeyRecord | undefined>();
  /** By aliasCacheKey(region, name): an alias name is unique per Region. */
  readonly aliases = new BoundedMap<string, AliasRecord | undefined>();
  /** keyId → grantee list (joined) → grants. */
  readonly grants = new BoundedMap<string, Map<string, GrantRecord[]>>();

  apply(changes: readonly Change[]): void {
    this.generation++;
    for (const { kind, id } of changes) {
      switch (kind) {
        case 'key':
          this.keys.delete(id);
          break;
        case 'key-deleted':
          // The cascade took the key's aliases and grants with it.
          this.keys.delete(id);
          this.grants.delete(id);
          for (const [name, alias] of this.aliases) if (alias === undefined || alias.targetKeyId === id) this.aliases.delete(name);
          break;
        case 'alias':
          this.aliases.delete(id);
          break;
        case 'grants':
          this.grants.delete(id);
          break;
      }
    }
  }

  clear(): void {
    this.generation++;
    this.keys.clear();
    this.aliases.clear();
    this.grants.clear();
  }
}

/** The cache and change-log key of an alias (a Region name holds no '/', so the first one splits). */
export function aliasCacheKey(region: string, aliasName: string): string {
  return `${region}/${aliasName}`;
}

/** A Map that drops its oldest entry when full. */
class BoundedMap<K, V> extends Map<K, V> {
  override set(key: K, value: V): this {
    if (!this.has(key) && this.size >= MAX_ENTRIES) this.delete(this.keys().next().value!);
    return super.set(key, value);
  }
}
