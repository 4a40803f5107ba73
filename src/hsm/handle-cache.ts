/**
 * The key-handle cache of Pkcs11Hsm: refKey → object handle, filled at open (primeHandleCache),
 * by key generation and by listBackingKeys, and on demand by a single-flight C_FindObjects per
 * key. withKey/withKeySync run an operation with a key's handle on a pooled session, look a
 * stale handle up again once, and retry transient token errors (errors.ts isTransient) a few
 * times with a short pause, so that a token failing a few calls in a hundred fails (almost) no
 * requests. A handle that went stale together with our login is a lost login, not a missing key:
 * `confirmLoggedIn` tells them apart before anything is reported as not found.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type * as P11 from 'pkcs11js';
import { isStaleHandle, isTransient } from './errors.js';
import { findKeyObjects, keyNotFound } from './key-objects.js';
import { refKey } from './object-naming.js';
import { NO_IDLE_SESSION, type SessionPool } from './session-pool.js';
import type { HsmLog } from './token-access.js';
import { type BackingKeyRef, HsmError } from './types.js';

type Handle = P11.Handle;

/** Pauses before the 2nd and 3rd attempt of an operation that failed transiently. */
const RETRY_PAUSES_MS = [2, 10];

export interface HandleCacheHooks {
  /** Throws (HsmError 'unavailable') while the token is down: requests fail fast. */
  assertUp(fn: string): void;
  /** Rejects with HsmError 'unavailable' when the token no longer has our login. */
  confirmLoggedIn(): Promise<void>;
  /** Deadline for one operation (async calls only); undefined: none. */
  deadlineMs?: number;
  /** Finds a ref's key objects off the event loop (async mode); default: findKeyObjects here. */
  find?: (session: Handle, ref: BackingKeyRef) => Promise<Handle[]>;
}

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
    private readonly hooks: HandleCacheHooks = { assertUp: () => {}, confirmLoggedIn: async () => {} },
  ) {}

  /**
   * C_FindObjects on a fresh session, retried a few times: SoftHSM2 answers
   * CKR_OBJECT_HANDLE_INVALID when another process adds or removes objects during the scan
   * (seen with several service processes creating keys at once).
   */
  private async findWithRetry(ref: BackingKeyRef): Promise<Handle[]> {
    for (let attempt = 1; ; attempt++) {
      try {
        const find = this.hooks.find;
        return await this.pool.withSession((session) => (find ? find(session, ref) : findKeyObjects(this.p, session, ref)));
      } catch (err) {
        if (attempt >= 4 || !(err instanceof HsmError) || !isStaleHandle(err)) throw err;
      }
    }
  }

  private lookUp(ref: BackingKeyRef, key: string): Promise<Handle> {
    let pending = this.lookups.get(key);
    if (pending === undefined) {
      pending = this.findWithRetry(ref)
        .then(async (handles) => {
          const handle = handles[0];
          if (handle === undefined) {
            await this.hooks.confirmLoggedIn();
            throw keyNotFound(ref);
          }
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
    for (let attempt = 0; ; attempt++) {
      this.hooks.assertUp('withKey');
      try {
        return await this.withKeyOnce(ref, op);
      } catch (err) {
        if (!(err instanceof HsmError) || !isTransient(err) || attempt >= RETRY_PAUSES_MS.length) throw err;
        await sleep(RETRY_PAUSES_MS[attempt]);
      }
    }
  }

  private async withKeyOnce<T>(ref: BackingKeyRef, op: (session: Handle, key: Handle) => T | Promise<T>): Promise<T> {
    const cacheKey = refKey(ref);
    const cached = this.handles.get(cacheKey);
    const handle = cached ?? (await this.lookUp(ref, cacheKey));
    const run = (key: Handle) => this.pool.withSession((session) => op(session, key), this.hooks.deadlineMs, `operation with ${cacheKey}`);
    try {
      return await run(handle);
    } catch (err) {
      if (!(err instanceof HsmError) || !isStaleHandle(err)) throw err;
      if (this.handles.get(cacheKey) === handle) this.handles.delete(cacheKey);
      await this.hooks.confirmLoggedIn();
      if (cached === undefined) throw keyNotFound(ref);
      const fresh = await this.lookUp(ref, cacheKey);
      return run(fresh).catch((retryErr: unknown) => {
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
        this.hooks.assertUp('withKey');
        const result = this.pool.runIfIdle((session) => op(session, handle));
        if (result !== NO_IDLE_SESSION) return Promise.resolve(result);
      } catch (err) {
        if (!(err instanceof HsmError)) return Promise.reject(err);
        if (isStaleHandle(err)) {
          if (this.handles.get(cacheKey) === handle) this.handles.delete(cacheKey); // look it up again below
        } else if (!isTransient(err)) {
          return Promise.reject(err);
        }
        // transient: withKey retries it
      }
    }
    return this.withKey(ref, op);
  }
}
