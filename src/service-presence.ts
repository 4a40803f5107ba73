/**
 * Which service processes are running on a data dir: each writes <dataDir>/run/<pid>.pid while it
 * serves and removes it at shutdown. Tools that must not act under a running service (`doctor
 * --repair`: an operation in flight looks like a divergence) ask runningServices, which ignores
 * and removes files of processes that no longer exist (killed with SIGKILL, or a crash).
 */
import fs from 'node:fs';
import path from 'node:path';

const runDir = (dataDir: string) => path.join(dataDir, 'run');

/** Marks this process as serving on `dataDir`; the returned function unmarks it. */
export function markServing(dataDir: string): () => void {
  fs.mkdirSync(runDir(dataDir), { recursive: true, mode: 0o700 });
  const file = path.join(runDir(dataDir), `${process.pid}.pid`);
  fs.writeFileSync(file, `${process.pid}\n`, { mode: 0o600 });
  return () => fs.rmSync(file, { force: true });
}

/** Process IDs of the services running on `dataDir` (other than this process). */
export function runningServices(dataDir: string): number[] {
  let names: string[];
  try {
    names = fs.readdirSync(runDir(dataDir));
  } catch {
    return [];
  }
  const pids: number[] = [];
  for (const name of names) {
    const pid = Number(/^(\d+)\.pid$/.exec(name)?.[1]);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    if (isAlive(pid)) pids.push(pid);
    else fs.rmSync(path.join(runDir(dataDir), name), { force: true });
  }
  return pids;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
