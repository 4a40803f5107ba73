/**
 * The key-handle cache of Pkcs11Hsm: refKey → object handle, filled at open (primeHandleCache),
 * by key generation and by listBackingKeys, and on demand by a single-flight C_FindObjects per
 * key. withKey/withKeySync run an operation with a key's handle on a pooled session and look a
 * stale handle up again once.
 */
import type * as P11 from 'pkcs11js';
import { isStaleHandle } from './errors.js';
import { findKeyObjects, keyNotFound } from './key-objects.js';
import { refKey } from './object-naming.js';
import { NO_IDLE_SESSION, type SessionPool } from './session-pool.js';
import type { HsmLog } from './token-access.js';
import { type BackingKeyRef, HsmError } from './types.js';

type Handle = P11.Handle;

export class HandleCache {
  /** refKey → object handle; handles are process-local and never persisted. */
  readonly handles = new Map<string, Handle>();
  /** In-flight C_FindObjects per refKey, so a burst on an uncached key searches once. */
  private readonly lookups = new Map<string, Promise<Handle>>();

  constructor(
    private readonly p: P11.PKCS11,
    private readonly pool: SessionPool,
    private readonly label: string,
    private readonly log: HsmLog,
  ) {}

  /**
   * C_FindObjects on a fresh session, retried a few times: SoftHSM2 answers
   * CKR_OBJECT_HANDLE_INVALID when another process adds or removes objects during the scan
   * (seen with several service processes creating keys at once).
   */
  private async findWithRetry(ref: BackingKeyRef): Promise<Handle[]> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.pool.withSession((session) => findKeyObjects(this.p, session, ref));
      } catch (err) {
        if (attempt >= 4 || !(err instanceof HsmError) || !isStaleHandle(err)) throw err;
      }
    }
  }

  private lookUp(ref: BackingKeyRef, key: string): Promise<Handle> {
    let pending = this.lookups.get(key);
    if (pending === undefined) {
      pending = this.findWithRetry(ref)
        .then((handles) => {
          const handle = handles[0];
          if (handle === undefined) throw keyNotFound(ref);
          if (handles.length > 1) this.log('warn', `token '${this.label}' holds ${handles.length} objects for ${key}; using the first`);
          this.handles.set(key, handle);
          return handle;
        })
        .finally(() => this.lookups.delete(key));
      this.lookups.set(key, pending);
    }
    return pending;
  }

  /**
   * Runs `op` with the key's handle on a pooled session. A cached handle whose object vanished
   * (destroyed, possibly by another process, and maybe recreated) is looked up again once.
   */
  async withKey<T>(ref: BackingKeyRef, op: (session: Handle, key: Handle) => T | Promise<T>): Promise<T> {
    const cacheKey = refKey(ref);
    const cached = this.handles.get(cacheKey);
    const handle = cached ?? (await this.lookUp(ref, cacheKey));
    try {
      return await this.pool.withSession((session) => op(session, handle));
    } catch (err) {
      if (!(err instanceof HsmError) || !isStaleHandle(err)) throw err;
      if (this.handles.get(cacheKey) === handle) this.handles.delete(cacheKey);
      if (cached === undefined) throw keyNotFound(ref);
      const fresh = await this.lookUp(ref, cacheKey);
      return this.pool.withSession((session) => op(session, fresh)).catch((retryErr: unknown) => {
        throw retryErr instanceof HsmError && isStaleHandle(retryErr) ? keyNotFound(ref) : retryErr;
      });
    }
  }

  /**
   * withKey for synchronous ops: when the handle is cached and a session is idle (the normal case
   * in sync mode, where ops never overlap) the op runs right away with no promise hops; anything
   * else (uncached key, busy pool, stale handle) takes the general path.
   */
  withKeySync<T>(ref: BackingKeyRef, op: (session: Handle, key: Handle) => T): Promise<T> {
    const cacheKey = refKey(ref);
    const handle = this.handles.get(cacheKey);
    if (handle !== undefined) {
      try {
        const result = this.pool.runIfIdle((session) => op(session, handle));
        if (result !== NO_IDLE_SESSION) return Promise.resolve(result);
      } catch (err) {
        if (!(err instanceof HsmError) || !isStaleHandle(err)) return Promise.reject(err);
        if (this.handles.get(cacheKey) === handle) this.handles.delete(cacheKey); // look it up again below
      }
    }
    return this.withKey(ref, op);
  }
}
