/**
 * Holds a store file's SQLite write lock from another process, as a backup tool or an operator's
 * sqlite3 shell holding a transaction open would: for tests and `npm run bench`, which show what
 * requests do meanwhile. The holder is a child `node` with the same better-sqlite3 the store uses;
 * it ends its transaction (rolled back: it writes nothing) when released or when this process goes.
 */
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';

export interface HeldWriteLock {
  /** The holding process. */
  readonly pid: number;
  /** True once the holder has ended its transaction and exited. */
  readonly released: boolean;
  /** Ends the transaction and waits for the holder to exit. */
  release(): Promise<void>;
}

const HOLDER = `
const [driver, file, mode] = process.argv.slice(1);
const Database = require(driver);
const db = new Database(file, { fileMustExist: true, timeout: 60000 });
db.exec('BEGIN ' + mode);
process.stdout.write('locked\\n');
process.stdin.resume();
process.stdin.on('end', () => {
  db.exec('ROLLBACK');
  db.close();
  process.exit(0);
});
`;

/**
 * Resolves once the lock is held. IMMEDIATE (the default) takes the write lock at BEGIN, as any
 * writer does; EXCLUSIVE is the same in WAL mode (readers go on) and is what a cautious operator types.
 */
export function holdWriteLock(file: string, mode: 'IMMEDIATE' | 'EXCLUSIVE' = 'IMMEDIATE'): Promise<HeldWriteLock> {
  const driver = createRequire(import.meta.url).resolve('better-sqlite3');
  const child = spawn(process.execPath, ['-e', HOLDER, driver, file, mode], { stdio: ['pipe', 'pipe', 'pipe'] });
  let released = false;
  const exited = new Promise<void>((resolve) => child.once('exit', () => {
    released = true;
    resolve();
  }));
  return new Promise((resolve, reject) => {
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.once('error', reject);
    void exited.then(() => reject(new Error(`the lock holder exited before taking the lock: ${stderr.trim()}`)));
    child.stdout.once('data', () =>
      resolve({
        pid: child.pid!,
        get released() {
          return released;
        },
        async release() {
          child.stdin.end();
          await exited;
        },
      }),
    );
  });
}
