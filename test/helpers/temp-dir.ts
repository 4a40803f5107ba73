/**
 * Fresh private directories under os.tmpdir() for tests (token dirs, SQLite files).
 *
 *   const dir = makeTempDir('p11kms-hsm-');
 *   afterAll(() => removeTempDirs());
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const created = new Set<string>();

/** Creates a new empty directory (mode 0700) whose name starts with `prefix`. */
export function makeTempDir(prefix = 'p11kms-test-'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  fs.chmodSync(dir, 0o700);
  created.add(dir);
  return dir;
}

/** Removes one directory made by makeTempDir (or any path), ignoring absence. */
export function removeTempDir(dir: string): void {
  fs.rmSync(dir, { recursive: true, force: true });
  created.delete(dir);
}

/** Removes every directory this process made with makeTempDir. Set P11KMS_KEEP_TEMP=1 to keep
 *  them for post-mortem inspection. */
export function removeTempDirs(): void {
  if (process.env.P11KMS_KEEP_TEMP === '1') return;
  for (const dir of [...created]) removeTempDir(dir);
}
