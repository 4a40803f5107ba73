/**
 * Starts a real p11kms service on loopback for a test file: a fresh SoftHSM2 token and SQLite file
 * under a temporary data dir, and a real @aws-sdk/client-kms client signed with SigV4.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { KMSClient } from '@aws-sdk/client-kms';
import { afterAll, beforeAll } from 'vitest';
import { loadConfig, type Config } from '../../src/config.js';
import { startService, type RunningService } from '../../src/service.js';

export const ROOT = { accessKeyId: 'AKIAP11KMSTESTROOT01', secretAccessKey: 'p11kms-test-root-secret-0123456789abcdef' };
export const ACCOUNT_ID = '111122223333';
export const REGION = 'us-east-1';

export interface TestService {
  service: RunningService;
  client: KMSClient;
  dataDir: string;
  clientFor(credentials: { accessKeyId: string; secretAccessKey: string }): KMSClient;
  stop(): Promise<void>;
}

export function tempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

/** The config every test service starts from: `dataDir`, any free loopback port, the test root
 *  credentials and no logs; `env` overrides or adds settings. */
export function testConfig(dataDir: string, env: Record<string, string> = {}): Config {
  return loadConfig({
    P11KMS_DATA_DIR: dataDir,
    P11KMS_PORT: '0',
    P11KMS_ROOT_ACCESS_KEY_ID: ROOT.accessKeyId,
    P11KMS_ROOT_SECRET_ACCESS_KEY: ROOT.secretAccessKey,
    P11KMS_LOG_LEVEL: 'silent',
    ...env,
  });
}

export async function startTestService(env: Record<string, string> = {}, now?: () => Date): Promise<TestService> {
  const dataDir = env.P11KMS_DATA_DIR ?? tempDir('p11kms-test-');
  const service = await startService(testConfig(dataDir, env), { now });
  const clientFor = (credentials: { accessKeyId: string; secretAccessKey: string }) =>
    new KMSClient({ endpoint: service.url, region: REGION, credentials, maxAttempts: 1 });
  const client = clientFor(ROOT);
  return {
    service,
    client,
    dataDir,
    clientFor,
    stop: async () => {
      client.destroy();
      await service.close();
    },
  };
}

/**
 * One service for the whole test file: started in a beforeAll, stopped in an afterAll, both
 * registered here. The returned object reads the running service, so it can be declared at the top
 * of the file and used in tests and later hooks:
 *
 *   const t = useTestService();
 *   it('…', async () => { await t.client.send(…); });
 *
 * `env` may be a function: it is then evaluated when the service starts (e.g. to write a
 * principals file in the hook rather than while the file is collected).
 */
export function useTestService(env: Record<string, string> | (() => Record<string, string>) = {}, now?: () => Date): TestService {
  let current: TestService | undefined;
  beforeAll(async () => {
    current = await startTestService(typeof env === 'function' ? env() : env, now);
  });
  afterAll(async () => {
    await current?.stop();
  });
  const running = (): TestService => {
    if (!current) throw new Error('useTestService: the service is not running (use it inside tests or hooks)');
    return current;
  };
  return {
    get service() {
      return running().service;
    },
    get client() {
      return running().client;
    },
    get dataDir() {
      return running().dataDir;
    },
    clientFor: (credentials) => running().clientFor(credentials),
    stop: () => running().stop(),
  };
}

/** The error name an SDK call rejected with (fails the test if it resolved). */
export async function errorOf(p: Promise<unknown>): Promise<{ name: string; message: string; status?: number }> {
  try {
    await p;
  } catch (e) {
    const err = e as { name: string; message: string; $metadata?: { httpStatusCode?: number } };
    return { name: err.name, message: err.message, status: err.$metadata?.httpStatusCode };
  }
  throw new Error('expected the call to fail, but it succeeded');
}
