/**
 * Per-process figures kept in memory on the request path and saved by each lifecycle pass (and at
 * shutdown), so a request pays a Map write instead of a database write: AES-GCM encryption counts
 * (lifecycle/gcm-wear.ts) and last key uses (key-usage.ts). `combine` folds a new value into the
 * one already pending for its key; it also folds values back in after a failed save.
 */
export class PendingWrites<V> {
  private pending = new Map<string, V>();

  constructor(private readonly combine: (pending: V, next: V) => V) {}

  protected put(key: string, value: V): void {
    const pending = this.pending.get(key);
    this.pending.set(key, pending === undefined ? value : this.combine(pending, value));
  }

  protected pendingFor(key: string): V | undefined {
    return this.pending.get(key);
  }

  /** Hands everything pending to `save` and starts afresh; puts it back if `save` fails. */
  async flush<R>(save: (values: V[]) => Promise<R>): Promise<R | undefined> {
    if (this.pending.size === 0) return undefined;
    const taken = this.pending;
    this.pending = new Map();
    try {
      return await save([...taken.values()]);
    } catch (err) {
      for (const [key, value] of taken) this.put(key, value);
      throw err;
    }
  }
}
