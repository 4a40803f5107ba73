/**
 * Starts a real p11kms service on loopback for a test file: a fresh SoftHSM2 token and SQLite file
 * under a temporary data dir, and a real @aws-sdk/client-kms client signed with SigV4.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { KMSClient } from '@aws-sdk/client-kms';
import { loadConfig } from '../../src/config.js';
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

export async function startTestService(env: Record<string, string> = {}, now?: () => Date): Promise<TestService> {
  const dataDir = env.P11KMS_DATA_DIR ?? tempDir('p11kms-test-');
  const config = loadConfig({
    P11KMS_DATA_DIR: dataDir,
    P11KMS_PORT: '0',
    P11KMS_ROOT_ACCESS_KEY_ID: ROOT.accessKeyId,
    P11KMS_ROOT_SECRET_ACCESS_KEY: ROOT.secretAccessKey,
    P11KMS_LOG_LEVEL: 'silent',
    ...env,
  });
  const service = await startService(config, { now });
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
