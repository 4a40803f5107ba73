/**
 * The SQLite store thread (see store-thread.ts): owns the read-write connection and runs, one at a
 * time and in the order sent, every store call the event loop does not serve itself. A call that
 * waits for another process's write lock waits here, never on the event loop, and only until its
 * deadline; a commit's fsync happens here too, before the answer goes back.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { StoreUnavailableError } from '../types.js';
import { openSqliteDatabase, SqliteMetadataStore } from './store.js';
import { carryError, isBusy, type CallMessage, type FromThread, type StoreThreadData, type ToThread } from './thread-messages.js';

const port = parentPort!;
const { file, writeWaitMs } = workerData as StoreThreadData;
const send = (message: FromThread): void => port.postMessage(message);

let store: SqliteMetadataStore;
let db: ReturnType<typeof openSqliteDatabase>;
try {
  db = openSqliteDatabase(file);
  try {
    store = new SqliteMetadataStore(db);
  } catch (err) {
    db.close();
    throw err;
  }
  send({ type: 'ready' });
  port.on('message', (message: ToThread) => {
    if (message.type === 'close') {
      if (db.open) db.close();
      send({ type: 'closed' });
      port.close();
      return;
    }
    void run(message);
  });
} catch (err) {
  send({ type: 'open-failed', error: carryError(err) });
  port.close();
}

/** The lock wait SQLite is told to allow, set only when it changes. */
let busyTimeoutMs = -1;

async function run({ id, path, args, deadline }: CallMessage): Promise<void> {
  const left = Math.ceil(deadline - Date.now());
  if (left <= 0) {
    send({ type: 'failed', id, error: carryError(lockedOut()) });
    return;
  }
  try {
    if (left !== busyTimeoutMs) {
      db.pragma(`busy_timeout = ${left}`);
      busyTimeoutMs = left;
    }
    const value = await method(path)();
    send({ type: 'result', id, value });
  } catch (err) {
    send({ type: 'failed', id, error: carryError(isBusy(err) ? lockedOut() : err) });
  }

  function method(memberPath: string[]): () => unknown {
    let owner: unknown = store;
    for (const member of memberPath.slice(0, -1)) owner = (owner as Record<string, unknown> | undefined)?.[member];
    const fn = (owner as Record<string, unknown> | undefined)?.[memberPath.at(-1)!];
    if (typeof fn !== 'function') throw new TypeError(`the SQLite store has no method ${memberPath.join('.')}`);
    return () => fn.apply(owner, args);
  }
}

function lockedOut(): StoreUnavailableError {
  return new StoreUnavailableError(`the metadata database ${file} is locked by another connection: gave up after ${writeWaitMs} ms`);
}
