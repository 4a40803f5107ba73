/**
 * Creating P11KMS_DATA_DIR. Not with fs.mkdirSync({ recursive: true }): under /proc (where mkdir
 * answers ENOENT for a parent that exists) Node's recursive mkdir retries forever, so a mistyped
 * data dir hung the start. One level at a time, every failure becomes a message naming the setting.
 */
import fs from 'node:fs';
import path from 'node:path';

export class DataDirError extends Error {}

export function ensureDataDir(dir: string): void {
  const absolute = path.resolve(dir);
  const missing: string[] = [];
  for (let d = absolute; !exists(d); d = path.dirname(d)) {
    missing.unshift(d);
    if (path.dirname(d) === d) break;
  }
  for (const d of missing) {
    try {
      fs.mkdirSync(d, { mode: 0o700 });
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EEXIST') continue; // another process made it meanwhile
      throw new DataDirError(`P11KMS_DATA_DIR ${absolute} cannot be created: mkdir ${d} failed (${code ?? String(e)})`);
    }
  }
  if (!fs.statSync(absolute).isDirectory()) throw new DataDirError(`P11KMS_DATA_DIR ${absolute} is not a directory`);
  try {
    fs.accessSync(absolute, fs.constants.W_OK | fs.constants.X_OK);
  } catch {
    throw new DataDirError(`P11KMS_DATA_DIR ${absolute} is not writable by this user`);
  }
}

function exists(p: string): boolean {
  try {
    fs.statSync(p);
    return true;
  } catch {
    return false;
  }
}
