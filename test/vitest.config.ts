import { defineConfig } from 'vitest/config';

// Each test file runs in its own process: a PKCS#11 module can be initialised once per process,
// and each file provisions its own SoftHSM2 token and SQLite file under a temporary data dir.
export default defineConfig({
  test: {
    root: new URL('..', import.meta.url).pathname,
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    testTimeout: 60_000,
    // The suite runs on Node 20 too (engines >=20); the SDK's notice that its 2027 releases need
    // Node 22 is for users, not a test result (README, Node versions).
    env: { AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' },
    hookTimeout: 120_000,
  },
});
