/**
 * The SQLite store off the event loop. better-sqlite3 is synchronous: run on the event loop, a
 * commit's fsync, or a wait for another process's write lock (a backup, an operator's sqlite3
 * shell), stops every request, Encrypt included. So the store is two connections:
 *
 * - a store thread (store-thread-entry.ts) with the read-write connection, which migrates the file
 *   and runs every write, and any call not known to be a plain read, one at a time;
 * - on the event loop, a query-only connection for the reads requests need (READS_ON_EVENT_LOOP):
 *   in WAL mode a reader never waits for a writer, it reads the last commit.
 *
 * The calls go to the thread by name, through the MetadataStore's shape as the event loop's own
 * store object has it, so a method added to SqliteMetadataStore (or to one of its sub-stores) works
 * here unchanged: it runs on the thread until it is listed as a read.
 *
 * A call waits at most `writeWaitMs` from when it is sent, for the calls queued before it and for
 * the write lock, then fails with StoreUnavailableError (DependencyTimeoutException, retryable).
 * The event loop never gives up on a call the thread has started: the thread's answer is the
 * truth, so a write reported failed was never committed, and one reported done is durable.
 */
import type { Worker } from 'node:worker_threads';
import { StoreUnavailableError, type MetadataStore } from '../types.js';
import { isBusy, rebuildError, type FromThread, type StoreThreadData, type ToThread } from './thread-messages.js';
import { startWorkerModule } from './worker-module.js';

/**
 * Store methods (by path) served on the event loop: plain SELECTs. Everything else goes to the
 * store thread. A read missing here is still correct, only queued behind writes; a write listed
 * here fails loudly (the event loop's connection is query-only).
 */
export const READS_ON_EVENT_LOOP: ReadonlySet<string> = new Set([
  'getKey', 'listKeys', 'countKeys', 'listVersions', 'listAllVersions', 'multiRegionKeys',
  'getAlias', 'listAliases', 'countAliasesForKey', 'listTags',
  'getGrant', 'listGrants', 'grantsForGrantees', 'listRetirableGrants', 'grantsNamed', 'countGrants',
  'getKeyUse', 'keyUseTrackingStart',
  'lifecycle.rotationSchedule', 'lifecycle.listMaterials', 'lifecycle.expiredMaterials',
  'lifecycle.getImportParameters', 'lifecycle.listImportParameters', 'lifecycle.staleImportParameters',
  'auditChains.listChains', 'tokenBinding.get',
]);

/** The event loop's store: reads as MetadataStore, plus the hook that keeps its caches honest. */
export interface EventLoopReader extends MetadataStore {
  /** The store thread committed something: the next read must look past cached rows. */
  forgetCachedReads(): void;
}

/** The thread side, as the event loop sees it. */
export class StoreThread {
  private readonly pending = new Map<number, { resolve(value: unknown): void; reject(err: Error): void }>();
  private nextId = 1;
  /** Why calls fail from now on (closed, or the thread stopped). */
  private stopped: Error | undefined;
  private closing: Promise<void> | undefined;
  private static readonly CLOSED = 'the SQLite store is closed';

  private constructor(
    private readonly worker: Worker,
    private readonly writeWaitMs: number,
  ) {}

  /** Starts the thread, which opens (creating and migrating if needed) the file. */
  static async start(file: string, writeWaitMs: number): Promise<StoreThread> {
    const workerData: StoreThreadData = { file, writeWaitMs };
    const worker = await startWorkerModule(new URL(`./store-thread-entry${moduleExtension()}`, import.meta.url), { workerData });
    return new Promise((resolve, reject) => {
      const failedToStart = (err: Error) => reject(err);
      const exitedEarly = (code: number) => reject(new Error(`the SQLite store thread for ${file} exited with code ${code} while opening`));
      worker.on('error', failedToStart);
      worker.on('exit', exitedEarly);
      worker.once('message', (message: FromThread) => {
        worker.off('error', failedToStart);
        worker.off('exit', exitedEarly);
        if (message.type !== 'ready') {
          reject(message.type === 'open-failed' ? rebuildError(message.error) : new Error(`unexpected ${message.type} from the SQLite store thread`));
          void worker.terminate();
          return;
        }
        const thread = new StoreThread(worker, writeWaitMs);
        thread.listen();
        resolve(thread);
      });
    });
  }

  private listen(): void {
    this.worker.unref(); // referenced only while a call is pending (see call)
    this.worker.on('message', (message: FromThread) => {
      if (message.type !== 'result' && message.type !== 'failed') return;
      const call = this.pending.get(message.id);
      if (!call) return;
      this.pending.delete(message.id);
      if (this.pending.size === 0) this.worker.unref();
      if (message.type === 'result') call.resolve(message.value);
      else call.reject(rebuildError(message.error));
    });
    this.worker.on('error', (err) => this.stop(new Error(`the SQLite store thread failed: ${err.message}`)));
    this.worker.on('exit', (code) => this.stop(new Error(this.closing ? StoreThread.CLOSED : `the SQLite store thread exited with code ${code}`)));
  }

  call(path: string[], args: unknown[]): Promise<unknown> {
    if (this.closing) return Promise.reject(new Error(StoreThread.CLOSED));
    if (this.stopped) return Promise.reject(this.stopped);
    const id = this.nextId++;
    const message: ToThread = { type: 'call', id, path, args, deadline: Date.now() + this.writeWaitMs };
    return new Promise((resolve, reject) => {
      try {
        this.worker.postMessage(message); // throws at once for arguments that cannot be cloned
      } catch (err) {
        reject(err as Error);
        return;
      }
      this.pending.set(id, { resolve, reject });
      // A pending call keeps the process alive until its answer: a write is never cut off by exit.
      if (this.pending.size === 1) this.worker.ref();
    });
  }

  /** Throws when calls can no longer be made (health checks). */
  assertRunning(): void {
    if (this.closing) throw new Error(StoreThread.CLOSED);
    if (this.stopped) throw this.stopped;
  }

  /** Lets the calls already sent finish, closes the connection and ends the thread. Idempotent. */
  close(): Promise<void> {
    this.closing ??= new Promise<void>((resolve) => {
      if (this.stopped) return resolve();
      this.worker.ref();
      this.worker.on('message', (message: FromThread) => {
        if (message.type === 'closed') void this.worker.terminate();
      });
      this.worker.once('exit', () => resolve());
      this.worker.postMessage({ type: 'close' } satisfies ToThread);
    });
    return this.closing;
  }

  private stop(reason: Error): void {
    this.stopped ??= reason;
    for (const call of this.pending.values()) call.reject(this.stopped);
    this.pending.clear();
  }
}

/**
 * The MetadataStore callers get: READS_ON_EVENT_LOOP from `reader`, everything else through
 * `thread`, by the member's path. Sub-stores (lifecycle, auditChains, tokenBinding) are proxied
 * the same way.
 */
export function storeOffTheEventLoop(reader: EventLoopReader, thread: StoreThread): MetadataStore {
  const onThread = (path: string[]) => async (...args: unknown[]) => {
    try {
      return await thread.call(path, args);
    } finally {
      reader.forgetCachedReads(); // read-your-writes: the next read sees what the thread committed
    }
  };
  const special: Record<string, unknown> = {
    async ping() {
      thread.assertRunning();
      await readHere(reader, reader.ping)();
    },
    async close() {
      try {
        await thread.close();
      } finally {
        await reader.close();
      }
    },
  };
  const mirror = (part: object, path: string[]): object => {
    const members = new Map<string | symbol, unknown>();
    return new Proxy(part, {
      get(target, member) {
        if (members.has(member)) return members.get(member);
        const value: unknown = Reflect.get(target, member);
        if (typeof member !== 'string') return value;
        const memberPath = [...path, member];
        const name = memberPath.join('.');
        let resolved: unknown;
        if (path.length === 0 && Object.hasOwn(special, member)) resolved = special[member];
        else if (typeof value === 'function') resolved = READS_ON_EVENT_LOOP.has(name) ? readHere(target, value) : onThread(memberPath);
        else if (value !== null && typeof value === 'object') resolved = mirror(value, memberPath);
        else return value;
        members.set(member, resolved);
        return resolved;
      },
      // A member assigned by a caller (a test injecting a fault) is what it gets back, as is.
      set(_target, member, value) {
        members.set(member, value);
        return true;
      },
    });
  };
  return mirror(reader, []) as MetadataStore;
}

/** A read on the event loop's connection; SQLite's rare reader lock wait (WAL recovery) that
 *  outlasts its short busy timeout is a retryable unavailability. */
function readHere(owner: object, fn: Function): (...args: unknown[]) => Promise<unknown> {
  return async (...args) => {
    try {
      return await fn.apply(owner, args);
    } catch (err) {
      if (isBusy(err)) {
        throw new StoreUnavailableError('the metadata database is locked for reading (WAL recovery by another connection)', { cause: err });
      }
      throw err;
    }
  };
}

/** .ts from the sources (vitest), .js when compiled. */
function moduleExtension(): string {
  return import.meta.url.endsWith('.ts') ? '.ts' : '.js';
}
