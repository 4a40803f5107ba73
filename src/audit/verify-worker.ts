/** Runs verifyAuditTrail on a worker thread: it reads and hashes the whole trail synchronously,
 *  which must never happen on the event loop of a serving process. */
import path from 'node:path';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { PROJECT_ROOT } from '../package-info.js';
import { verifyAuditTrail, type VerifyResult } from './verify.js';

if (!isMainThread && parentPort && (workerData as { p11kmsVerify?: boolean } | undefined)?.p11kmsVerify) {
  const { dataDir } = workerData as { dataDir: string };
  parentPort.postMessage(verifyAuditTrail(dataDir));
}

/** The compiled worker (dist/), also when the caller itself runs from TypeScript sources. */
const WORKER_FILE = path.join(PROJECT_ROOT, 'dist', 'src', 'audit', 'verify-worker.js');

export function verifyAuditTrailInWorker(dataDir: string): Promise<VerifyResult> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(WORKER_FILE, { workerData: { p11kmsVerify: true, dataDir } });
    worker.once('message', (result: VerifyResult) => resolve(result));
    worker.once('error', reject);
    worker.once('exit', (code) => {
      if (code !== 0) reject(new Error(`audit verification worker exited with ${code}`));
    });
  });
}
