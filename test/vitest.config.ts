import { defineConfig } from 'vitest/config';

// Each test file runs in its own process: a PKCS#11 module can be initialised once per process,
// and each file provisions its own SoftHSM2 token and SQLite file under a temporary data dir.
// The container tests (test/container*.test.ts) drive the p11kms image through testcontainers;
// their set-up starts a Docker engine and builds the image when needed, or says why they skip.
export default defineConfig({
  test: {
    root: new URL('..', import.meta.url).pathname,
    pool: 'forks',
    testTimeout: 60_000,
    // The suite runs on Node 20 too (engines >=20); the SDK's notice that its 2027 releases need
    // Node 22 is for users, not a test result (README, Node versions).
    env: { AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' },
    hookTimeout: 120_000,
    projects: [
      {
        extends: true,
        test: { name: 'service', include: ['test/**/*.test.ts'], exclude: ['test/container*.test.ts'] },
      },
      {
        extends: true,
        test: {
          name: 'container',
          include: ['test/container*.test.ts'],
          globalSetup: ['test/helpers/container-setup.ts'],
          hookTimeout: 180_000,
          env: {
            // Ryuk (the reaper) would be pulled from a registry and reached over a bridge
            // network: off; the set-up sweeps leftover containers by label instead.
            TESTCONTAINERS_RYUK_DISABLED: process.env.TESTCONTAINERS_RYUK_DISABLED ?? 'true',
            // /.dockerenv can exist on the host: without this testcontainers would look for a
            // bridge gateway instead of localhost.
            TESTCONTAINERS_HOST_OVERRIDE: process.env.TESTCONTAINERS_HOST_OVERRIDE ?? 'localhost',
          },
        },
      },
    ],
  },
});
