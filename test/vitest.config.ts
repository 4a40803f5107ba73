import { defineConfig } from 'vitest/config';

// Each test file runs in its own process: a PKCS#11 module can be initialised once per process,
// and each file provisions its own SoftHSM2 token and SQLite file under a temporary data dir.
export default defineConfig({
  test: {
    root: new URL('..', import.meta.url).pathname,
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 120_000,
  },
});
