/** Where the product is installed and which version it is: found from its package.json, from
 *  src/ under vitest and from dist/src/ when built. */
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';

function findPackage(): { root: string; version: string } {
  let dir = new URL('.', import.meta.url);
  for (let i = 0; i < 4; i++) {
    try {
      const pkg = JSON.parse(fs.readFileSync(new URL('package.json', dir), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'p11kms') return { root: fileURLToPath(dir), version: pkg.version ?? 'unknown' };
    } catch {
      // not here: one level up
    }
    dir = new URL('..', dir);
  }
  return { root: process.cwd(), version: 'unknown' };
}

const found = findPackage();
export const PROJECT_ROOT: string = found.root;
export const PRODUCT_VERSION: string = found.version;
