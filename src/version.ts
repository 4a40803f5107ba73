/** The product's version, from its package.json (found from src/ under vitest and dist/src/ when built). */
import fs from 'node:fs';

export const PRODUCT_VERSION: string = (() => {
  let dir = new URL('.', import.meta.url);
  for (let i = 0; i < 4; i++) {
    try {
      const pkg = JSON.parse(fs.readFileSync(new URL('package.json', dir), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'p11kms' && typeof pkg.version === 'string') return pkg.version;
    } catch {
      // not here: one level up
    }
    dir = new URL('..', dir);
  }
  return 'unknown';
})();
